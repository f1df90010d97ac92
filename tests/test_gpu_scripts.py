"""scripts/gpu/: prepare.sh packs datasets (split in parts under --max-bytes), and train.sh, the script a
GPU machine runs, run here on the CPU with JAX (as there): it trains on every pack under .pack/ and
refuses to train when a part of a pack is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import expw_faces

from fer import cli, pack
from fer.modelfile import load_model

ROOT = Path(__file__).resolve().parents[1]
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")


def tree_with_scripts(tmp_path: Path) -> Path:
    """A folder standing in for a copy of the project: the scripts, with the code on PYTHONPATH."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "scripts").symlink_to(ROOT / "scripts")
    return tree


def environment(**env: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "FER_LOADER_THREADS": "2", **env}


@pytest.fixture
def packs(tmp_path) -> Path:
    """A copy of the project with a .pack folder: train in two parts (one in a subfolder), val whole."""
    dataset = expw_faces(tmp_path / "expw", 42, faces_per_photo=2)
    tree = tree_with_scripts(tmp_path)
    (tree / ".pack" / "more").mkdir(parents=True)
    for k, folder in ((1, ".pack"), (2, ".pack/more")):
        out = tree / folder / f"expw-train-{k}-of-2.npz"
        assert (
            cli.main(["pack", str(dataset), "--splits", "train", "--part", f"{k}/2", "--out", str(out)]) == 0
        )
    assert cli.main(["pack", str(dataset), "--splits", "val", "--out", str(tree / ".pack" / "val.npz")]) == 0
    return tree


def gpu_train(
    tree: Path, *args: str, options: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess:
    """scripts/gpu/train.sh [OPTIONS] NAME [ARGS] in `tree`, NAME a fresh run name (in .name)."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        ["bash", "scripts/gpu/train.sh", *options, name, *args],
        cwd=tree,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    done.name = name
    return done


@needs_jax
@pytest.mark.slow
def test_gpu_train_trains_on_every_pack_into_a_run_folder(packs):
    done = gpu_train(packs, "--arch", "vgg-small", "--width", "4", "--epochs", "2", "--batch-size", "8")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "expw-train-1-of-2.npz" in done.stdout and "expw-train-2-of-2.npz" in done.stdout
    run = packs / "runs" / done.name
    assert len((run / "history.csv").read_text().splitlines()) == 3  # a header and both epochs
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    model, metadata = load_model(run / "best.keras")
    assert metadata["keras_backend"] == "jax" and metadata["counts"]["train"] == 28 + 28  # both parts
    assert model.output_shape[-1] == len(metadata["labels"])


@needs_jax
@pytest.mark.slow
def test_gpu_train_time_limit_stops_the_run_cleanly(packs, tmp_path):
    runs = tmp_path / "elsewhere"
    done = gpu_train(
        packs, "--arch", "vgg-small", "--width", "4", "--epochs", "500", "--batch-size", "8",
        "--patience", "500", "--lr-patience", "500",  # long by construction: only the limit ends it
        options=("--time-limit", "1"), RUNS=str(runs),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "time limit" in done.stdout and "--resume" in done.stdout
    status = json.loads((runs / done.name / "status.json").read_text())
    assert status["state"] == "cancelled"
    history = runs / done.name / "history.csv"  # none when stopped inside the first epoch
    assert not history.exists() or len(history.read_text().splitlines()) < 1 + 500
    assert (runs / f"{done.name}.log").is_file() and not (packs / "runs").exists()  # RUNS moved both


@needs_jax
def test_gpu_train_refuses_to_train_when_a_part_is_missing(packs):
    (packs / ".pack" / "more" / "expw-train-2-of-2.npz").unlink()
    done = gpu_train(packs, "--epochs", "1")
    assert done.returncode == 3
    assert "missing expw-train-2-of-2.npz" in done.stderr
    assert not (packs / "runs" / done.name / "best.keras").exists()


def test_gpu_prepare_splits_packs_bigger_than_max_bytes(tmp_path):
    dataset = expw_faces(tmp_path / "expw", 42, faces_per_photo=2)
    tree = tree_with_scripts(tmp_path)
    whole = tmp_path / "whole.npz"
    assert cli.main(["pack", str(dataset), "--splits", "train", "--out", str(whole)]) == 0
    limit = whole.stat().st_size * 2 // 3
    done = subprocess.run(
        ["bash", "scripts/gpu/prepare.sh", "--max-bytes", str(limit), str(dataset)],
        cwd=tree,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    packs = sorted(p.name for p in (tree / ".pack").iterdir())
    train = [p for p in packs if p.startswith("expw-train-")]
    assert len(train) >= 2 and f"expw-train-1-of-{len(train)}.npz" in train
    assert "expw-val.npz" in packs  # small enough: one file
    assert all((tree / ".pack" / p).stat().st_size <= limit for p in packs)
    parts = sum(pack.read_meta(tree / ".pack" / name)["counts"]["train"] for name in train)
    assert parts == pack.read_meta(whole)["counts"]["train"]  # every face in one part
