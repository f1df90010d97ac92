"""Predicting on users' photos: every awkward kind of image, flip averaging, the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from helpers import face_crop
from PIL import Image

from fer import cli, images, predict
from fer.config import ModelConfig
from fer.labels import LABELS
from fer.modelfile import save_model
from fer.models import build


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """An untrained seed model saved the way `train` saves models: enough to test the plumbing."""
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model = build(ModelConfig(arch="seed", image_size=48, num_classes=7))
    save_model(model, path, {"labels": list(LABELS), "image_size": 48, "margin": 0.0})
    return path


@pytest.fixture(scope="module")
def predictor(model_path):
    return predict.Predictor(model_path, detector="haar")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_exif_rotated_photo_is_turned_upright():
    image = Image.new("RGB", (60, 40), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    assert images.open_photo(encode(image, "JPEG", exif=exif)).size == (40, 60)


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.new("RGBA", (30, 20), (0, 0, 0, 0)), "PNG"),
        (Image.new("CMYK", (30, 20), (0, 0, 0, 255)), "JPEG"),
        (Image.new("P", (30, 20), 3), "PNG"),
        (Image.new("L", (30, 20), 90), "PNG"),
        (Image.new("1", (30, 20), 1), "PNG"),
    ],
    ids=["rgba", "cmyk", "palette", "gray", "bilevel"],
)
def test_any_mode_becomes_rgb(image, fmt):
    photo = images.open_photo(encode(image, fmt))
    assert photo.mode == "RGB" and photo.size == (30, 20)


def test_transparent_pixels_become_white():
    photo = images.open_photo(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"))
    assert np.asarray(photo).min() == 255


def test_sixteen_bit_photo_is_scaled_not_clipped():
    array = np.full((20, 30), 65535 // 2, dtype=np.uint16)
    photo = images.open_photo(encode(Image.fromarray(array), "PNG"))
    assert abs(int(np.asarray(photo)[0, 0, 0]) - 127) <= 1


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (9000, 9000)), "PNG")  # 81 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    with pytest.raises(images.PhotoError, match="too large"):
        images.open_photo(bomb)


def test_not_an_image_is_a_clear_error():
    with pytest.raises(images.PhotoError, match="not an image file"):
        images.open_photo(b"hello, this is text")


def test_whole_photo_mode_classifies_a_tiny_face_and_refuses_a_tiny_blank(predictor):
    blank = predictor.predict(encode(Image.new("L", (8, 8), 100), "PNG"), whole=True)
    assert (blank.width, blank.height) == (8, 8) and blank.faces == [] and blank.not_a_face
    assert blank.face_score < 0.01
    result = predictor.predict(encode(face_crop(24), "PNG"), whole=True)
    assert (result.width, result.height) == (24, 24) and not result.not_a_face and result.face_score > 0.5
    [face] = result.faces
    assert face.box == (0.0, 0.0, 24.0, 24.0)
    assert set(face.probabilities) == set(LABELS)
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert face.label == max(face.probabilities, key=face.probabilities.get)


def test_photo_without_a_face_gives_an_empty_result(predictor):
    assert predictor.predict(encode(Image.new("RGB", (320, 240), "gray"), "PNG")).faces == []


def test_flip_averaging_is_symmetric(predictor):
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(
        predictor.classify(faces, flip=True), predictor.classify(faces[:, :, ::-1], flip=True), atol=1e-6
    )
    assert not np.allclose(predictor.classify(faces), predictor.classify(faces[:, :, ::-1]))


def test_steady_answers_average_the_box_and_its_moved_copies(predictor):
    box = (40.0, 60.0, 140.0, 160.0)
    copies = images.steady_boxes(box)
    assert copies[0] == box and len(copies) == len(images.STEADY_MOVES) == len(set(copies))
    gray = Image.fromarray(np.random.default_rng(1).integers(0, 256, (240, 320), dtype=np.uint8))
    expected = predictor.classify(images.crop_faces(gray, copies, predictor.settings)).mean(axis=0)
    steady = predictor.steady_probabilities(gray, [box, box])
    np.testing.assert_allclose(steady, [expected, expected], atol=1e-5)
    single = predictor.classify(images.crop_faces(gray, [box], predictor.settings))[0]
    assert not np.allclose(steady[0], single)  # the copies really differ from the box alone
    assert predictor.steady_probabilities(gray, []).shape == (0, len(predictor.labels))


def test_cli_predict_lists_faces_and_errors(tmp_path, capsys, model_path):
    good = tmp_path / "face.png"
    face_crop(48).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    code = cli.main(["predict", str(good), str(bad), "--model", str(model_path), "--whole", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1  # one photo could not be read; the other still has its answer
    first, second = result["photos"]
    assert first["error"] is None and len(first["faces"]) == 1
    assert second["faces"] == [] and "not an image file" in second["error"]


@pytest.mark.realdata
def test_real_photo_face_is_found_and_labelled(predictor, expw_sample):
    result = predictor.predict(expw_sample / "image" / "afraid_man_208.jpg")
    assert len(result.faces) >= 1
    top, left, bottom, right = result.faces[0].box
    assert 20 < top < 70 and 10 < left < 60 and 120 < bottom < 180 and 120 < right < 170


@pytest.mark.realdata
def test_evaluate_with_detector_counts_missed_faces_as_wrong(tmp_path, model_path, expw_sample):
    """A small ExpW-format copy: one real photo whose face the detector finds, one blank photo whose
    labelled 'face' it cannot find."""
    from fer.evaluate import evaluate

    (tmp_path / "image").mkdir()
    real = "afraid_man_208.jpg"
    (tmp_path / "image" / real).write_bytes((expw_sample / "image" / real).read_bytes())
    Image.new("RGB", (200, 200), "gray").save(tmp_path / "image" / "blank.jpg")
    (tmp_path / "label.lst").write_text(f"{real} 0 38 28 142 152 93.9 2\nblank.jpg 0 50 50 150 150 80.0 3\n")
    result, table = evaluate(str(tmp_path), model_path, split="all", detector="haar")
    assert result["n"] == 2 and result["undetected"] == 1
    assert result["undetected_per_class"]["happy"] == 1 and result["undetected_per_class"]["fear"] == 0
    assert table.set_index("photo").loc["image/blank.jpg", "predicted"] == "(no face)"
    assert result["accuracy"] <= 0.5  # the missed face is wrong whatever the model says


@pytest.mark.realdata
def test_evaluate_with_detector_turns_a_phone_photo_upright_as_predict_does(
    tmp_path, model_path, expw_sample
):
    """A photo stored sideways with EXIF orientation 6 (as phones save them), its box given in the
    stored pixels: the detector searches the upright photo, as on the Classify page, and finds the
    face (the frontal cascade misses it sideways), and the face is classified as the upright copy's."""
    from fer.evaluate import evaluate

    real = "afraid_man_208.jpg"
    upright = Image.open(expw_sample / "image" / real).convert("RGB")
    width, height = upright.size
    box = (38, 28, 152, 142)  # top, left, bottom, right in the upright photo
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # undoes orientation 6's ROTATE_270
    top, left, bottom, right = images.upright_box(box, width, height, Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    answers = {}
    for name, image, line_box, options in (
        ("upright", upright, (38, 28, 142, 152), {}),
        ("phone", stored, (top, left, right, bottom), {"exif": exif}),
    ):
        root = tmp_path / name
        (root / "image").mkdir(parents=True)
        image.save(root / "image" / real, quality=95, **options)
        (root / "label.lst").write_text(f"{real} 0 {' '.join(str(round(v)) for v in line_box)} 93.9 2\n")
        result, table = evaluate(str(root), model_path, split="all", detector="haar")
        assert result["n"] == 1 and result["undetected"] == 0, name
        answers[name] = table.iloc[0]
    assert answers["phone"]["predicted"] == answers["upright"]["predicted"]


def test_annotated_photo_boxes_each_face_in_its_label_colour(predictor):
    photo = Image.new("RGB", (200, 160), "white")
    result = predict.PhotoResult(
        200, 160, [predict.Face((20, 30, 120, 110), "happy", {"happy": 0.9, "sad": 0.1})]
    )
    drawn = np.asarray(predict.annotate(photo, result, ["happy", "sad"]))
    colour = predict.label_colour("happy", ["happy", "sad"])
    rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    assert tuple(drawn[70, 30]) == rgb  # the left edge of the box, halfway down
    assert tuple(drawn[70, 70]) == (255, 255, 255)  # inside the box the photo is untouched


def test_results_table_keeps_photos_without_faces():
    face = predict.Face((1, 2, 3, 4), "sad", {"happy": 0.25, "sad": 0.75})
    table = predict.results_table(
        [("a.jpg", predict.PhotoResult(10, 10, [face])), ("empty.jpg", predict.PhotoResult(10, 10))],
        ["happy", "sad"],
    )
    assert list(table["photo"]) == ["a.jpg", "empty.jpg"]
    assert table.loc[0, "label"] == "sad" and table.loc[0, "p_sad"] == 0.75
    assert table.loc[1, "label"] == "" and table.loc[1, "face"] == 0
