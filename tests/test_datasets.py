"""Reading every dataset format into the manifest, on tiny datasets written per test."""

from __future__ import annotations

import math

import pytest
from helpers import expw, fer_pixels, folders, photo, pixel_text, write_csv

from fer import datasets as D
from fer import labels as L


def rows(dataset: D.Dataset) -> list[tuple]:
    """The manifest as plain tuples, NaN replaced by None so rows compare with ==."""
    return [
        tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)
        for row in dataset.faces[D.COLUMNS].itertuples(index=False)
    ]


def skipped(dataset: D.Dataset) -> list[tuple]:
    return list(dataset.skipped[D.SKIPPED_COLUMNS].itertuples(index=False, name=None))


# Labels -------------------------------------------------------------------------------------------


def test_canonical_labels_and_their_order():
    assert L.LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert [L.from_index(i) for i in range(7)] == list(L.LABELS)
    assert L.from_index("3") == "happy"
    assert L.from_index(" 6 ") == "neutral"
    for bad in ("7", "-1", "1.5", "x", "", "nan"):
        assert L.from_index(bad) is None, bad


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Happiness", "happy"),
        (" ANGER ", "angry"),
        ("Surprised", "surprise"),
        ("sadness", "sad"),
        ("Fearful", "fear"),
        ("disgusted", "disgust"),
        ("Neutral", "neutral"),
        ("Contempt", "contempt"),  # not one of the seven: kept, lower-cased
    ],
)
def test_label_aliases_are_spelled_canonically(name, expected):
    assert L.canonical(name) == expected


def test_ordered_puts_canonical_labels_first_then_others_alphabetically():
    assert L.ordered(["zeta", "neutral", "happy", "alpha", "angry", "happy"]) == [
        "angry",
        "happy",
        "neutral",
        "alpha",
        "zeta",
    ]


# ExpW ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_dir", ["image", "origin", "Images"])
def test_expw_reads_every_face_of_every_photo(tmp_path, image_dir):
    root = expw(
        tmp_path / "expw",
        [
            "a.jpg 0 10 20 60 50 0.95 3",  # image face top left right bottom confidence label
            "a.jpg 1 5 60 90 40 0.4 0",
            "b.jpg 0 0 0 30 30 0.7 6",
        ],
        ["a.jpg", "b.jpg"],
        image_dir=image_dir,
    )
    dataset = D.load(root)
    assert dataset.format == "expw"
    assert dataset.name == "expw"
    assert dataset.index_files == (root / "label.lst",)
    assert rows(dataset) == [
        (f"{image_dir}/a.jpg", 0, 10.0, 20.0, 50.0, 60.0, 0.95, "happy", ""),
        (f"{image_dir}/a.jpg", 1, 5.0, 60.0, 40.0, 90.0, 0.4, "angry", ""),
        (f"{image_dir}/b.jpg", 0, 0.0, 0.0, 30.0, 30.0, 0.7, "neutral", ""),
    ]
    assert dataset.labels == ["angry", "happy", "neutral"]
    assert dataset.photo_path(f"{image_dir}/a.jpg") == root / image_dir / "a.jpg"
    assert dataset.skipped.empty
    assert str(dataset.faces["face"].dtype) == "int64"
    assert str(dataset.faces["top"].dtype) == "float64"


def test_expw_without_an_image_folder_is_an_error(tmp_path):
    root = tmp_path / "expw"
    root.mkdir()
    (root / "label.lst").write_text("a.jpg 0 1 1 20 20 0.9 3\n")
    (root / "pictures").mkdir()
    with pytest.raises(D.DatasetError, match="label.lst but no image folder.*image, origin, Images"):
        D.load(root)


def test_expw_bad_lines_are_skipped_with_their_reason_and_good_faces_kept(tmp_path):
    root = expw(
        tmp_path / "expw",
        [
            "a.jpg 0 10 10 50 50 0.9 3",  # 1: good
            "a.jpg 1 10 10 50",  # 2: too few fields
            "a.jpg 1 10 10 50 50 0.9 3 extra",  # 3: too many fields
            "a.jpg 1 10 x 50 50 0.9 3",  # 4: non-numeric box
            "a.jpg 2 10 10 10 50 0.9 3",  # 5: left == right: zero area
            "a.jpg 3 50 10 60 20 0.9 3",  # 6: bottom above top: inverted
            "a.jpg 4 10 10 50 50 nan 3",  # 7: NaN confidence
            "a.jpg 5 10 10 50 50 high 3",  # 8: text confidence
            "a.jpg 6 10 10 50 50 -0.2 3",  # 9: negative confidence
            "a.jpg 7 10 10 50 50 0.9 9",  # 10: label out of range
            "a.jpg 8 10 10 50 50 0.9 x",  # 11: label not a number
            "",  # 12: blank lines are not faces
            "missing.jpg 0 10 10 50 50 0.9 1",  # 13: photo not in image/
            "a.jpg 0 12 12 40 40 0.8 2",  # 14: face 0 of a.jpg again
            "b.jpg 0 0 0 30 30 0.5 0",  # 15: good
            "a.jpg 1.5 10 10 50 50 0.9 3",  # 16: face id not an integer
        ],
        ["a.jpg", "b.jpg"],
    )
    dataset = D.load(root)
    assert rows(dataset) == [
        ("image/a.jpg", 0, 10.0, 10.0, 50.0, 50.0, 0.9, "happy", ""),
        ("image/b.jpg", 0, 0.0, 0.0, 30.0, 30.0, 0.5, "angry", ""),
    ]
    expected = [
        ("image/a.jpg", -1, "malformed line 2: expected 8 fields", "got 5"),
        ("image/a.jpg", -1, "malformed line 3: expected 8 fields", "got 9"),
        ("image/a.jpg", -1, "malformed line 4: face id and box must be numbers", ""),
        ("image/a.jpg", 2, "box has zero or negative area", "left=10, bottom=50, right=10"),
        ("image/a.jpg", 3, "box has zero or negative area", "top=50, left=10, bottom=20, right=60"),
        ("image/a.jpg", 4, "confidence is not a number", "'nan'"),
        ("image/a.jpg", 5, "confidence is not a number", "'high'"),
        ("image/a.jpg", 6, "confidence is negative", "-0.2"),
        ("image/a.jpg", 7, "unknown label '9'", "expected 0-6"),
        ("image/a.jpg", 8, "unknown label 'x'", "expected 0-6"),
        ("image/missing.jpg", 0, "photo not found: image/missing.jpg", ""),
        ("image/a.jpg", 0, "duplicate face 0 of this photo", "line 14"),
        ("image/a.jpg", -1, "malformed line 16: face id and box must be numbers", ""),
    ]
    got = skipped(dataset)
    assert len(got) == len(expected)
    for (photo_name, face, reason), (want_photo, want_face, start, part) in zip(got, expected):
        assert (photo_name, face) == (want_photo, want_face), reason
        assert reason.startswith(start), reason
        assert part in reason, reason


def test_expw_with_no_usable_face_is_an_error_giving_the_reasons(tmp_path):
    root = expw(
        tmp_path / "expw",
        ["a.jpg 0 10 10 50 50 0.9 9", "a.jpg 1 10 10 50 50 0.9 7", "gone.jpg 0 1 1 9 9 0.9 1"],
        ["a.jpg"],
    )
    with pytest.raises(D.DatasetError, match="has no usable face") as error:
        D.load(root)
    assert "1 x unknown label '9'" in str(error.value)
    assert "1 x unknown label '7'" in str(error.value)
    assert "1 x photo not found: image/gone.jpg" in str(error.value)


def test_expw_with_an_empty_label_list_is_an_error(tmp_path):
    root = expw(tmp_path / "expw", [], ["a.jpg"])
    with pytest.raises(D.DatasetError, match=r"has no usable face \(no faces listed\)"):
        D.load(root)


# Image folders ------------------------------------------------------------------------------------


def test_image_folders_per_label(tmp_path):
    root = folders(tmp_path / "faces", {"happy": 1, "Happiness": 1, "Surprised": 1})
    photo(root / "happy" / "IMG1.JPG")  # upper-case suffix
    photo(root / "sad" / "a.jpeg")
    (root / "sad" / "notes.txt").write_text("not a photo")
    (root / "sad" / "Thumbs.db").write_bytes(b"\0\1")
    (root / "sad" / "empty.jpg").write_bytes(b"")
    photo(root / ".hidden" / "h.png")
    (root / "angry").mkdir()  # an empty label folder holds no face
    (root / "README.md").write_text("a file beside the label folders")
    dataset = D.load(root)
    assert dataset.format == "folders"
    assert rows(dataset) == [
        ("Happiness/img0.png", 0, None, None, None, None, None, "happy", ""),
        ("Surprised/img0.png", 0, None, None, None, None, None, "surprise", ""),
        ("happy/IMG1.JPG", 0, None, None, None, None, None, "happy", ""),
        ("happy/img0.png", 0, None, None, None, None, None, "happy", ""),
        ("sad/a.jpeg", 0, None, None, None, None, None, "sad", ""),
    ]
    assert skipped(dataset) == [("sad/empty.jpg", 0, "photo is an empty file (0 bytes)")]
    assert dataset.labels == ["happy", "sad", "surprise"]
    assert dataset.index_files == ()


@pytest.mark.parametrize(
    "train, val", [("train", "val"), ("Training", "validation"), ("train", "Validation")]
)
def test_image_folders_under_train_val_test(tmp_path, train, val):
    root = folders(
        tmp_path / "fer",
        {f"{train}/happy": 2, f"{train}/Sadness": 1, f"{val}/happy": 1, "test/sad": 1, "test/Anger": 1},
    )
    (root / "test" / "labels.csv").write_text("a file among the label folders")
    dataset = D.load(root)
    got = {
        p: (label, split) for p, label, split in zip(*(dataset.faces[c] for c in ("photo", "label", "split")))
    }
    assert got == {
        f"{train}/happy/img0.png": ("happy", "train"),
        f"{train}/happy/img1.png": ("happy", "train"),
        f"{train}/Sadness/img0.png": ("sad", "train"),
        f"{val}/happy/img0.png": ("happy", "val"),
        "test/sad/img0.png": ("sad", "test"),
        "test/Anger/img0.png": ("angry", "test"),
    }
    assert list(dataset.faces["photo"]) == sorted(got)
    assert dataset.labels == ["angry", "happy", "sad"]


def test_image_folders_with_only_empty_files_is_an_error_with_the_reason(tmp_path):
    (tmp_path / "faces" / "happy").mkdir(parents=True)
    (tmp_path / "faces" / "happy" / "a.jpg").write_bytes(b"")
    with pytest.raises(D.DatasetError, match=r"no usable face \(1 x photo is an empty file \(0 bytes\)\)"):
        D.load(tmp_path / "faces")


# FER2013 CSV --------------------------------------------------------------------------------------


def fer_csv(path, extra_rows=()):
    return write_csv(
        path,
        ["emotion", "pixels", "Usage"],
        [
            (3, pixel_text(fer_pixels(0)), "Training"),
            (0, pixel_text(fer_pixels(1)), "PublicTest"),
            (6, pixel_text(fer_pixels(2)), "PrivateTest"),
            (7, pixel_text(fer_pixels(3)), "Training"),  # no such label
            (2, " ".join(["5"] * 47), "Training"),  # not a square
            (1, "", "Training"),  # no pixels
            (5, pixel_text(fer_pixels(4)), "Training"),
            *extra_rows,
        ],
    )


def test_fer2013_csv_rows_become_faces_with_their_usage_as_split(tmp_path):
    path = fer_csv(tmp_path / "fer2013.csv")
    dataset = D.load(path)
    assert dataset.format == "fer2013-csv"
    assert dataset.index_files == (path,)
    assert rows(dataset) == [
        ("fer2013.csv#0", 0, None, None, None, None, None, "happy", "train"),
        ("fer2013.csv#1", 0, None, None, None, None, None, "angry", "val"),
        ("fer2013.csv#2", 0, None, None, None, None, None, "neutral", "test"),
        ("fer2013.csv#6", 0, None, None, None, None, None, "surprise", "train"),
    ]
    assert skipped(dataset) == [
        ("fer2013.csv#3", 0, "unknown label '7' (expected 0-6)"),
        ("fer2013.csv#4", 0, "pixels must be a square number of values, got 47"),
        ("fer2013.csv#5", 0, "pixels must be a square number of values, got 0"),
    ]
    assert dataset.pixels["fer2013.csv#1"] == pixel_text(fer_pixels(1))


def test_a_folder_holding_fer2013_csv_is_read_as_that_csv(tmp_path):
    path = fer_csv(tmp_path / "download" / "fer2013.csv")
    dataset = D.load(tmp_path / "download")
    assert dataset.format == "fer2013-csv"
    assert dataset.root == path
    assert len(dataset.faces) == 4


def test_fer2013_csv_without_usage_has_no_split(tmp_path):
    path = write_csv(tmp_path / "faces.csv", ["emotion", "pixels"], [(4, pixel_text(fer_pixels(0, side=4)))])
    dataset = D.load(path)
    assert rows(dataset) == [("faces.csv#0", 0, None, None, None, None, None, "sad", "")]


def test_fer2013_csv_without_emotion_is_an_error(tmp_path):
    path = write_csv(tmp_path / "faces.csv", ["pixels", "usage"], [("1 2 3 4", "Training")])
    with pytest.raises(D.DatasetError, match="no emotion column"):
        D.load(path)


# Generic CSV --------------------------------------------------------------------------------------


def test_generic_csv_with_guessed_columns_and_an_x_y_w_h_box(tmp_path):
    photo(tmp_path / "a.png")
    photo(tmp_path / "sub" / "b.png")
    path = write_csv(
        tmp_path / "boxes.csv",
        ["File", "x", "y", "w", "h", "score", "emotion", "subset"],
        [
            ("a.png", 10, 5, 30, 40, 0.9, 3, "train"),
            ("a.png", 50, 10, 20, 20, 0.3, "Sadness", "validation"),
            ("sub/b.png", 0, 0, 64, 64, 0.7, "neutral", "PrivateTest"),
            ("sub/b.png", 1, 1, 10, 10, 0.75, "Contempt", ""),
        ],
    )
    dataset = D.load(path)
    assert dataset.format == "csv"
    assert dataset.base == tmp_path
    assert rows(dataset) == [
        ("a.png", 0, 5.0, 10.0, 45.0, 40.0, 0.9, "happy", "train"),
        ("a.png", 1, 10.0, 50.0, 30.0, 70.0, 0.3, "sad", "val"),
        ("sub/b.png", 0, 0.0, 0.0, 64.0, 64.0, 0.7, "neutral", "test"),
        ("sub/b.png", 1, 1.0, 1.0, 11.0, 11.0, 0.75, "contempt", ""),
    ]
    assert dataset.labels == ["happy", "sad", "neutral", "contempt"]


def test_generic_csv_with_a_top_left_right_bottom_box_and_face_ids(tmp_path):
    photo(tmp_path / "c.png")
    path = write_csv(
        tmp_path / "boxes.csv",
        ["image_path", "top", "left", "right", "bottom", "label", "face_id"],
        [("c.png", 5, 10, 40, 45, "happy", 3), ("c.png", 0, 0, 20, 20, "fear", 7)],
    )
    assert rows(D.load(path)) == [
        ("c.png", 3, 5.0, 10.0, 45.0, 40.0, None, "happy", ""),
        ("c.png", 7, 0.0, 0.0, 20.0, 20.0, None, "fear", ""),
    ]


def test_generic_csv_without_a_box_uses_the_whole_photo(tmp_path):
    photo(tmp_path / "c.png")
    path = write_csv(tmp_path / "list.csv", ["path", "label"], [("c.png", "surprise"), ("c.png", "2")])
    assert rows(D.load(path)) == [
        ("c.png", 0, None, None, None, None, None, "surprise", ""),
        ("c.png", 1, None, None, None, None, None, "fear", ""),
    ]


def test_generic_csv_with_an_explicit_column_mapping(tmp_path):
    photo(tmp_path / "a.png")
    path = write_csv(
        tmp_path / "odd.csv",
        ["pic", "bx", "by", "bw", "bh", "mood", "Quality", "label"],
        [("a.png", 4, 8, 20, 30, "Joy", 0.6, "ignored")],
    )
    with pytest.raises(
        D.DatasetError, match="cannot tell which column holds the image; its columns are pic, bx"
    ):
        D.load(path)
    columns = D.parse_columns("image=pic, x=bx,y=by,w=bw,h=bh,label=mood,Confidence=quality")
    assert columns == {
        "image": "pic",
        "x": "bx",
        "y": "by",
        "w": "bw",
        "h": "bh",
        "label": "mood",
        "confidence": "quality",
    }
    assert rows(D.load(path, columns=columns)) == [("a.png", 0, 8.0, 4.0, 38.0, 24.0, 0.6, "happy", "")]


def test_column_mapping_errors(tmp_path):
    photo(tmp_path / "a.png")
    path = write_csv(tmp_path / "odd.csv", ["pic", "mood"], [("a.png", "happy")])
    with pytest.raises(
        D.DatasetError, match="label=feeling names no column of the CSV \\(its columns: pic, mood\\)"
    ):
        D.load(path, columns={"image": "pic", "label": "feeling"})
    with pytest.raises(D.DatasetError, match="unknown field\\(s\\) in the column mapping: colour"):
        D.load(path, columns={"image": "pic", "label": "mood", "colour": "pic"})
    for text in ("image", "image=pic,label", "=pic", "image="):
        with pytest.raises(D.DatasetError, match="column mapping must look like field=column"):
            D.parse_columns(text)
    assert D.parse_columns("") == {}
    assert D.parse_columns(None) == {}


def test_generic_csv_bad_rows_are_skipped_with_their_reason(tmp_path):
    photo(tmp_path / "a.png")
    photo(tmp_path / "b.png")
    good = (1, 2, 10, 10, 0.9)
    path = write_csv(
        tmp_path / "boxes.csv",
        ["image", "x", "y", "w", "h", "confidence", "label"],
        [
            ("a.png", *good, "happy"),  # face 0: good
            ("a.png", "abc", 2, 10, 10, 0.9, "happy"),  # 1
            ("a.png", "nan", 2, 10, 10, 0.9, "happy"),  # 2
            ("a.png", 1, "nan", 10, 10, 0.9, "happy"),  # 3
            ("a.png", 1, 2, 0, 10, 0.9, "happy"),  # 4
            ("a.png", 1, 2, 10, -5, 0.9, "happy"),  # 5
            ("a.png", 1, 2, 10, 10, "", "happy"),  # 6
            ("a.png", 1, 2, 10, 10, -1, "happy"),  # 7
            ("a.png", 1, 2, 10, 10, "nan", "happy"),  # 8
            ("a.png", *good, 9),  # 9
            ("a.png", *good, ""),  # 10
            ("gone.png", *good, "sad"),
            ("", *good, "sad"),  # line 14 of the file
            ("b.png", *good, "sad"),
        ],
    )
    dataset = D.load(path)
    assert rows(dataset) == [
        ("a.png", 0, 2.0, 1.0, 12.0, 11.0, 0.9, "happy", ""),
        ("b.png", 0, 2.0, 1.0, 12.0, 11.0, 0.9, "sad", ""),
    ]
    assert skipped(dataset) == [
        ("a.png", 1, "box coordinates must be numbers"),
        ("a.png", 2, "box has a coordinate that is not a number"),
        ("a.png", 3, "box has a coordinate that is not a number"),
        (
            "a.png",
            4,
            "box has zero or negative area (top=2, left=1, bottom=12, right=1); a box needs top < bottom and left < right",
        ),
        (
            "a.png",
            5,
            "box has zero or negative area (top=2, left=1, bottom=-3, right=11); a box needs top < bottom and left < right",
        ),
        ("a.png", 6, "confidence is not a number (got '')"),
        ("a.png", 7, "confidence is negative (got -1)"),
        ("a.png", 8, "confidence is not a number (got 'nan')"),
        ("a.png", 9, "unknown label '9'"),
        ("a.png", 10, "unknown label ''"),
        ("gone.png", 0, "photo not found: gone.png"),
        ("line 14", 0, "no image path"),
    ]


def test_generic_csv_face_ids_that_are_not_numbers_are_counted_per_photo(tmp_path):
    photo(tmp_path / "a.png")
    path = write_csv(
        tmp_path / "faces.csv",
        ["image", "face", "label"],
        [("a.png", "nan", "happy"), ("a.png", "", "sad"), ("a.png", "5", "fear"), ("a.png", "x", "angry")],
    )
    assert [(p, f, label) for p, f, *_, label, _ in rows(D.load(path))] == [
        ("a.png", 0, "happy"),
        ("a.png", 1, "sad"),
        ("a.png", 5, "fear"),
        ("a.png", 6, "angry"),
    ]


# Paths that are no dataset ------------------------------------------------------------------------


def test_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(D.DatasetError, match="dataset not found: .*nowhere does not exist"):
        D.load(tmp_path / "nowhere")


def test_a_text_file_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(D.DatasetError, match="notes.txt is not a dataset: .* got a .txt file"):
        D.load(tmp_path / "notes.txt")


def test_an_empty_folder_is_not_a_dataset(tmp_path):
    with pytest.raises(D.DatasetError, match="is not a dataset: expected label.lst \\(ExpW\\), fer2013.csv"):
        D.load(tmp_path)


def test_a_folder_without_photos_is_not_a_dataset(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "notes.txt").write_text("no photo here")
    with pytest.raises(D.DatasetError, match="is not a dataset"):
        D.load(tmp_path)


def test_a_csv_with_none_of_the_expected_columns_is_an_error(tmp_path):
    path = write_csv(tmp_path / "table.csv", ["foo", "bar"], [(1, 2)])
    with pytest.raises(
        D.DatasetError,
        match="cannot tell which column holds the image and the label; its columns are foo, bar",
    ):
        D.load(path)


def test_an_empty_csv_is_an_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(D.DatasetError, match="its columns are \\(none\\)"):
        D.load(tmp_path / "empty.csv")


def test_dataset_errors_are_value_errors():
    assert issubclass(D.DatasetError, ValueError)
