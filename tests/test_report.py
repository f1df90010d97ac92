"""The run report (fer.report) and `python -m fer report`: on a run folder written by hand from a known
confusion, and on one real tiny training of the demo dataset."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer import cli, paths, report, results
from fer import evaluate as E
from fer import runs as R
from fer import train as T
from fer.config import TrainConfig

EVIL = "<script>alert('x')</script>"
LABELS = ["happy", "sad", EVIL]
# Rows: true label, columns: predicted. 25 faces, 16 right.
CONFUSION = np.array([[8, 1, 1], [2, 5, 3], [0, 2, 3]])


def known_run(run_dir: Path, *, dataset: str = "/nowhere/moved-dataset") -> Path:
    """A finished run folder with the files fer.train._train writes, for the CONFUSION above; its
    dataset no longer exists, so it has no face images."""
    y_true = np.repeat(np.arange(3), CONFUSION.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(3), row) for row in CONFUSION])
    config = TrainConfig(datasets=(dataset,), arch="seed", epochs=3)
    model = config.model_config(num_classes=3)
    R.write_json(
        run_dir / "config.json",
        {"train": asdict(config), "model": asdict(model), "command": "python -m fer train", "labels": LABELS},
    )
    R.write_json(run_dir / "labels.json", LABELS)
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.5, 1.1, 0.9],
            "accuracy": [0.4, 0.55, 0.62],
            "val_loss": [1.4, 1.2, 1.15],
            "val_accuracy": [0.45, 0.58, 0.6],
            "learning_rate": [1e-3] * 3,
            "seconds": [3.0] * 3,
        }
    )
    R.write_csv(run_dir / "history.csv", history)
    metrics = E.metrics(y_true, y_pred, LABELS)
    metrics.update(split="test", best_epoch=3)
    R.write_json(run_dir / "metrics.json", metrics)
    probabilities = np.full((len(y_true), 3), 0.1)
    probabilities[np.arange(len(y_true)), y_pred] = 0.8
    faces = pd.DataFrame(
        {
            "dataset": dataset,
            "photo": [f"img/{i}.jpg" for i in range(len(y_true))],
            "face": 0,
            "split": "test",
            "label": [LABELS[i] for i in y_true],
        }
    )
    R.write_csv(run_dir / "predictions.csv", E.predictions_table(faces, LABELS, probabilities))
    R.set_status(run_dir, "done", error=None, best_epoch=3)
    return run_dir


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return known_run(tmp_path / "known-run")


def test_sentences_are_true_for_a_known_confusion(run_dir):
    metrics = R.read_metrics(run_dir)
    said = results.sentences(metrics)
    assert set(said) == set(results.METRICS)
    assert said["accuracy"] == "Of the 25 test faces, the model labelled 16 correctly (64.0%)."
    # Precision: the model called 10 faces happy, 8 rightly (80%); sad 5 of 8; the third 3 of 7.
    assert "Of the faces the model called happy, 80% were happy (8 of 10)" in said["precision"]
    assert f"{metrics['precision']:.1%}" in said["precision"]
    expected_weighted = (10 * 8 / 10 + 10 * 5 / 8 + 5 * 3 / 7) / 25
    assert metrics["precision"] == pytest.approx(expected_weighted)
    # Recall: happy faces found 8 of 10 (80%), sad 5 of 10 (50%), the third 3 of 5 (60%).
    assert "80% of the 10 happy faces but only 50% of the 10 sad faces" in said["recall"]
    assert "64.0%" in said["recall"]  # weighted recall is accuracy
    # Macro F1 lies below weighted F1 here: the smallest label scores lowest.
    assert metrics["macro_f1"] < metrics["f1"]
    assert f"{metrics['macro_f1']:.1%}" in said["macro_f1"] and "below" in said["macro_f1"]


def test_sentences_name_labels_never_predicted():
    metrics = E.metrics(np.array([0, 1, 2, 2]), np.array([0, 0, 0, 0]), ["a", "b", "c"])
    said = results.sentences(metrics)
    assert "never called a face b or c" in said["precision"]
    assert "25% were a (1 of 4)" in said["precision"]


def test_confusion_shares_and_worst_cell(run_dir):
    metrics = R.read_metrics(run_dir)
    counts, shares = results.confusion(metrics), results.confusion(metrics, shares=True)
    assert counts.to_numpy().tolist() == CONFUSION.tolist()
    assert shares.loc["sad", EVIL] == pytest.approx(0.3)
    assert shares.sum(axis=1).to_numpy() == pytest.approx([1, 1, 1])
    assert results.worst_mistake(metrics) == ("sad", EVIL)
    table = results.per_class_table(metrics)
    assert table["support"].tolist() == [10, 10, 5]
    cell = results.cell_faces(R.read_predictions(run_dir), "sad", EVIL)
    assert len(cell) == 3 and set(cell["predicted"]) == {EVIL}


def test_report_holds_the_numbers_escaped_and_self_contained(run_dir):
    page = report.build_report(run_dir)
    metrics = R.read_metrics(run_dir)
    assert page.startswith("<!DOCTYPE html>")
    for key in results.METRICS:
        assert f"{metrics[key]:.1%}" in page
    assert "Of the 25 test faces, the model labelled 16 correctly (64.0%)." in page
    # Every count of the confusion matrix is a cell of its table.
    matrix = page[page.index('<table class="confusion">') :]
    matrix = matrix[: matrix.index("</table>")]
    cells = [int(n) for n in re.findall(r"<td[^>]*>([\d,]+)<br>", matrix)]
    assert cells == CONFUSION.ravel().tolist()
    # Labels from data are escaped; the page has no script and makes no request.
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert not re.search(r"https?:", page)
    assert "<svg" in page and "<polyline" in page  # the curves
    # The dataset has moved: a note instead of faces, and the numbers are all there.
    assert "data:image/png" not in page
    assert "No example faces" in page and "cannot be read" in page


def test_report_of_a_failed_run_shows_its_error(tmp_path):
    run_dir = tmp_path / "failed"
    R.write_json(run_dir / "config.json", {"train": asdict(TrainConfig())})
    R.set_status(run_dir, "failed", error="DatasetError: no usable face <here>")
    page = report.build_report(run_dir)
    assert "failed: DatasetError: no usable face &lt;here&gt;" in page
    assert "There are no test results" in page


def test_cli_report_writes_the_file(run_dir, tmp_path, capsys):
    out = tmp_path / "shared" / "report.html"
    code = cli.main(["report", str(run_dir), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "16 correctly" in out.read_text()
    assert str(out) in captured.out


def test_cli_report_fails_cleanly_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "report.html"
    code = cli.main(["report", str(tmp_path), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith("error: ") and "config.json" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


# A real tiny training -----------------------------------------------------------------------------


def tiny_training(base: Path) -> Path:
    """A FER_HOME under `base` (pytest's basetemp) holding runs/tiny-report: one epoch of the seed
    model on 300 demo faces. A finished one already there is reused, so the modules that need it
    share one training; it is kept out of conftest's FER_HOME, where other pages' tests list runs."""
    home = base / "results-home"
    config = TrainConfig(datasets=("demo",), arch="seed", epochs=1, image_size=48, max_faces=300,
                           batch_size=32, augment=False)  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_HOME", str(home))
        run_dir = paths.runs_dir() / "tiny-report"
        if R.read_status(run_dir).get("state") != "done":
            T.train(config, run_dir)
    return home


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory) -> Path:
    return tiny_training(tmp_path_factory.getbasetemp())


@pytest.fixture
def tiny_run(trained_home, monkeypatch) -> Path:
    """The tiny run, with FER_HOME set to its home (where the demo dataset it read is)."""
    monkeypatch.setenv("FER_HOME", str(trained_home))
    return paths.runs_dir() / "tiny-report"


@pytest.mark.slow
def test_report_of_a_real_run_shows_its_faces(tiny_run):
    page = report.build_report(tiny_run, faces_per_cell=2)
    metrics = R.read_metrics(tiny_run)
    figures = page.count("<figure")
    assert 0 < figures <= 2 * 2 * len(metrics["labels"])
    assert page.count("data:image/png;base64,") == figures
    assert not re.search(r"https?:", page)
    assert "built-in demo (synthetic)" in page


@pytest.mark.slow
def test_faces_and_counts_of_a_real_run(tiny_run):
    faces = results.run_faces(tiny_run)
    counts = faces.split_counts()
    metrics = R.read_metrics(tiny_run)
    # The counts reproduce the run: its 300-face training cap, and its test faces per label.
    assert counts["train"].sum() == 300
    assert {label: int(counts.loc[label, "test"]) for label in metrics["labels"]} == {
        label: row["support"] for label, row in metrics["per_class"].items()
    }
    predictions = R.read_predictions(tiny_run)
    crops = faces.crops(predictions.head(5))
    assert all(c is not None and c.shape == (48, 48) and c.dtype == np.uint8 for c in crops)
    assert len({c.tobytes() for c in crops}) == 5  # five different faces, not one repeated
    moved = predictions.head(1).assign(photo="image/not-there.jpg")
    assert faces.crops(moved) == [None]
