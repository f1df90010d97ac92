"""Training: datasets in, a run folder out (see fer.runs for what it holds).

The fit loop is Keras' own; everything the dashboard shows leaves it through `RunRecorder`, a
callback that writes progress, history and checkpoints to the run folder and nothing else. Early
stopping and the learning-rate schedule live in that callback too, with their counters saved inside
last.keras (and copied to state.json), so a run resumed after a kill -9, wherever it landed, carries
on exactly where its last finished epoch ended.

A run is a few short steps, in this order (`_train`): prepare the faces (fer.faces), record the
run's config and labels, build the model or resume it from last.keras, fit, then score the best
model on the test faces and write the results. The model file format is fer.modelfile's; the
configs are fer.config's. This module is the fit loop, so it imports Keras at the top.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from fer import augment, calibration, faces, modelfile, models, runs
from fer.config import ModelConfig, TrainConfig
from fer.evaluate import metrics, predictions_table

# Precision ----------------------------------------------------------------------------------------

CPUINFO = Path("/proc/cpuinfo")
# The x86 instruction sets that do bfloat16 matrix arithmetic in hardware (oneDNN uses either).
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The instruction-set flags /proc/cpuinfo lists for this machine's CPU; empty where there is none
    (not Linux) or it cannot be read."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def bfloat16_cpu() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). Without it there is no
    fast bfloat16 arithmetic for training in bfloat16 to gain from."""
    return any(flag in cpu_flags() for flag in BFLOAT16_FLAGS)


def precision(name: str) -> str:
    """What a run asking for precision `name` (fer.config.PRECISIONS) trains in: "float32" or
    "bfloat16". "auto" is bfloat16 where it was measured faster (1.1-1.6 times; about 2 points lower
    after 10 epochs, half a point after full runs, docs/benchmarks.md): TensorFlow on a CPU with
    bfloat16 instructions and no GPU. Elsewhere float32: a GPU has its own trade-offs, and JAX on the
    CPU was not measured."""
    if name != "auto":
        return name
    if keras.backend.backend() != "tensorflow" or not bfloat16_cpu():
        return "float32"
    import tensorflow as tf

    return "float32" if tf.config.list_physical_devices("GPU") else "bfloat16"


# Fused batch norm ---------------------------------------------------------------------------------


def fuse_batch_norms(model) -> int:
    """Let `model`'s batch norms train with TensorFlow's fused kernel, one pass over the activations
    where Keras' own layer takes several (mean, variance, normalise, and as many again backwards).
    On 2 CPU cores vgg-lite trained 1.28 times as fast in float32 and 1.59 in bfloat16
    (docs/benchmarks.md). Same arithmetic: the layers stay Keras BatchNormalization, with their
    weights, moving statistics and saved form; only their training step on 4-D channels-last input
    changes, and everything else (inference, frozen layers, other shapes) runs Keras' code. Returns
    how many layers were fused: 0 on a backend other than TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return 0
    import types

    fused = 0
    for layer in model.layers:
        if type(layer) is keras.layers.BatchNormalization and not layer.renorm and not layer.synchronized:
            layer.call = types.MethodType(_fused_batch_norm_call, layer)
            fused += 1
    return fused


def _fused_batch_norm_call(self, inputs, training=None, mask=None):
    """BatchNormalization.call with the training step on TensorFlow's FusedBatchNormV3 kernel; the
    moving statistics are updated as Keras does (momentum, variance without Bessel's correction)."""
    import tensorflow as tf

    channels_last = self.axis in (-1, len(inputs.shape) - 1)
    if not (training and self.trainable and mask is None and len(inputs.shape) == 4 and channels_last):
        return type(self).call(self, inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = self.gamma if self.scale else tf.ones((channels,), tf.float32)
    offset = self.beta if self.center else tf.zeros((channels,), tf.float32)
    # In float32, as Keras' layer computes it, whatever the layer's precision.
    outputs, mean, variance, *_ = tf.compat.v1.nn.fused_batch_norm(
        tf.cast(inputs, tf.float32),
        tf.cast(scale, tf.float32),
        tf.cast(offset, tf.float32),
        epsilon=self.epsilon,
        is_training=True,
    )
    # The kernel returns the variance with Bessel's correction (n / (n - 1)); Keras keeps it without.
    n = tf.cast(tf.size(inputs) // channels, tf.float32)
    variance = variance * (n - 1.0) / tf.maximum(n, 2.0)
    momentum = self.momentum
    self.moving_mean.assign(
        self.moving_mean * momentum + tf.cast(mean, self.moving_mean.dtype) * (1 - momentum)
    )
    self.moving_variance.assign(
        self.moving_variance * momentum + tf.cast(variance, self.moving_variance.dtype) * (1 - momentum)
    )
    return tf.cast(outputs, self.compute_dtype)


# Batches ------------------------------------------------------------------------------------------


def soft_targets(config: TrainConfig) -> bool:
    """Whether the run's targets are probabilities over the labels (label smoothing, teachers) rather
    than label indices: Batches makes them and _compile picks the loss and metric by this one test."""
    return bool(config.label_smoothing or config.teachers)


def teacher(config: TrainConfig, labels: list[str]):
    """The run's teachers (config.teachers) as one function from a batch of (n, size, size) faces to
    their averaged calibrated probabilities, each read as its model file says, in the run's label
    order (matched by name): what the model is also taught (distillation). None without teachers.
    A teacher that is not a model file, knows other expressions or reads another face size is
    refused, naming it."""
    if not config.teachers:
        return None
    read = []
    for name in config.teachers.split(","):
        path = Path(name.strip())
        _need_model_file(path, "--teachers")
        model, metadata = modelfile.load_model(path)
        known = [str(label) for label in metadata.get("labels") or []]
        if sorted(known) != sorted(labels):
            raise ValueError(
                f"--teachers {path} knows the expressions {', '.join(known)}, not this run's "
                f"{', '.join(labels)}: teach with models trained on the same expressions"
            )
        if tuple(model.input_shape[1:3]) != (config.image_size, config.image_size):
            raise ValueError(
                f"--teachers {path} reads {model.input_shape[1]} px faces, not this run's {config.image_size} px"
            )
        read.append((model, metadata, [known.index(label) for label in labels]))
    lock = threading.Lock()  # loader threads take turns with the teachers

    def probabilities(faces: np.ndarray) -> np.ndarray:
        with lock:
            answers = [
                modelfile.predict_probabilities(model, faces, metadata=metadata)[:, order]
                for model, metadata, order in read
            ]
        return np.mean(answers, axis=0).astype(np.float32)

    return probabilities


def loader_threads() -> int:
    """Threads that make batches while the model trains: FER_LOADER_THREADS, else 1. A batch depends
    only on (seed, epoch, index), so any number gives the same batches. OpenCV and NumPy release the
    GIL in augmentation's work, so threads scale it (about 50,000 faces/s each with OpenCV, 5,000 with
    the NumPy fallback, on 2 CPU cores), which a GPU needs: one thread feeds 2 CPU cores' training
    with room to spare, not always a GPU's."""
    value = os.environ.get("FER_LOADER_THREADS", "1")
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"FER_LOADER_THREADS must be a whole number of threads, got {value!r}") from None
    if not 1 <= threads <= 64:
        raise ValueError(f"FER_LOADER_THREADS must be between 1 and 64, got {threads}")
    return threads


def restore_malloc() -> None:
    """Undo TensorFlow's tf.data generator patch to glibc malloc (M_TRIM_THRESHOLD=128 kb).

    With it, every large tensor is mmap'd and unmapped again, and training spends a third of its
    time in page faults: on 2 CPU cores the vgg model fell from ~170 to ~80 faces/s,
    measured by resetting the thresholds in the running process. Keras feeds a PyDataset through
    tf.data's generator op, so every TensorFlow run here hits it. No-op off glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)


class Batches(keras.utils.PyDataset):
    """A split as Keras batches: shuffled and augmented when training. The order and the
    augmentation of epoch e depend only on (seed, e), so a resumed run sees what an unbroken one would."""

    def __init__(
        self,
        split: faces.Split,
        config: TrainConfig,
        *,
        training: bool,
        num_classes: int,
        start_epoch: int = 0,
        teacher=None,
    ) -> None:
        super().__init__(workers=loader_threads(), use_multiprocessing=False)
        self.split, self.config, self.training, self.num_classes = split, config, training, num_classes
        self.teacher = teacher  # training faces' soft targets (see `teacher`), or None
        self.epoch = start_epoch
        self.order = np.arange(len(split.y))
        self.on_epoch_end()

    def __len__(self) -> int:
        return max(1, -(-len(self.split.y) // self.config.batch_size))

    def __getitem__(self, i: int):
        restore_malloc()  # two mallopt calls: cheap, and TensorFlow re-patches per iterator
        size = self.config.batch_size
        rows = np.sort(self.order[i * size : (i + 1) * size])
        pixels = self.split.images[rows]
        if self.training and self.config.augment:
            rng = np.random.default_rng([self.config.seed, self.epoch, i])
            x = augment.augment(pixels, rng, augment.AugmentSettings(erase=self.config.erase))
        else:
            x = pixels.astype(np.float32)
        y = self.split.y[rows]
        if soft_targets(self.config):
            y = np.eye(self.num_classes, dtype=np.float32)[y]
        if self.training and self.teacher is not None:
            share = np.float32(self.config.distill)
            y = (1 - share) * y + share * self.teacher(x)
        return x[..., None], y

    def on_epoch_end(self) -> None:
        if self.training:
            self.order = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(self.split.y))
            self.epoch += 1


# Recording the run --------------------------------------------------------------------------------


class RunRecorder(keras.callbacks.Callback):
    """Writes progress, history, checkpoints and state; handles early stopping, the LR schedule and
    cancellation (a `cancel` file in the run folder)."""

    def __init__(self, run_dir: Path, config: TrainConfig, metadata: dict, state: dict, steps: int):
        super().__init__()
        self.run_dir, self.config, self.metadata, self.state, self.steps = (
            run_dir,
            config,
            metadata,
            state,
            steps,
        )
        self.last_write = 0.0
        self.epoch_start = time.monotonic()
        self.cancelled = False

    def _cancel_requested(self) -> bool:
        return (self.run_dir / runs.CANCEL).exists()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()
        self.epoch = epoch
        self.batches_done = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches_done = batch + 1
        now = time.monotonic()
        if now - self.last_write < 1.0 and batch + 1 < self.steps:
            return
        self.last_write = now
        logs = logs or {}
        runs.write_json(
            self.run_dir / runs.PROGRESS,
            {
                "epoch": self.epoch + 1,
                "epochs": self.config.epochs,
                "batch": batch + 1,
                "batches": self.steps,
                "loss": float(logs.get("loss", float("nan"))),
                "accuracy": float(logs.get("accuracy", float("nan"))),
                "seconds": now - self.epoch_start,
                "updated": time.time(),
            },
        )
        runs.set_status(self.run_dir, "running", epoch=self.epoch + 1)
        if self._cancel_requested():
            self.cancelled = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.cancelled and self.batches_done < self.steps:
            # Cancelled part-way: Keras still validates and ends the epoch, but it saw only some
            # of the faces. It is not a finished epoch: nothing is recorded, and a resume trains
            # it again from its first batch.
            return
        logs = dict(logs or {})
        state = self.state
        lr = float(np.asarray(self.model.optimizer.learning_rate))
        row = {
            "epoch": epoch + 1,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "learning_rate": lr,
            "seconds": time.monotonic() - self.epoch_start,
        }
        history = runs.read_history(self.run_dir)
        history = history[history["epoch"] < epoch + 1] if len(history) else history
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
        val = float(logs.get("val_accuracy", 0.0))
        improved = val > state.get("best_val_accuracy", -1.0)
        if improved:
            state.update(best_val_accuracy=val, best_epoch=epoch + 1, wait=0, lr_wait=0)
        else:
            state["wait"] = state.get("wait", 0) + 1
            state["lr_wait"] = state.get("lr_wait", 0) + 1
            if state["lr_wait"] >= self.config.lr_patience:
                self.model.optimizer.learning_rate.assign(lr * 0.5)
                state["lr_wait"] = 0
        state["epoch"] = epoch + 1
        if state["wait"] >= self.config.patience:
            state["stopped_early"] = True
            self.model.stop_training = True
        # A kill can come between any two of these files, so one of them is the commit: last.keras,
        # which carries the state that goes with its weights. Before it, the history row (a resume
        # drops rows past the commit); after it, best.keras (a resume rewrites it from last.keras
        # if the kill came first) and state.json, the state for readers.
        runs.write_csv(self.run_dir / runs.HISTORY, history)
        modelfile.save_model(self.model, self.run_dir / runs.LAST, {**self.metadata, "state": state})
        if improved:
            save_best(self.model, self.run_dir, {**self.metadata, "epoch": epoch + 1})
        runs.write_json(self.run_dir / runs.STATE, state)
        if self._cancel_requested():
            self.cancelled = True
            self.model.stop_training = True


def save_best(model, run_dir: Path, metadata: dict) -> None:
    """best.keras: the model in float32 whatever it trains in (fer.models.float32_twin), so what is
    exported, evaluated and used for prediction loads and predicts as a float32-trained model does.
    last.keras keeps the training precision, so a resume carries on in it."""
    modelfile.save_model(models.float32_twin(model), run_dir / runs.BEST, metadata)


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, command: str | None = None) -> dict:
    """Train as `config` says into `run_dir`; returns the final test metrics. Resumes from last.keras.

    A run folder that cannot be written (a full disk, a read-only folder, a file in the way) raises an
    OSError whose message says so and what to do, after recording it as the run's error where the
    status can still be written.

    Under the multiworker strategy every worker runs this with the same arguments, and only the chief
    (see `is_chief`) writes `run_dir`: the others train in a temporary folder of their own, removed at
    the end, and never touch `run_dir`, which may be the chief's own folder when they share a disk."""
    run_dir = Path(run_dir)
    saved = (runs.read_json(run_dir / runs.CONFIG, {}) or {}).get("train") or {} if resume else {}
    if resume and saved.get("strategy") == "multiworker" and _cluster_size() > 1:
        raise ValueError(
            f"cannot resume {run_dir} on several workers: unset TF_CONFIG and resume it on the chief's "
            "machine alone"
        )
    if config.strategy == "multiworker" and not is_chief():
        with tempfile.TemporaryDirectory(prefix="fer-worker-") as scratch:
            print(
                f"worker {_task()}: not the chief, so it writes nothing to {run_dir}; the chief writes "
                "the run folder",
                file=sys.stderr,
                flush=True,
            )
            return _train_in(config, Path(scratch) / "run", resume=False, command=command)
    return _train_in(config, run_dir, resume=resume, command=command)


def _tf_config() -> dict:
    """TF_CONFIG, the cluster and this process's task in it, as TensorFlow reads it; {} when unset."""
    value = os.environ.get("TF_CONFIG", "").strip()
    try:
        parsed = json.loads(value) if value else {}
    except ValueError:
        raise ValueError(f"TF_CONFIG must be JSON with a cluster and a task, got {value!r}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with a cluster and a task, got {value!r}")
    return parsed


def _cluster_size() -> int:
    cluster = _tf_config().get("cluster") or {}
    return sum(len(cluster.get(kind) or []) for kind in ("chief", "worker"))


def _task() -> str:
    task = _tf_config().get("task") or {}
    return f"{task.get('type', 'worker')} {task.get('index', 0)}"


def is_chief() -> bool:
    """Whether this process writes the run folder of a multi-worker run: TensorFlow's chief, the task
    of type "chief" where the cluster has one, else worker 0. A process without TF_CONFIG is alone,
    so it is its own chief."""
    config = _tf_config()
    task, cluster = config.get("task") or {}, config.get("cluster") or {}
    if not task:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def _train_in(config: TrainConfig, run_dir: Path, *, resume: bool, command: str | None) -> dict:
    """train(), writing `run_dir`: made if need be and locked for this process."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(_folder_problem(error, run_dir)) from error
    try:  # before anything is written: a second process on this folder changes nothing in it
        lock = runs.lock_run(run_dir)  # RunBusy (a ValueError) when another live process holds it
    except OSError as error:
        raise OSError(_storage_problem(error, run_dir) or _folder_problem(error, run_dir)) from error
    with lock:
        return _train_locked(config, run_dir, resume=resume, command=command)


def _train_locked(config: TrainConfig, run_dir: Path, *, resume: bool, command: str | None) -> dict:
    """train(), in a run folder this process has locked."""
    if resume:
        saved = runs.read_json(run_dir / runs.CONFIG)
        if not saved:
            raise ValueError(f"cannot resume: {run_dir} has no config.json (was it a run folder?)")
        current = runs.read_status(run_dir)
        # The dashboard's process writes "queued" before it starts this one (fer.launch.resume).
        if current["state"] in ("queued", "running") and current.get("pid") not in (
            os.getpid(),
            os.getppid(),
        ):
            raise ValueError(
                f"cannot resume {run_dir}: it is still {current['state']} (process {current.get('pid')} "
                f"on {current.get('host')}); cancel it or wait for it to end"
            )
        config = TrainConfig.from_dict(saved["train"])
        command = command or saved.get("command")  # the command that made the run, not "--resume"
    command = command or f"fer.train.train({config!r})"
    slot = None
    try:
        if os.environ.get(runs.QUEUE_ENV):  # started or resumed by the dashboard: wait in line
            slot = runs.wait_for_slot(run_dir)
            if slot is None:
                runs.set_status(run_dir, "cancelled", error=None)
                return {}
        (run_dir / runs.CANCEL).unlink(missing_ok=True)
        if resume:
            runs.sweep_temporary(run_dir)  # what killed writers left; no other process writes this run now
        else:
            # Before anything else, so the run store lists the run and it can be resumed, even if it is
            # killed while its faces are prepared. _train adds the model config and the labels.
            runs.write_json(run_dir / runs.CONFIG, {"train": asdict(config), "command": command})
        runs.set_status(run_dir, "running", epoch=0, epochs=config.epochs, error=None)
        return _train(config, run_dir, resume=resume, command=command)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            runs.set_status(run_dir, "cancelled", error="stopped by the user (interrupt)")
        raise
    except BaseException as error:
        problem = _storage_problem(error, run_dir)
        message = problem or f"{type(error).__name__}: {error}"
        with contextlib.suppress(OSError):  # a full or read-only disk may refuse this too
            runs.set_status(run_dir, "failed", error=message, traceback=traceback.format_exc(limit=20))
        if problem:
            raise OSError(problem) from error
        raise
    finally:
        if slot is not None:
            slot.close()


def _folder_problem(error: OSError, run_dir: Path) -> str:
    """Why the run folder itself could not be made, in words."""
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in (run_dir, *run_dir.parents) if p.exists() and not p.is_dir()), run_dir)
        return f"cannot create the run folder {run_dir}: {blocker} is a file, not a folder"
    reason = (error.strerror or str(error)).lower()
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"cannot create the run folder {run_dir}: its folder is not writable ({reason}); "
            "choose a --run-dir on a writable disk"
        )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot create the run folder {run_dir}: no space left on device; free some disk space"
    return f"cannot create the run folder {run_dir}: {reason}"


def _storage_problem(error: BaseException, run_dir: Path) -> str | None:
    """A sentence for a run stopped by its disk (full, read-only, not permitted), or None."""
    found: BaseException | None = error
    while found is not None and not (isinstance(found, OSError) and found.errno):
        found = found.__cause__ or found.__context__
    if found is None:
        return None
    # fer.runs.write_atomic names the file it was writing; Keras' own errors name none.
    path = Path(str(found.filename)) if found.filename else None
    in_run = path is None or path.parent == run_dir
    where = (f"{path.name} in {run_dir}" if path else f"the run folder {run_dir}") if in_run else str(path)
    resume = f"python -m fer train --resume --run-dir {run_dir}"
    if found.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left on device while writing {where}: free some disk space and resume the run "
            f"with `{resume}`"
        )
    if found.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and in_run:
        reason = (found.strerror or str(found)).lower()
        return (
            f"the run folder {run_dir} is not writable ({reason}) while writing {where}: make it "
            f"writable and resume the run with `{resume}`"
        )
    return None  # anything else (a dataset it may not read, say) says what it is well enough


# The run, step by step --------------------------------------------------------------------------


def _train(config: TrainConfig, run_dir: Path, *, resume: bool, command: str) -> dict:
    labels, data = _prepare_data(config, run_dir, resume=resume)
    model_config = config.model_config(num_classes=len(labels))
    metadata = _metadata(config, model_config, labels, data, command)
    metadata.update(_reading_of_start(config, run_dir, resume=resume))
    _record_run(config, model_config, labels, run_dir, resume=resume, command=command)
    teach = teacher(config, labels)  # a wrong teacher is refused before anything trains
    model, state = _build_or_resume(config, model_config, labels, run_dir, metadata, resume=resume)
    if _fit(model, config, labels, data, run_dir, metadata, state, teach).cancelled:
        runs.set_status(run_dir, "cancelled", error=None)
        return {}
    return _score(config, labels, data, run_dir, metadata, state)


def _prepare_data(
    config: TrainConfig, run_dir: Path, *, resume: bool
) -> tuple[list[str], dict[str, faces.Split]]:
    """The run's faces, split, and the labels in the model's output order."""
    last = [0.0]

    def preparing(done: int, total: int) -> None:  # the cold cache of a large dataset takes minutes
        if time.monotonic() - last[0] >= 1.0 or done >= total:
            last[0] = time.monotonic()
            runs.write_json(
                run_dir / runs.PROGRESS,
                {"stage": "preparing faces", "done": done, "total": total, "updated": time.time()},
            )

    preparing(0, 1)
    labels, data = faces.load_splits(config, progress=preparing)
    if config.init_from and not resume:
        labels = _labels_of_start(Path(config.init_from), labels, data)
    elif config.init_from:  # a resumed run keeps the labels it started with
        labels = _relabel(
            list((runs.read_json(run_dir / runs.CONFIG, {}) or {}).get("labels") or labels), labels, data
        )
    return labels, data


def _metadata(
    config: TrainConfig,
    model_config: ModelConfig,
    labels: list[str],
    data: dict[str, faces.Split],
    command: str,
) -> dict:
    """What every model file the run saves carries (fer.modelfile.METADATA)."""
    return {
        "labels": labels,
        "image_size": config.image_size,
        "margin": config.margin,
        "preprocessing": "crop box (clipped), resize (bilinear), grayscale, uint8; the model scales to [0, 1]",
        "model": asdict(model_config),
        "train": asdict(config),
        "command": command,
        # Absolute, so evaluate can tell "this is the dataset I was trained on" from any folder.
        "dataset_roots": faces.dataset_roots(config.datasets),
        "keras_backend": keras.backend.backend(),
        "counts": {split: int(len(part.y)) for split, part in data.items()},
    }


def _record_run(
    config: TrainConfig,
    model_config: ModelConfig,
    labels: list[str],
    run_dir: Path,
    *,
    resume: bool,
    command: str,
) -> None:
    """config.json with the model config and the labels, and labels.json; a resumed run keeps its own."""
    saved = runs.read_json(run_dir / runs.CONFIG, {}) or {}
    if not resume or "labels" not in saved or not (run_dir / runs.LABELS).is_file():
        runs.write_json(run_dir / runs.CONFIG, {"train": asdict(config), "model": asdict(model_config),
                                                "command": command, "labels": labels})  # fmt: skip
        runs.write_json(run_dir / runs.LABELS, labels)


def _build_or_resume(
    config: TrainConfig,
    model_config: ModelConfig,
    labels: list[str],
    run_dir: Path,
    metadata: dict,
    *,
    resume: bool,
) -> tuple[keras.Model, dict]:
    """The model to fit and the state it goes with: last.keras and the state committed inside it when
    resuming, else a new model (from --init-from's weights, if given) and a fresh state."""
    state = dict(runs.read_json(run_dir / runs.STATE, {}) or {}) if resume else {}
    keras.utils.set_random_seed(config.seed)
    strategy = _strategy(config.strategy)
    if strategy and config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"batch_size must be a multiple of the {strategy.num_replicas_in_sync} devices the "
            f"{config.strategy} strategy trains on, got {config.batch_size}"
        )
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        if resume and (run_dir / runs.LAST).is_file():
            model = keras.saving.load_model(run_dir / runs.LAST, safe_mode=True)
            metadata["trained_in"] = "bfloat16" if models.is_mixed(model) else "float32"
            committed = modelfile.read_metadata(run_dir / runs.LAST).get("state")
            if committed is not None:  # the state that goes with these weights (see RunRecorder)
                state = dict(committed)
                _repair_best(model, run_dir, metadata, state)
        else:
            metadata["trained_in"] = precision(config.precision)
            model = _build_compiled(model_config, config, metadata["trained_in"])
            if config.init_from:
                _start_from(model, Path(config.init_from), labels)
            state = {}
        fuse_batch_norms(model)
    if resume:  # what a kill left past the last finished epoch goes: that epoch is trained again
        initial_epoch = int(state.get("epoch", 0))
        history = runs.read_history(run_dir)
        if len(history) and (history["epoch"] > initial_epoch).any():
            runs.write_csv(run_dir / runs.HISTORY, history[history["epoch"] <= initial_epoch])
        if runs.read_json(run_dir / runs.STATE) != state:
            runs.write_json(run_dir / runs.STATE, state)
    return model, state


def _fit(
    model: keras.Model,
    config: TrainConfig,
    labels: list[str],
    data: dict[str, faces.Split],
    run_dir: Path,
    metadata: dict,
    state: dict,
    teach=None,
) -> RunRecorder:
    """Keras' fit from the state's epoch on, recorded by RunRecorder, the training faces' targets
    mixed with `teach`'s answers (see `teacher`) where given; returns the recorder."""
    initial_epoch = int(state.get("epoch", 0))
    train_batches = Batches(
        data["train"],
        config,
        training=True,
        num_classes=len(labels),
        start_epoch=initial_epoch,
        teacher=teach,
    )
    val_batches = Batches(data["val"], config, training=False, num_classes=len(labels))
    class_weight = None
    if config.class_weight:
        counts = np.bincount(data["train"].y, minlength=len(labels)).astype(float)
        class_weight = {
            i: float(counts.sum() / (len(labels) * c)) if c else 0.0 for i, c in enumerate(counts)
        }
    recorder = RunRecorder(run_dir, config, metadata, state, len(train_batches))
    stopped_before = state.get("stopped_early") or initial_epoch >= config.epochs
    if not stopped_before:
        model.fit(
            train_batches,
            validation_data=val_batches,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            class_weight=class_weight,
            callbacks=[recorder],
            verbose=0,
        )
    return recorder


def _score(
    config: TrainConfig,
    labels: list[str],
    data: dict[str, faces.Split],
    run_dir: Path,
    metadata: dict,
    state: dict,
) -> dict:
    """The best model calibrated on the val faces, then scored on the test faces (the val faces where
    there are none): metrics.json, predictions.csv, the calibration and scores in best.keras, and
    the run done."""
    runs.write_json(run_dir / runs.PROGRESS, {"stage": "testing", "updated": time.time()})
    best, _ = modelfile.load_model(run_dir / runs.BEST)
    val = data["val"]
    if config.init_from:  # read as the model it started from reads faces (_reading_of_start)
        mirrored = modelfile.reads_mirrored(metadata)
        raw_val = modelfile.predict_probabilities(best, val.images, config.batch_size, flip=mirrored)
    else:
        mirrored, raw_val, choice = _choose_mirror_reading(best, val, config.batch_size)
        if choice:
            metadata["mirror_reading"] = choice
        if mirrored:
            metadata[modelfile.MIRRORED] = True
    entry, why_none = _calibration(config, val.y, raw_val)
    if entry:
        metadata["calibration"] = entry
    test = data["test"] if len(data["test"].y) else val
    raw = modelfile.predict_probabilities(best, test.images, config.batch_size, flip=mirrored)
    probabilities = calibration.apply(raw, metadata)
    result = metrics(test.y, probabilities.argmax(axis=1), labels)
    result["split"] = "test" if len(data["test"].y) else "val (no test faces)"
    result["best_epoch"] = state.get("best_epoch")
    result["mirrored"] = mirrored
    if len(test.y):
        result["calibration"] = calibration.summary(raw, probabilities, test.y, metadata)
        if why_none:
            result["calibration"]["why_none"] = why_none
    runs.write_json(run_dir / runs.METRICS, result)
    runs.write_csv(run_dir / runs.PREDICTIONS, predictions_table(test.faces, labels, probabilities))
    metadata["test_metrics"] = {
        k: result[k] for k in ("n", "accuracy", "precision", "recall", "f1", "macro_f1")
    }
    modelfile.save_model(best, run_dir / runs.BEST, {**metadata, "epoch": state.get("best_epoch")})
    runs.set_status(run_dir, "done", error=None, best_epoch=state.get("best_epoch"))
    return result


def _choose_mirror_reading(best, val: faces.Split, batch_size: int) -> tuple[bool, np.ndarray, dict | None]:
    """Whether the new model reads each face with its mirror image too (fer.modelfile.reads_mirrored),
    chosen on the run's val faces: it does where the averaged answers are right at least as often as
    the face's alone (a tie goes to the mirror: the answer then moves less with the crop; see
    docs/classifying.md). Returns the choice, the chosen val probabilities and the two accuracies."""
    plain = modelfile.predict_probabilities(best, val.images, batch_size, flip=False)
    if not len(val.y):
        return False, plain, None
    both = modelfile.predict_probabilities(best, val.images, batch_size, flip=True)
    accuracy = {
        "plain": float(np.mean(plain.argmax(axis=1) == val.y)),
        "mirrored": float(np.mean(both.argmax(axis=1) == val.y)),
    }
    mirrored = accuracy["mirrored"] >= accuracy["plain"]
    choice = {
        "chosen": "mirrored" if mirrored else "plain",
        "val_accuracy": accuracy,
        "val_faces": len(val.y),
    }
    return mirrored, both if mirrored else plain, choice


def _reading_of_start(config: TrainConfig, run_dir: Path, *, resume: bool) -> dict:
    """How a run started from a saved model reads faces: as that model does, so a model that reads
    each face with its mirror image (fer.modelfile.reads_mirrored) is fine-tuned into one that does
    too, and the two answer alike on the same face. A resumed run whose starting file has gone since
    reads its own last.keras, which carries the setting."""
    if not config.init_from:
        return {}
    source = Path(config.init_from)
    if resume and not source.is_file() and (run_dir / runs.LAST).is_file():
        source = run_dir / runs.LAST
    return {modelfile.MIRRORED: True} if modelfile.reads_mirrored(modelfile.read_metadata(source)) else {}


def _calibration(config: TrainConfig, y: np.ndarray, raw_val: np.ndarray) -> tuple[dict | None, str | None]:
    """The run's calibration and, where it has none, why. A temperature is fitted on the run's val
    faces when there are at least calibration.MIN_FIT_FACES of them. On fewer, a fitted temperature
    is mostly chance, so a run started from a calibrated model (--init-from) keeps that model's,
    saying so in its "fitted_on"; any other run is left uncalibrated."""
    if len(y) >= calibration.MIN_FIT_FACES:
        return calibration.fit(raw_val, y, f"this run's val faces ({len(y):,})"), None
    too_few = (
        f"this run's {len(y):,} val faces are too few to fit a temperature on "
        f"(it takes {calibration.MIN_FIT_FACES})"
    )
    start = Path(config.init_from) if config.init_from else None
    if start is None:
        return None, too_few
    if not start.is_file():
        return None, f"{too_few}, and the model it started from ({start.name}) is gone"
    entry = modelfile.read_metadata(start).get("calibration")
    if not entry:
        return None, f"{too_few}, and the model it started from has no calibration"
    fitted_on = str(entry.get("fitted_on") or "held-out faces")
    kept = {
        **entry,
        "fitted_on": f"{fitted_on}, for the model it was fine-tuned from ({start.name}); {too_few}",
    }
    return kept, None


def _repair_best(model, run_dir: Path, metadata: dict, state: dict) -> None:
    """A kill between an epoch's commit (last.keras) and its best.keras leaves best.keras an epoch
    behind; that epoch was the best, so its weights are the ones just loaded from last.keras."""
    best_epoch = state.get("best_epoch")
    if best_epoch is None or best_epoch != state.get("epoch"):
        return
    try:
        saved_epoch = modelfile.read_metadata(run_dir / runs.BEST).get("epoch")
    except ValueError:  # missing or unreadable
        saved_epoch = None
    if saved_epoch != best_epoch:
        save_best(model, run_dir, {**metadata, "epoch": best_epoch})


def _labels_of_start(path: Path, labels: list[str], data: dict[str, faces.Split]) -> list[str]:
    """A run started from a saved model keeps that model's labels, so it can be fine-tuned on data
    that has only some of them; `data` is re-indexed to them. Data with a label the model lacks is
    refused, naming it."""
    _need_model_file(path)
    source_labels = [str(label) for label in (modelfile.read_metadata(path).get("labels") or [])]
    return _relabel(source_labels, labels, data, f"--init-from {path}: that model")


def _need_model_file(path: Path, option: str = "--init-from") -> None:
    if not path.is_file():
        raise ValueError(
            f"{option} {path}: no such model file; give a .keras file that train or export wrote"
        )


def _relabel(
    target: list[str], labels: list[str], data: dict[str, faces.Split], who: str = "this run"
) -> list[str]:
    missing = [label for label in labels if label not in target]
    if missing:
        raise ValueError(
            f"{who} knows the labels {', '.join(target) or '(none recorded)'}, but the data also has "
            f"{', '.join(missing)}; train a new model for them, or leave those faces out of the data"
        )
    index = np.array([target.index(label) for label in labels], dtype=np.int64)
    for part in data.values():
        part.y = index[part.y]
    return list(target)


def _start_from(model, path: Path, labels: list[str]) -> None:
    """Give `model` the trained weights of the model saved at `path` (see fer.models.grow)."""
    _need_model_file(path)
    source, source_metadata = modelfile.load_model(path)
    source_labels = list(source_metadata.get("labels") or [])
    if source_labels != list(labels):
        raise ValueError(
            f"--init-from {path}: that model's labels ({', '.join(source_labels) or 'none recorded'}) "
            f"are not this run's ({', '.join(labels)}); start from a model trained on the same labels"
        )
    size = model.input_shape[1]
    if source.input_shape[1] != size:
        raise ValueError(
            f"--init-from {path}: that model reads {source.input_shape[1]} px faces, this run {size} px; "
            f"use --image-size {source.input_shape[1]}"
        )
    models.grow(source, model)


def _build_compiled(model_config: ModelConfig, config: TrainConfig, trained_in: str = "float32"):
    model = models.build(model_config, trained_in)
    _compile(model, config)
    return model


def _strategy(name: str):
    if name == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"strategy {name!r} needs the TensorFlow backend, not {keras.backend.backend()}")
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()

    class MultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
        """The strategy as Keras' fit can use it. Keras reduces a nested value (its first (inputs,
        labels) batch, to learn their shapes) and scalars along axis 0 (each step's loss and metrics)
        across the workers; the plain strategy refuses both. This one reduces each element of a nest
        on its own, and a scalar over the replicas alone."""

        def reduce(self, reduce_op, value, axis):
            parent = super()

            def one(part):
                scalar = self.experimental_local_results(part)[0].shape.rank == 0
                return parent.reduce(reduce_op, part, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorker()


def _compile(model, config: TrainConfig) -> None:
    if soft_targets(config):
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if config.weight_decay:
        optimizer = keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(config.learning_rate)
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy])
