"""Training: datasets in, a run folder out (see fer.runs for what it holds).

The fit loop is Keras' own; everything the dashboard shows leaves it through `RunRecorder`, a
callback that writes progress, history and checkpoints to the run folder and nothing else. Early
stopping and the learning-rate schedule live in that callback too, with their counters saved inside
last.keras (and copied to state.json), so a run resumed after a kill -9, wherever it landed, carries
on exactly where its last finished epoch ended.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
import traceback
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from fer import augment as A
from fer import datasets as D
from fer import pack
from fer import preprocess as P
from fer import runs as R
from fer import splits as S
from fer.labels import ordered
from fer.models import ARCHITECTURES, ModelConfig

STRATEGIES = ("none", "mirrored", "multiworker")
METADATA = "fer.json"  # the entry added to a saved .keras file: labels, preprocessing, config


@dataclass(frozen=True)
class TrainConfig:
    datasets: tuple[str, ...] = ("demo",)  # pooled; labels matched by name
    arch: str = "vgg"  # see fer.models.ARCHITECTURES
    width: int = 16  # filters in the first block (vgg family)
    image_size: int = 48  # faces are resized to image_size x image_size
    margin: float = 0.0  # share of the box added on each side before cropping
    min_confidence: float | None = None  # drop faces under this detector confidence
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3  # Adam's starting rate; halved when val accuracy stalls
    dropout: float = 0.5
    label_smoothing: float = 0.0
    class_weight: bool = False  # weight the loss by inverse label frequency
    augment: bool = True  # flips, shifts, rotations, zoom, contrast (training only)
    val_share: float = 0.1  # for datasets without their own split
    test_share: float = 0.1
    seed: int = 0  # split, initial weights, batch order, augmentation
    patience: int = 8  # epochs without a better val accuracy before stopping
    lr_patience: int = 3  # epochs without a better val accuracy before halving the rate
    strategy: str = "none"  # "mirrored" (several GPUs) or "multiworker" (TF_CONFIG): TensorFlow only
    max_faces: int | None = None  # use at most this many training faces (quick trials)
    init_from: str | None = None  # a saved model (.keras) to start from; may be narrower (see models.grow)

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(len(self.datasets) > 0, "datasets must name at least one dataset")
        need(self.arch in ARCHITECTURES, f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(1 <= self.batch_size <= 4096, f"batch_size must be between 1 and 4096, got {self.batch_size}")
        need(
            0 < self.learning_rate <= 1,
            f"learning_rate must be above 0 and at most 1, got {self.learning_rate}",
        )
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.patience >= 1, f"patience must be at least 1, got {self.patience}")
        need(
            self.strategy in STRATEGIES,
            f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}",
        )
        need(
            self.max_faces is None or self.max_faces >= 1,
            f"max_faces must be at least 1, got {self.max_faces}",
        )
        P.PrepSettings(size=self.image_size, margin=self.margin)  # validates both
        S.SplitSettings(val_share=self.val_share, test_share=self.test_share, seed=self.seed)
        self.model_config(num_classes=2)

    def model_config(self, num_classes: int) -> ModelConfig:
        return ModelConfig(
            arch=self.arch,
            image_size=self.image_size,
            num_classes=num_classes,
            dropout=self.dropout,
            width=self.width,
        )

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values["datasets"] = tuple(values.get("datasets", ()))
        return cls(**values)


# Data ---------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Faces of one split, pooled over datasets: images[i] is faces.iloc[i]; y indexes `labels`."""

    images: np.ndarray
    faces: pd.DataFrame
    y: np.ndarray


def load_splits(
    config: TrainConfig, progress=None, loaded: dict[str, D.Dataset] | None = None
) -> tuple[list[str], dict[str, Split]]:
    """Prepared faces of every dataset, split and pooled, with the label list they share. `loaded`, if
    given, receives each dataset read (by its name in config.datasets) for callers that need more of it."""
    settings = P.PrepSettings(size=config.image_size, margin=config.margin)
    split_settings = S.SplitSettings(
        val_share=config.val_share, test_share=config.test_share, seed=config.seed
    )
    parts = []
    for name in config.datasets:
        if pack.is_pack(name):  # faces prepared and split elsewhere (`python -m fer pack`)
            images, faces, _ = pack.read(name, settings, split_settings, config.min_confidence)
            parts.append((images, faces))
            continue
        dataset = D.load(name)
        if loaded is not None:
            loaded[str(name)] = dataset
        prepared = P.prepare(dataset, settings, min_confidence=config.min_confidence, progress=progress)
        faces = prepared.faces.assign(dataset=str(name), split=S.assign(prepared.faces, split_settings))
        parts.append((prepared.images, faces))
    faces = pd.concat([f for _, f in parts], ignore_index=True)
    labels = ordered(faces["label"].unique())
    if len(labels) < 2:
        # A classifier learns to tell labels apart: with one label (or none left) there is nothing to learn.
        threshold = "" if config.min_confidence is None else f" at min_confidence {config.min_confidence:g}"
        held = f"only {len(faces):,} faces labelled {labels[0]}" if labels else "no face"
        raise D.DatasetError(
            f"training needs faces of at least two labels; the data{threshold} holds {held}"
            + ("; add faces of another label" if labels else "")
            + (f"{' or' if labels else ';'} lower the confidence threshold" if threshold else "")
        )
    index = {label: i for i, label in enumerate(labels)}
    offsets = np.cumsum([0] + [len(f) for _, f in parts])
    result = {}
    for split in S.SPLITS:
        chosen = np.flatnonzero((faces["split"] == split).to_numpy())
        if split == "train" and config.max_faces and len(chosen) > config.max_faces:
            chosen = np.sort(
                np.random.default_rng(config.seed).choice(chosen, config.max_faces, replace=False)
            )
        images = np.empty((len(chosen), config.image_size, config.image_size), dtype=np.uint8)
        for k, (part_images, _) in enumerate(parts):
            inside = (chosen >= offsets[k]) & (chosen < offsets[k + 1])
            images[inside] = part_images[chosen[inside] - offsets[k]]
        split_faces = faces.iloc[chosen].reset_index(drop=True)
        result[split] = Split(images, split_faces, split_faces["label"].map(index).to_numpy(dtype=np.int64))
    if not len(result["train"].y) or not len(result["val"].y):
        raise D.DatasetError(
            f"training needs faces in train and val; got {len(result['train'].y)} and {len(result['val'].y)}"
        )
    return labels, result


def loader_threads() -> int:
    """Threads that make batches while the model trains: FER_LOADER_THREADS, else 1. A batch depends
    only on (seed, epoch, index), so any number gives the same batches. NumPy releases the GIL in
    augmentation's array work, so threads scale it (about 4,000 faces/s each here), which a GPU
    needs: one thread feeds 2 CPU cores' training with room to spare, not a GPU's."""
    value = os.environ.get("FER_LOADER_THREADS", "1")
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"FER_LOADER_THREADS must be a whole number of threads, got {value!r}") from None
    if not 1 <= threads <= 64:
        raise ValueError(f"FER_LOADER_THREADS must be between 1 and 64, got {threads}")
    return threads


def batches(split: Split, config: TrainConfig, *, training: bool, num_classes: int, start_epoch: int = 0):
    """A keras.utils.PyDataset over a split: shuffled and augmented when training. The order and the
    augmentation of epoch e depend only on (seed, e), so a resumed run sees what an unbroken one would."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=loader_threads(), use_multiprocessing=False)
            self.epoch = start_epoch
            self.order = np.arange(len(split.y))
            self.on_epoch_end()

        def __len__(self) -> int:
            return max(1, -(-len(split.y) // config.batch_size))

        def __getitem__(self, i: int):
            restore_malloc()  # two mallopt calls: cheap, and TensorFlow re-patches per iterator
            rows = np.sort(self.order[i * config.batch_size : (i + 1) * config.batch_size])
            faces = split.images[rows]
            if training and config.augment:
                rng = np.random.default_rng([config.seed, self.epoch, i])
                x = A.augment(faces, rng)
            else:
                x = faces.astype(np.float32)
            y = split.y[rows]
            if config.label_smoothing:
                y = np.eye(num_classes, dtype=np.float32)[y]
            return x[..., None], y

        def on_epoch_end(self) -> None:
            if training:
                self.order = np.random.default_rng([config.seed, self.epoch]).permutation(len(split.y))
                self.epoch += 1

    return Batches()


def dataset_root(name: str) -> str:
    """How a dataset argument is recorded: "demo", or its absolute path."""
    return name if name == "demo" else str(Path(name).expanduser().resolve())


def dataset_roots(names: tuple[str, ...]) -> list[str]:
    """The datasets a model learnt from: a pack stands for the datasets it was made from, so a
    model trained on one elsewhere is scored on their test parts here."""
    roots: list[str] = []
    for name in names:
        for root in pack.read_meta(name)["dataset_roots"] if pack.is_pack(name) else [dataset_root(name)]:
            if root not in roots:  # a dataset's train and val parts may come in two packs
                roots.append(root)
    return roots


# Saving models with their metadata ----------------------------------------------------------------


def save_model(model, path: Path, metadata: dict) -> None:
    """Save a .keras file with `fer.json` inside it, atomically."""

    def write(temporary: Path) -> None:
        keras_path = temporary.with_suffix(".keras")
        model.save(keras_path)
        with zipfile.ZipFile(keras_path, "a") as archive:
            archive.writestr(METADATA, json.dumps(metadata, indent=2, default=str))
        os.replace(keras_path, temporary)

    R.write_atomic(Path(path), write)


class ModelFileError(ValueError):
    """A file that is not a model this project can load safely; the message says why."""


# A model file is a zip anyone may hand the dashboard; its JSON entries are read whole, so their
# declared size is checked first (fer train writes a few kB of metadata, Keras ~100 kB of config).
MAX_JSON_BYTES = 16 * 1024**2


def _json_entry(path: Path, name: str) -> object:
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(name)
            if info.file_size > MAX_JSON_BYTES:
                raise ModelFileError(
                    f"{path}: its {name} is {info.file_size:,} bytes, more than the {MAX_JSON_BYTES:,} allowed"
                )
            return json.loads(archive.read(info))
    except ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever zipfile or json say, this is no model of ours
        raise ModelFileError(
            f"{path} is not a model saved by fer train (its {name} cannot be read: {type(error).__name__}: "
            f"{error})"
        ) from error


def read_metadata(path: Path) -> dict:
    """The `fer.json` a trained model carries (labels, preprocessing, configs, command)."""
    metadata = _json_entry(path, METADATA)
    if not isinstance(metadata, dict):
        raise ModelFileError(
            f"{path} is not a model saved by fer train (its {METADATA} holds a {type(metadata).__name__}, "
            "not an object)"
        )
    return metadata


def _python_code(config: object) -> str | None:
    """What in a Keras model config would run Python code, if anything: a Lambda layer or a
    serialised function (code stored in the file), or an object from a module outside Keras."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind, module = node.get("class_name"), node.get("module")
        if kind == "Lambda":
            inner = node.get("config")
            name = inner.get("name") if isinstance(inner, dict) else None
            return f"a Lambda layer{f' ({name})' if name else ''}, which holds Python code"
        if kind == "__lambda__":
            return "a Python function stored in the file"
        if isinstance(module, str) and module != "keras" and not module.startswith("keras."):
            return f"an object from the Python module {module!r}, outside Keras"
        stack.extend(node.values())
    return None


def load_model(path: Path, compile: bool = False):
    """A saved model and its metadata, or ModelFileError saying why not. Keras' safe mode stays on,
    and a model that would run Python code (a Lambda layer) is refused before Keras reads it."""
    import keras

    metadata = read_metadata(path)
    code = _python_code(_json_entry(path, "config.json"))
    if code:
        raise ModelFileError(
            f"{path} is refused: it has {code}. A model file could run any program that way, so models "
            "are loaded in Keras' safe mode; rebuild the model without it"
        )
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - a file from outside: any failure means "not usable"
        # Keras' first sentence says what; the rest tells developers how to switch safe mode off.
        reason = str(error).strip().split(". ")[0][:300]
        raise ModelFileError(
            f"{path} cannot be loaded as a Keras model in safe mode ({type(error).__name__}: {reason})"
        ) from error
    return model, metadata


def export_model(
    source: Path,
    out: Path,
    *,
    score_on: tuple[str, ...] = (),
    detect_on: tuple[str, ...] = (),
    detector: str = "mtcnn",
    progress=None,
) -> dict:
    """Write a trained model for shipping: weights without optimizer state (a third of the size),
    its metadata, and its held-out scores on each dataset in `score_on` (labelled boxes) and
    `detect_on` (faces found by the detector), recorded under "test_metrics" -> "<dataset> [detect]".

    `source` is a run folder (its best.keras) or a .keras file saved by train. Returns the metadata.
    """
    from fer import evaluate as E

    source = Path(source)
    model_path = source / "best.keras" if source.is_dir() else source
    if not model_path.is_file():
        raise ValueError(f"cannot export {source}: no best.keras there (has the run finished an epoch?)")
    model, metadata = load_model(model_path)
    scores = {}
    for name, detect in [(d, None) for d in score_on] + [(d, detector) for d in detect_on]:
        if progress:
            progress(f"scoring on {name}" + (f" with the {detect} detector" if detect else ""))
        result, _ = E.evaluate(name, model_path, split="test", detector=detect)
        key = Path(dataset_root(name)).name + (f" [{detect}]" if detect else "")
        scores[key] = {k: result[k] for k in ("n", "accuracy", "precision", "recall", "f1", "macro_f1")}
        if detect:
            scores[key]["undetected"] = result["undetected"]
    metadata = {**metadata, "exported_from": str(model_path)}
    if scores:
        metadata["test_metrics"] = scores
    save_model(model, Path(out), metadata)
    return metadata


# The fit loop -------------------------------------------------------------------------------------


def restore_malloc() -> None:
    """Undo TensorFlow's tf.data generator patch to glibc malloc (M_TRIM_THRESHOLD=128 kb).

    With it, every large tensor is mmap'd and unmapped again, and training spends a third of its
    time in page faults: on this 2-core machine the vgg model fell from ~170 to ~80 faces/s,
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


def _recorder_class():
    import keras

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
            return (self.run_dir / "cancel").exists()

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
            R.write_json(
                self.run_dir / "progress.json",
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
            R.set_status(self.run_dir, "running", epoch=self.epoch + 1)
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
            history = R.read_history(self.run_dir)
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
            R.write_csv(self.run_dir / "history.csv", history)
            save_model(self.model, self.run_dir / "last.keras", {**self.metadata, "state": state})
            if improved:
                save_model(self.model, self.run_dir / "best.keras", {**self.metadata, "epoch": epoch + 1})
            R.write_json(self.run_dir / "state.json", state)
            if self._cancel_requested():
                self.cancelled = True
                self.model.stop_training = True

    return RunRecorder


def _strategy(name: str):
    if name == "none":
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"strategy {name!r} needs the TensorFlow backend, not {keras.backend.backend()}")
    import tensorflow as tf

    return (
        tf.distribute.MirroredStrategy()
        if name == "mirrored"
        else tf.distribute.MultiWorkerMirroredStrategy()
    )


def _compile(model, config: TrainConfig) -> None:
    import keras

    if config.label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss, metrics=[accuracy])


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, command: str | None = None) -> dict:
    """Train as `config` says into `run_dir`; returns the final test metrics. Resumes from last.keras.

    A run folder that cannot be written (a full disk, a read-only folder, a file in the way) raises an
    OSError whose message says so and what to do, after recording it as the run's error where the
    status can still be written."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(_folder_problem(error, run_dir)) from error
    if resume:
        saved = R.read_json(run_dir / "config.json")
        if not saved:
            raise ValueError(f"cannot resume: {run_dir} has no config.json (was it a run folder?)")
        current = R.read_status(run_dir)
        if current["state"] in ("queued", "running") and current.get("pid") != os.getpid():
            raise ValueError(
                f"cannot resume {run_dir}: it is still {current['state']} (process {current.get('pid')} "
                f"on {current.get('host')}); cancel it or wait for it to end"
            )
        config = TrainConfig.from_dict(saved["train"])
        command = command or saved.get("command")  # the command that made the run, not "--resume"
    command = command or f"fer.train.train({config!r})"
    try:
        (run_dir / "cancel").unlink(missing_ok=True)
        if resume:
            R.sweep_temporary(run_dir)  # what killed writers left; no other process writes this run now
        else:
            # Before anything else, so the run store lists the run and it can be resumed, even if it is
            # killed while its faces are prepared. _train adds the model config and the labels.
            R.write_json(run_dir / "config.json", {"train": asdict(config), "command": command})
        R.set_status(run_dir, "running", epoch=0, epochs=config.epochs, error=None)
        return _train(config, run_dir, resume=resume, command=command)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            R.set_status(run_dir, "cancelled", error="stopped by the user (interrupt)")
        raise
    except BaseException as error:
        problem = _storage_problem(error, run_dir)
        message = problem or f"{type(error).__name__}: {error}"
        with contextlib.suppress(OSError):  # a full or read-only disk may refuse this too
            R.set_status(run_dir, "failed", error=message, traceback=traceback.format_exc(limit=20))
        if problem:
            raise OSError(problem) from error
        raise


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


def _train(config: TrainConfig, run_dir: Path, *, resume: bool, command: str) -> dict:
    import keras

    from fer import evaluate as E

    last = [0.0]

    def preparing(done: int, total: int) -> None:  # the cold cache of a large dataset takes minutes
        if time.monotonic() - last[0] >= 1.0 or done >= total:
            last[0] = time.monotonic()
            R.write_json(
                run_dir / "progress.json",
                {"stage": "preparing faces", "done": done, "total": total, "updated": time.time()},
            )

    preparing(0, 1)
    labels, data = load_splits(config, progress=preparing)
    if config.init_from and not resume:
        labels = _labels_of_start(Path(config.init_from), labels, data)
    elif config.init_from:  # a resumed run keeps the labels it started with
        labels = _relabel(
            list((R.read_json(run_dir / "config.json", {}) or {}).get("labels") or labels), labels, data
        )
    model_config = config.model_config(num_classes=len(labels))
    metadata = {
        "labels": labels,
        "image_size": config.image_size,
        "margin": config.margin,
        "preprocessing": "crop box (clipped), resize (bilinear), grayscale, uint8; the model scales to [0, 1]",
        "model": asdict(model_config),
        "train": asdict(config),
        "command": command,
        # Absolute, so evaluate can tell "this is the dataset I was trained on" from any folder.
        "dataset_roots": dataset_roots(config.datasets),
        "keras_backend": keras.backend.backend(),
        "counts": {split: int(len(part.y)) for split, part in data.items()},
    }
    saved = R.read_json(run_dir / "config.json", {}) or {}
    if not resume or "labels" not in saved or not (run_dir / "labels.json").is_file():
        R.write_json(run_dir / "config.json", {"train": asdict(config), "model": asdict(model_config),
                                                "command": command, "labels": labels})  # fmt: skip
        R.write_json(run_dir / "labels.json", labels)
    state = dict(R.read_json(run_dir / "state.json", {}) or {}) if resume else {}
    initial_epoch = int(state.get("epoch", 0))

    keras.utils.set_random_seed(config.seed)
    strategy = _strategy(config.strategy)
    if strategy and config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"batch_size must be a multiple of the {strategy.num_replicas_in_sync} devices the "
            f"{config.strategy} strategy trains on, got {config.batch_size}"
        )
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        if resume and (run_dir / "last.keras").is_file():
            model = keras.saving.load_model(run_dir / "last.keras", safe_mode=True)
            committed = read_metadata(run_dir / "last.keras").get("state")
            if committed is not None:  # the state that goes with these weights (see RunRecorder)
                state = dict(committed)
                initial_epoch = int(state.get("epoch", 0))
                _repair_best(model, run_dir, metadata, state)
        else:
            model = _build_compiled(model_config, config)
            if config.init_from:
                _start_from(model, Path(config.init_from), labels)
            initial_epoch = 0
            state = {}
    if resume:  # what a kill left past the last finished epoch goes: that epoch is trained again
        history = R.read_history(run_dir)
        if len(history) and (history["epoch"] > initial_epoch).any():
            R.write_csv(run_dir / "history.csv", history[history["epoch"] <= initial_epoch])
        if R.read_json(run_dir / "state.json") != state:
            R.write_json(run_dir / "state.json", state)
    train_batches = batches(
        data["train"], config, training=True, num_classes=len(labels), start_epoch=initial_epoch
    )
    val_batches = batches(data["val"], config, training=False, num_classes=len(labels))
    class_weight = None
    if config.class_weight:
        counts = np.bincount(data["train"].y, minlength=len(labels)).astype(float)
        class_weight = {
            i: float(counts.sum() / (len(labels) * c)) if c else 0.0 for i, c in enumerate(counts)
        }
    recorder = _recorder_class()(run_dir, config, metadata, state, len(train_batches))
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
    if recorder.cancelled:
        R.set_status(run_dir, "cancelled", error=None)
        return {}

    R.write_json(run_dir / "progress.json", {"stage": "testing", "updated": time.time()})
    best, _ = load_model(run_dir / "best.keras")
    test = data["test"] if len(data["test"].y) else data["val"]
    probabilities = predict_probabilities(best, test.images, config.batch_size)
    metrics = E.metrics(test.y, probabilities.argmax(axis=1), labels)
    metrics["split"] = "test" if len(data["test"].y) else "val (no test faces)"
    metrics["best_epoch"] = state.get("best_epoch")
    R.write_json(run_dir / "metrics.json", metrics)
    R.write_csv(run_dir / "predictions.csv", E.predictions_table(test.faces, labels, probabilities))
    metadata["test_metrics"] = {
        k: metrics[k] for k in ("n", "accuracy", "precision", "recall", "f1", "macro_f1")
    }
    save_model(best, run_dir / "best.keras", {**metadata, "epoch": state.get("best_epoch")})
    R.set_status(run_dir, "done", error=None, best_epoch=state.get("best_epoch"))
    return metrics


def _repair_best(model, run_dir: Path, metadata: dict, state: dict) -> None:
    """A kill between an epoch's commit (last.keras) and its best.keras leaves best.keras an epoch
    behind; that epoch was the best, so its weights are the ones just loaded from last.keras."""
    best_epoch = state.get("best_epoch")
    if best_epoch is None or best_epoch != state.get("epoch"):
        return
    try:
        saved_epoch = read_metadata(run_dir / "best.keras").get("epoch")
    except ValueError:  # missing or unreadable
        saved_epoch = None
    if saved_epoch != best_epoch:
        save_model(model, run_dir / "best.keras", {**metadata, "epoch": best_epoch})


def _labels_of_start(path: Path, labels: list[str], data: dict[str, Split]) -> list[str]:
    """A run started from a saved model keeps that model's labels, so it can be fine-tuned on data
    that has only some of them; `data` is re-indexed to them. Data with a label the model lacks is
    refused, naming it."""
    _need_model_file(path)
    source_labels = [str(label) for label in (read_metadata(path).get("labels") or [])]
    return _relabel(source_labels, labels, data, f"--init-from {path}: that model")


def _need_model_file(path: Path) -> None:
    if not path.is_file():
        raise ValueError(
            f"--init-from {path}: no such model file; give a .keras file that train or export wrote"
        )


def _relabel(
    target: list[str], labels: list[str], data: dict[str, Split], who: str = "this run"
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
    from fer.models import grow

    _need_model_file(path)
    source, source_metadata = load_model(path)
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
    grow(source, model)


def _build_compiled(model_config: ModelConfig, config: TrainConfig):
    from fer.models import build

    model = build(model_config)
    _compile(model, config)
    return model


def predict_probabilities(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for (n, size, size) uint8 faces, in batches."""
    out = [
        np.asarray(
            model.predict_on_batch(np.asarray(images[i : i + batch_size], dtype=np.float32)[..., None])
        )
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), dtype=np.float32)
