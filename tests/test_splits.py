"""Train / val / test splits: the dataset's own, or drawn by photo, seeded and stratified."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from helpers import folders, photo

from fer import datasets as D
from fer import preprocess as P
from fer import splits as S
from fer.labels import LABELS


def manifest(photos_per_label: int, split: str = "", prefix: str = "", labels=LABELS) -> pd.DataFrame:
    """Faces of `photos_per_label` photos per label; every third photo holds a second face of another label."""
    rows = []
    for label_index, label in enumerate(labels):
        for i in range(photos_per_label):
            name = f"{prefix}{label}/{i:03d}.jpg"
            rows.append((name, 0, 1.0, 1.0, 9.0, 9.0, math.nan, label, split))
            if i % 3 == 0:
                other = labels[(label_index + 1) % len(labels)]
                rows.append((name, 1, 10.0, 10.0, 19.0, 19.0, math.nan, other, split))
    return pd.DataFrame(rows, columns=D.COLUMNS)


def photo_splits(faces: pd.DataFrame, split: pd.Series) -> pd.Series:
    """The split of each photo, checking that all faces of a photo share it."""
    per_photo = split.groupby(faces["photo"]).agg(set)
    assert (per_photo.map(len) == 1).all(), per_photo[per_photo.map(len) > 1]
    return per_photo.map(lambda s: next(iter(s)))


def photos_per_label_and_split(faces: pd.DataFrame, split: pd.Series) -> dict:
    first = faces[faces["face"] == 0].set_index("photo")["label"]
    table = pd.crosstab(first, photo_splits(faces, split).reindex(first.index))
    return {label: {name: int(table.at[label, name]) for name in table.columns} for label in table.index}


def test_a_datasets_own_split_is_kept():
    faces = pd.concat(
        [manifest(4, "train", "tr/"), manifest(2, "val", "va/"), manifest(2, "test", "te/")],
        ignore_index=True,
    )
    for seed in (0, 1, 2):
        split = S.assign(faces, S.SplitSettings(val_share=0.3, test_share=0.3, seed=seed))
        assert split.tolist() == faces["split"].tolist()


def test_drawn_split_is_deterministic_per_seed_and_differs_across_seeds():
    faces = manifest(30)
    first = S.assign(faces, S.SplitSettings(seed=0))
    assert S.assign(faces, S.SplitSettings(seed=0)).tolist() == first.tolist()
    assert S.assign(faces.copy(), S.SplitSettings(seed=0)).tolist() == first.tolist()
    others = [S.assign(faces, S.SplitSettings(seed=seed)) for seed in (1, 2)]
    assert all(other.tolist() != first.tolist() for other in others)
    assert others[0].tolist() != others[1].tolist()
    assert set(first) == {"train", "val", "test"}
    assert first.index.equals(faces.index)


@pytest.mark.parametrize(
    "val_share, test_share, val, test", [(0.1, 0.1, 3, 3), (0.2, 0.3, 6, 9), (0.0, 0.2, 0, 6)]
)
def test_drawn_split_is_stratified_by_label_over_photos(val_share, test_share, val, test):
    faces = manifest(30)
    split = S.assign(faces, S.SplitSettings(val_share=val_share, test_share=test_share, seed=7))
    counts = photos_per_label_and_split(faces, split)
    assert set(counts) == set(LABELS)
    for label in LABELS:
        assert counts[label].get("val", 0) == val, label
        assert counts[label].get("test", 0) == test, label
        assert counts[label]["train"] == 30 - val - test, label
    photos = photo_splits(faces, split)
    assert (photos == "val").mean() == pytest.approx(val_share)
    assert (photos == "test").mean() == pytest.approx(test_share)


def test_two_faces_of_one_photo_never_land_in_different_splits():
    faces = manifest(12)
    assert (faces.groupby("photo")["label"].nunique() == 2).sum() == 7 * 4  # photos holding two labels
    for seed in range(5):
        split = S.assign(faces, S.SplitSettings(val_share=0.25, test_share=0.25, seed=seed))
        photo_splits(faces, split)  # asserts one split per photo


def test_a_dataset_with_only_train_and_test_gets_val_from_train():
    train, test = manifest(20, "train", "train/"), manifest(5, "test", "test/")
    faces = pd.concat([train, test], ignore_index=True)
    split = S.assign(faces, S.SplitSettings(val_share=0.1, test_share=0.4, seed=3))
    is_test = faces["split"] == "test"
    assert (split[is_test] == "test").all()  # the dataset's test part is untouched...
    assert set(split[~is_test]) == {"train", "val"}  # ...and no more test is drawn
    counts = photos_per_label_and_split(faces[~is_test], split[~is_test])
    assert all(counts[label] == {"train": 18, "val": 2} for label in LABELS)


def test_a_dataset_with_only_train_gets_val_and_test_from_it():
    faces = manifest(10, "train", "train/")
    split = S.assign(faces, S.SplitSettings(val_share=0.2, test_share=0.1, seed=0))
    counts = photos_per_label_and_split(faces, split)
    assert all(counts[label] == {"test": 1, "train": 7, "val": 2} for label in LABELS)


def test_a_dataset_with_train_and_val_gets_test_from_train():
    faces = pd.concat([manifest(10, "train", "train/"), manifest(3, "val", "val/")], ignore_index=True)
    split = S.assign(faces, S.SplitSettings(val_share=0.3, test_share=0.2, seed=0))
    assert (split[faces["split"] == "val"] == "val").all()
    counts = photos_per_label_and_split(faces[faces["split"] == "train"], split[faces["split"] == "train"])
    assert all(counts[label] == {"test": 2, "train": 8} for label in LABELS)


def test_image_folders_with_train_and_test_get_a_val_part(tmp_path):
    root = folders(tmp_path / "fer", {"train/happy": 20, "train/sad": 10, "test/happy": 3, "test/sad": 2})
    dataset = D.load(root)
    split = S.assign(dataset.faces, S.SplitSettings(seed=1))
    by_photo = dict(zip(dataset.faces["photo"], split))
    assert sorted(p for p, s in by_photo.items() if s == "test") == sorted(
        p for p in by_photo if p.startswith("test/")
    )
    val = sorted(p for p, s in by_photo.items() if s == "val")
    assert [p.split("/")[1] for p in val] == ["happy", "happy", "sad"]
    assert all(p.startswith("train/") for p in val)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"val_share": -0.1}, "val_share must be at least 0 and below 1, got -0.1"),
        ({"val_share": 1.0}, "val_share must be at least 0 and below 1, got 1.0"),
        ({"test_share": 1.2}, "test_share must be at least 0 and below 1, got 1.2"),
        ({"test_share": -1}, "test_share must be at least 0 and below 1, got -1"),
        (
            {"val_share": 0.5, "test_share": 0.5},
            "val_share \\+ test_share must leave faces to train on, got 0.5 \\+ 0.5",
        ),
        ({"val_share": 0.7, "test_share": 0.4}, "val_share \\+ test_share must leave faces to train on"),
    ],
)
def test_split_settings_are_validated(settings, message):
    with pytest.raises(ValueError, match=message):
        S.SplitSettings(**settings)


def test_cross_split_duplicates_lists_copies_in_different_splits_only():
    faces = pd.DataFrame(
        {
            "photo": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg", "g.jpg"],
            "face": [0, 0, 0, 1, 0, 0, 0],
            "label": ["happy", "happy", "sad", "sad", "fear", "fear", "angry"],
        }
    )
    split = pd.Series(["train", "test", "train", "train", "val", "train", "train"])
    hashes = pd.Series(["h1", "h1", "h2", "h2", "h3", "h3", "h4"])
    duplicates = S.cross_split_duplicates(faces, split, hashes)
    assert duplicates.columns.tolist() == ["group", "photo", "face", "label", "split"]
    assert list(duplicates.itertuples(index=False, name=None)) == [
        (0, "b.jpg", 0, "happy", "test"),
        (0, "a.jpg", 0, "happy", "train"),
        (1, "f.jpg", 0, "fear", "train"),
        (1, "e.jpg", 0, "fear", "val"),
    ]  # c.jpg and d.jpg are copies within train: not listed


def test_cross_split_duplicates_with_none_is_empty():
    faces = pd.DataFrame({"photo": ["a", "b"], "face": [0, 0], "label": ["sad", "sad"]})
    duplicates = S.cross_split_duplicates(faces, pd.Series(["train", "test"]), pd.Series(["x", "y"]))
    assert duplicates.empty
    assert duplicates.columns.tolist() == ["group", "photo", "face", "label", "split"]


def test_identical_photos_across_splits_are_found_after_preprocessing(tmp_path):
    root = tmp_path / "fer"
    photo(root / "train" / "happy" / "a.png", (64, 64), seed=1)
    photo(root / "test" / "happy" / "copy_of_a.png", (64, 64), seed=1)
    photo(root / "train" / "sad" / "b.png", (64, 64), seed=2)
    photo(root / "train" / "sad" / "copy_of_b.png", (64, 64), seed=2)  # a copy within train
    photo(root / "val" / "sad" / "c.png", (64, 64), seed=3)
    prepared = P.prepare(D.load(root), cache_dir=tmp_path / "cache", workers=1)
    split = S.assign(prepared.faces)
    duplicates = S.cross_split_duplicates(prepared.faces, split, prepared.faces["hash"])
    assert list(duplicates.itertuples(index=False, name=None)) == [
        (0, "test/happy/copy_of_a.png", 0, "happy", "test"),
        (0, "train/happy/a.png", 0, "happy", "train"),
    ]
