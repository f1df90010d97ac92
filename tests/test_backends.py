"""The training code on other Keras setups, each in its own process: the JAX backend (what a GPU machine
with JAX alone has) and TensorFlow's MirroredStrategy over two logical CPU devices (stand-ins for GPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import expw_faces

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, **env: str) -> dict:
    """Run `script` in a fresh interpreter from the repository root; it prints one JSON line last."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


JAX_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
import keras
from fer import runs as R
from fer import train as T
from fer.config import ModelConfig, TrainConfig
from fer.faces import Split
from fer.modelfile import load_model, predict_probabilities
from fer.models import build

run_dir = Path(sys.argv[1])
config = TrainConfig(batch_size=16, epochs=1)  # the default architecture
model_config = config.model_config(num_classes=7)
model = build(model_config)
T._compile(model, config)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (32, 48, 48), dtype=np.uint8)
y = np.arange(32) % 7
split = Split(images, pd.DataFrame({"label": y}), y)
data = T.Batches(split, config, training=True, num_classes=7)
before = keras.ops.convert_to_numpy(model.trainable_weights[0]).copy()
metadata = {"labels": list("abcdefg"), "image_size": 48}
recorder = T.RunRecorder(run_dir, config, metadata, {}, len(data))
history = model.fit(data, epochs=1, callbacks=[recorder], verbose=0)
after = keras.ops.convert_to_numpy(model.trainable_weights[0])
loaded, saved = load_model(run_dir / "best.keras")
probabilities = predict_probabilities(loaded, images[:4])
print(json.dumps({
    "backend": keras.backend.backend(),
    "arch": model_config.arch,
    "steps": len(data),
    "loss": [float(v) for v in history.history["loss"]],
    "changed": bool(not np.array_equal(before, after)),
    "history_epochs": R.read_history(run_dir)["epoch"].tolist(),
    "saved_labels": saved["labels"],
    "shape": list(probabilities.shape),
    "sums": probabilities.sum(axis=1).tolist(),
}))
"""


@pytest.mark.slow
def test_jax_backend_trains_the_default_architecture(tmp_path):
    pytest.importorskip("jax")
    from fer.config import TrainConfig

    # Unoptimised XLA code compiles in half the time on a small CPU; the numbers are the same.
    flags = os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0")
    result = run_script(JAX_SCRIPT, str(tmp_path / "run"), KERAS_BACKEND="jax", XLA_FLAGS=flags)
    assert result["backend"] == "jax"
    assert result["arch"] == TrainConfig().arch
    assert result["steps"] == 2
    assert len(result["loss"]) == 1 and result["loss"][0] > 0
    assert result["changed"], "fit changed no weight"
    assert result["history_epochs"] == [1]
    assert result["saved_labels"] == list("abcdefg")
    assert result["shape"] == [4, 7]
    assert result["sums"] == pytest.approx([1.0] * 4, abs=1e-5)


MIRRORED_SCRIPT = """
import json, sys
from pathlib import Path
import tensorflow as tf

# Two logical CPU devices, configured before anything initialises TensorFlow's runtime.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

replicas = []
Mirrored = tf.distribute.MirroredStrategy

def recording(*args, **kwargs):
    strategy = Mirrored(*args, **kwargs)
    replicas.append(strategy.num_replicas_in_sync)
    return strategy

tf.distribute.MirroredStrategy = recording

from fer import runs as R
from fer import train as T
from fer.config import TrainConfig
from fer.modelfile import read_metadata

dataset, run_dir = sys.argv[1], Path(sys.argv[2])
# val and test get two photos of each of the seven labels: 14 faces, so the first validation batch (8)
# splits evenly over two replicas (see the note in test_mirrored_strategy_trains_on_two_replicas).
config = TrainConfig(
    datasets=(dataset,), arch="vgg-small", width=4, image_size=48, epochs=1, batch_size=8,
    val_share=0.25, test_share=0.25, strategy="mirrored",
)
metrics = T.train(config, run_dir)
print(json.dumps({
    "devices": [d.name for d in tf.config.list_logical_devices("CPU")],
    "replicas": replicas,
    "state": R.read_status(run_dir)["state"],
    "history_epochs": R.read_history(run_dir)["epoch"].tolist(),
    "n": metrics["n"],
    "strategy": read_metadata(run_dir / "best.keras")["train"]["strategy"],
}))
"""


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_replicas(tmp_path):
    # Keras 3.15 builds a distributed model by averaging the first batch across replicas, which fails
    # ("Inputs to operation AddN ... must have the same size and shape") when that batch does not split
    # evenly, e.g. a validation set of 7 faces on 2 replicas; hence the even sizes in the script.
    pytest.importorskip("tensorflow")
    dataset = expw_faces(tmp_path / "expw", 56)
    result = run_script(MIRRORED_SCRIPT, str(dataset), str(tmp_path / "run"), KERAS_BACKEND="tensorflow")
    assert len(result["devices"]) == 2
    assert result["replicas"] == [2]
    assert result["state"] == "done"
    assert result["history_epochs"] == [1]
    assert result["n"] == 14
    assert result["strategy"] == "mirrored"


BLOCK_TENSORFLOW = """
import sys


class _NoTensorFlow:
    # A GPU machine set up with JAX alone has no TensorFlow (and so no mtcnn).
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "mtcnn"):
            raise ImportError(f"{name} is not installed here")


sys.meta_path.insert(0, _NoTensorFlow())
"""


@pytest.mark.slow
def test_a_pack_trains_under_jax_where_tensorflow_cannot_be_imported(tmp_path):
    """The GPU machine's route: pack here, carry the pack, `fer train PACK` there with JAX alone."""
    pytest.importorskip("jax")
    from fer import cli

    dataset = expw_faces(tmp_path / "expw", 42)
    packed = tmp_path / "faces.npz"
    assert cli.main(["pack", str(dataset), "--out", str(packed)]) == 0
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    environment = {
        **os.environ,
        "PYTHONPATH": str(blocker),
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0"),
    }
    command = [sys.executable, "-m", "fer", "train", str(packed), "--run-dir", str(tmp_path / "run")]
    command += ["--epochs", "1", "--arch", "vgg-small", "--width", "4", "--batch-size", "8", "--json"]
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["split"] == "val (no test faces)" and metrics["n"] > 0
    check = [sys.executable, "-c", "import tensorflow"]
    assert subprocess.run(check, env=environment, capture_output=True).returncode != 0  # really blocked
