"""Filtering, cropping, grayscale, the on-disk cache and export, on tiny photos written per test."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import expw, expw_faces, fer_pixels, folders, photo, pixel_text, write_csv
from PIL import Image

from fer import datasets as D
from fer import export, images
from fer import preprocess as P
from fer import splits as S
from fer.summary import format_summary, summarize

WHOLE = (math.nan,) * 4


def one_face(path, box=WHOLE, size=48, margin=0.0) -> np.ndarray | str:
    return P.process_photo(path, [box], P.PrepSettings(size=size, margin=margin))[0]


def cache_dirs(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("faces-"))


# Filtering and summary ----------------------------------------------------------------------------


def test_keep_mask_thresholds_and_keeps_faces_without_confidence():
    faces = pd.DataFrame({"confidence": [0.2, 0.5, math.nan, 0.9]})
    assert P.keep_mask(faces, None).tolist() == [True, True, True, True]
    assert P.keep_mask(faces, 0).tolist() == [True, True, True, True]
    assert P.keep_mask(faces, 0.5).tolist() == [False, True, True, True]
    assert P.keep_mask(faces, 0.51).tolist() == [False, False, True, True]
    assert P.keep_mask(faces, 0.95).tolist() == [False, False, True, False]


@pytest.mark.parametrize("threshold", [-0.1, -1, math.nan])
def test_keep_mask_rejects_an_invalid_threshold(threshold):
    with pytest.raises(ValueError, match="min_confidence must be a number of at least 0"):
        P.keep_mask(pd.DataFrame({"confidence": [0.5]}), threshold)


def summary_dataset(tmp_path) -> D.Dataset:
    for name in ("a.png", "b.png", "c.png"):
        photo(tmp_path / name)
    box = (1, 1, 20, 20)
    return D.load(
        write_csv(
            tmp_path / "faces.csv",
            ["image", "x", "y", "w", "h", "confidence", "label", "split"],
            [
                ("a.png", *box, 0.9, "happy", "train"),
                ("a.png", *box, 0.2, "happy", "train"),
                ("b.png", *box, 0.5, "sad", "train"),
                ("b.png", *box, 0.4, "sad", "val"),
                ("c.png", *box, 0.95, "angry", "test"),
                ("c.png", *box, 0.1, "happy", "test"),
                ("c.png", *box, 0.8, 9, "test"),  # unknown label: skipped
            ],
        )
    )


def test_summary_counts_kept_and_dropped_per_label_and_split(tmp_path):
    summary = summarize(summary_dataset(tmp_path), 0.45)
    assert summary["format"] == "csv"
    assert (summary["faces"], summary["kept"], summary["dropped"], summary["photos"]) == (6, 3, 3, 3)
    assert summary["labels"] == ["angry", "happy", "sad"]
    assert summary["per_label"] == {
        "angry": {"faces": 1, "kept": 1},
        "happy": {"faces": 3, "kept": 1},
        "sad": {"faces": 2, "kept": 1},
    }
    assert summary["per_split"] == {
        "train": {"faces": 3, "kept": 2, "per_label": {"angry": 0, "happy": 1, "sad": 1}},
        "val": {"faces": 1, "kept": 0, "per_label": {"angry": 0, "happy": 0, "sad": 0}},
        "test": {"faces": 2, "kept": 1, "per_label": {"angry": 1, "happy": 0, "sad": 0}},
    }
    assert summary["split_source"] == "dataset"
    assert summary["confidence"] == {"min": 0.1, "median": 0.45, "max": 0.95, "missing": 0}
    assert summary["skipped"] == 1
    assert summary["skipped_reasons"] == {"unknown label '9'": 1}
    assert summary["skipped_faces"] == [{"photo": "c.png", "face": 2, "reason": "unknown label '9'"}]
    text = format_summary(summary)
    assert "kept 3 at min confidence 0.45, dropped 3" in text
    assert "happy" + " " * 7 + "       3       1       1       0       0" in text
    assert "total" + " " * 7 + "       6       3       2       0       1" in text


def test_summary_without_threshold_keeps_every_face(tmp_path):
    dataset = summary_dataset(tmp_path)
    for threshold in (None, 0):
        summary = summarize(dataset, threshold)
        assert (summary["kept"], summary["dropped"]) == (6, 0)
        assert summary["per_label"]["happy"] == {"faces": 3, "kept": 3}
    assert "kept 6 (no confidence threshold)" in format_summary(summarize(dataset))


def test_summary_of_a_dataset_without_split_or_confidence(tmp_path):
    dataset = D.load(folders(tmp_path / "faces", {"happy": 20, "sad": 10}))
    summary = summarize(dataset, 0.9, S.SplitSettings(seed=3))
    assert summary["split_source"] == "drawn by photo, seed 3"
    assert summary["confidence"] is None
    assert summary["kept"] == 30  # faces without a confidence are kept
    assert {name: part["faces"] for name, part in summary["per_split"].items()} == {
        "train": 24,
        "val": 3,
        "test": 3,
    }
    assert summary["per_split"]["val"]["per_label"] == {"happy": 2, "sad": 1}


# Cropping -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, margin, region",
    [
        ((10, 20, 30, 40), 0.0, (20, 10, 40, 30)),  # inside: (top, left, bottom, right) -> (l, t, r, b)
        ((-5, -10, 30, 40), 0.0, (0, 0, 40, 30)),  # over the top and left edges
        ((50, 60, 120, 150), 0.0, (60, 50, 100, 80)),  # over the bottom and right edges
        ((-10, -10, 200, 200), 0.0, (0, 0, 100, 80)),  # over every edge
        ((10.5, 20.2, 30.1, 40.9), 0.0, (20, 10, 41, 31)),  # fractions widen to whole pixels
        ((20, 20, 40, 60), 0.5, (0, 10, 80, 50)),  # margin: half the width / height on each side
        ((0, 0, 20, 20), 0.25, (0, 0, 25, 25)),  # margin clipped at the top-left corner
        ((70, 90, 80, 100), 1.0, (80, 60, 100, 80)),  # margin clipped at the bottom-right corner
        (WHOLE, 0.5, (0, 0, 100, 80)),  # NaN box: the whole photo, no margin
    ],
)
def test_crop_box(box, margin, region):
    assert images.crop_box(box, 100, 80, margin) == region


@pytest.mark.parametrize(
    "box",
    [
        (10, 100, 30, 140),  # right of the photo
        (10, 120, 30, 140),
        (80, 10, 90, 20),  # below (touching the bottom edge from outside)
        (-30, 10, -5, 20),  # above
        (10, -50, 30, -1),  # left
        (10, -50, 30, 0),  # ends exactly at the left edge
    ],
)
def test_crop_box_outside_the_photo_is_a_face_error(box):
    with pytest.raises(images.FaceError, match="box lies outside the photo .*photo is 100x80"):
        images.crop_box(box, 100, 80, 0.0)


@pytest.mark.parametrize("size", [48, 96, 224])
@pytest.mark.parametrize("name", ["p.png", "p.jpg"])
def test_process_photo_makes_square_uint8_faces_of_the_requested_size(tmp_path, size, name):
    path = photo(tmp_path / name, (120, 90))
    faces = P.process_photo(path, [WHOLE, (10, 10, 50, 70), (0, 100, 90, 120)], P.PrepSettings(size=size))
    for face in faces:
        assert isinstance(face, np.ndarray)
        assert face.shape == (size, size)
        assert face.dtype == np.uint8


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def palette_image() -> Image.Image:
    image = Image.new("P", (64, 50), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 1 is pure blue
    return image


@pytest.mark.parametrize(
    "make, name, expected",
    [
        (lambda: Image.new("RGB", (64, 50), (255, 0, 0)), "rgb.png", 76),  # ITU-R 601 luma of red
        (lambda: Image.new("RGBA", (64, 50), (0, 255, 0, 128)), "rgba.png", 202),  # half green on white
        (lambda: Image.new("CMYK", (64, 50), (0, 0, 0, 128)), "cmyk.tif", 127),
        (lambda: Image.fromarray(np.full((50, 64), 40000, np.uint16)), "deep.png", 155),  # 16-bit scaled
        (
            lambda: Image.fromarray(np.full((50, 64), 200, np.uint16)),
            "dark16.png",
            200,
        ),  # 16-bit, 8-bit range
        (palette_image, "palette.png", 29),  # luma of blue
        (lambda: Image.new("LA", (64, 50), (90, 200)), "la.png", 126),  # 90 at 200/255 on white
        (lambda: Image.new("1", (64, 50), 1), "bilevel.png", 255),
        (lambda: Image.new("L", (64, 50), 123), "gray.png", 123),
    ],
)
def test_process_photo_converts_every_mode_to_grayscale(tmp_path, make, name, expected):
    path = save(make(), tmp_path / name)
    face = one_face(path)
    assert face.shape == (48, 48)
    assert face.dtype == np.uint8
    assert (face == expected).all(), np.unique(face)


@pytest.mark.parametrize(
    "mode, colour, expected", [("CMYK", (0, 0, 0, 128), 127), ("RGB", (255, 0, 0), 76), ("L", 200, 200)]
)
def test_process_photo_converts_jpegs_to_grayscale(tmp_path, mode, colour, expected):
    path = save(Image.new(mode, (64, 50), colour), tmp_path / "p.jpg", quality=95)
    face = one_face(path)
    assert np.abs(face.astype(int) - expected).max() <= 2, np.unique(face)


def test_process_photo_margin_widens_the_crop(tmp_path):
    pixels = np.zeros((100, 100), np.uint8)
    pixels[40:60, 40:60] = 255
    path = save(Image.fromarray(pixels), tmp_path / "square.png")
    tight = one_face(path, (40, 40, 60, 60))
    assert (tight[1:-1, 1:-1] == 255).all()  # the outermost ring blends with the photo around the box
    wide = one_face(path, (40, 40, 60, 60), margin=0.5)  # the 40x40 region (30, 30)-(70, 70)
    assert wide[0, 0] == 0 and wide[-1, -1] == 0 and wide[24, 24] == 255
    assert abs(wide.mean() - 255 / 4) < 8


def test_process_photo_crops_the_box(tmp_path):
    pixels = np.zeros((80, 120), np.uint8)
    pixels[:, 60:] = 200  # right half light
    path = save(Image.fromarray(pixels), tmp_path / "halves.png")
    assert (one_face(path, (10, 5, 70, 55)) == 0).all()
    assert (one_face(path, (10, 65, 70, 115)) == 200).all()


def block_jpeg(path, width, height, seed=0):
    """A JPEG of 40-pixel random colour blocks: sharp edges that a misplaced crop would show."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((40, 40, 1), dtype=np.uint8))[:height, :width]
    return save(Image.fromarray(pixels), path, quality=95)


@pytest.mark.parametrize("width, height", [(1000, 800), (1001, 803)])
@pytest.mark.parametrize(
    "box",
    [
        (300, 400, 380, 470),  # small: decoded at full scale
        (100, 100, 700, 900),  # large: decoded at 1/8 scale
        (500, 850, 790, 1000),  # large, near the bottom-right corner
        WHOLE,
    ],
)
def test_large_jpeg_fast_decode_matches_a_plain_decode(tmp_path, width, height, box):
    path = block_jpeg(tmp_path / "big.jpg", width, height)
    face = one_face(path, box)
    region = images.crop_box(box, width, height, 0.0)
    with Image.open(path) as image:
        plain = np.asarray(image.convert("L").resize((48, 48), Image.Resampling.BILINEAR, box=region))
    assert face.shape == (48, 48)
    assert np.abs(face.astype(int) - plain.astype(int)).mean() < 3


def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = block_jpeg(tmp_path / "big.jpg", 1001, 803)
    image, width, height, scale = images.open_gray(path, [(100, 100, 700, 900)], P.PrepSettings(size=48))
    assert (width, height) == (1001, 803)
    assert image.size == (126, 101)  # ceil(1001 / 8), ceil(803 / 8): the fast path really ran
    assert scale == 1 / 8
    assert image.mode == "L"


def test_process_photo_reports_unreadable_photos(tmp_path):
    good = photo(tmp_path / "good.jpg")
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) * 6 // 10])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 20)
    (tmp_path / "zero.png").write_bytes(b"")
    boxes = [WHOLE, (1, 1, 20, 20)]
    settings = P.PrepSettings()
    truncated = P.process_photo(tmp_path / "truncated.jpg", boxes, settings)
    assert len(truncated) == 2 and truncated[0] == truncated[1]
    assert truncated[0].startswith("photo is truncated (OSError: image file is truncated")
    for name in ("corrupt.jpg", "zero.png"):
        reasons = P.process_photo(tmp_path / name, boxes, settings)
        assert all(r.startswith("photo is corrupt or not an image (UnidentifiedImageError") for r in reasons)
    assert P.process_photo(tmp_path / "gone.jpg", boxes, settings) == ["photo not found"] * 2


def test_process_photo_skips_only_the_box_outside_the_photo(tmp_path):
    path = photo(tmp_path / "p.jpg", (96, 80))
    inside, outside = P.process_photo(path, [(10, 10, 50, 50), (100, 10, 150, 50)], P.PrepSettings())
    assert isinstance(inside, np.ndarray)
    assert np.array_equal(inside, one_face(path, (10, 10, 50, 50)))
    assert outside == "box lies outside the photo (box top=100 left=10 bottom=150 right=50; photo is 96x80)"


def test_settings_are_validated():
    for size in (47, 225, 300):
        with pytest.raises(ValueError, match=f"size must be between 48 and 224 pixels, got {size}"):
            P.PrepSettings(size=size)
    for margin in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"margin must be between 0 and 1 .*got {margin}"):
            P.PrepSettings(margin=margin)


def test_to_unit_scales_to_zero_one():
    unit = P.to_unit(np.array([[0, 51, 255]], np.uint8))
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, [[0.0, 0.2, 1.0]], rtol=1e-6)


# Preparing datasets -------------------------------------------------------------------------------


def test_prepare_skips_bad_photos_and_keeps_the_rest(tmp_path):
    root = folders(tmp_path / "faces", {"happy": 1, "sad": 1}, suffix=".jpg")
    data = (root / "happy" / "img0.jpg").read_bytes()
    (root / "happy" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "happy" / "corrupt.jpg").write_bytes(b"garbage" * 10)
    (root / "sad" / "text.png").write_text("this is not a png")
    (root / "sad" / "empty.jpg").write_bytes(b"")
    photo(root / "sad" / "gone.png")
    dataset = D.load(root)
    (root / "sad" / "gone.png").unlink()  # vanishes between reading and preprocessing
    prepared = P.prepare(dataset, P.PrepSettings(size=48), cache_dir=tmp_path / "cache", workers=1)
    assert prepared.faces["photo"].tolist() == ["happy/img0.jpg", "sad/img0.jpg"]
    assert prepared.images.shape == (2, 48, 48)
    reasons = dict(zip(prepared.skipped["photo"], prepared.skipped["reason"]))
    assert sorted(reasons) == [
        "happy/corrupt.jpg",
        "happy/truncated.jpg",
        "sad/empty.jpg",
        "sad/gone.png",
        "sad/text.png",
    ]
    assert reasons["sad/empty.jpg"] == "photo is an empty file (0 bytes)"
    assert reasons["sad/gone.png"] == "photo not found"
    assert reasons["happy/truncated.jpg"].startswith("photo is truncated")
    for name in ("happy/corrupt.jpg", "sad/text.png"):
        assert reasons[name].startswith("photo is corrupt or not an image"), reasons[name]
    again = P.prepare(dataset, P.PrepSettings(size=48), cache_dir=tmp_path / "cache", workers=1)
    assert again.from_cache is True
    assert sorted(again.skipped["photo"]) == sorted(reasons)  # decode skips are cached with the faces
    reread = P.prepare(D.load(root), P.PrepSettings(size=48), cache_dir=tmp_path / "cache", workers=1)
    assert reread.from_cache is False  # the photo that vanished is no longer listed: another fingerprint
    assert sorted(reread.skipped["photo"]) == [
        "happy/corrupt.jpg",
        "happy/truncated.jpg",
        "sad/empty.jpg",
        "sad/text.png",
    ]


def test_prepare_expw_skips_a_box_outside_its_photo_and_keeps_the_other_faces(tmp_path):
    root = expw(
        tmp_path / "expw",
        [
            "a.jpg 0 10 10 50 50 0.9 3",
            "a.jpg 1 100 10 50 150 0.9 4",  # below the 96x80 photo
            "a.jpg 2 0 60 96 40 0.9 4",  # right side
            "b.jpg 0 0 0 30 30 0.9 9",  # unknown label: skipped when reading
            "c.jpg 0 1 1 20 20 0.9 0",  # a photo that is an empty file
        ],
        ["a.jpg", "b.jpg"],
    )
    (root / "image" / "c.jpg").write_bytes(b"")
    dataset = D.load(root)
    prepared = P.prepare(dataset, cache_dir=tmp_path / "cache", workers=1)
    assert list(zip(prepared.faces["photo"], prepared.faces["face"])) == [
        ("image/a.jpg", 0),
        ("image/a.jpg", 2),
    ]
    expected = P.process_photo(
        root / "image" / "a.jpg", [(10, 10, 50, 50), (0, 60, 40, 96)], P.PrepSettings()
    )
    assert np.array_equal(prepared.images[0], expected[0])
    assert np.array_equal(prepared.images[1], expected[1])
    got = list(prepared.skipped[["photo", "face"]].itertuples(index=False, name=None))
    assert got == [("image/b.jpg", 0), ("image/a.jpg", 1), ("image/c.jpg", 0)]
    reasons = prepared.skipped["reason"].tolist()
    assert reasons[0].startswith("unknown label '9'")
    assert reasons[1].startswith("box lies outside the photo")
    assert reasons[2].startswith("photo is corrupt or not an image")


def test_prepare_fer2013_csv_decodes_the_pixels_exactly(tmp_path):
    path = write_csv(
        tmp_path / "fer2013.csv",
        ["emotion", "pixels", "Usage"],
        [
            (3, pixel_text(fer_pixels(0)), "Training"),
            (0, pixel_text(fer_pixels(1)), "PublicTest"),
            (6, "1 2 x 4", "Training"),  # 4 values, one not a number
            (5, pixel_text(fer_pixels(2)), "PrivateTest"),
        ],
    )
    dataset = D.load(path)
    prepared = P.prepare(dataset, P.PrepSettings(size=48), cache_dir=tmp_path / "cache", workers=1)
    assert prepared.faces["photo"].tolist() == ["fer2013.csv#0", "fer2013.csv#1", "fer2013.csv#3"]
    assert prepared.faces["split"].tolist() == ["train", "val", "test"]
    for image, seed in zip(prepared.images, (0, 1, 2)):
        assert np.array_equal(image, fer_pixels(seed))
    assert prepared.skipped["photo"].tolist() == ["fer2013.csv#2"]
    assert prepared.skipped["reason"][0].startswith("photo is corrupt or not an image (ValueError")
    bigger = P.prepare(dataset, P.PrepSettings(size=96), cache_dir=tmp_path / "cache", workers=1)
    assert bigger.images.shape == (3, 96, 96)


def test_prepare_with_no_face_left_is_an_error_every_time(tmp_path):
    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "a.jpg").write_bytes(b"not a jpeg")
    (root / "sad").mkdir()
    (root / "sad" / "b.png").write_bytes(b"not a png")
    dataset = D.load(root)
    for _ in range(2):  # the failed run must not leave a cache that reads as "no faces"
        with pytest.raises(
            D.DatasetError,
            match="no face of .* could be processed \\(2 skipped; first reason: photo is corrupt",
        ):
            P.prepare(dataset, cache_dir=tmp_path / "cache", workers=1)
    assert not (tmp_path / "cache").exists() or cache_dirs(tmp_path / "cache") == []


# The cache ----------------------------------------------------------------------------------------


def test_cache_key_changes_with_everything_that_changes_the_pixels(tmp_path, monkeypatch):
    root = expw_faces(tmp_path / "expw", 3)
    settings = P.PrepSettings(size=48)
    key = P.cache_key(D.load(root), settings)
    assert P.cache_key(D.load(root), P.PrepSettings(size=48, margin=0.0)) == key
    keys = {
        key,
        P.cache_key(D.load(root), P.PrepSettings(size=96)),
        P.cache_key(D.load(root), P.PrepSettings(size=48, margin=0.1)),
    }
    assert len(keys) == 3

    target = root / "image" / "p0001.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, newer time
    touched = P.cache_key(D.load(root), settings)
    assert touched not in keys
    keys.add(touched)

    photo(target, (64, 64), seed=99)  # new content
    rewritten = P.cache_key(D.load(root), settings)
    assert rewritten not in keys
    keys.add(rewritten)

    lines = (root / "label.lst").read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " 5"  # another label for one face
    (root / "label.lst").write_text("\n".join(lines) + "\n")
    relabelled = P.cache_key(D.load(root), settings)
    assert relabelled not in keys
    keys.add(relabelled)

    monkeypatch.setattr(P, "CACHE_VERSION", P.CACHE_VERSION + 1)
    assert P.cache_key(D.load(root), settings) not in keys


def test_second_prepare_reads_the_cache(tmp_path):
    root = expw_faces(tmp_path / "expw", 6, faces_per_photo=2)
    cache = tmp_path / "cache"
    calls = []
    first = P.prepare(
        D.load(root), cache_dir=cache, workers=1, progress=lambda done, total: calls.append((done, total))
    )
    assert first.from_cache is False
    assert calls[-1] == (12, 12)
    assert first.images.shape == (12, 48, 48)
    assert first.faces.columns.tolist() == D.COLUMNS + ["hash"]
    calls.clear()
    second = P.prepare(
        D.load(root), cache_dir=cache, workers=1, progress=lambda done, total: calls.append((done, total))
    )
    assert second.from_cache is True
    assert calls == [(12, 12)]
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    pd.testing.assert_frame_equal(second.faces, first.faces)
    assert second.cache_dir == first.cache_dir
    assert cache_dirs(cache) == [first.cache_dir.name]
    assert first.cache_dir.name == f"faces-{P.cache_key(D.load(root), P.PrepSettings())}"


def test_confidence_threshold_filters_cached_faces_without_rebuilding(tmp_path):
    root = expw_faces(tmp_path / "expw", 9)
    cache = tmp_path / "cache"
    everything = P.prepare(D.load(root), cache_dir=cache, workers=1)
    assert everything.faces["confidence"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    confident = P.prepare(D.load(root), min_confidence=0.65, cache_dir=cache, workers=1)
    assert confident.from_cache is True
    assert confident.cache_dir == everything.cache_dir
    assert cache_dirs(cache) == [everything.cache_dir.name]
    assert confident.faces["photo"].tolist() == ["image/p0006.png", "image/p0007.png", "image/p0008.png"]
    assert np.array_equal(confident.images, np.asarray(everything.images)[6:])
    with pytest.raises(ValueError, match="min_confidence"):
        P.prepare(D.load(root), min_confidence=-1, cache_dir=cache, workers=1)


def test_an_invalid_threshold_is_refused_before_any_photo_is_decoded(tmp_path):
    calls = []
    with pytest.raises(ValueError, match="min_confidence must be a number of at least 0, got -0.5"):
        P.prepare(
            D.load(expw_faces(tmp_path / "expw", 3)),
            min_confidence=-0.5,
            cache_dir=tmp_path / "cache",
            workers=1,
            progress=lambda done, total: calls.append(done),
        )
    assert calls == []
    assert not (tmp_path / "cache").exists()


def test_changed_photo_rebuilds_the_cache_with_its_new_pixels(tmp_path):
    root = expw_faces(tmp_path / "expw", 3)
    cache = tmp_path / "cache"
    before = P.prepare(D.load(root), cache_dir=cache, workers=1)
    photo(root / "image" / "p0001.png", (64, 64), value=17)
    after = P.prepare(D.load(root), cache_dir=cache, workers=1)
    assert after.from_cache is False
    assert len(cache_dirs(cache)) == 2
    assert np.array_equal(after.images[0], before.images[0])
    assert (np.asarray(after.images[1]) == 17).all()
    assert not np.array_equal(after.images[1], before.images[1])


def test_settings_get_their_own_cache(tmp_path):
    root = expw_faces(tmp_path / "expw", 2)
    cache = tmp_path / "cache"
    small = P.prepare(D.load(root), P.PrepSettings(size=48), cache_dir=cache, workers=1)
    large = P.prepare(D.load(root), P.PrepSettings(size=96), cache_dir=cache, workers=1)
    wide = P.prepare(D.load(root), P.PrepSettings(size=48, margin=0.2), cache_dir=cache, workers=1)
    assert (small.from_cache, large.from_cache, wide.from_cache) == (False, False, False)
    assert small.images.shape == (2, 48, 48) and large.images.shape == (2, 96, 96)
    assert not np.array_equal(small.images, wide.images)
    assert len(cache_dirs(cache)) == 3


def test_prepare_on_two_processes_gives_the_same_faces(tmp_path):
    root = expw_faces(tmp_path / "expw", 105, faces_per_photo=2, size=(48, 48))  # 210 faces: the pool runs
    dataset = D.load(root)
    calls = []
    pooled = P.prepare(
        dataset, cache_dir=tmp_path / "a", workers=2, progress=lambda d, t: calls.append((d, t))
    )
    serial = P.prepare(dataset, cache_dir=tmp_path / "b", workers=1)
    assert pooled.from_cache is False
    assert calls[-1] == (210, 210)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert pooled.images.shape == (210, 48, 48)
    assert np.array_equal(np.asarray(pooled.images), np.asarray(serial.images))
    pd.testing.assert_frame_equal(pooled.faces, serial.faces)


# Export -------------------------------------------------------------------------------------------


def read_png(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def files_under(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_export_writes_one_grayscale_png_per_face(tmp_path):
    root = expw(
        tmp_path / "expw",
        ["a.jpg 0 10 10 50 50 0.9 3", "a.jpg 1 5 50 90 45 0.3 4", "b.png 0 0 0 30 30 0.8 3"],
        ["a.jpg", "b.png"],
    )
    prepared = P.prepare(D.load(root), P.PrepSettings(size=64), cache_dir=tmp_path / "cache", workers=1)
    out = tmp_path / "out"
    paths = export.export(prepared, out)
    assert paths == [out / "happy" / "a_0.png", out / "sad" / "a_1.png", out / "happy" / "b_0.png"]
    assert files_under(out) == ["happy/a_0.png", "happy/b_0.png", "sad/a_1.png"]
    for path, image in zip(paths, prepared.images):
        pixels = read_png(path)
        assert pixels.shape == (64, 64)
        assert np.array_equal(pixels, image)


def test_export_writes_only_the_faces_kept_by_the_threshold(tmp_path):
    root = expw(tmp_path / "expw", ["a.jpg 0 10 10 50 50 0.9 3", "a.jpg 1 5 50 90 45 0.3 4"], ["a.jpg"])
    prepared = P.prepare(D.load(root), min_confidence=0.5, cache_dir=tmp_path / "cache", workers=1)
    export.export(prepared, tmp_path / "out")
    assert files_under(tmp_path / "out") == ["happy/a_0.png"]


def test_export_names_stay_unique_when_photo_names_repeat(tmp_path):
    root = folders(tmp_path / "faces", {"train/happy": 2, "test/happy": 1, "train/sad": 1})
    photo(root / "train" / "happy" / "img0.jpg", seed=50)  # same stem as img0.png beside it
    prepared = P.prepare(D.load(root), cache_dir=tmp_path / "cache", workers=1)
    out = tmp_path / "out"
    paths = export.export(prepared, out)
    assert [p.relative_to(out).as_posix() for p in paths] == [
        "happy/test_happy_img0_0.png",
        "happy/train_happy_img0_0.png",
        "happy/train_happy_img0_0-2.png",
        "happy/train_happy_img1_0.png",
        "sad/train_sad_img0_0.png",
    ]
    assert len(files_under(out)) == 5
    for path, image in zip(paths, prepared.images):
        assert np.array_equal(read_png(path), image)


def test_export_names_of_fer2013_csv_rows(tmp_path):
    path = write_csv(
        tmp_path / "fer2013.csv",
        ["emotion", "pixels", "Usage"],
        [(3, pixel_text(fer_pixels(0)), "Training"), (0, pixel_text(fer_pixels(1)), "PublicTest")],
    )
    prepared = P.prepare(D.load(path), cache_dir=tmp_path / "cache", workers=1)
    export.export(prepared, tmp_path / "out")
    assert files_under(tmp_path / "out") == ["angry/fer2013_row1_0.png", "happy/fer2013_row0_0.png"]
    assert np.array_equal(read_png(tmp_path / "out" / "happy" / "fer2013_row0_0.png"), fer_pixels(0))


def test_workers_do_not_rerun_an_unguarded_main_script(tmp_path):
    # A Streamlit page is such a script: its top level runs on import, with no __main__ guard.
    data = expw_faces(tmp_path / "expw", 240)
    marker = tmp_path / "runs.txt"
    script = tmp_path / "app.py"
    script.write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).open('a').write('x')\n"
        "from fer import datasets, preprocess\n"
        f"prepared = preprocess.prepare(datasets.load({str(data)!r}), preprocess.PrepSettings(size=48), "
        f"cache_dir=Path({str(tmp_path / 'cache')!r}), workers=2)\n"
        f"Path({str(marker)!r}).open('a').write(str(len(prepared.faces)))\n"
    )
    project = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(project)}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.read_text() == "x240"


@pytest.mark.parametrize("orientation", range(2, 9))
def test_upright_box_follows_the_photo_as_its_exif_orientation_turns_it(orientation):
    """A white box drawn on the stored pixels is where upright_box says once the photo is turned."""
    width, height, box = 60, 40, (5, 12, 20, 30)  # top, left, bottom, right
    stored = Image.new("L", (width, height), 0)
    stored.paste(255, (box[1], box[0], box[3], box[2]))
    turn = images._UPRIGHT[orientation]
    left, top, right, bottom = stored.transpose(turn).getbbox()
    assert images.upright_box(box, width, height, turn) == (top, left, bottom, right)
    assert images.upright_box(box, width, height, None) == box
