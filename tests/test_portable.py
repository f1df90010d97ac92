"""Portable models: `fer export --format onnx|tflite` and `fer predict --model FILE.onnx|FILE.tflite`.

Small models built here with random weights (and batch-norm statistics far from their defaults, so
folding them is tested) are written in each format and must compute what the Keras model computes
on generated faces; the tiny trained run goes through the command line both ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import face_crop

from fer import cli, portable
from fer.labels import LABELS

PROJECT = Path(__file__).resolve().parents[1]


def saved_model(tmp_path: Path, arch: str, metadata: dict | None = None) -> Path:
    """A .keras file as training writes one: a fer.models architecture with random weights."""
    from fer import models
    from fer.config import ModelConfig
    from fer.modelfile import save_model

    model = models.build(ModelConfig(arch=arch, image_size=48, width=4))
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":  # gamma, beta, mean, variance
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, gamma.shape),
                    rng.normal(0, 0.5, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                    rng.uniform(0.2, 3, variance.shape),
                ]
            )
    path = tmp_path / f"{arch}.keras"
    save_model(model, path, {"labels": list(LABELS), "image_size": 48, "margin": 0.0, **(metadata or {})})
    return path


def faces(n: int = 48, seed: int = 0) -> np.ndarray:
    """Face-like test inputs: smooth blobs of light and shade rather than noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 6, 6)).astype(np.float32)
    return np.kron(small, np.ones((8, 8), dtype=np.float32)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("arch", ["seed", "vgg", "vgg-lite", "vgg-steady", "vgg-smooth", "vgg-small"])
def test_every_architecture_written_as_onnx_computes_what_keras_does(tmp_path, arch):
    source = saved_model(tmp_path, arch)
    out = tmp_path / f"{arch}.onnx"
    check = portable.export(source, out, "onnx", faces=faces())
    assert check["agreement"] == 1.0 and check["max_difference"] < 1e-5

    from fer.modelfile import load_model, predict_probabilities

    keras_model, _ = load_model(source)
    onnx_model, metadata = portable.load_model(out)
    assert onnx_model.input_shape == (None, 48, 48, 1) and onnx_model.output_shape == (None, 7)
    other = faces(20, seed=5)
    np.testing.assert_allclose(
        predict_probabilities(onnx_model, other), predict_probabilities(keras_model, other), atol=1e-5
    )
    assert metadata["labels"] == list(LABELS) and metadata["image_size"] == 48
    assert metadata["input"]["shape"] == [None, 48, 48, 1] and "[0, 1]" in metadata["input"]["values"]
    assert metadata["format"] == "onnx" and metadata["weights"] == "float32"


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_quantized_onnx_is_smaller_and_keeps_the_labels(tmp_path, quantize):
    source = saved_model(tmp_path, "seed")
    plain, small = tmp_path / "plain.onnx", tmp_path / f"{quantize}.onnx"
    portable.export(source, plain, "onnx")
    check = portable.export(source, small, "onnx", quantize, faces=faces(100))
    assert small.stat().st_size < plain.stat().st_size * (0.6 if quantize == "float16" else 0.4)
    assert check["agreement"] >= 0.95
    assert portable.load_model(small)[1]["weights"] == quantize


@pytest.mark.slow
def test_tflite_computes_what_keras_does_and_carries_the_metadata(tmp_path):
    source = saved_model(tmp_path, "vgg", {"calibration": {"method": "temperature", "temperature": 2.0}})
    out = tmp_path / "model.tflite"
    check = portable.export(source, out, "tflite", faces=faces())
    assert check["agreement"] == 1.0 and check["max_difference"] < 1e-5
    model, metadata = portable.load_model(out)
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    assert metadata["labels"] == list(LABELS) and metadata["calibration"]["temperature"] == 2.0
    assert metadata["format"] == "tflite"

    # The calibration applies to the portable model as to the Keras one.
    from fer.predict import Predictor

    face = faces(1, seed=9)[0]
    keras_face = Predictor(source).classify(face[None])
    tflite_face = Predictor(out).classify(face[None])
    np.testing.assert_allclose(tflite_face, keras_face, atol=1e-5)
    from fer.modelfile import predict_probabilities

    raw = predict_probabilities(model, face[None])  # the network's own: T = 2 softens them
    assert tflite_face.max() < raw.max() - 1e-3


def leaky_model(tmp_path: Path) -> Path:
    """A .keras file saved as training saves one, with a layer the ONNX writer does not know."""
    import keras

    from fer.modelfile import save_model

    inputs = keras.Input((48, 48, 1), name="face")
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.LeakyReLU(name="leaky")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
    source = tmp_path / "leaky.keras"
    save_model(model, source, {"labels": list(LABELS), "image_size": 48, "margin": 0.0})
    return source


def test_a_layer_onnx_cannot_take_is_named(tmp_path):
    source = leaky_model(tmp_path)
    with pytest.raises(ValueError, match=r"layer 'leaky' \(LeakyReLU\) cannot be written as ONNX.*tflite"):
        portable.export(source, tmp_path / "leaky.onnx", "onnx")
    assert not (tmp_path / "leaky.onnx").exists()


@pytest.fixture(scope="module")
def face_png(tmp_path_factory) -> Path:
    """A real face cut close: a picture given whole that does not look like a face gets no expression."""
    path = tmp_path_factory.mktemp("photos") / "face.png"
    face_crop(48).save(path)
    return path


def predicted(capsys, model: Path, image: Path) -> dict:
    assert cli.main(["predict", "--model", str(model), "--whole", str(image), "--json"]) == 0
    [face] = json.loads(capsys.readouterr().out)["photos"][0]["faces"]
    return face


@pytest.mark.slow
@pytest.mark.parametrize("fmt, options", [("onnx", []), ("tflite", ["--format", "tflite"]),
                                          ("onnx", ["--format", "onnx", "--quantize", "float16"])])  # fmt: skip
def test_export_and_predict_round_trip_through_the_command_line(
    tiny_run, tmp_path, capsys, face_png, fmt, options
):
    out = tmp_path / f"model.{fmt}"
    assert cli.main(["export", str(tiny_run), "--out", str(out), *options]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}\n") and "same label on 64" in said
    metadata = portable.load_model(out)[1]
    assert metadata["test_metrics"]["n"] > 0 and metadata["exported_from"].endswith("best.keras")
    assert metadata["format"] == fmt and metadata["weights"] == (
        "float16" if "float16" in options else "float32"
    )

    keras_face = predicted(capsys, tiny_run / "best.keras", face_png)
    portable_face = predicted(capsys, out, face_png)
    assert portable_face["label"] == keras_face["label"]
    close = 1e-2 if "--quantize" in options else 1e-4  # half-precision weights are close, not equal
    for label, p in keras_face["probabilities"].items():
        assert portable_face["probabilities"][label] == pytest.approx(p, abs=close)


def test_bad_files_and_options_get_a_clear_message(tmp_path, capsys, face_png):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model at all")
    assert cli.main(["predict", "--model", str(broken), "--whole", str(face_png)]) == 2
    assert "cannot be read as an ONNX model" in capsys.readouterr().err

    broken_tflite = tmp_path / "broken.tflite"
    broken_tflite.write_bytes(b"\x00" * 64)
    assert cli.main(["predict", "--model", str(broken_tflite), "--whole", str(face_png)]) == 2
    assert "cannot be read as a TFLite model" in capsys.readouterr().err

    assert cli.main(["predict", "--model", str(tmp_path / "missing.onnx"), "--whole", str(face_png)]) == 2
    assert "missing.onnx cannot be read" in capsys.readouterr().err

    assert cli.main(["predict", "--model", str(face_png), "--whole", str(face_png)]) == 2
    assert "must end in .keras, .tflite, .onnx" in capsys.readouterr().err

    # An ONNX file that is a real model but was not written by fer export: no labels to read.
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "bare",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 7])],
    )
    bare_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    bare_model.ir_version = 8
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(bare_model.SerializeToString())
    onnx.checker.check_model(onnx.load(bare))
    assert cli.main(["predict", "--model", str(bare), "--whole", str(face_png)]) == 2
    assert "carries no fer.json" in capsys.readouterr().err

    source = saved_model(tmp_path, "seed")
    for argv, message in [
        (["--out", str(tmp_path / "x.keras"), "--format", "onnx"], "--out must name a .onnx file for --format onnx"),
        (["--out", str(tmp_path / "x.tflite"), "--format", "keras"], "--out must name a .keras file"),
        (["--out", str(tmp_path / "x.keras"), "--quantize", "int8"], "--quantize applies to --format tflite or onnx"),
    ]:  # fmt: skip
        assert cli.main(["export", str(source), *argv]) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*"))


def _run_without_tensorflow(model: Path, image: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys\nfrom fer.cli import main\n"
        f"code = main(['predict', '--model', {str(model)!r}, '--whole', {str(image)!r}])\n"
        "print('loaded:', ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'jax'))))\nsys.exit(code)"
    )
    env = {k: v for k, v in os.environ.items() if k != "FER_VERBOSE"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, env=env, timeout=300
    )


def test_portable_models_predict_without_tensorflow_and_quietly(tmp_path, face_png):
    source = saved_model(tmp_path, "vgg-small")
    onnx_file = tmp_path / "model.onnx"
    portable.export(source, onnx_file, "onnx")
    done = _run_without_tensorflow(onnx_file, face_png)
    assert done.returncode == 0, done.stderr
    assert "face.png: " in done.stdout and "likely" in done.stdout
    assert done.stdout.strip().endswith("loaded:")  # neither TensorFlow nor Keras
    assert done.stderr == ""


@pytest.mark.slow
def test_tflite_predicts_without_tensorflow_and_hides_litert_s_start_up_line(tmp_path, face_png):
    source = saved_model(tmp_path, "seed")
    tflite_file = tmp_path / "model.tflite"
    portable.export(source, tflite_file, "tflite", "float16")
    done = _run_without_tensorflow(tflite_file, face_png)
    assert done.returncode == 0, done.stderr
    assert "likely" in done.stdout and done.stdout.strip().endswith("loaded:")
    assert "XNNPACK" not in done.stderr and done.stderr == ""


# A .keras model classifying photos through its ONNX twin -----------------------------------------


def test_a_keras_model_classifies_photos_as_its_onnx_twin_with_the_same_answers(tmp_path):
    from fer.predict import Predictor

    source = saved_model(tmp_path, "vgg-small")
    twin = Predictor(source, detector="haar")
    keras_run = Predictor(source, detector="haar", onnx=False)
    assert isinstance(twin.model, portable.OnnxModel) and not isinstance(keras_run.model, portable.OnnxModel)
    assert portable.twin_path(source).is_file()
    assert twin.metadata == keras_run.metadata and twin.labels == keras_run.labels
    np.testing.assert_allclose(twin.classify(faces()), keras_run.classify(faces()), atol=1e-4)
    # Saliency maps need Keras' gradients: the twin's predictor loads the Keras model for them.
    np.testing.assert_allclose(twin.maps(faces(3)), keras_run.maps(faces(3)), atol=1e-4)


def test_the_twin_is_written_once_and_found_by_the_file_s_content(tmp_path, monkeypatch):
    from fer.predict import Predictor

    source = saved_model(tmp_path, "seed")
    first = portable.onnx_twin(source)
    assert first == portable.twin_path(source) and first.is_file()
    monkeypatch.setattr(portable, "export", lambda *a, **k: pytest.fail("the kept twin was written again"))
    assert portable.onnx_twin(source) == first
    Predictor(source, detector="haar")
    (tmp_path / "other").mkdir()
    other = saved_model(tmp_path / "other", "vgg-small")
    assert portable.twin_path(other) != first  # another model, another twin


def test_a_shared_server_keeps_only_the_most_recently_used_twins(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_MAX_TWINS", "2")
    models = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        models.append(saved_model(tmp_path / name, "seed", {"note": name}))
    first, second, third = models
    portable.onnx_twin(first)
    portable.onnx_twin(second)
    os.utime(portable.twin_path(first), (1, 1))  # used long ago ...
    os.utime(portable.twin_path(second), (2, 2))
    assert portable.onnx_twin(first) == portable.twin_path(first)  # ... and now again
    portable.onnx_twin(third)
    kept = sorted(p.name for p in portable.twin_path(first).parent.iterdir())
    assert kept == sorted([portable.twin_path(first).name, portable.twin_path(third).name])
    assert portable.onnx_twin(second).is_file()  # a removed twin is written again when needed


def test_a_twin_limit_that_is_no_number_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_MAX_TWINS", "lots")
    with pytest.raises(ValueError, match="FER_MAX_TWINS"):
        portable.onnx_twin(saved_model(tmp_path, "seed"))


def test_a_network_onnx_cannot_take_runs_on_keras_and_is_not_tried_again(tmp_path, monkeypatch):
    from fer.predict import Predictor

    source = leaky_model(tmp_path)
    predictor = Predictor(source, detector="haar")
    assert not isinstance(predictor.model, portable.OnnxModel)
    assert predictor.classify(faces(2)).shape == (2, 7)
    note = portable.twin_path(source).with_suffix(".keras-only")
    assert "LeakyReLU" in note.read_text()
    monkeypatch.setattr(portable, "export", lambda *a, **k: pytest.fail("the export was tried again"))
    assert portable.onnx_twin(source) is None


def test_a_refused_keras_file_is_refused_before_any_twin_is_written(tmp_path):
    from helpers import lambda_model

    from fer.modelfile import ModelFileError
    from fer.predict import Predictor

    source = lambda_model(tmp_path / "lambda.keras")
    with pytest.raises(ModelFileError, match="refused"):
        Predictor(source, detector="haar")
    assert not portable.twin_path(source).exists()
    assert not portable.twin_path(source).with_suffix(".keras-only").exists()


def test_a_keras_model_classifies_photos_without_tensorflow_once_its_twin_is_kept(tmp_path, face_png):
    source = saved_model(tmp_path, "vgg-small")
    portable.onnx_twin(source)
    done = _run_without_tensorflow(source, face_png)
    assert done.returncode == 0, done.stderr
    assert "face.png: " in done.stdout and "likely" in done.stdout
    assert done.stdout.strip().endswith("loaded:")  # neither TensorFlow nor Keras
    assert done.stderr == ""
