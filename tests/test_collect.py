"""fer.collect on generated pictures: a collection is an ExpW dataset every reader takes, faces are added
and deleted safely, and fine-tuning on it is an ordinary `train --init-from` run."""

from __future__ import annotations

import dataclasses
import io
import shlex
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer import calibration, cli, collect, datasets, detect, modelfile, results, runs, summary
from fer.labels import LABELS
from fer.paths import BUNDLED_MODEL


def picture(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A generated RGB picture (width, height), different for each seed."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[: size[1], : size[0]])


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


class FixedDetector:
    """Finds the same boxes in every picture, as a detector does (RGB array in, Detections out)."""

    def __init__(self, boxes: list[tuple[float, float, float, float]]) -> None:
        self.boxes, self.seen = boxes, []

    def detect(self, rgb: np.ndarray) -> list[detect.Detection]:
        self.seen.append(rgb.shape)
        return [detect.Detection(*box, score=0.9 + i / 100) for i, box in enumerate(self.boxes)]


@pytest.mark.parametrize("name", ["", " ", "../etc", "a b", ".hidden", "x" * 41, "a/b", "-dash"])
def test_a_bad_collection_name_is_refused_with_what_to_do(name):
    with pytest.raises(collect.CollectionError, match="try a name like my-faces"):
        collect.collection_dir(name)


def test_a_collection_lives_under_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    assert collect.collection_dir(" my-faces ") == tmp_path / "own-faces" / "my-faces"
    assert collect.list_collections() == []


def test_saved_faces_are_an_expw_dataset_that_every_reader_takes(tmp_path):
    folder = tmp_path / "own-faces" / "me"
    photo = picture(0)
    collect.add_face(folder, photo, (10, 20, 70, 80), 0.987, "happy")
    collect.add_face(folder, picture(1), (0, 0, 120, 160), 0.0, "sad")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["image", "label.lst"]
    dataset = datasets.load(folder)
    assert dataset.format == "expw" and len(dataset.skipped) == 0
    faces = dataset.faces.sort_values("label")
    assert list(faces["label"]) == ["happy", "sad"]
    first = faces.iloc[0]
    assert (first.top, first.left, first.bottom, first.right) == (10, 20, 70, 80)
    assert first.confidence == pytest.approx(0.987)
    assert summary.summarize(dataset)["per_label"]["happy"]["faces"] == 1
    assert collect.counts(folder) == {**dict.fromkeys(LABELS, 0), "happy": 1, "sad": 1}
    crop = collect.face_image(folder, collect.read_faces(folder)[0])
    assert crop.size == (60, 60)  # the box's 60x60 pixels, under the thumbnail size


def test_two_faces_of_one_photo_share_its_file_and_the_same_face_is_not_saved_twice(tmp_path):
    folder = tmp_path / "me"
    photo = picture(2)
    first = collect.add_face(folder, photo, (5, 5, 55, 55), 0.95, "angry")
    second = collect.add_face(folder, photo.copy(), (5, 90, 55, 150), 0.93, "fear")
    assert (first.photo, first.face) == (second.photo, 0) and second.face == 1
    assert len(list((folder / "image").iterdir())) == 1
    with pytest.raises(collect.CollectionError, match="already saved, as angry"):
        collect.add_face(folder, photo, (6, 5, 55, 56), 0.95, "happy")
    assert len(collect.read_faces(folder)) == 2


def test_deleting_faces_removes_their_lines_then_their_photo(tmp_path):
    folder = tmp_path / "me"
    photo = picture(3)
    a = collect.add_face(folder, photo, (5, 5, 55, 55), 0.95, "angry")
    b = collect.add_face(folder, photo, (5, 90, 55, 150), 0.93, "fear")
    collect.delete_face(folder, a.photo, a.face)
    assert [(f.photo, f.face, f.label) for f in collect.read_faces(folder)] == [(b.photo, 1, "fear")]
    assert (folder / "image" / b.photo).is_file()
    collect.delete_face(folder, b.photo, b.face)
    collect.delete_face(folder, b.photo, b.face)  # already gone: no error
    assert collect.read_faces(folder) == [] and not (folder / "image" / b.photo).exists()


@pytest.mark.parametrize(
    "box, label, message",
    [
        ((10, 10, 50, 50), "joy", "label must be one of angry"),
        ((10, 10, 50, 50), "", "label must be one of"),
        ((50, 10, 10, 50), "happy", "not inside the 160x120 photo"),
        ((10, 10, 500, 50), "happy", "not inside the 160x120 photo"),
        ((-5, 10, 50, 50), "happy", "choose a face the detector found"),
    ],
)
def test_a_bad_face_is_refused_and_nothing_is_written(tmp_path, box, label, message):
    with pytest.raises(collect.CollectionError, match=message):
        collect.add_face(tmp_path / "me", picture(4), box, 0.9, label)
    assert collect.read_faces(tmp_path / "me") == []


def test_lines_edited_by_hand_that_are_not_faces_are_left_out(tmp_path):
    folder = tmp_path / "me"
    collect.add_face(folder, picture(0), (0, 0, 40, 40), 0.9, "happy")
    with open(folder / "label.lst", "a") as index:
        index.write(
            "x.jpg 0 0 0 40 40 0.9 -1\nx.jpg 1 0 0 40 40 0.9 7\nshort line\nx.jpg 2 a 0 40 40 0.9 3\n"
        )
    assert [face.label for face in collect.read_faces(folder)] == ["happy"]


def test_a_full_collection_refuses_another_face(tmp_path, monkeypatch):
    monkeypatch.setattr(collect, "MAX_FACES", 2)
    folder = tmp_path / "me"
    for seed in range(2):
        collect.add_face(folder, picture(seed), (0, 0, 40, 40), 0.9, "happy")
    with pytest.raises(collect.CollectionError, match="holds 2 faces, the most one may hold"):
        collect.add_face(folder, picture(9), (0, 0, 40, 40), 0.9, "happy")
    assert len(collect.read_faces(folder)) == 2


def test_faces_added_at_once_from_two_tabs_are_all_kept(tmp_path):
    folder = tmp_path / "me"
    errors = []

    def add(seed: int) -> None:
        try:
            collect.add_face(folder, picture(seed), (0, 0, 40, 40), 0.9, LABELS[seed % 7])
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=add, args=(seed,)) for seed in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(collect.read_faces(folder)) == 12
    assert len(datasets.load(folder).faces) == 12


def test_a_photo_is_turned_upright_and_shrunk_before_it_is_searched_and_stored(tmp_path):
    wide = picture(5, size=(3000, 1000))
    data = jpeg_bytes(wide, exif=_rotated_exif())  # EXIF: turn it a quarter
    photo = collect.open_photo(data)
    assert max(photo.size) == collect.STORE_SIDE and photo.height > photo.width  # upright, then shrunk
    detector = FixedDetector([(100.0, 300.0, 200.0, 400.0), (50.0, 10.0, 150.0, 110.0)])
    found = collect.find_faces(photo, detector)
    assert [box for box, _ in found] == [
        (50.0, 10.0, 150.0, 110.0),
        (100.0, 300.0, 200.0, 400.0),
    ]  # left first
    assert [score for _, score in found] == [pytest.approx(0.91), pytest.approx(0.9)]
    saved = collect.add_face(tmp_path / "me", photo, found[0][0], found[0][1], "surprise")
    with Image.open(tmp_path / "me" / "image" / saved.photo) as stored:
        assert stored.size == photo.size and not stored.getexif().get(0x0112)


def _rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return exif


def test_a_broken_picture_says_so():
    with pytest.raises(collect.images.PhotoError, match="not an image"):
        collect.open_photo(b"not a picture at all")


def test_boxes_are_drawn_numbered_on_a_copy():
    photo = picture(6)
    drawn = collect.draw_faces(photo, [(10, 10, 60, 60), (10, 90, 60, 140)], chosen=1)
    assert drawn.size == photo.size and drawn.tobytes() != photo.tobytes()
    assert np.asarray(photo).tobytes() == np.asarray(picture(6)).tobytes()  # the photo itself is untouched


def test_readiness_asks_for_enough_faces_of_two_expressions():
    found = dict.fromkeys(LABELS, 0)
    assert "no faces yet" in collect.readiness(found)
    found.update(happy=5, sad=2)
    assert "5 happy, 2 sad" in collect.readiness(found)
    found["sad"] = 3
    assert collect.readiness(found) is None


def test_the_fine_tuning_is_the_bundled_models_own_shape_with_faces_held_back(tmp_path):
    config = collect.finetune_config(tmp_path / "me", BUNDLED_MODEL, epochs=4)
    shape = modelfile.read_metadata(BUNDLED_MODEL)["model"]
    assert (config.arch, config.width, config.image_size) == (
        shape["arch"],
        shape["width"],
        shape["image_size"],
    )
    assert config.init_from == str(BUNDLED_MODEL.resolve()) and config.test_share == collect.HOLD_BACK
    assert config.datasets == (str((tmp_path / "me").resolve()),) and config.epochs == 4
    args = cli.train_args(config, tmp_path / "run")
    parsed = cli.train_config(cli.build_parser().parse_args(["train", *args]))
    assert parsed == config  # the dashboard's run is exactly a `fer train` command


def test_fine_tuning_refuses_too_few_faces_before_starting_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    folder = collect.collection_dir("few")
    collect.add_face(folder, picture(7), (0, 0, 40, 40), 0.9, "happy")
    with pytest.raises(collect.CollectionError, match="at least 3 faces of each of at least 2"):
        collect.start_finetune(folder, BUNDLED_MODEL)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_compare_refuses_a_run_that_has_not_finished(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    runs.set_status(run, "running", epoch=1, epochs=3)
    with pytest.raises(collect.CollectionError, match="has not finished"):
        collect.compare(run)


@pytest.mark.slow
def test_a_model_fine_tuned_on_a_few_faces_is_compared_on_the_faces_held_back(tiny_run, tmp_path):
    """From the tiny run's model, with the command the docs give: the held-back faces are the run's
    test faces, and the answers after are the run's own."""
    folder = tmp_path / "own-faces" / "me"
    few_faces(folder)
    model = tiny_run / "best.keras"
    config = collect.finetune_config(folder, model, epochs=1)
    run = tmp_path / "run"
    assert cli.main(["train", *cli.train_args(config, run)]) == 0
    result = collect.compare(run)
    metrics = runs.read_json(run / runs.METRICS)
    assert len(result.faces) == metrics["n"] == 2  # one of five of each expression held back
    assert sorted(result.faces["label"]) == ["happy", "sad"]
    assert result.after == pytest.approx(metrics["accuracy"])
    assert set(result.faces["before"]) <= set(modelfile.read_metadata(model)["labels"])
    assert result.images.shape == (2, config.image_size, config.image_size)
    # The run keeps every label its starting model has, though the faces hold only two.
    assert runs.read_json(run / runs.LABELS) == modelfile.read_metadata(model)["labels"]


def few_faces(folder: Path) -> None:
    """5 happy and 5 sad pictures, each one whole-picture face: 2 of them held back, 2 checked each epoch."""
    for seed in range(10):
        collect.add_face(
            folder, picture(100 + seed, (64, 64)), (0, 0, 64, 64), 0.0, ("happy", "sad")[seed % 2]
        )


@pytest.mark.slow
def test_a_model_fine_tuned_from_a_mirrored_calibrated_one_reads_faces_as_it_did(tiny_run, tmp_path):
    """A starting model that reads each face with its mirror image (as the bundled model does) gives a
    fine-tuned model that does too, and its calibration: two val faces are too few to fit one. The
    run's own answers (predictions.csv, the page's "after") are the saved model's."""
    model, metadata = modelfile.load_model(tiny_run / "best.keras")
    start = tmp_path / "start.keras"
    entry = {
        "method": "temperature",
        "temperature": 1.7,
        "fitted_on": "val faces of demo (150)",
        "faces": 150,
    }
    modelfile.save_model(model, start, {**metadata, modelfile.MIRRORED: True, "calibration": entry})
    folder = tmp_path / "own-faces" / "me"
    few_faces(folder)
    run = tmp_path / "run"
    assert cli.main(["train", *cli.train_args(collect.finetune_config(folder, start, epochs=1), run)]) == 0
    tuned, saved = modelfile.load_model(run / runs.BEST)
    assert modelfile.reads_mirrored(saved)
    assert saved["calibration"]["temperature"] == 1.7
    assert "fine-tuned from (start.keras)" in saved["calibration"]["fitted_on"]
    assert "2 val faces are too few" in saved["calibration"]["fitted_on"]
    result = collect.compare(run)
    written = runs.read_csv(
        run / runs.PREDICTIONS, text_columns=("photo", "label", "predicted", "split", "dataset")
    )
    columns = [f"p_{label}" for label in saved["labels"]]
    shown = modelfile.predict_probabilities(tuned, result.images, metadata=saved)
    np.testing.assert_allclose(written[columns].to_numpy(), shown, atol=1e-4)
    plain = modelfile.predict_probabilities(tuned, result.images, metadata=saved, flip=False)
    assert not np.allclose(shown, plain, atol=1e-4)  # the generated faces are not symmetric
    metrics = runs.read_json(run / runs.METRICS)
    assert metrics["calibration"]["temperature"] == 1.7
    assert "fine-tuned from" in results.calibration_sentence(metrics)


def test_a_run_with_too_few_val_faces_fits_no_temperature_and_says_why(tmp_path):
    from fer import train
    from fer.config import TrainConfig

    y = np.array([0, 1, 1])
    raw = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    entry, why = train._calibration(TrainConfig(datasets=("demo",)), y, raw)
    assert entry is None and "3 val faces are too few to fit a temperature on" in why
    bare = tmp_path / "bare.keras"
    modelfile.save_model(_two_label_model(), bare, {"labels": ["a", "b"], "image_size": 48, "margin": 0.0})
    entry, why = train._calibration(TrainConfig(datasets=("demo",), init_from=str(bare)), y, raw)
    assert entry is None and why.endswith("the model it started from has no calibration")
    entry, why = train._calibration(
        TrainConfig(datasets=("demo",), init_from=str(tmp_path / "gone.keras")), y, raw
    )
    assert entry is None and why.endswith("the model it started from (gone.keras) is gone")
    many = np.arange(calibration.MIN_FIT_FACES) % 2
    entry, why = train._calibration(TrainConfig(datasets=("demo",)), many, np.eye(2)[many] * 0.8 + 0.1)
    assert why is None and entry["faces"] == calibration.MIN_FIT_FACES
    assert entry["fitted_on"] == f"this run's val faces ({calibration.MIN_FIT_FACES})"


def _two_label_model():
    import keras

    inputs = keras.Input((48, 48, 1))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))


def test_finetune_runs_lists_only_this_collections_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    mine, other = collect.collection_dir("me"), collect.collection_dir("other")
    for name, dataset, init in (("a", mine, "m.keras"), ("b", other, "m.keras"), ("c", mine, None)):
        run = runs.new_run_dir(tmp_path / "runs", name=name)
        runs.write_json(
            run / runs.CONFIG, {"train": {"datasets": [str(dataset.resolve())], "init_from": init}}
        )
    assert [p.name for p in collect.finetune_runs(mine)] == ["a"]


def test_the_collection_is_read_by_path_like_any_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    folder = collect.collection_dir("me")
    collect.add_face(folder, picture(8), (0, 0, 40, 40), 0.9, "neutral")
    from fer import paths

    assert paths.check_dataset_path(str(folder)) == folder.resolve()
    assert collect.list_collections() == ["me"]
    assert Path(datasets.load(str(folder)).root) == folder


def test_the_documented_command_is_the_pages_run():
    """docs/own-faces.md's `fer train` command asks for exactly what the page starts."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "own-faces.md").read_text()
    start = text.index("fer train data/own-faces/my-faces")
    command = text[start : text.index("```", start)].replace("\\\n", " ")
    args = cli.build_parser().parse_args(shlex.split(command)[1:])
    documented = cli.train_config(args)
    page = collect.finetune_config(Path("data/own-faces/my-faces"), BUNDLED_MODEL)
    assert documented == dataclasses.replace(
        page, datasets=("data/own-faces/my-faces",), init_from="models/default.keras"
    )
