"""scripts/gpu_train.sh, the script a borrowed GPU machine runs, run here on the CPU with JAX (as
there): it trains on every carried pack (and on those an earlier call copied aside), keeps the
files asked for in $OUT, and refuses to train when a part of a pack did not arrive."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import expw_faces

from fer import cli
from fer.modelfile import load_model

ROOT = Path(__file__).resolve().parents[1]
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")


@pytest.fixture
def packs(tmp_path) -> Path:
    """A copy of the repository's scripts and code with a .pack folder: train in two parts, val whole."""
    dataset = expw_faces(tmp_path / "expw", 42, faces_per_photo=2)
    tree = tmp_path / "tree"
    (tree / ".pack" / "1").mkdir(parents=True)
    (tree / ".pack" / "2").mkdir()
    (tree / "scripts").symlink_to(ROOT / "scripts")
    for k in (1, 2):
        out = tree / ".pack" / str(k) / f"expw-train-{k}-of-2.npz"
        assert (
            cli.main(["pack", str(dataset), "--splits", "train", "--part", f"{k}/2", "--out", str(out)]) == 0
        )
    assert (
        cli.main(["pack", str(dataset), "--splits", "val", "--out", str(tree / ".pack" / "2" / "val.npz")])
        == 0
    )
    return tree


def gpu_train(tree: Path, out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    name = f"test-{uuid.uuid4().hex[:8]}"
    environment = {
        **os.environ,
        "OUT": str(out),
        "SKIP_WHEELS": "1",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
        "FER_LOADER_THREADS": "2",
        "RUNS": str(out.parent / "runs"),
        "KEPT": str(tree / "kept"),
        **env,
    }
    done = subprocess.run(
        ["bash", "scripts/gpu_train.sh", name, *args],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    done.name = name
    return done


@needs_jax
@pytest.mark.slow
def test_gpu_train_trains_on_every_pack_and_keeps_the_files_asked_for(packs, tmp_path):
    out = tmp_path / "out"
    (packs / "kept").mkdir()  # an earlier call copied its pack folder aside; the machine kept only that
    (packs / ".pack" / "1").rename(packs / "kept" / "1")
    done = gpu_train(
        packs, out, "--arch", "vgg-small", "--width", "4", "--epochs", "2", "--batch-size", "8",
        KEEP_FILES="best.keras history.csv status.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "expw-train-1-of-2.npz" in done.stdout and "expw-train-2-of-2.npz" in done.stdout
    kept = out / done.name
    assert sorted(p.name for p in kept.iterdir()) == ["best.keras", "history.csv", "status.json"]
    assert len((kept / "history.csv").read_text().splitlines()) == 3  # a header and both epochs
    model, metadata = load_model(kept / "best.keras")
    assert metadata["keras_backend"] == "jax" and metadata["counts"]["train"] == 28 + 28  # both parts
    assert model.output_shape[-1] == len(metadata["labels"])


@needs_jax
def test_gpu_train_refuses_to_train_when_a_part_did_not_arrive(packs, tmp_path):
    (packs / ".pack" / "2" / "expw-train-2-of-2.npz").unlink()
    done = gpu_train(packs, tmp_path / "out", "--epochs", "1")
    assert done.returncode == 3
    assert "missing expw-train-2-of-2.npz" in done.stderr
    assert not (tmp_path / "out" / done.name / "best.keras").exists()
