"""Every bad input the README's "Bad input" section lists, one test or parametrized case each, on tiny
generated files: each gets a clear message, and nothing else is lost.

Many of these are also covered in depth by the module's own tests (test_datasets, test_preprocess,
test_predict, test_uploads, test_report); this file is the one list a reader checks against the
README's "Bad input" section.
"""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import EVIL, expw, face_crop, folders, known_run, lambda_model, photo, write_csv, zip_of
from PIL import Image

from fer import cli, images, modelfile, predict, report
from fer import datasets as D
from fer import preprocess as P
from fer import runs as R
from fer import train as T
from fer import uploads as U
from fer.config import ModelConfig, TrainConfig
from fer.faces import load_splits
from fer.labels import LABELS
from fer.modelfile import ModelFileError, load_model, save_model
from fer.models import build
from fer.summary import summarize

WHOLE = (float("nan"),) * 4
SETTINGS = P.PrepSettings(size=48)


def prepare(dataset: D.Dataset, tmp_path: Path, **options) -> P.Prepared:
    return P.prepare(dataset, SETTINGS, cache_dir=tmp_path / "cache", workers=1, **options)


def reasons(prepared: P.Prepared) -> dict[str, str]:
    return dict(zip(prepared.skipped["photo"], prepared.skipped["reason"]))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gray_blocks(width: int, height: int, seed: int = 0) -> Image.Image:
    """A grayscale picture of 8-pixel random blocks: any turn or flip of it shows."""
    blocks = np.random.default_rng(seed).integers(0, 256, (height // 8 + 1, width // 8 + 1), dtype=np.uint8)
    return Image.fromarray(np.kron(blocks, np.ones((8, 8), dtype=np.uint8))[:height, :width])


def png_claiming(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG of width x height: a few kB that would decode to width * height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, packer = b"\0" * (1 + (width + 7) // 8), zlib.compressobj(6)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """An untrained seed model saved the way `fer train` saves models."""
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model = build(ModelConfig(arch="seed", image_size=48, num_classes=7))
    save_model(model, path, {"labels": list(LABELS), "image_size": 48, "margin": 0.0})
    return path


@pytest.fixture(scope="module")
def predictor(model_path) -> predict.Predictor:
    return predict.Predictor(model_path, detector="haar")


# Photos that cannot be read ------------------------------------------------------------------------


def unreadable_photos(folder: Path) -> dict[str, str]:
    """Bad photos written into `folder`: file name -> what the dataset's skip reason says."""
    good = photo(folder / "source.jpg", (96, 80)).read_bytes()
    (folder / "source.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(good[: len(good) * 6 // 10])
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("meeting notes, saved with the wrong suffix\n")
    return {
        "truncated.jpg": "photo is truncated",
        "corrupt.jpg": "photo is corrupt or not an image",
        "zero.png": "photo is an empty file (0 bytes)",
        "notes.jpg": "photo is corrupt or not an image",
    }


def test_corrupt_truncated_zero_byte_and_non_image_photos_in_a_dataset_skip_just_those(tmp_path):
    root = folders(tmp_path / "faces", {"happy": 3, "sad": 2})
    expected = unreadable_photos(root / "sad")
    prepared = prepare(D.load(root), tmp_path)
    assert sorted(prepared.faces["photo"]) == [f"happy/img{i}.png" for i in range(3)] + [
        "sad/img0.png",
        "sad/img1.png",
    ]
    got = reasons(prepared)
    assert set(got) == {f"sad/{name}" for name in expected}
    for name, start in expected.items():
        assert got[f"sad/{name}"].startswith(start), got[f"sad/{name}"]
    assert not any(
        str(tmp_path) in reason for reason in got.values()
    )  # reasons name photos, not server paths


def test_corrupt_truncated_zero_byte_and_non_image_photos_in_predict_refuse_just_that_photo(
    tmp_path, capsys, model_path
):
    expected = unreadable_photos(tmp_path)
    good = [tmp_path / f"good{i}.png" for i in range(2)]
    for i, path in enumerate(good):
        face_crop(48 + i).save(path)
    bad = [tmp_path / name for name in expected]
    code = cli.main(
        ["predict", *map(str, [good[0], *bad, good[1]]), "--model", str(model_path)] + ["--whole", "--json"]
    )
    result = json.loads(capsys.readouterr().out)["photos"]
    assert code == 1  # some photos could not be read; the others still have their answers
    assert [len(p["faces"]) for p in result] == [1, 0, 0, 0, 0, 1]
    assert result[0]["error"] is None and result[-1]["error"] is None
    for entry in result[1:-1]:
        assert "not an image file" in entry["error"] or "not a readable image" in entry["error"], entry


# Decompression bombs --------------------------------------------------------------------------------

BOMBS = {
    "70 megapixels (over our limit)": (10_000, 7_000),
    "108 megapixels (Pillow warns)": (12_000, 9_000),
    "400 megapixels (Pillow refuses)": (20_000, 20_000),
}


@pytest.mark.parametrize("size", BOMBS.values(), ids=BOMBS.keys())
def test_a_photo_of_hundreds_of_megapixels_in_a_dataset_is_skipped_as_too_large(tmp_path, size):
    root = folders(tmp_path / "faces", {"happy": 2, "sad": 1})
    bomb = png_claiming(*size)
    assert len(bomb) < 200_000
    (root / "sad" / "bomb.png").write_bytes(bomb)
    prepared = prepare(D.load(root), tmp_path)
    assert len(prepared.faces) == 3
    reason = reasons(prepared)["sad/bomb.png"]
    assert reason.startswith("photo is too large to decode safely"), reason


@pytest.mark.parametrize("size", BOMBS.values(), ids=BOMBS.keys())
def test_a_photo_of_hundreds_of_megapixels_in_predict_is_refused_as_too_large(size):
    with pytest.raises(images.PhotoError, match="too large"):
        images.open_photo(png_claiming(*size))


# Awkward but valid photos ---------------------------------------------------------------------------


def exif_rotated(orientation: int, fmt: str) -> tuple[bytes, Image.Image]:
    """A photo stored sideways with the EXIF orientation that turns it upright, and the upright picture."""
    upright = gray_blocks(48, 72)
    stored = upright.transpose(
        {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    )  # the inverse of what orientation 6 / 8 asks a viewer to do
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 95} if fmt == "JPEG" else {}
    return encode(stored.convert("RGB"), fmt, exif=exif, **options), upright


AWKWARD = {
    "exif-rotated jpeg": (lambda: exif_rotated(6, "JPEG")[0], "jpg", None),
    "exif-rotated png": (lambda: exif_rotated(8, "PNG")[0], "png", None),
    "grayscale": (lambda: encode(Image.new("L", (40, 30), 123), "PNG"), "png", 123),
    "rgba": (lambda: encode(Image.new("RGBA", (40, 30), (255, 0, 0, 255)), "PNG"), "png", 76),
    # See-through pixels are laid on white in the dataset as on the Classify page (luma 202, not 150).
    "half-transparent rgba": (
        lambda: encode(Image.new("RGBA", (40, 30), (0, 255, 0, 128)), "PNG"),
        "png",
        202,
    ),
    "half-transparent gray": (lambda: encode(Image.new("LA", (40, 30), (90, 200)), "PNG"), "png", 126),
    "cmyk": (lambda: encode(Image.new("CMYK", (40, 30), (0, 0, 0, 128)), "JPEG", quality=95), "jpg", 127),
    "16-bit": (lambda: encode(Image.fromarray(np.full((30, 40), 40000, np.uint16)), "PNG"), "png", 155),
}


@pytest.mark.parametrize("case", AWKWARD)
def test_exif_rotated_grayscale_rgba_cmyk_and_16_bit_photos_give_the_face_prediction_sees(
    tmp_path, case, predictor
):
    """The dataset's face is the one prediction crops from the same photo, so training cannot drift
    from use; the photo's other faces are kept."""
    make, suffix, value = AWKWARD[case]
    data = make()
    root = folders(tmp_path / "faces", {"happy": 2})
    (root / "sad").mkdir()
    (root / "sad" / f"odd.{suffix}").write_bytes(data)
    prepared = prepare(D.load(root), tmp_path)
    assert len(prepared.faces) == 3 and prepared.skipped.empty
    face = prepared.images[list(prepared.faces["photo"]).index(f"sad/odd.{suffix}")].astype(int)
    seen = images.crop_faces(images.open_photo(data).convert("L"), [WHOLE], SETTINGS)[0].astype(int)
    assert np.abs(face - seen).mean() < 2, np.abs(face - seen).mean()
    if value is not None:
        assert np.abs(face - value).max() <= 2, np.unique(face)
    result = predictor.predict(data, whole=True)
    assert result.faces or result.not_a_face  # read either way; a flat picture is not a face
    for face in result.faces:
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_an_exif_rotated_face_is_turned_upright_not_left_as_stored(tmp_path):
    data, upright = exif_rotated(6, "PNG")
    root = folders(tmp_path / "faces", {"happy": 1})
    (root / "sad").mkdir()
    (root / "sad" / "phone.png").write_bytes(data)
    prepared = prepare(D.load(root), tmp_path)
    face = prepared.images[list(prepared.faces["photo"]).index("sad/phone.png")].astype(int)
    want = images.crop_faces(upright, [WHOLE], SETTINGS)[0].astype(int)
    stored = images.crop_faces(Image.open(io.BytesIO(data)).convert("L"), [WHOLE], SETTINGS)[0].astype(int)
    assert np.abs(face - want).mean() < 2
    assert np.abs(face - stored).mean() > 20  # the sideways picture really is different
    assert images.open_photo(data).size == upright.size


# Boxes, confidences, labels, label.lst lines, CSV columns --------------------------------------------

GOOD_LINE = "a.png 0 10 10 50 50 0.9 3"


def expw_with(tmp_path: Path, line: str) -> D.Dataset:
    return D.load(expw(tmp_path / "expw", [GOOD_LINE, line, "b.png 0 5 5 40 40 0.8 4"], ["a.png", "b.png"]))


BOXES = {
    "outside the photo": ("a.png 1 100 120 150 170 0.9 3", "box lies outside the photo"),
    "inverted": ("a.png 1 50 10 60 20 0.9 3", "box has zero or negative area"),
    "zero area": ("a.png 1 10 10 50 10 0.9 3", "box has zero or negative area"),
}


@pytest.mark.parametrize("case", BOXES)
def test_a_box_outside_the_photo_inverted_or_of_zero_area_skips_that_face_alone(tmp_path, case):
    line, message = BOXES[case]
    prepared = prepare(expw_with(tmp_path, line), tmp_path)
    assert list(zip(prepared.faces["photo"], prepared.faces["face"])) == [
        ("image/a.png", 0),
        ("image/b.png", 0),
    ]
    [(photo_name, face, reason)] = prepared.skipped[["photo", "face", "reason"]].itertuples(index=False)
    assert (photo_name, face) == ("image/a.png", 1) and reason.startswith(message), reason


def test_a_box_partly_outside_the_photo_is_clipped_and_kept(tmp_path):
    prepared = prepare(expw_with(tmp_path, "a.png 1 60 70 120 130 0.9 3"), tmp_path)  # photo is 96x80
    assert len(prepared.faces) == 3 and prepared.skipped.empty


CONFIDENCES = {
    "NaN": ("nan", "confidence is not a number (got 'nan')"),
    "negative": ("-0.5", "confidence is negative (got -0.5)"),
    "text": ("high", "confidence is not a number (got 'high')"),
}


@pytest.mark.parametrize("case", CONFIDENCES)
def test_a_nan_negative_or_text_confidence_skips_that_face_alone(tmp_path, case):
    text, message = CONFIDENCES[case]
    dataset = expw_with(tmp_path, f"a.png 1 10 10 50 50 {text} 3")
    assert len(dataset.faces) == 2
    assert list(dataset.skipped["reason"]) == [message]
    assert summarize(dataset)["skipped_reasons"] == {message.split(" (")[0]: 1}


def test_unknown_label_names_are_kept_as_their_own_label_and_unknown_codes_skipped(tmp_path):
    """A label set of one's own is allowed (DESIGN.md): a name that is none of the seven becomes its
    own label, listed after them, so a typo shows up in the counts; a number that is no label's
    code is skipped with the codes it should be."""
    root = folders(tmp_path / "faces", {"Happiness": 1, "Bored": 2, "happy": 1})
    dataset = D.load(root)
    assert dataset.labels == ["happy", "bored"]
    assert summarize(dataset)["per_label"] == {
        "happy": {"faces": 2, "kept": 2},
        "bored": {"faces": 2, "kept": 2},
    }

    coded = expw_with(tmp_path / "codes", "a.png 1 10 10 50 50 0.9 7")
    assert list(coded.skipped["reason"]) == [
        "unknown label '7' (expected 0-6: angry, disgust, fear, happy, sad, surprise, neutral)"
    ]
    photo(tmp_path / "csv" / "a.png")
    table = write_csv(
        tmp_path / "csv" / "faces.csv",
        ["image", "label"],
        [("a.png", "Bored"), ("a.png", "9"), ("a.png", "sad")],
    )
    csv = D.load(table)
    assert list(csv.faces["label"]) == ["bored", "sad"]
    assert list(csv.skipped["reason"]) == ["unknown label '9'"]


LINES = {"too few fields": ("a.png 1 10 10 50", "got 5"), "too many fields": (GOOD_LINE + " extra", "got 9")}


@pytest.mark.parametrize("case", LINES)
def test_a_label_lst_line_with_too_few_or_too_many_fields_is_skipped_with_its_line_number(tmp_path, case):
    line, count = LINES[case]
    dataset = expw_with(tmp_path, line)
    assert len(dataset.faces) == 2
    [reason] = dataset.skipped["reason"]
    assert reason.startswith(
        "malformed line 2: expected 8 fields (image face top left right bottom confidence label)"
    )
    assert reason.endswith(count)


def test_a_csv_with_none_of_the_expected_columns_is_one_error_naming_its_columns(tmp_path, capsys):
    table = write_csv(tmp_path / "sales.csv", ["region", "amount"], [("north", 3), ("south", 5)])
    with pytest.raises(
        D.DatasetError,
        match="cannot tell which column holds the image and the label; its columns are region, amount",
    ):
        D.load(table)
    assert cli.main(["summary", str(table)]) == 2
    assert "its columns are region, amount" in capsys.readouterr().err


# Datasets training cannot use -----------------------------------------------------------------------


def test_a_dataset_empty_after_filtering_keeps_0_and_training_refuses_naming_the_threshold(tmp_path):
    root = expw(
        tmp_path / "expw",
        [f"p{i}.png 0 5 5 40 40 {0.1 + i / 20:.2f} {i % 7}" for i in range(14)],
        [f"p{i}.png" for i in range(14)],
    )
    summary = summarize(D.load(root), min_confidence=0.95)
    assert (summary["faces"], summary["kept"]) == (14, 0)
    assert all(row["kept"] == 0 for row in summary["per_label"].values())
    config = TrainConfig(datasets=(str(root),), arch="seed", epochs=1, min_confidence=0.95)
    message = "training needs faces of at least two labels; the data at min_confidence 0.95 holds no face; lower the confidence threshold"
    with pytest.raises(D.DatasetError, match=message):
        T.train(config, tmp_path / "run")
    status = R.read_status(tmp_path / "run")
    assert status["state"] == "failed" and message in status["error"]


def test_a_dataset_with_one_label_is_refused_by_training(tmp_path):
    root = folders(tmp_path / "faces", {"happy": 6})
    config = TrainConfig(datasets=(str(root),), arch="seed", epochs=1)
    with pytest.raises(
        D.DatasetError,
        match="training needs faces of at least two labels; the data holds only 6 faces labelled happy; add faces of another label$",
    ):
        load_splits(config)


# Uploaded zips (fer.uploads; test_uploads.py checks each in depth) ----------------------------------


def link_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("expw/label.lst", "a.png 0 1 1 20 20 50 3\n")
        link = zipfile.ZipInfo("expw/image/a.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return path


def claims_gigabytes(path: Path) -> Path:
    """A 200-byte zip whose headers say its one member expands to 3.9 GB (what a bomb declares)."""
    zip_of(path, {"expw/label.lst": b"a.png 0 1 1 20 20 50 3\n"})
    data = bytearray(path.read_bytes())
    size = struct.pack("<I", 3_900_000_000)
    data[22:26] = size  # local header: uncompressed size
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = size
    path.write_bytes(bytes(data))
    return path


ZIPS = {  # case: (make the zip, limits other than the defaults, message)
    "../ path": (
        lambda p: zip_of(p, {"expw/label.lst": b"x", "../evil.txt": b"x"}),
        {},
        "climbs out of the folder",
    ),
    "absolute path": (lambda p: zip_of(p, {"/tmp/evil.txt": b"x"}), {}, "absolute path"),
    "link": (link_zip, {}, "symbolic link"),
    # 300,001 members take a while to write: the same rule, checked at 5.
    "too many files": (
        lambda p: zip_of(p, {f"expw/image/{i}.png": b"" for i in range(6)}),
        {"max_files": 5},
        "holds 6 members, more than the 5 allowed",
    ),
    "tiny file that expands to gigabytes": (
        claims_gigabytes,
        {},
        "expands to 3,900,000,000 bytes, more than the 2,147,483,648 allowed",
    ),
    "tiny file that compresses 3000 times": (
        lambda p: zip_of(p, {"faces.csv": b"\0" * (3 * 1024**2)}),
        {},
        "looks like a zip bomb",
    ),
}


@pytest.mark.parametrize("case", ZIPS)
def test_an_uploaded_zip_with_unsafe_members_is_refused_and_nothing_written(tmp_path, case):
    make, limits, message = ZIPS[case]
    zip_path = make(tmp_path / "upload.zip")
    assert zip_path.stat().st_size < 50_000
    uploads = tmp_path / "uploads"
    with pytest.raises(U.UploadError, match=message):
        U.save_upload(zip_path, "upload.zip", uploads, **limits)
    assert not uploads.exists() or not any(uploads.iterdir())
    assert not (tmp_path / "evil.txt").exists()


# Uploaded model files ---------------------------------------------------------------------------------


def plain_keras_model(path: Path) -> Path:
    """A good Keras model saved by Keras alone, without the fer.json that says its labels."""
    build(ModelConfig(arch="seed", image_size=48, num_classes=2)).save(path)
    return path


def with_metadata(metadata: dict):
    def make(path: Path) -> Path:
        save_model(build(ModelConfig(arch="seed", image_size=48, num_classes=7)), path, metadata)
        return path

    return make


def outside_keras(path: Path) -> Path:
    """A model whose config names a function of another Python module (os.system) as a layer."""
    lambda_model(path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    config["config"]["layers"][1].update(module="os", class_name="system")
    entries["config.json"] = json.dumps(config).encode()
    path.unlink()
    return zip_of(path, entries)


MODELS = {
    "text file": (
        lambda p: p.write_text("hello, I am a model") and p,
        "not a Keras model file: a .keras file is a zip",
    ),
    "zip of something else": (lambda p: zip_of(p, {"notes.txt": b"x"}), "not a model saved by fer train"),
    "keras model without fer.json": (
        plain_keras_model,
        r"not a model saved by fer train \(its fer.json cannot be read",
    ),
    "fer.json without labels": (
        with_metadata({"image_size": 48}),
        "must list two or more distinct label names",
    ),
    "labels that do not fit the model": (
        with_metadata({"labels": ["happy", "sad"], "image_size": 48}),
        r"give one probability per label \(shape \(None, 2\)\).*gives \(None, 7\)",
    ),
    "Lambda layer": (lambda_model, r"refused: it has a Lambda layer \(lambda\w*\), which holds Python code"),
    "code from another module": (outside_keras, "an object from the Python module 'os', outside Keras"),
    "zip bomb": (claims_gigabytes, "expands to 3,900,000,000 bytes"),
    "entry that climbs out": (
        lambda p: zip_of(p, {"../config.json": b"{}"}),
        r"not a safe model file: .*climbs out of the folder with '\.\.'",
    ),
    "symbolic link": (link_zip, "not a safe model file: the zip holds a symbolic link"),
}


@pytest.mark.parametrize("case", MODELS)
def test_an_uploaded_model_that_is_not_a_safe_keras_model_is_refused_and_not_kept(tmp_path, case):
    make, message = MODELS[case]
    path = make(tmp_path / "upload.keras")
    kept = tmp_path / "models"
    with pytest.raises(ModelFileError, match=message) as error:
        modelfile.check_model_file(path.read_bytes(), kept)
    assert isinstance(error.value, ValueError)
    assert str(tmp_path) not in str(error.value)  # the visitor sees no server path
    assert not kept.exists() or not any(kept.iterdir())


LOADS = {
    "text file": r"is not a model saved by fer train \(its fer.json cannot be read: BadZipFile",
    "keras model without fer.json": MODELS["keras model without fer.json"][1],
    "Lambda layer": MODELS["Lambda layer"][1],
    "code from another module": MODELS["code from another module"][1],
}


@pytest.mark.parametrize("case", LOADS)
def test_loading_such_a_model_is_a_model_file_error_not_an_arbitrary_exception(tmp_path, case):
    """What the CLI (--model) and the dashboard's model list load goes through the same refusals."""
    path = MODELS[case][0](tmp_path / "bad.keras")
    for load in (load_model, predict.Predictor):
        with pytest.raises(ModelFileError, match=LOADS[case]):
            load(path)


def test_a_good_uploaded_model_is_kept_under_its_hash_and_predicts(tmp_path, model_path):
    data = model_path.read_bytes()
    kept = modelfile.check_model_file(data, tmp_path / "models")
    assert kept.parent == tmp_path / "models" and kept.suffix == ".keras" and len(kept.stem) == 16
    assert kept.read_bytes() == data
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no staging file left
    assert modelfile.check_model_file(data, tmp_path / "models") == kept  # the same bytes again
    assert predict.Predictor(kept, detector="haar").labels == list(LABELS)


# The report ---------------------------------------------------------------------------------------------


def test_labels_containing_html_are_escaped_in_the_report(tmp_path):
    page = report.build_report(known_run(tmp_path / "run"))
    assert EVIL not in page and "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
