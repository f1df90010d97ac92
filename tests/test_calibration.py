"""Honest probabilities: temperature scaling fitted on held-out faces, kept in the model file, applied
wherever a probability is shown or written, and shown on the Results page, the report and Classify."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import face_crop, known_run
from streamlit.testing.v1 import AppTest

from fer import calibration, cli, modelfile, report, results
from fer import runs as R
from fer.evaluate import evaluate, export_model
from fer.paths import BUNDLED_MODEL
from fer.predict import Predictor
from pages import common

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# The module ---------------------------------------------------------------------------------------


def test_fitting_recovers_the_temperature_of_over_confident_probabilities():
    """Labels drawn from softmax(z); the model reports softmax(2.5 z): too sure by a temperature of 2.5."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.2, (20_000, 7))
    honest = softmax(logits)
    y = np.array([rng.choice(7, p=row) for row in honest])
    over_confident = softmax(2.5 * logits)
    temperature = calibration.fit_temperature(over_confident, y)
    assert temperature == pytest.approx(2.5, rel=0.05)
    scaled = calibration.scale(over_confident, temperature)
    assert np.array_equal(scaled.argmax(axis=1), over_confident.argmax(axis=1))  # the order is kept
    assert calibration.ece(scaled, y) < calibration.ece(over_confident, y) / 3
    entry = calibration.fit(over_confident, y, "synthetic faces")
    assert entry["method"] == "temperature" and entry["faces"] == 20_000
    assert entry["ece_after"] < entry["ece_before"]


def _drawn(rng, faces: int, too_sure: float) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose labels are drawn from softmax(z), reported as softmax(too_sure * z)."""
    logits = rng.normal(0, 1.2, (faces, 7))
    honest = softmax(logits)
    y = (honest.cumsum(axis=1) < rng.random((faces, 1))).sum(axis=1)
    return softmax(too_sure * logits), y


def test_a_weighted_fit_moves_toward_the_set_given_more_weight():
    rng = np.random.default_rng(3)
    large, large_y = _drawn(rng, 9_000, 1.5)  # a big set, too sure by 1.5
    small, small_y = _drawn(rng, 1_000, 3.0)  # a small one, too sure by 3
    both, y = np.concatenate([large, small]), np.concatenate([large_y, small_y])
    sizes = [len(large_y), len(small_y)]
    pooled = calibration.fit_temperature(both, y)
    equal = calibration.fit_temperature(both, y, calibration.face_weights(sizes, [0.5, 0.5]))
    mostly_small = calibration.fit_temperature(both, y, calibration.face_weights(sizes, [0.1, 0.9]))
    only_small = calibration.fit_temperature(both, y, calibration.face_weights(sizes, [0, 1]))
    assert pooled < equal < mostly_small < only_small
    assert pooled == pytest.approx(calibration.fit_temperature(both, y, np.ones(len(y))), rel=1e-6)
    assert only_small == pytest.approx(calibration.fit_temperature(small, small_y), rel=1e-6)
    assert only_small == pytest.approx(3.0, rel=0.1) and pooled < 2.0
    # The small set's calibration error falls as it is given more of the fit; the large set's rises.
    errors = [
        (
            calibration.ece(calibration.scale(large, t), large_y),
            calibration.ece(calibration.scale(small, t), small_y),
        )
        for t in (pooled, equal, only_small)
    ]
    assert errors[0][1] > errors[1][1] > errors[2][1] and errors[0][0] < errors[2][0]
    entry = calibration.fit(both, y, "two sets", calibration.face_weights(sizes, [0.5, 0.5]))
    assert entry["temperature"] == pytest.approx(equal, rel=1e-5) and entry["faces"] == 10_000
    assert entry["ece_after"] < entry["ece_before"]


def test_shares_and_face_weights():
    assert calibration.shares([300, 100]) == calibration.shares([300, 100], "faces") == [0.75, 0.25]
    assert calibration.shares([300, 100], "equal") == [0.5, 0.5]
    assert calibration.shares([300, 100], [3, 1]) == [0.75, 0.25]
    assert calibration.shares([300, 100], [0.725, 0.275]) == pytest.approx([0.725, 0.275])
    weights = calibration.face_weights([3, 1], [0.5, 0.5])
    np.testing.assert_allclose(weights, [2 / 3, 2 / 3, 2 / 3, 2])  # each set half the total of 4
    np.testing.assert_allclose(calibration.face_weights([3, 1], [0.75, 0.25]), 1.0)


@pytest.mark.parametrize(
    "how, problem",
    [
        ("most", "'faces', 'equal' or one number"),
        ([1.0], "one weight per dataset"),
        ([1.0, -1.0], "at least 0"),
        ([0, 0], "not all 0"),
        ([1.0, float("nan")], "at least 0"),
    ],
)
def test_shares_that_make_no_sense_are_refused(how, problem):
    with pytest.raises(ValueError, match=problem):
        calibration.shares([300, 100], how)


def test_face_weights_that_make_no_sense_are_refused():
    probabilities, y = softmax(np.random.default_rng(4).normal(0, 1, (4, 3))), np.array([0, 1, 2, 0])
    for weights in (np.ones(3), np.array([1, 1, -1, 1]), np.zeros(4), np.array([1, np.inf, 1, 1])):
        with pytest.raises(ValueError, match="weights must be one finite number"):
            calibration.fit_temperature(probabilities, y, weights)


def test_an_entry_without_shares_still_reads():
    """A model calibrated before datasets had shares: only method and temperature are needed."""
    old = {"method": "temperature", "temperature": 2.3996, "fitted_on": "val faces", "faces": 10}
    probabilities = softmax(np.random.default_rng(5).normal(0, 2, (3, 7)))
    np.testing.assert_allclose(
        calibration.apply(probabilities, {"calibration": old}), calibration.scale(probabilities, 2.3996)
    )


def test_ece_and_reliability_of_a_hand_computed_case():
    # Two faces at 0.9 (one right), two at 0.6 (both right): gaps 0.4 and 0.4, each half the faces.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    assert calibration.ece(probabilities, y) == pytest.approx(0.4)
    rows = calibration.reliability(probabilities, y)
    assert len(rows) == calibration.BINS == 15
    filled = [row for row in rows if row["count"]]
    assert [(row["count"], row["confidence"], row["accuracy"]) for row in filled] == [
        (2, pytest.approx(0.6), 1.0),
        (2, pytest.approx(0.9), 0.5),
    ]
    assert filled[0]["low"] < 0.6 <= filled[0]["high"] and filled[1]["low"] < 0.9 <= filled[1]["high"]
    # Perfectly honest: every face at 1.0 and right.
    assert calibration.ece(np.eye(3), np.arange(3)) == 0.0


def test_apply_without_a_calibration_is_the_identity():
    probabilities = softmax(np.random.default_rng(1).normal(0, 2, (5, 4))).astype(np.float32)
    for metadata in (None, {}, {"labels": list("abcd")}):
        assert calibration.apply(probabilities, metadata) is probabilities
    calibrated = calibration.apply(
        probabilities, {"calibration": {"method": "temperature", "temperature": 2.0}}
    )
    np.testing.assert_allclose(calibrated, calibration.scale(probabilities, 2.0))
    assert calibrated.max() < probabilities.max()  # softened
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "entry",
    [{"method": "temperature", "temperature": 0}, {"method": "temperature"}, {"method": "magic"}, "hot"],
)
def test_a_calibration_that_makes_no_sense_is_refused(entry):
    with pytest.raises(ValueError, match="calibration"):
        calibration.apply(np.full((1, 2), 0.5), {"calibration": entry})


# A run calibrates itself ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_trained_run_is_calibrated_and_writes_calibrated_probabilities(tiny_run):
    metadata = modelfile.read_metadata(tiny_run / R.BEST)
    entry = metadata["calibration"]
    assert entry["method"] == "temperature" and entry["temperature"] > 0
    assert entry["faces"] == metadata["counts"]["val"] > 0  # fitted on the run's val faces
    metrics = R.read_json(tiny_run / R.METRICS)
    recorded = metrics["calibration"]
    assert recorded["temperature"] == entry["temperature"]
    assert 0 <= recorded["ece_after"] <= 1 and 0 <= recorded["ece_before"] <= 1
    assert sum(row["count"] for row in recorded["reliability_after"]) == metrics["n"]
    # predictions.csv holds the calibrated probabilities of the run's test faces.
    dataset = R.read_json(tiny_run / "config.json")["train"]["datasets"][0]
    _, raw = evaluate(dataset, tiny_run / R.BEST, calibrated=False)
    written = pd.read_csv(tiny_run / R.PREDICTIONS)
    key = ["photo", "face"]
    raw, written = (
        raw.sort_values(key).reset_index(drop=True),
        written.sort_values(key).reset_index(drop=True),
    )
    assert raw[key].astype(str).values.tolist() == written[key].astype(str).values.tolist()
    columns = [f"p_{label}" for label in metadata["labels"]]
    expected = calibration.apply(raw[columns].to_numpy(), metadata)
    np.testing.assert_allclose(written[columns].to_numpy(), expected, atol=1e-4)
    assert not np.allclose(written[columns].to_numpy(), raw[columns].to_numpy(), atol=1e-4)
    np.testing.assert_allclose(written["probability"], expected.max(axis=1), atol=1e-4)
    # fer evaluate writes the same calibrated probabilities, and its JSON the calibration error.
    result, shown = evaluate(dataset, tiny_run / R.BEST)
    shown = shown.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(shown[columns].to_numpy(), expected, atol=1e-4)
    assert result["calibration"]["ece_after"] == pytest.approx(recorded["ece_after"], abs=1e-4)


@pytest.mark.slow
def test_a_new_run_reads_faces_with_their_mirror_image_where_its_val_faces_say_so(tiny_run):
    metadata = modelfile.read_metadata(tiny_run / R.BEST)
    choice = metadata["mirror_reading"]
    accuracy = choice["val_accuracy"]
    assert choice["val_faces"] == metadata["counts"]["val"]
    assert choice["chosen"] == ("mirrored" if accuracy["mirrored"] >= accuracy["plain"] else "plain")
    assert modelfile.reads_mirrored(metadata) == (choice["chosen"] == "mirrored")
    assert R.read_json(tiny_run / R.METRICS)["mirrored"] == modelfile.reads_mirrored(metadata)


class _LeftBrightModel:
    """A network that says class 0 with 0.6 for a face brighter on its left half, and class 1 for
    certain otherwise: read alone, a left-bright face is class 0; averaged with its mirror, class 1."""

    output_shape = (None, 2)

    def predict_on_batch(self, x):
        half = x.shape[2] // 2
        left_bright = x[:, :, :half].mean(axis=(1, 2, 3)) > x[:, :, half:].mean(axis=(1, 2, 3))
        first = np.where(left_bright, 0.6, 0.0)
        return np.stack([first, 1 - first], axis=1)


@pytest.mark.parametrize(("label", "chosen"), [(0, "plain"), (1, "mirrored")])
def test_the_mirror_reading_is_chosen_by_the_val_faces_accuracy(label, chosen):
    from fer.faces import Split
    from fer.train import _choose_mirror_reading

    images = np.zeros((6, 48, 48), dtype=np.uint8)
    images[:, :, :24] = 200  # every face brighter on its left
    val = Split(images=images, faces=pd.DataFrame(index=range(6)), y=np.full(6, label))
    mirrored, probabilities, choice = _choose_mirror_reading(_LeftBrightModel(), val, batch_size=4)
    assert choice["chosen"] == chosen and mirrored == (chosen == "mirrored")
    assert choice["val_accuracy"] == (
        {"plain": 1.0, "mirrored": 0.0} if label == 0 else {"plain": 0.0, "mirrored": 1.0}
    )
    assert (probabilities.argmax(axis=1) == label).all()  # the chosen reading's answers


def test_export_keeps_the_calibration(tiny_run, tmp_path):
    out = tmp_path / "shipped.keras"
    export_model(tiny_run, out)
    assert (
        modelfile.read_metadata(out)["calibration"]
        == modelfile.read_metadata(tiny_run / R.BEST)["calibration"]
    )


@pytest.mark.slow
def test_fer_calibrate_writes_a_model_whose_predictor_gives_calibrated_probabilities(
    tiny_run, tmp_path, capsys
):
    dataset = R.read_json(tiny_run / "config.json")["train"]["datasets"][0]
    out = tmp_path / "calibrated.keras"
    assert cli.main(["calibrate", str(tiny_run / R.BEST), dataset, "--out", str(out)]) == 0
    assert "temperature" in capsys.readouterr().out
    metadata = modelfile.read_metadata(out)
    entry = metadata["calibration"]
    assert entry["method"] == "temperature" and entry["faces"] > 0 and "val faces" in entry["fitted_on"]
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    model, _ = modelfile.load_model(out)
    raw = modelfile.predict_probabilities(model, faces, flip=modelfile.reads_mirrored(metadata))
    predictor = Predictor(out, detector="haar")
    assert predictor.calibration == entry
    np.testing.assert_allclose(
        predictor.classify(faces), calibration.scale(raw, entry["temperature"]), atol=1e-5
    )
    # Without the entry, the network's own probabilities, exactly.
    assert np.array_equal(
        modelfile.predict_probabilities(model, faces, metadata={}, flip=modelfile.reads_mirrored(metadata)),
        raw,
    )


@pytest.mark.slow
def test_fer_calibrate_with_weights_records_each_dataset_and_refuses_weights_that_make_no_sense(
    tiny_run, tmp_path, capsys
):
    dataset = R.read_json(tiny_run / "config.json")["train"]["datasets"][0]
    out = tmp_path / "calibrated.keras"
    args = ["calibrate", str(tiny_run / R.BEST), dataset, "--out", str(out)]
    assert cli.main([*args, "--weights", "equal"]) == 0
    entry = modelfile.read_metadata(out)["calibration"]
    [part] = entry["datasets"]
    assert part["share"] == 1.0 and part["faces"] == entry["faces"] > 0
    assert part["ece_after"] == pytest.approx(entry["ece_after"])
    assert f"share {part['share']:.3f}" in capsys.readouterr().out
    out.unlink()
    for weights, problem in (
        ("0.5,0.5", "one weight per dataset"),
        ("half", "'faces', 'equal' or one number"),
    ):
        assert cli.main([*args, "--weights", weights]) == 2
        assert problem in capsys.readouterr().err and not out.exists()


# Shown to people ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_results_page_shows_the_reliability_diagram_and_the_errors(tiny_run):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[common.RUN] = str(tiny_run)
    at.switch_page("pages/results.py").run()
    assert not at.exception
    assert "How far to trust its percentages" in [s.value for s in at.subheader]
    recorded = R.read_metrics(tiny_run)["calibration"]
    said = results.calibration_sentence(R.read_metrics(tiny_run))
    assert f"{recorded['ece_before']:.3f}" in said and f"({recorded['ece_after']:.3f})" in said
    assert any(results.calibration_sentence(R.read_metrics(tiny_run)) in m.value for m in at.markdown)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    names = {trace.get("name") for chart in charts for trace in chart["data"]}
    assert {"as trained", "calibrated", "honest"} <= names


def test_results_page_says_when_a_run_has_no_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    run_dir = known_run(tmp_path / "home" / "runs" / "old")
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[common.RUN] = str(run_dir)
    at.switch_page("pages/results.py").run()
    assert not at.exception
    assert any("no calibration" in i.value for i in at.info)


@pytest.mark.slow
def test_report_holds_the_reliability_diagram_self_contained(tiny_run, tmp_path):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    page = report.build_report(run_dir)
    assert "How far to trust its percentages" in page
    assert 'class="reliability"' in page and "calibrated</text>" in page
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    metrics = R.read_metrics(run_dir)
    assert f"({metrics['calibration']['ece_after']:.3f})" in page


def test_report_of_a_run_without_calibration_says_so(tmp_path):
    page = report.build_report(known_run(tmp_path / "old"))
    assert "recorded no calibration" in page and 'class="reliability"' not in page


@pytest.mark.slow
def test_classify_says_likely_not_sure_and_explains_the_percentages_once():
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/classify.py").run()
    assert not at.exception
    buffer = io.BytesIO()
    face_crop(64).save(buffer, format="PNG")
    at.toggle(key="whole").set_value(True)
    at.file_uploader(key="uploads").set_value(("calm.png", buffer.getvalue(), "image/png")).run()
    assert not at.exception
    [heading] = [m.value for m in at.markdown if m.value.startswith("**Face ")]
    assert "sure" not in heading and heading.endswith("% likely")
    explained = [c.value for c in at.caption if "about 6 in 10 are right" in c.value]
    assert len(explained) == 1
    # The shown percentage is the calibrated one.
    face = Predictor(BUNDLED_MODEL, detector="haar").predict(face_crop(64), whole=True).faces[0]
    assert f"{face.probabilities[face.label]:.0%} likely" in heading


# Reading each face with its mirror image -------------------------------------------------------------


def test_a_model_file_that_says_flip_reads_every_face_with_its_mirror_image(tmp_path):
    from fer.config import ModelConfig
    from fer.models import build

    model = build(ModelConfig(arch="seed", image_size=48, num_classes=7))
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    plain = modelfile.predict_probabilities(model, faces)
    both = (plain + modelfile.predict_probabilities(model, faces[:, :, ::-1])) / 2
    assert not np.allclose(plain, both)
    said = {modelfile.MIRRORED: True}
    np.testing.assert_allclose(modelfile.predict_probabilities(model, faces, metadata=said), both, atol=1e-6)
    np.testing.assert_allclose(
        modelfile.predict_probabilities(model, faces, metadata=said, flip=False), plain
    )
    np.testing.assert_allclose(modelfile.predict_probabilities(model, faces, flip=True), both, atol=1e-6)
    assert not modelfile.reads_mirrored({}) and not modelfile.reads_mirrored({modelfile.MIRRORED: "yes"})


@pytest.mark.slow
def test_fer_calibrate_flip_fits_on_mirrored_answers_and_every_reader_follows_the_file(
    tiny_run, tmp_path, capsys
):
    dataset = R.read_json(tiny_run / "config.json")["train"]["datasets"][0]
    out = tmp_path / "mirrored.keras"
    assert cli.main(["calibrate", str(tiny_run / R.BEST), dataset, "--out", str(out), "--flip"]) == 0
    metadata = modelfile.read_metadata(out)
    assert modelfile.reads_mirrored(metadata)
    entry = metadata["calibration"]
    # The temperature was fitted on the averaged answers: the val faces' error after it is the one stored.
    _, table = evaluate(dataset, out, split="val", calibrated=False)
    raw = table[[c for c in table.columns if c.startswith("p_")]].to_numpy()
    y = table["label"].map({label: i for i, label in enumerate(metadata["labels"])}).to_numpy()
    assert calibration.ece(calibration.scale(raw, entry["temperature"]), y) == pytest.approx(
        entry["ece_after"]
    )
    _, unmirrored = evaluate(dataset, out, split="val", calibrated=False, flip=False)
    assert not np.allclose(unmirrored[[c for c in table.columns if c.startswith("p_")]].to_numpy(), raw)
    # The Predictor reads mirrored too, and --no-flip takes the mark off again.
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    predictor = Predictor(out, detector="haar")
    np.testing.assert_allclose(predictor.classify(faces), predictor.classify(faces, flip=True))
    assert not np.allclose(predictor.classify(faces), predictor.classify(faces, flip=False))
    again = tmp_path / "plain.keras"
    assert cli.main(["calibrate", str(out), dataset, "--out", str(again), "--no-flip"]) == 0
    assert not modelfile.reads_mirrored(modelfile.read_metadata(again))
    capsys.readouterr()
