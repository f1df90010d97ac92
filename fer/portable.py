"""The model anywhere: the same network as an ONNX or a TFLite file, with its fer.json inside.

A .keras file needs Keras and TensorFlow to run. `export` writes the network in the two formats
phones, browsers and other languages run (ONNX Runtime, LiteRT), optionally with float16 or int8
weights, and puts the model's metadata (labels, face size, grayscale, the [0, 1] scaling done by
the network itself, the calibration temperature) inside the file: an ONNX metadata property and a
TFLite metadata entry, both named `fer.json`. Reading it back (`load_model`) needs only
`onnxruntime` or `ai-edge-litert`, never TensorFlow.

TFLite files come from TensorFlow's own converter. ONNX files are written here, layer by layer,
for the layers fer.models builds (Rescaling, Conv2D, BatchNormalization, ReLU, MaxPooling2D,
Flatten, GlobalAveragePooling2D, Dense, Dropout, softmax): the ONNX converters lag behind
TensorFlow's releases, and these layers are a few lines each. Every export is run against the Keras
model on test faces before it is kept (`compare`).

Loaded models look like the Keras model to the rest of the project (`input_shape`, `output_shape`,
`predict_on_batch`), so fer.modelfile's checks and probabilities apply to them unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from fer import logs, modelfile, runs
from fer.config import server_setting

FORMATS = {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx"}  # format -> file suffix
PORTABLE = ("tflite", "onnx")
QUANTIZE = ("float16", "int8")
METADATA_KEY = "fer.json"  # the name of the metadata inside an ONNX or TFLite file
ONNX_OPSET = 17
# An export must compute what the Keras model does: the largest difference allowed in a probability
# on the check faces (float32 files); quantized files are reported, not held to it.
TOLERANCE = 1e-4
CHECK_FACES = 64
INPUT = {
    "name": "face",
    "dtype": "float32",
    "layout": "NHWC: (faces, size, size, 1)",
    "values": "grayscale pixel values 0-255: the network scales them to [0, 1] itself",
}
OUTPUT = (
    'one probability per label, in the order of labels, before calibration: with "flip": true, '
    "average first the face's and its mirror image's (the face flipped left to right); with a "
    "calibration entry, then p -> softmax(log(p) / temperature)"
)


def format_of(path: Path | str) -> str | None:
    """The format a file name says ("keras", "tflite", "onnx"), None for another suffix."""
    suffix = Path(path).suffix.lower()
    return next((name for name, ending in FORMATS.items() if ending == suffix), None)


def is_portable(path: Path | str) -> bool:
    return format_of(path) in PORTABLE


# Writing -----------------------------------------------------------------------------------------


def export(source: Path, out: Path, fmt: str, quantize: str | None = None, faces=None) -> dict:
    """Write the .keras model at `source` to `out` as `fmt` ("tflite" or "onnx") with its metadata,
    after checking the written file against the Keras model on `faces` ((n, size, size) uint8; default
    CHECK_FACES seeded random faces). Returns the check's figures (see `compare`)."""
    if fmt not in PORTABLE:
        raise ValueError(f"format must be one of {', '.join(PORTABLE)}, got {fmt!r}")
    if quantize not in (None, *QUANTIZE):
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if format_of(out) != fmt:
        raise ValueError(f"--out must name a {FORMATS[fmt]} file for --format {fmt}, got {out}")
    model, metadata = modelfile.load_model(Path(source))
    modelfile.check_model(model, metadata, Path(source))
    metadata = describe(metadata, fmt, quantize)
    data = to_tflite(model, metadata, quantize) if fmt == "tflite" else to_onnx(model, metadata, quantize)
    size = int(metadata["image_size"])
    if faces is None:
        faces = np.random.default_rng(0).integers(0, 256, (CHECK_FACES, size, size), dtype=np.uint8)
    written = load_bytes(data, fmt)[0]
    check = compare(model, written, faces)
    if quantize is None and check["max_difference"] > TOLERANCE:
        raise ValueError(
            f"the {fmt} file does not compute what the Keras model does: probabilities differ by up to "
            f"{check['max_difference']:.2g} on {check['faces']} faces (allowed: {TOLERANCE:g}); nothing "
            "was written"
        )
    runs.write_atomic(Path(out), lambda temporary: temporary.write_bytes(data))
    return check


def describe(metadata: dict, fmt: str, quantize: str | None) -> dict:
    """The model's fer.json with what a runtime needs spelled out: its input and output, the format
    and the weights' precision."""
    size = int(metadata["image_size"])
    return {
        **metadata,
        "format": fmt,
        "weights": quantize or "float32",
        "input": {**INPUT, "shape": [None, size, size, 1]},
        "output": OUTPUT,
    }


def compare(reference, other, faces: np.ndarray) -> dict:
    """How closely `other` follows `reference` on `faces`: label agreement and the largest
    difference in a probability (both networks' own outputs, before calibration)."""
    expected = modelfile.predict_probabilities(reference, faces)
    got = modelfile.predict_probabilities(other, faces)
    same = int((expected.argmax(axis=1) == got.argmax(axis=1)).sum())
    return {
        "faces": len(faces),
        "same_label": same,
        "agreement": same / max(len(faces), 1),
        "max_difference": float(np.abs(expected - got).max()) if len(faces) else 0.0,
    }


def to_tflite(model, metadata: dict, quantize: str | None = None) -> bytes:
    """The model as a TFLite flatbuffer (TensorFlow's converter) with `metadata` inside. float16:
    weights stored in half precision; int8: weights in 8 bits, computed in float (dynamic range)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    # The converter saves the model first and prints its signature on stdout, which is the command's.
    with contextlib.redirect_stdout(io.StringIO()), logs.stderr_filtered():
        data = converter.convert()
    return _with_tflite_metadata(data, metadata)


def _with_tflite_metadata(data: bytes, metadata: dict) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(data))
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = fb.schema_fb.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(fb.convert_object_to_bytearray(model))


# The ONNX graph, layer by layer. Keras keeps images as NHWC, ONNX's convolutions and pools take
# NCHW: the graph switches to NCHW at the first layer that needs it and back before a Flatten, whose
# order of values must be Keras'.


class OnnxGraph:
    """An ONNX graph built node by node: what `to_onnx` writes a Keras model with, and what
    fer.facecheck builds MTCNN's O-Net with. Names come from hints ("conv_3"); `quantize` "float16"
    stores the weights in half precision."""

    def __init__(self, quantize: str | None = None) -> None:
        self.nodes, self.weights, self.quantize, self.count = [], [], quantize, 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def node(self, op: str, inputs: list[str], hint: str, **attributes) -> str:
        from onnx import helper

        out = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attributes))
        return out

    def constant(self, array, hint: str) -> str:
        """A weight; float16 ones are stored in half precision and cast back to float32 when read."""
        from onnx import TensorProto, numpy_helper

        name = self.name(hint)
        half = self.quantize == "float16"
        array = np.asarray(array, dtype=np.float16 if half else np.float32)
        self.weights.append(numpy_helper.from_array(array, name))
        return self.node("Cast", [name], f"{hint}_float", to=TensorProto.FLOAT) if half else name

    def model(self, name: str, inputs: list, outputs: list, **properties):
        """The ONNX model (a ModelProto) of the graph: opset ONNX_OPSET, in the IR version ONNX
        Runtimes of the last years read. `inputs`, `outputs`: value infos; `properties`: make_model's."""
        from onnx import helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], **properties)
        model.ir_version = 8
        return model


def _keras_padding(padding: str) -> dict:
    if padding == "valid":
        return {}
    if padding == "same":
        return {"auto_pad": "SAME_UPPER"}  # TensorFlow puts an odd padding's extra row at the end
    raise ValueError(f"padding {padding!r}")


def _activation(graph: OnnxGraph, x: str, name: str, rank: int) -> str:
    if name == "linear":
        return x
    if name == "relu":
        return graph.node("Relu", [x], "relu")
    if name == "softmax" and rank == 2:
        return graph.node("Softmax", [x], "softmax", axis=-1)
    raise ValueError(f"activation {name!r}")


def _layers_in_a_line(model) -> list:
    """The model's layers, checked to form one chain (each takes the one before's output)."""
    layers = list(model.layers)
    for before, layer in zip(layers, layers[1:]):
        if layer.input is not before.output:
            raise ValueError(
                f"layer {layer.name!r} does not take the output of {before.name!r}: only models whose "
                "layers form one chain can be written as ONNX here"
            )
    return layers


def to_onnx(model, metadata: dict, quantize: str | None = None) -> bytes:
    """The model as an ONNX graph (opset ONNX_OPSET) with `metadata` as a metadata property. float16:
    weights stored in half precision (computed in float32); int8: ONNX Runtime's dynamic quantization."""
    import onnx
    from onnx import TensorProto, helper

    if quantize not in (None, *QUANTIZE):
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    size = int(metadata["image_size"])
    graph = OnnxGraph("float16" if quantize == "float16" else None)
    x, layout, rank = INPUT["name"], "nhwc", 4
    for layer in _layers_in_a_line(model):
        kind, config = type(layer).__name__, layer.get_config()
        weights = [np.asarray(w) for w in layer.get_weights()]
        try:
            if kind in ("InputLayer", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout"):
                continue  # nothing at inference
            if (
                kind in ("Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D")
                and layout == "nhwc"
            ):
                x, layout = graph.node("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2]), "nchw"
            if kind == "Rescaling":
                x = graph.node("Mul", [x, graph.constant(np.float32(config["scale"]), "scale")], "rescale")
                if np.any(np.asarray(config["offset"]) != 0):
                    x = graph.node(
                        "Add", [x, graph.constant(np.float32(config["offset"]), "offset")], "shift"
                    )
            elif kind == "Conv2D":
                if config.get("data_format", "channels_last") != "channels_last":
                    raise ValueError("data_format channels_first")
                kernel = graph.constant(weights[0].transpose(3, 2, 0, 1), "kernel")
                inputs = [x, kernel] + ([graph.constant(weights[1], "bias")] if config["use_bias"] else [])
                x = graph.node(
                    "Conv",
                    inputs,
                    "conv",
                    kernel_shape=list(config["kernel_size"]),
                    strides=list(config["strides"]),
                    dilations=list(config["dilation_rate"]),
                    group=int(config.get("groups", 1)),
                    **_keras_padding(config["padding"]),
                )
                x = _activation(graph, x, config["activation"], rank)
            elif kind == "BatchNormalization":
                # Inference: y = x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps)).
                if config["axis"] not in (-1, [-1], rank - 1, [rank - 1]):
                    raise ValueError(f"axis {config['axis']}")
                values = iter(weights)
                gamma = next(values) if config["scale"] else 1.0
                beta = next(values) if config["center"] else 0.0
                mean, variance = next(values), next(values)
                factor = gamma / np.sqrt(variance + config["epsilon"])
                shift = beta - mean * factor
                shape = (-1, 1, 1) if layout == "nchw" and rank == 4 else (-1,)
                x = graph.node("Mul", [x, graph.constant(factor.reshape(shape), "bn_scale")], "bn")
                x = graph.node("Add", [x, graph.constant(shift.reshape(shape), "bn_shift")], "bn")
            elif kind == "Activation":
                x = _activation(graph, x, config["activation"], rank)
            elif kind == "ReLU":
                if (
                    config.get("max_value") is not None
                    or config.get("negative_slope")
                    or config.get("threshold")
                ):
                    raise ValueError("a ReLU with a cap, slope or threshold")
                x = graph.node("Relu", [x], "relu")
            elif kind in ("MaxPooling2D", "AveragePooling2D"):
                pool = list(config["pool_size"])
                x = graph.node(
                    "MaxPool" if kind == "MaxPooling2D" else "AveragePool",
                    [x],
                    "pool",
                    kernel_shape=pool,
                    strides=list(config["strides"] or pool),
                    **_keras_padding(config["padding"]),
                )
            elif kind == "GlobalAveragePooling2D":
                if config.get("keepdims"):
                    raise ValueError("keepdims")
                x = graph.node("GlobalAveragePool", [x], "gap")
                x, rank = graph.node("Flatten", [x], "flatten", axis=1), 2
            elif kind == "Flatten":
                if layout == "nchw":  # Keras flattens rows, then columns, then channels
                    x, layout = graph.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1]), "nhwc"
                x, rank = graph.node("Flatten", [x], "flatten", axis=1), 2
            elif kind == "Dense":
                if rank != 2:
                    raise ValueError("a Dense layer on more than one dimension")
                x = graph.node("MatMul", [x, graph.constant(weights[0], "dense")], "dense")
                if config["use_bias"]:
                    x = graph.node("Add", [x, graph.constant(weights[1], "dense_bias")], "dense")
                x = _activation(graph, x, config["activation"], rank)
            else:
                raise ValueError("its kind")
        except (ValueError, KeyError, IndexError, StopIteration) as error:
            raise ValueError(
                f"layer {layer.name!r} ({kind}) cannot be written as ONNX ({error} is not supported); the "
                "layers fer.models builds can, and --format tflite takes any Keras model"
            ) from None
    labels = metadata["labels"]
    out = graph.node("Identity", [x], "probabilities")
    onnx_model = graph.model(
        "fer",
        [helper.make_tensor_value_info(INPUT["name"], TensorProto.FLOAT, ["faces", size, size, 1])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["faces", len(labels)])],
        producer_name="fer",
        doc_string="Facial expression classifier; its fer.json metadata says how to feed it and read it.",
    )
    helper.set_model_props(onnx_model, {METADATA_KEY: json.dumps(metadata)})
    onnx.checker.check_model(onnx_model)
    data = onnx_model.SerializeToString()
    return _onnx_int8(data) if quantize == "int8" else data


def _onnx_int8(data: bytes) -> bytes:
    """ONNX Runtime's dynamic quantization: weights in 8 bits, activations quantized as they come."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "model.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(data)
        # It logs advice for its own users (run its pre-processing first) on the root logger.
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()), logs.stderr_filtered():
                quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        return target.read_bytes()


# The ONNX twin of a .keras model -----------------------------------------------------------------

# Classifying photos (fer.predict) runs a .keras model's network as its ONNX twin, written once by
# `export` (so checked against Keras) into the data folder's cache and found again by the file's
# content: a process that only classifies then never loads TensorFlow, which alone is most of its
# memory, and ONNX Runtime answers a few faces faster than Keras' predict. A network with a layer
# the ONNX writer does not know keeps running on Keras (a note beside the twin's name says why, so
# the export is not tried again). Bump TWIN_VERSION when `to_onnx` changes what it writes. A shared
# server classifies with every model its visitors upload, so at most FER_MAX_TWINS twins are kept
# (about 11 MB each for the bundled model): writing one more removes the least recently used.
TWIN_FOLDER = "onnx-twins"
TWIN_VERSION = 1
MAX_TWINS = 32


def twin_path(source: Path) -> Path:
    """Where the ONNX twin of the .keras file `source` is kept (named by its content)."""
    import hashlib

    from fer import paths

    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:24]
    return paths.data_dir() / "cache" / TWIN_FOLDER / f"{digest}-v{TWIN_VERSION}.onnx"


def onnx_twin(source: Path) -> Path | None:
    """The ONNX twin of the .keras model at `source`, written now when it is not kept yet (loading
    the model through fer.modelfile, with its checks: a ModelFileError passes on); None where the
    network cannot be written as ONNX (it then runs on Keras) and for a file that is no .keras model."""
    fmt = format_of(source)
    if fmt in PORTABLE or fmt is None and not (Path(source).is_file() and zipfile.is_zipfile(source)):
        return None  # not a .keras file: load_model says what it is
    twin = twin_path(source)
    keras_only = twin.with_suffix(".keras-only")
    if twin.is_file():
        _used(twin)
        return twin
    if keras_only.is_file():
        return None
    limit = server_setting("FER_MAX_TWINS", MAX_TWINS, "models")
    try:
        export(Path(source), twin, "onnx")
    except modelfile.ModelFileError:
        raise
    except (ValueError, ImportError, OSError) as error:
        reason = f"{type(error).__name__}: {error}"
        logging.getLogger(__name__).info("%s runs on Keras (%s)", source, reason)
        with contextlib.suppress(OSError):
            runs.write_atomic(keras_only, lambda temporary: temporary.write_text(reason + "\n"))
        return None
    _keep_recent_twins(twin.parent, limit, twin)
    return twin


def _used(twin: Path) -> None:
    """Mark a kept twin as just used (its modification time), so it is the last to be removed."""
    with contextlib.suppress(OSError):
        os.utime(twin)


def _keep_recent_twins(folder: Path, limit: int, written: Path) -> None:
    """Remove the least recently used twins (with their `.keras-only` notes) beyond `limit`, never
    the one just `written`. Another process still reading a removed twin keeps its open copy."""
    kept = []
    for path in folder.glob(f"*-v{TWIN_VERSION}.*"):
        if path.suffix in (".onnx", ".keras-only") and path != written:
            with contextlib.suppress(OSError):
                kept.append((path.stat().st_mtime, path))
    for _, path in sorted(kept, reverse=True)[max(limit - 1, 0) :]:
        with contextlib.suppress(OSError):
            path.unlink()


# Reading -----------------------------------------------------------------------------------------


class OnnxModel:
    """An ONNX file run by ONNX Runtime on the CPU, shaped like a Keras model for fer.modelfile."""

    def __init__(self, data: bytes | str, where: str) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are for the file's authors
        try:
            self.session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise modelfile.ModelFileError(
                f"{where} cannot be read as an ONNX model ({type(error).__name__}: {str(error)[:300]})"
            ) from error
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise modelfile.ModelFileError(f"{where}: the model has no single input and output")
        self.input_name = inputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        self.output_shape = tuple(d if isinstance(d, int) else None for d in outputs[0].shape)
        self.metadata_text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.asarray(x, dtype=np.float32)})[0]


class TfliteModel:
    """A TFLite file run by LiteRT's interpreter on the CPU, shaped like a Keras model for fer.modelfile."""

    def __init__(self, data: bytes, where: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.metadata_text = _tflite_metadata(data, where)
        try:
            with logs.stderr_filtered():  # LiteRT's note that it uses the XNNPACK delegate
                self.interpreter = Interpreter(model_content=data, num_threads=os.cpu_count() or 1)
        except Exception as error:
            raise modelfile.ModelFileError(
                f"{where} cannot be read as a TFLite model ({type(error).__name__}: {str(error)[:300]})"
            ) from error
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise modelfile.ModelFileError(f"{where}: the model has no single input and output")
        self.input, self.output = inputs[0]["index"], outputs[0]["index"]
        signature = (inputs[0]["shape_signature"], outputs[0]["shape_signature"])
        self.input_shape, self.output_shape = (tuple(None if d < 0 else int(d) for d in s) for s in signature)
        self.batch = None

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.batch != len(x):
            with logs.stderr_filtered():
                self.interpreter.resize_tensor_input(self.input, list(x.shape))
                self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output))


def _tflite_metadata(data: bytes, where: str) -> str | None:
    from ai_edge_litert import schema_py_generated as schema

    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("it does not start with the TFLite identifier TFL3")
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA_KEY.encode():
                return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode()
    except Exception as error:
        raise modelfile.ModelFileError(
            f"{where} cannot be read as a TFLite model ({type(error).__name__}: {str(error)[:300]})"
        ) from error
    return None


def load_bytes(data: bytes, fmt: str, where: str = "the model file") -> tuple[object, dict | None]:
    """A runnable model from a portable file's bytes, and its fer.json (None where it has none)."""
    model = TfliteModel(data, where) if fmt == "tflite" else OnnxModel(data, where)
    text = model.metadata_text
    try:
        metadata = json.loads(text) if text is not None else None
    except ValueError as error:
        raise modelfile.ModelFileError(f"{where}: its {METADATA_KEY} is not JSON ({error})") from None
    return model, metadata


def load_model(path: Path) -> tuple[object, dict]:
    """A model from a .keras, .tflite or .onnx file and its fer.json, or ModelFileError saying why not.
    A .keras file goes through fer.modelfile (Keras' safe mode); the others load without TensorFlow."""
    path = Path(path)
    fmt = format_of(path)
    if fmt == "keras" or fmt is None and zipfile.is_zipfile(path):
        return modelfile.load_model(path)
    if fmt is None:
        raise modelfile.ModelFileError(
            f"{path}: a model file must end in {', '.join(FORMATS.values())} (written by fer train or fer export)"
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise modelfile.ModelFileError(f"{path} cannot be read ({error.strerror or error})") from None
    model, metadata = load_bytes(data, fmt, str(path))
    if not isinstance(metadata, dict):
        raise modelfile.ModelFileError(
            f"{path} carries no {METADATA_KEY} (labels, face size): write it with `python -m fer export MODEL "
            f"--format {fmt} --out FILE`"
        )
    return model, metadata


def file_bytes(source: Path, fmt: str, quantize: str | None = None) -> bytes:
    """The .keras model at `source` as a `fmt` file's bytes (checked, as `export` checks): what a
    download button hands out."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / f"model{FORMATS[fmt]}"
        export(source, out, fmt, quantize)
        return out.read_bytes()
