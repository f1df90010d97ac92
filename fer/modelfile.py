"""The model file: a Keras .keras zip with `fer.json` inside it (labels, preprocessing, configs).

A trained model carries everything needed to use it: `save_model` adds the labels, the image size
and margin it was trained with, its configs and its command to the file Keras writes, so prediction
cannot drift from training. Reading that metadata is a zip entry and some JSON, which pages do while
they draw (the Train page reads a start model's config) and the report does for every run: so this
module does not import Keras at the top, as a module of Keras models otherwise would, and only
`load_model` imports it, when a model is really loaded (TensorFlow's import takes seconds).

Model files can come from visitors too (`check_model_file`): a .keras file is a zip holding a
config that Keras turns into objects, so it is checked as an upload (size, members); the weights
its config declares are compared with those it holds and capped before Keras builds anything; it
is loaded in Keras' safe mode with Python code refused, in a process of its own under a memory and
a time limit, and kept only once it has classified a face there.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

from fer import calibration, logs, paths, preprocess, runs
from fer.config import MAX_SIZE, MIN_SIZE, server_setting

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


# What a model file declares, before Keras builds it ------------------------------------------------
#
# Keras creates every layer's weights from config.json (a Dense layer's `units`, the input shape in
# its `build_config`) before it reads a single number from model.weights.h5, so a file of a few kB
# whose config declares a Dense layer of 2**28 units makes Keras allocate gigabytes. The weights a
# config declares are worked out here, for the layer kinds this project's models and ordinary
# image models use, and compared with the shapes model.weights.h5 stores (read without loading its
# data); their count is capped. A layer kind not listed is refused: its weights cannot be told.

MAX_MODEL_PARAMS_VARIABLE = "FER_MAX_MODEL_PARAMS"
MAX_MODEL_PARAMS = 50_000_000  # weights of one model (the bundled model has 2.8 million)
WEIGHTS_ENTRY = "model.weights.h5"  # where a .keras file keeps its weights
# Layers that hold no weights (building them allocates nothing).
_WEIGHTLESS = {
    "InputLayer", "Rescaling", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Identity",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Flatten", "Reshape", "Permute",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
    "UpSampling3D", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
}  # fmt: skip
_MODELS = {"Functional", "Sequential", "Model"}  # models nested as layers: their layers are walked
_CONVOLUTIONS = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D"}
_WEIGHTED = _CONVOLUTIONS | {"Dense", "BatchNormalization", "LayerNormalization"}


def max_model_params() -> int:
    """The most weights a model file may declare on this server: $FER_MAX_MODEL_PARAMS, else MAX_MODEL_PARAMS."""
    return server_setting(MAX_MODEL_PARAMS_VARIABLE, MAX_MODEL_PARAMS, "weights")


def _snake_case(name: str) -> str:
    """Keras' name for a layer's group in model.weights.h5: its class name in snake case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a whole number above 0, got {str(value)[:80]}")
    return value


def _layer_weights(kind: str, config: dict, input_shape: list) -> list[tuple[int, ...]]:
    """The shapes of the weights Keras creates for a layer of `kind` built for `input_shape`, in
    the order model.weights.h5 keeps them. ValueError where the config makes no sense, or asks
    for weights of other kinds (LoRA, quantized), which Keras adds at build time too."""
    if config.get("lora_rank") or config.get("quantization_config") is not None:
        raise ValueError("it asks for LoRA or quantized weights, which this check does not know")
    policy = config.get("dtype")
    if isinstance(policy, dict) and policy.get("class_name") != "DTypePolicy":
        raise ValueError(
            f"its dtype policy is a {str(policy.get('class_name'))[:80]}, not a DTypePolicy (quantized "
            "weights are not known to this check)"
        )
    if kind in _CONVOLUTIONS:
        first = config.get("data_format", "channels_last") == "channels_first"
        channels = _size(input_shape[1] if first else input_shape[-1], "the input's channels")
        kernel = [_size(k, "kernel_size") for k in config.get("kernel_size") or []]
        if len(kernel) != len(input_shape) - 2:
            raise ValueError(f"kernel_size {kernel} does not fit an input of shape {input_shape}")
        bias = bool(config.get("use_bias", True))
        if kind in ("DepthwiseConv2D", "SeparableConv2D"):
            multiplier = _size(config.get("depth_multiplier", 1), "depth_multiplier")
            depthwise = (*kernel, channels, multiplier)
            if kind == "DepthwiseConv2D":
                return [depthwise] + ([(channels * multiplier,)] if bias else [])
            filters = _size(config.get("filters"), "filters")
            return [depthwise, (1, 1, channels * multiplier, filters)] + ([(filters,)] if bias else [])
        filters, groups = _size(config.get("filters"), "filters"), _size(config.get("groups", 1), "groups")
        if channels % groups:
            raise ValueError(f"{channels} input channels do not split into {groups} groups")
        return [(*kernel, channels // groups, filters)] + ([(filters,)] if bias else [])
    if kind == "Dense":
        units = _size(config.get("units"), "units")
        inputs = _size(input_shape[-1], "the input's last dimension")
        return [(inputs, units)] + ([(units,)] if config.get("use_bias", True) else [])
    # BatchNormalization, LayerNormalization: one number per feature along `axis`, for each of
    # gamma (scale), beta (center) and, for batch norm, the moving mean and variance.
    axes = config.get("axis", -1)
    axes = axes if isinstance(axes, list) else [axes]
    if not axes or not all(isinstance(a, int) and -len(input_shape) <= a < len(input_shape) for a in axes):
        raise ValueError(f"axis {axes} does not fit an input of shape {input_shape}")
    shape = tuple(_size(input_shape[a], "the normalised dimension") for a in axes)
    count = int(bool(config.get("scale", True))) + int(bool(config.get("center", True)))
    if kind == "BatchNormalization":
        count += 2
    return [shape] * count


def declared_weights(config: object) -> dict[str, tuple[str, str, list[tuple[int, ...]]]]:
    """Every weighted layer a Keras model config declares: its group in model.weights.h5 ->
    (layer name, kind, the shapes of its weights). ValueError names a layer whose weights cannot
    be told (an unknown kind, a weighted layer without the input shape it was built for)."""
    found: dict[str, tuple[str, str, list[tuple[int, ...]]]] = {}

    def walk(model: dict, prefix: str) -> None:
        kind = model.get("class_name")
        layers = (model.get("config") or {}).get("layers") if isinstance(model.get("config"), dict) else None
        if not isinstance(layers, list):
            raise ValueError(f"the model {str(kind)[:80]} lists no layers")
        used: dict[str, int] = {}
        for layer in layers:
            if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
                raise ValueError("a layer of the model is not an object with a config")
            kind, config = str(layer.get("class_name")), layer["config"]
            name = str(config.get("name") or layer.get("name") or kind)[:80]
            if model.get("class_name") == "Sequential" and kind == "InputLayer":
                continue  # a Sequential model keeps no group for its input
            key = _snake_case(kind)
            used[key] = used.get(key, -1) + 1
            group = f"{prefix}/{key}" + (f"_{used[key]}" if used[key] else "")
            if kind in _MODELS:
                walk(layer, f"{group}/layers")
            elif kind in _WEIGHTED:
                shape = (layer.get("build_config") or {}).get("input_shape")
                if not isinstance(shape, list) or len(shape) < 2:
                    raise ValueError(f"layer {name!r} ({kind}) does not say the input shape it was built for")
                try:
                    found[group] = (name, kind, _layer_weights(kind, config, shape))
                except (TypeError, ValueError) as error:
                    raise ValueError(f"layer {name!r} ({kind}): {error}") from None
            elif kind not in _WEIGHTLESS:
                raise ValueError(
                    f"layer {name!r} is a {kind[:80]}, a kind of layer whose weights this check does not know "
                    f"(it knows {', '.join(sorted(_WEIGHTED))} and layers without weights)"
                )

    if not isinstance(config, dict) or config.get("class_name") not in _MODELS:
        raise ValueError("its config.json does not describe a Keras model")
    walk(config, "layers")
    return found


def stored_weights(handle) -> dict[str, tuple[int, ...]]:
    """The shape of every array an HDF5 weights file stores, by path, read without its data.
    ValueError for links (which could lead to other files) and arrays that are not numbers."""
    import h5py

    stored: dict[str, tuple[int, ...]] = {}
    with h5py.File(handle, "r") as store:
        groups = [("", store)]
        while groups:
            prefix, group = groups.pop()
            for key in group:
                path = f"{prefix}{key}"
                link = group.get(key, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    raise ValueError(f"{path} is a link ({type(link).__name__}), not weights")
                item = group[key]
                if isinstance(item, h5py.Group):
                    groups.append((f"{path}/", item))
                elif item.dtype.kind not in "biuf":
                    raise ValueError(f"{path} holds {item.dtype}, not numbers")
                else:
                    stored[path] = tuple(int(n) for n in item.shape)
    return stored


def _count(shapes: list[tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes)


def check_declared_weights(path: Path) -> None:
    """Refuse, before Keras builds anything, a model file whose config.json declares weights its
    model.weights.h5 does not hold, or more weights than max_model_params()."""
    config = _json_entry(path, "config.json")
    limit = max_model_params()
    try:
        declared = declared_weights(config)
    except ValueError as error:
        raise ModelFileError(
            f"{path} is refused: {error}. Its weights must be known before the model is built, so a model "
            "file may hold only those layers; rebuild the model from them (as `fer train` does)"
        ) from None
    total = sum(_count(shapes) for _, _, shapes in declared.values())
    if total > limit:
        group = max(declared, key=lambda g: _count(declared[g][2]))
        name, kind, shapes = declared[group]
        raise ModelFileError(
            f"{path}: its config.json declares {total:,} weights, more than the {limit:,} a model may have "
            f"on this server (layer {name!r}, a {kind}, alone declares {_count(shapes):,}: shapes "
            f"{', '.join(map(str, shapes))}); upload a smaller model, or have the server's owner raise "
            f"{MAX_MODEL_PARAMS_VARIABLE}"
        )
    try:
        with zipfile.ZipFile(path) as archive, archive.open(WEIGHTS_ENTRY) as handle:
            stored = stored_weights(handle)
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise ModelFileError(
            f"{path} is refused: its {WEIGHTS_ENTRY} cannot be read as Keras weights ({type(error).__name__}: "
            f"{str(error)[:200]}); upload the .keras file `fer train` wrote, unchanged"
        ) from None
    expected = {}
    for group, (name, kind, shapes) in declared.items():
        held = [stored.get(f"{group}/vars/{i}") for i in range(len(shapes))]
        if held != shapes or f"{group}/vars/{len(shapes)}" in stored:
            held = [shape for key, shape in sorted(stored.items()) if key.startswith(f"{group}/vars/")]
            raise ModelFileError(
                f"{path} is refused: its config.json and its weights disagree: layer {name!r} ({kind}) declares "
                f"weights of shapes {shapes} ({_count(shapes):,} weights), and {WEIGHTS_ENTRY} holds "
                f"{held or 'none'}. Keras builds a layer from the config before reading its weights, so the "
                "two must agree, as in every file Keras saves; upload the .keras file `fer train` wrote, "
                "unchanged"
            )
        expected.update({f"{group}/vars/{i}": shape for i, shape in enumerate(shapes)})
    extra = sorted(key for key in stored if key.startswith("layers/") and key not in expected)
    if extra:
        raise ModelFileError(
            f"{path} is refused: its {WEIGHTS_ENTRY} holds {len(extra):,} arrays that no layer of its "
            f"config.json declares (first: {extra[0]}, shape {stored[extra[0]]}); upload the .keras file "
            "`fer train` wrote, unchanged"
        )


def load_model(path: Path, compile: bool = False):
    """A saved model and its metadata, or ModelFileError saying why not. Keras' safe mode stays on,
    and a model that would run Python code (a Lambda layer), or whose config declares weights its
    file does not hold or more than max_model_params(), is refused before Keras reads it."""
    metadata = read_metadata(path)
    code = _python_code(_json_entry(path, "config.json"))
    if code:
        raise ModelFileError(
            f"{path} is refused: it has {code}. A model file could run any program that way, so models "
            "are loaded in Keras' safe mode; rebuild the model without it"
        )
    check_declared_weights(path)
    keras = logs.load_keras()
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:
        # Keras' first sentence says what; the rest tells developers how to switch safe mode off.
        reason = str(error).strip().split(". ")[0][:300]
        raise ModelFileError(
            f"{path} cannot be loaded as a Keras model in safe mode ({type(error).__name__}: {reason})"
        ) from error
    return model, metadata


def predict_probabilities(
    model,
    images: np.ndarray,
    batch_size: int = 256,
    *,
    metadata: dict | None = None,
    flip: bool | None = None,
) -> np.ndarray:
    """Class probabilities for (n, size, size) uint8 faces, in batches. `flip` averages them with the
    mirrored faces' (None: as the model's `metadata` says, `reads_mirrored`); `metadata` (the model's
    fer.json) applies its calibration, which is how every probability shown or written leaves a
    model (without it, the network's own outputs)."""
    if flip is None:
        flip = reads_mirrored(metadata)
    probabilities = _network_probabilities(model, images, batch_size)
    if flip and len(images):
        probabilities = (probabilities + _network_probabilities(model, images[:, :, ::-1], batch_size)) / 2
    return calibration.apply(probabilities, metadata)


MIRRORED = "flip"  # fer.json: true when the model reads every face with its mirror image (see below)


def reads_mirrored(metadata: dict | None) -> bool:
    """Whether the model reads each face together with its mirror image, averaging the two answers
    (its fer.json's "flip", which `fer calibrate --flip` sets: the calibration is then fitted on such
    averages, so they are the probabilities it shows)."""
    return bool(metadata and metadata.get(MIRRORED) is True)


def _network_probabilities(model, images: np.ndarray, batch_size: int) -> np.ndarray:
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
    try:
        calibration.temperature_of(metadata)
    except ValueError as error:
        raise ModelFileError(f"{path}: {error}") from error
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


# An uploaded model is loaded and tried in a process of its own, under a memory and a time limit:
# whatever it declares, the server's own process never builds it, and a check that runs out of
# memory or time ends only itself. The limit is on the memory the process writes (RLIMIT_DATA):
# TensorFlow's import alone reserves about 2 GB of address space it never touches, so a cap on
# address space would be a guess, while checking the bundled model writes about 0.5 GB.
CHECK_MB_VARIABLE = "FER_MODEL_CHECK_MB"
CHECK_MB = 2048  # memory one check may write (the bundled model's: 0.5 GB written, 0.85 GB resident)
CHECK_SECONDS_VARIABLE = "FER_MODEL_CHECK_SECONDS"
CHECK_SECONDS = 120  # one check, TensorFlow's import included (the bundled model's: 4 s idle, 20 s busy)
CHECKS_AT_ONCE = 2  # checks one server runs at the same time; more visitors wait their turn
_CHECKS = threading.BoundedSemaphore(CHECKS_AT_ONCE)
# Signs in a check's own report or its last words that it ran out of the memory it may use.
_OUT_OF_MEMORY = re.compile(
    r"MemoryError|ResourceExhausted|OOM when allocating|bad_alloc|Cannot allocate memory"
)


def check_memory_mb() -> int:
    """Megabytes one model check may write: $FER_MODEL_CHECK_MB, else CHECK_MB."""
    return server_setting(CHECK_MB_VARIABLE, CHECK_MB, "megabytes")


def check_seconds() -> int:
    """Seconds one model check may take: $FER_MODEL_CHECK_SECONDS, else CHECK_SECONDS."""
    return server_setting(CHECK_SECONDS_VARIABLE, CHECK_SECONDS, "seconds")


def _try_model(path: Path) -> None:
    """Load a model file in safe mode and classify a blank face with it; ModelFileError if it cannot."""
    model, metadata = load_model(path)
    labels, settings = check_model(model, metadata, path)
    try:
        probabilities = predict_probabilities(
            model, np.full((1, settings.size, settings.size), 128, dtype=np.uint8)
        )
    except Exception as error:
        raise ModelFileError(
            f"the model loads but cannot classify a face ({type(error).__name__}: {str(error)[:300]})"
        ) from error
    if probabilities.shape != (1, len(labels)) or not np.isfinite(probabilities).all():
        raise ModelFileError(
            f"the model loads but gives no usable probabilities for a face (got {probabilities!r:.200})"
        )


def _check_here(path: str, memory_mb: str) -> None:
    """The check's own process: cap the memory it may write, try the model, and print one JSON line
    (the refusal or None, and the peak memory) as the last line of its output."""
    import resource

    limit = int(memory_mb) * 1024**2
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        _try_model(Path(path))
        error = None
    except ModelFileError as refusal:
        error = str(refusal)
    except MemoryError:
        error = "MemoryError"
    except Exception as failure:  # noqa: BLE001 - whatever fails in a visitor's file is its refusal
        error = f"it cannot be loaded and tried ({type(failure).__name__}: {str(failure)[:300]})"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"error": error, "peak_mb": round(peak_mb)}), flush=True)


def _check_elsewhere(path: Path) -> dict:
    """Run _check_here on `path` in a new process under the memory and time limits; its report
    ({"error", "peak_mb"}), or ModelFileError when it ran out of either or ended without one."""
    memory_mb, seconds = check_memory_mb(), check_seconds()
    env = {
        **os.environ,
        # One thread each: a blank face needs no more, and the process stays the same size on any machine.
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # the GPU's memory stays the server's and its trainings'
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    code = "import sys; from fer import modelfile; modelfile._check_here(*sys.argv[1:])"
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(memory_mb)],
        cwd=Path(__file__).resolve().parents[1],  # this fer package, whatever the server's folder
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise ModelFileError(
            f"checking it took longer than the {seconds} s a model check may take on this server (loading "
            "it and classifying one face); upload a smaller model, or have the server's owner raise "
            f"{CHECK_SECONDS_VARIABLE}"
        ) from None
    lines = out.decode("utf-8", errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if not isinstance(report, dict) or "error" not in report:
        report = None
    said = report["error"] if report and report["error"] else err.decode("utf-8", errors="replace")
    if (report is None or report["error"]) and _OUT_OF_MEMORY.search(said):
        raise ModelFileError(
            f"loading it and classifying one face took more than the {memory_mb:,} MB of memory a model "
            f"check may use on this server; upload a smaller model, or have the server's owner raise "
            f"{CHECK_MB_VARIABLE}"
        )
    if report is None:
        last = said.strip().splitlines()[-1:] or [f"exit status {process.returncode}"]
        raise ModelFileError(
            f"checking it stopped without an answer ({last[0][:300]}); upload the .keras file `fer train` "
            "wrote, unchanged"
        )
    return report


def check_model_file(data: bytes, dest_dir: str | Path | None = None) -> Path:
    """Keep an uploaded model file if this project can use it safely, and return where it is kept.

    It must be at most MAX_MODEL_BYTES, a zip that makes sense as a model, carry the fer.json that
    `fer train` writes (labels and image_size), declare in its config the weights it holds and no
    more than max_model_params(), load in Keras' safe mode with no Python code (a Lambda layer is
    refused), have the shapes its fer.json promises, and classify a blank face. Everything from
    reading its weights on happens in a process of its own, under check_memory_mb() and
    check_seconds(). Only then is it written, as <dest_dir>/<sha256[:16]>.keras (default
    fer.paths.data_dir() / "models"); the same bytes again reuse that file. ModelFileError says
    what failed.
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
        if not _CHECKS.acquire(timeout=check_seconds()):
            raise ModelFileError(
                f"the server is busy checking {CHECKS_AT_ONCE} other model files; upload it again in a minute"
            )
        try:
            report = _check_elsewhere(staging)
        finally:
            _CHECKS.release()
        if report["error"]:
            raise ModelFileError(
                str(report["error"]).replace(f"{staging}: ", "").replace(str(staging), "the file")
            )
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target
