"""Packs (fer.pack): faces prepared here, trained on elsewhere, scored here on the datasets' test parts."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import expw_faces

from fer import cli, pack
from fer import datasets as D
from fer import train as T
from fer.config import TrainConfig
from fer.faces import dataset_root, dataset_roots, load_splits
from fer.preprocess import PrepSettings
from fer.splits import SplitSettings

TINY = {"arch": "vgg-small", "width": 4, "image_size": 48, "batch_size": 8}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """ExpW, 42 photos with two faces each: 28 photos train, 7 val, 7 test."""
    return expw_faces(tmp_path_factory.mktemp("pack-data") / "expw", 42, faces_per_photo=2)


@pytest.fixture
def packed(tmp_path, dataset) -> Path:
    out = tmp_path / "faces.npz"
    assert cli.main(["pack", str(dataset), "--out", str(out)]) == 0
    return out


def test_a_pack_holds_the_train_and_val_faces_training_would_use_and_no_test_face(packed, dataset):
    config = TrainConfig(datasets=(str(dataset),), **TINY)
    labels, direct = load_splits(config)
    from_pack = TrainConfig(datasets=(str(packed),), **TINY)
    pack_labels, unpacked = load_splits(from_pack)
    assert pack_labels == labels
    for split in ("train", "val"):
        a, b = direct[split], unpacked[split]
        assert list(a.faces["photo"]) == list(b.faces["photo"]) and list(a.faces["face"]) == list(
            b.faces["face"]
        )
        assert (a.y == b.y).all() and len(a.y) > 0
        # Stored as JPEG at quality 95: a grey level or so off on these noisy synthetic faces.
        assert np.abs(a.images.astype(int) - b.images.astype(int)).mean() < 2.5
    assert len(unpacked["test"].y) == 0 and len(direct["test"].y) > 0
    assert set(unpacked["train"].faces["dataset"]) == {str(dataset)}


@pytest.mark.slow
def test_a_model_trained_on_a_pack_records_the_datasets_and_is_scored_on_their_test_part(
    tmp_path, packed, dataset, capsys
):
    config = TrainConfig(datasets=(str(packed),), epochs=1, **TINY)
    metrics = T.train(config, tmp_path / "run")
    assert metrics["split"] == "val (no test faces)"
    with zipfile.ZipFile(tmp_path / "run" / "best.keras") as archive:
        metadata = json.loads(archive.read("fer.json"))
    assert metadata["dataset_roots"] == [dataset_root(str(dataset))]
    capsys.readouterr()
    model = str(tmp_path / "run" / "best.keras")
    assert cli.main(["evaluate", str(dataset), "--model", model, "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    _, direct = load_splits(TrainConfig(datasets=(str(dataset),), **TINY))
    assert scored["n"] == len(direct["test"].y)  # the test part the pack left out, and only it


def test_a_pack_made_with_other_settings_says_which_to_use(packed):
    cases = [
        ({"image_size": 64}, "--image-size 48 --margin 0"),
        ({"seed": 3}, "train with --seed 0 --val-share 0.1 --test-share 0.1"),
        ({"min_confidence": 0.5}, "packed with min_confidence None"),
    ]
    for change, message in cases:
        config = TrainConfig(datasets=(str(packed),), **{**TINY, **change})
        with pytest.raises(D.DatasetError, match=message):
            load_splits(config)


def test_a_damaged_face_is_skipped_not_the_pack(packed, tmp_path):
    with np.load(packed) as arrays:
        data = {name: arrays[name] for name in arrays.files}
    jpeg = data["jpeg"].copy()
    first, second = data["offsets"][0], data["offsets"][1]
    jpeg[first:second] = 0  # the first face's bytes are gone
    data["jpeg"] = jpeg
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **data)
    images, faces, meta = pack.read(damaged, PrepSettings(48), SplitSettings(), None)
    whole, _, _ = pack.read(packed, PrepSettings(48), SplitSettings(), None)
    assert meta["skipped"] == 1 and len(images) == len(faces) == len(whole) - 1
    assert (images == whole[1:]).all()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip at all", "is not a readable pack"),
        (None, "not a pack of faces"),
    ],
)
def test_a_file_that_is_not_a_pack_is_refused_with_a_reason(tmp_path, content, message):
    path = tmp_path / "other.npz"
    if content is None:
        np.savez(path, x=np.arange(3))
    else:
        path.write_bytes(content)
    with pytest.raises(D.DatasetError, match=message):
        pack.read_meta(path)
    assert cli.main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--epochs", "1"]) == 2


def test_pack_refuses_unknown_splits_and_a_pack_as_its_source(packed, tmp_path):
    with pytest.raises(ValueError, match="splits must be some of train, val, test"):
        pack.check([str(packed)], splits=("training",))
    with pytest.raises(ValueError, match="not from another pack"):
        pack.check([str(packed)])
    assert cli.main(["pack", str(packed), "--out", str(tmp_path / "x.zip")]) == 2


def test_photos_that_are_their_own_face_are_packed_as_their_own_bytes(tmp_path):
    """Like FER2013: 48 px JPEG photos, each one face. The pack keeps the files' bytes, so its faces
    are exactly the ones training here uses, at no more than the photos' size."""
    from helpers import folders

    root = folders(tmp_path / "faces", {"train/happy": 8, "train/sad": 8, "val/happy": 2, "val/sad": 2},
                   size=(48, 48), suffix=".jpg")  # fmt: skip
    out = tmp_path / "faces.npz"
    assert cli.main(["pack", str(root), "--out", str(out)]) == 0
    summary = pack.read_meta(out)
    assert summary["source_bytes_kept"] == sum(summary["counts"].values()) > 0
    with np.load(out) as arrays:
        assert len(arrays["jpeg"]) == sum((root / photo).stat().st_size for photo in arrays["photo"])
    _, direct = load_splits(TrainConfig(datasets=(str(root),), **TINY))
    _, unpacked = load_splits(TrainConfig(datasets=(str(out),), **TINY))
    for split in ("train", "val"):
        assert np.array_equal(direct[split].images, unpacked[split].images)


def test_reencode_encodes_even_photos_that_could_be_kept(tmp_path):
    """`--reencode --quality Q` makes a smaller pack, at a small loss, for a transfer size limit."""
    from helpers import folders

    root = folders(tmp_path / "faces", {"train/happy": 8, "train/sad": 8, "val/happy": 2, "val/sad": 2},
                   size=(48, 48), suffix=".jpg")  # fmt: skip
    out = tmp_path / "faces.npz"
    assert cli.main(["pack", str(root), "--out", str(out), "--reencode", "--quality", "60"]) == 0
    summary = pack.read_meta(out)
    assert summary["source_bytes_kept"] == 0 and summary["reencoded"] is True
    _, direct = load_splits(TrainConfig(datasets=(str(root),), **TINY))
    _, unpacked = load_splits(TrainConfig(datasets=(str(out),), **TINY))
    difference = np.abs(direct["train"].images.astype(int) - unpacked["train"].images.astype(int))
    assert 0 < difference.mean() < 12


def test_commands_other_than_train_say_a_pack_needs_its_datasets(packed, capsys):
    assert cli.main(["summary", str(packed)]) == 2
    assert "is a pack of prepared faces" in capsys.readouterr().err


def test_parts_of_a_pack_hold_the_whole_packs_faces_between_them(tmp_path, packed, dataset):
    outs = [tmp_path / f"part{k}.npz" for k in (1, 2)]
    for k, out in enumerate(outs, start=1):
        assert cli.main(["pack", str(dataset), "--out", str(out), "--part", f"{k}/2"]) == 0
    whole_labels, whole = load_splits(TrainConfig(datasets=(str(packed),), **TINY))
    labels, parts = load_splits(TrainConfig(datasets=tuple(map(str, outs)), **TINY))
    assert labels == whole_labels
    sizes = [pack.read_meta(out)["counts"] for out in outs]
    for split in ("train", "val"):
        key = lambda faces: sorted(zip(faces["photo"], faces["face"]))  # noqa: E731
        assert key(parts[split].faces) == key(whole[split].faces)
        assert sum(size[split] for size in sizes) == len(whole[split].y) > 0
    assert abs(sizes[0]["train"] - sizes[1]["train"]) <= 1
    assert dataset_roots(tuple(map(str, outs))) == [dataset_root(str(dataset))]


@pytest.mark.parametrize("part", ["3/2", "0/2", "half"])
def test_a_wrong_part_is_refused_with_the_form_to_use(dataset, tmp_path, part, capsys):
    assert cli.main(["pack", str(dataset), "--out", str(tmp_path / "p.npz"), "--part", part]) != 0
    assert "K/N" in capsys.readouterr().err
