"""The data engine on the real datasets in ../shared/datasets (skipped where they are absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fer import cli, datasets, preprocess, splits

pytestmark = pytest.mark.realdata

FER_TRAIN = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "neutral": 4965,
    "sad": 4830,
    "surprise": 3171,
}


def run_json(capsys, *argv: str) -> dict:
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_fer2013_summary_counts(capsys, fer2013):
    result = run_json(capsys, "summary", str(fer2013), "--json")
    assert result["format"] == "folders"
    assert result["faces"] == result["kept"] == 35887
    assert {name: part["faces"] for name, part in result["per_split"].items()} == {
        "train": 28709,
        "val": 3589,
        "test": 3589,
    }
    assert result["per_split"]["train"]["per_label"] == FER_TRAIN
    assert result["labels"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert result["skipped"] == 0


def test_expw_sample_summary_and_threshold(capsys, expw_sample):
    kept = []
    for threshold in (0, 25, 50, 75, 100):
        result = run_json(capsys, "summary", str(expw_sample), "--min-confidence", str(threshold), "--json")
        assert result["format"] == "expw"
        assert result["faces"] == 2824
        kept.append(result["kept"])
    assert kept[0] == 2824
    assert all(a > b for a, b in zip(kept, kept[1:])), kept


def test_expw_sample_generated_split_is_grouped_by_photo(expw_sample):
    dataset = datasets.load(expw_sample)
    split = splits.assign(dataset.faces)
    per_photo = split.groupby(dataset.faces["photo"]).nunique()
    assert (per_photo == 1).all()
    shares = split.value_counts(normalize=True)
    assert shares["val"] == pytest.approx(0.1, abs=0.02) and shares["test"] == pytest.approx(0.1, abs=0.02)


@pytest.mark.slow
def test_prepare_expw_sample_writes_one_224_file_per_kept_face(capsys, tmp_path, expw_sample, session_cache):
    threshold = "40"
    kept = run_json(capsys, "summary", str(expw_sample), "--min-confidence", threshold, "--json")["kept"]
    out = tmp_path / "faces"
    result = run_json(
        capsys,
        "prepare", str(expw_sample), "--out", str(out), "--size", "224", "--min-confidence", threshold,
        "--cache-dir", str(session_cache), "--json",
    )  # fmt: skip
    files = sorted(out.rglob("*.png"))
    assert result["skipped"] == 0  # expw-sample's photos all decode
    assert result["written"] == len(files) == kept
    assert {f.parent.name for f in files} == set(datasets.load(expw_sample).labels)
    for path in files[:: max(1, len(files) // 25)]:
        with Image.open(path) as image:
            assert image.size == (224, 224) and image.mode == "L"
    # The same settings a second time are read from the cache.
    again = run_json(
        capsys,
        "prepare", str(expw_sample), "--out", str(tmp_path / "again"), "--size", "224",
        "--min-confidence", threshold, "--cache-dir", str(session_cache), "--json",
    )  # fmt: skip
    assert again["from_cache"] and again["written"] == result["written"]


@pytest.mark.slow
def test_fer2013_prepare_finds_duplicates_across_splits(fer2013, session_cache):
    dataset = datasets.load(fer2013)
    prepared = preprocess.prepare(dataset, preprocess.PrepSettings(size=48), cache_dir=session_cache)
    assert prepared.images.shape == (35887, 48, 48)
    # FER2013's files are 48x48 already: processing must not change their pixels beyond JPEG decoding.
    first = prepared.faces.iloc[0]
    with Image.open(dataset.photo_path(first["photo"])) as image:
        np.testing.assert_array_equal(prepared.images[0], np.asarray(image.convert("L")))
    duplicates = splits.cross_split_duplicates(
        prepared.faces, splits.assign(prepared.faces), prepared.faces["hash"]
    )
    assert len(duplicates) > 0
    assert (duplicates.groupby("group")["split"].nunique() > 1).all()


@pytest.mark.slow
def test_short_fer2013_run_evaluates_end_to_end(capsys, tmp_path, fer2013, session_cache, monkeypatch):
    monkeypatch.setattr(preprocess, "default_cache_dir", lambda: session_cache)
    run = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                str(fer2013),
                "--run-dir",
                str(run),
                "--arch",
                "seed",
                "--epochs",
                "2",
                "--max-faces",
                "6000",
                "--no-augment",
                "--json",
            ]
        )  # fmt: skip
        == 0
    )
    trained = json.loads(capsys.readouterr().out)
    result = run_json(capsys, "evaluate", str(fer2013), "--model", str(run / "best.keras"), "--json")
    assert result["n"] == trained["n"] == 3589  # FER2013's PrivateTest
    assert result["labels"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert sum(map(sum, result["confusion_matrix"])) == 3589
    assert [result["per_class"][k]["support"] for k in result["labels"]] == [491, 55, 528, 879, 594, 416, 626]
    assert result["accuracy"] == pytest.approx(trained["accuracy"])
    assert result["accuracy"] > 0.28  # well above always answering "happy" (879 / 3589 = 0.245)
