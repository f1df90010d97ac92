"""`python -m fer summary / prepare`, called in-process (and once as a real module run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import expw_faces, write_csv
from PIL import Image

from fer import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(tmp_path) -> Path:
    """ExpW, 9 photos of one face each: labels angry, disgust, fear, happy, sad, surprise, neutral,
    angry, disgust; confidences 0.1 .. 0.9; plus one line with an unknown label."""
    root = expw_faces(tmp_path / "expw", 9)
    with open(root / "label.lst", "a") as handle:
        handle.write("p0000.png 5 1 1 20 20 0.9 9\n")
    return root


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, out: str, err: str, *parts: str) -> None:
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err


def test_summary_json(capsys, dataset):
    code, out, err = run(capsys, "summary", dataset, "--json")
    assert code == 0
    assert err == ""
    result = json.loads(out)
    assert {"format", "faces", "kept", "per_label", "per_split", "skipped"} <= set(result)
    assert result["format"] == "expw"
    assert (result["faces"], result["kept"], result["skipped"]) == (9, 9, 1)
    assert result["per_label"] == {
        "angry": {"faces": 2, "kept": 2},
        "disgust": {"faces": 2, "kept": 2},
        "fear": {"faces": 1, "kept": 1},
        "happy": {"faces": 1, "kept": 1},
        "sad": {"faces": 1, "kept": 1},
        "surprise": {"faces": 1, "kept": 1},
        "neutral": {"faces": 1, "kept": 1},
    }
    assert set(result["per_split"]) == {"train", "val", "test"}
    assert sum(part["faces"] for part in result["per_split"].values()) == 9
    assert result["skipped_faces"][0]["photo"] == "image/p0000.png"
    assert result["skipped_faces"][0]["reason"].startswith("unknown label '9'")


def test_summary_min_confidence_lowers_kept(capsys, dataset):
    code, out, _ = run(capsys, "summary", dataset, "--json", "--min-confidence", "0.5")
    assert code == 0
    result = json.loads(out)
    assert (result["faces"], result["kept"], result["dropped"]) == (9, 5, 4)
    assert {label: part["kept"] for label, part in result["per_label"].items()} == {
        "angry": 1,
        "disgust": 1,
        "fear": 0,
        "happy": 0,
        "sad": 1,
        "surprise": 1,
        "neutral": 1,
    }
    assert sum(part["kept"] for part in result["per_split"].values()) == 5


def test_summary_as_text(capsys, dataset):
    code, out, _ = run(capsys, "summary", dataset, "--min-confidence", "0.5")
    assert code == 0
    assert out.startswith("expw (expw): 9 faces in 9 photos\nkept 5 at min confidence 0.5, dropped 4\n")
    assert "skipped 1 faces:" in out


def test_summary_seed_changes_the_drawn_split(capsys, tmp_path):
    root = expw_faces(tmp_path / "expw", 140)
    splits = []
    for seed in (0, 0, 5):
        code, out, _ = run(capsys, "summary", root, "--json", "--seed", seed, "--min-confidence", 0.5)
        assert code == 0
        splits.append(json.loads(out)["per_split"])
    assert splits[0] == splits[1]
    assert [s["val"]["faces"] for s in splits] == [14, 14, 14]  # stratified: 2 of each label's 20 photos
    assert splits[0] != splits[2]  # but other photos, so other confidences kept


def test_prepare_writes_the_faces(capsys, dataset, tmp_path):
    out_dir, cache = tmp_path / "out", tmp_path / "cache"
    argv = ("prepare", dataset, "--out", out_dir, "--size", 48, "--json", "--cache-dir", cache)
    code, out, err = run(capsys, *argv)
    assert code == 0
    result = json.loads(out)
    assert result["written"] == 9
    assert result["size"] == 48
    assert result["from_cache"] is False
    assert result["per_label"] == {
        "angry": 2,
        "disgust": 2,
        "fear": 1,
        "happy": 1,
        "neutral": 1,
        "sad": 1,
        "surprise": 1,
    }
    assert result["skipped"] == 1
    assert result["duplicates_across_splits"] == []
    assert Path(result["cache"]).parent == cache
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert files == [
        "angry/p0000_0.png",
        "angry/p0007_0.png",
        "disgust/p0001_0.png",
        "disgust/p0008_0.png",
        "fear/p0002_0.png",
        "happy/p0003_0.png",
        "neutral/p0006_0.png",
        "sad/p0004_0.png",
        "surprise/p0005_0.png",
    ]
    for name in files:
        with Image.open(out_dir / name) as image:
            assert (image.mode, image.size) == ("L", (48, 48))
    assert "processing faces" in err and "9/9" in err  # progress goes to stderr, not into the JSON
    assert "writing images" in err

    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert json.loads(out)["from_cache"] is True


def test_prepare_min_confidence_writes_fewer_faces(capsys, dataset, tmp_path):
    out_dir = tmp_path / "out"
    code, out, _ = run(
        capsys, "prepare", dataset, "--out", out_dir, "--size", 64, "--min-confidence", 0.75, "--json",
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["written"] == 2
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.png"))
    assert files == ["angry/p0007_0.png", "disgust/p0008_0.png"]
    assert np.asarray(Image.open(out_dir / files[0])).shape == (64, 64)


def test_prepare_as_text(capsys, dataset, tmp_path):
    code, out, _ = run(
        capsys, "prepare", dataset, "--out", tmp_path / "out", "--size", 48, "--cache-dir", tmp_path / "c"
    )
    assert code == 0
    assert out.startswith(f"wrote 9 faces (48x48 grayscale PNG) under {tmp_path / 'out'}\ncache: built ")
    assert "skipped 1 faces:\n  image/p0000.png face 5: unknown label '9'" in out


def test_prepare_generic_csv_with_a_column_mapping(capsys, tmp_path):
    expw_faces(tmp_path / "photos", 2)
    path = write_csv(
        tmp_path / "boxes.csv",
        ["pic", "bx", "by", "bw", "bh", "mood"],
        [
            ("photos/image/p0000.png", 2, 2, 30, 30, "happy"),
            ("photos/image/p0001.png", 0, 0, 64, 64, "Sadness"),
        ],
    )
    code, out, err = run(capsys, "summary", path, "--json")
    assert_one_line_error(code, out, err, "cannot tell which column holds the image and the label")
    code, out, _ = run(
        capsys, "prepare", path, "--columns", "image=pic,x=bx,y=by,w=bw,h=bh,label=mood", "--out", tmp_path / "out",
        "--size", 48, "--json", "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["per_label"] == {"happy": 1, "sad": 1}
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["p0000_0.png", "p0001_0.png"]


def test_no_dataset_is_an_error(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    assert_one_line_error(*run(capsys, "summary", missing), f"dataset not found: {missing} does not exist")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(
        *run(capsys, "summary", tmp_path / "notes.txt", "--json"), "is not a dataset", ".txt file"
    )
    (tmp_path / "empty").mkdir()
    assert_one_line_error(
        *run(capsys, "prepare", tmp_path / "empty", "--out", tmp_path / "out"), "is not a dataset"
    )
    assert not (tmp_path / "out").exists()


def test_invalid_size_is_an_error(capsys, dataset, tmp_path):
    code, out, err = run(
        capsys, "prepare", dataset, "--out", tmp_path / "out", "--size", 300, "--cache-dir", tmp_path / "c"
    )
    assert_one_line_error(code, out, err, "size must be between 48 and 224 pixels, got 300")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["summary", "prepare"])
def test_invalid_min_confidence_is_an_error(capsys, dataset, tmp_path, command):
    extra = ["--out", tmp_path / "out", "--cache-dir", tmp_path / "c"] if command == "prepare" else []
    code, out, err = run(capsys, command, dataset, "--min-confidence", -1, *extra)
    assert_one_line_error(code, out, err, "min_confidence must be a number of at least 0, got -1.0")


def test_malformed_column_mapping_is_an_error(capsys, dataset):
    assert_one_line_error(
        *run(capsys, "summary", dataset, "--columns", "image"), "column mapping must look like field=column"
    )


def test_an_output_that_cannot_be_written_is_an_error(capsys, dataset, tmp_path):
    (tmp_path / "taken").write_text("a file where the output folder should go")
    code, out, err = run(
        capsys, "prepare", dataset, "--out", tmp_path / "taken", "--size", 48, "--cache-dir", tmp_path / "c"
    )
    assert code == 2
    assert out == ""
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "taken" in error_lines[0], err
    assert "Traceback" not in err


def test_python_dash_m_fer_runs_the_command_line(dataset, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fer", "summary", str(dataset), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["format"], result["faces"], result["skipped"]) == ("expw", 9, 1)

    failed = subprocess.run(
        [sys.executable, "-m", "fer", "summary", str(tmp_path / "nowhere")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.startswith("error: dataset not found")
    assert "Traceback" not in failed.stderr


@pytest.mark.slow
def test_export_command_writes_a_scored_model(tiny_run, tmp_path, capsys):
    from fer.modelfile import read_metadata

    out = tmp_path / "model.keras"
    assert cli.main(["export", str(tiny_run), "--out", str(out), "--score", "demo"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert set(read_metadata(out)["test_metrics"]) == {"demo"}
    assert cli.main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.keras")]) == 2
    assert "no best.keras" in capsys.readouterr().err


@pytest.mark.slow
def test_export_without_scoring_keeps_the_runs_own_scores(tiny_run, tmp_path, capsys):
    from fer.modelfile import read_metadata

    out = tmp_path / "model.keras"
    assert cli.main(["export", str(tiny_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert read_metadata(out)["test_metrics"]["n"] > 0  # the run's test scores, kept as they were
