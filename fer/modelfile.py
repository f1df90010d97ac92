"""The model file: a Keras .keras zip with `fer.json` inside it (labels, preprocessing, configs).

A trained model carries everything needed to use it: `save_model` adds the labels, the image size
and margin it was trained with, its configs and its command to the file Keras writes, so prediction
cannot drift from training. Reading that metadata is a zip entry and some JSON, which pages do while
they draw (the Train page reads a start model's config) and the report does for every run: so this
module does not import Keras at the top, as a module of Keras models otherwise would, and only
`load_model` imports it, when a model is really loaded (TensorFlow's import takes seconds).

Model files can come from visitors too (`check_model_file`): a .keras file is a zip holding a
config that Keras turns into objects, so it is checked as an upload (size, members) and loaded in
Keras' safe mode with Python code refused, and kept only once it has classified a face.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fer import logs, paths, preprocess, runs
from fer.config import MAX_SIZE, MIN_SIZE

METADATA = runs.MODEL_METADATA  # the entry added to a saved .keras file: labels, preprocessing, config
# Uploaded model files: the server's upload cap, and what their zip may expand to (weights barely
# compress, so a model that expands far beyond its size is a zip bomb, not a model).
MAX_MODEL_BYTES = 200 * 1024**2
MAX_MODEL_EXPANDED_BYTES = 1024**3
MAX_MODEL_MEMBERS = 1000
MAX_MODEL_RATIO = 100.0


# Saving and reading ------------------------------------------------------------------------------


def save_model(model, path: Path, metadata: dict) -> None:
    """Save a .keras file with `fer.json` inside it, atomically."""

    def write(temporary: Path) -> None:
        keras_path = temporary.with_suffix(".keras")
        model.save(keras_path)
        with zipfile.ZipFile(keras_path, "a") as archive:
            archive.writestr(METADATA, json.dumps(metadata, indent=2, default=str))
        os.replace(keras_path, temporary)

    runs.write_atomic(Path(path), write)


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
    except Exception as error:
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
    keras = logs.load_keras()

    metadata = read_metadata(path)
    code = _python_code(_json_entry(path, "config.json"))
    if code:
        raise ModelFileError(
            f"{path} is refused: it has {code}. A model file could run any program that way, so models "
            "are loaded in Keras' safe mode; rebuild the model without it"
        )
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:
        # Keras' first sentence says what; the rest tells developers how to switch safe mode off.
        reason = str(error).strip().split(". ")[0][:300]
        raise ModelFileError(
            f"{path} cannot be loaded as a Keras model in safe mode ({type(error).__name__}: {reason})"
        ) from error
    return model, metadata


def predict_probabilities(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for (n, size, size) uint8 faces, in batches."""
    out = [
        np.asarray(
            model.predict_on_batch(np.asarray(images[i : i + batch_size], dtype=np.float32)[..., None])
        )
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), dtype=np.float32)


# Checking a file from outside --------------------------------------------------------------------


def check_model(model, metadata: dict, path: Path) -> tuple[list[str], preprocess.PrepSettings]:
    """The labels and preprocessing a loaded model declares, once they agree with its own shapes."""
    labels = metadata.get("labels")
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(label, str) and label.strip() for label in labels)
        or len(set(labels)) != len(labels)
    ):
        raise ModelFileError(
            f"{path}: its fer.json must list two or more distinct label names under 'labels', "
            f"got {str(labels)[:200]}"
        )
    try:
        settings = preprocess.settings_of(metadata)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(
            f"{path}: its fer.json must give the image_size ({MIN_SIZE} to {MAX_SIZE}) and margin the model was trained "
            f"with ({type(error).__name__}: {error})"
        ) from error
    size = settings.size
    try:
        inputs, outputs = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: the model has no single input and output ({error})") from error
    if inputs != (None, size, size, 1) or outputs != (None, len(labels)):
        raise ModelFileError(
            f"{path}: the model must take {size}x{size} grayscale faces (shape (None, {size}, {size}, 1)) "
            f"and give one probability per label (shape (None, {len(labels)})), as its fer.json says; "
            f"it takes {inputs} and gives {outputs}"
        )
    return list(labels), settings


def _check_model_zip(data: bytes) -> None:
    """The zip's own claims (members, sizes, file types), before Keras reads a byte of it: the same
    checks as an uploaded dataset zip (`fer.uploads`), with a model file's limits."""
    from fer.uploads import UploadError, _check_members

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ModelFileError(
            f"not a Keras model file: a .keras file is a zip archive, and this is not one ({error})"
        ) from error
    try:
        _check_members(
            infos,
            MAX_MODEL_MEMBERS,
            MAX_MODEL_EXPANDED_BYTES,
            MAX_MODEL_RATIO,
            advice="a model file from `fer train` is far smaller; upload the .keras file it wrote",
            note="Model weights barely compress",
        )
    except UploadError as error:
        raise ModelFileError(f"not a safe model file: {error}") from None


def check_model_file(data: bytes, dest_dir: str | Path | None = None) -> Path:
    """Keep an uploaded model file if this project can use it safely, and return where it is kept.

    It must be at most MAX_MODEL_BYTES, a zip that makes sense as a model, carry the fer.json that
    `fer train` writes (labels and image_size), load in Keras' safe mode with no Python code (a
    Lambda layer is refused), have the shapes its fer.json promises, and classify a blank face.
    Only then is it written, as <dest_dir>/<sha256[:16]>.keras (default fer.paths.data_dir() /
    "models"); the same bytes again reuse that file. ModelFileError says what failed.
    """
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFileError(
            f"the file is {len(data):,} bytes, more than the {MAX_MODEL_BYTES:,} a model upload may be"
        )
    _check_model_zip(data)
    dest_dir = paths.data_dir() / "models" if dest_dir is None else Path(dest_dir)
    target = dest_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.keras"
    if target.is_file():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".upload-", suffix=".keras", dir=dest_dir)
    staging = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        try:
            model, metadata = load_model(staging)
            labels, settings = check_model(model, metadata, staging)
            probabilities = predict_probabilities(
                model, np.full((1, settings.size, settings.size), 128, dtype=np.uint8)
            )
        except ModelFileError as error:
            raise ModelFileError(
                str(error).replace(f"{staging}: ", "").replace(str(staging), "the file")
            ) from error
        except Exception as error:
            raise ModelFileError(
                f"the model loads but cannot classify a face ({type(error).__name__}: {error})"
            ) from error
        if probabilities.shape != (1, len(labels)) or not np.isfinite(probabilities).all():
            raise ModelFileError(
                f"the model loads but gives no usable probabilities for a face (got {probabilities!r:.200})"
            )
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target
