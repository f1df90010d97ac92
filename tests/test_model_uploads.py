"""Model files uploaded on the Classify page ("Use your own model file") that would take the server down.

A .keras file is a zip whose config.json tells Keras what to build, and Keras allocates every
layer's weights before it reads one number of them: a few kB of config declaring a Dense layer of
2**28 units asks for hundreds of gigabytes. The file is built here the way anyone would build it:
a small real model saved as `fer train` saves models, its config.json edited, its weights left as
they were. Such a file must be refused before anything is built, with a message that says why;
models that pass are loaded and tried in a process of their own, under a memory and a time limit,
and a real server keeps answering, its memory flat, while a visitor uploads one.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import pytest
from helpers import expw_faces, healthy, memory_kb, server
from streamlit.testing.v1 import AppTest

from fer import modelfile
from fer.labels import LABELS
from fer.modelfile import ModelFileError, check_model_file
from fer.paths import BUNDLED_MODEL

PROJECT = Path(__file__).resolve().parents[1]
APP = str(PROJECT / "streamlit_app.py")
HIDDEN_UNITS = 16  # the small model's hidden Dense layer, the one the hostile files inflate
FLAT = 12 * 12 * 4  # what that layer takes: a 4-filter 3x3 convolution with stride 4 over 48x48
HUGE = 2**28  # units: a kernel of 576 x 2**28 numbers, about 600 GB


def small_model(path: Path, extra_layer=None) -> Path:
    """A real model (48x48 faces, the seven labels) of about 10,000 weights, saved as `fer train` saves."""
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 1), name="face")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(4, 3, strides=4)(x)
    x = layers.BatchNormalization()(x)
    x = (extra_layer or layers.Identity())(x)
    x = layers.Flatten()(x)
    x = layers.Dense(HIDDEN_UNITS, activation="relu", name="dense")(x)  # named: the messages quote it
    outputs = layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    metadata = {"labels": list(LABELS), "image_size": 48, "margin": 0.0}
    modelfile.save_model(keras.Model(inputs, outputs), path, metadata)
    return path


def edited(source: Path, target: Path, units: int, **changes) -> Path:
    """`source` with the hidden Dense layer's units (and any `changes` to its config) changed in
    config.json, every other byte kept."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                [layer] = [
                    layer
                    for layer in config["config"]["layers"]
                    if layer["class_name"] == "Dense" and layer["config"]["units"] == HIDDEN_UNITS
                ]
                layer["config"].update(units=units, **changes)
                data = json.dumps(config).encode()
            new.writestr(info, data)
    return target


def inflated(source: Path, target: Path, units: int) -> Path:
    """`source` with the hidden Dense layer declared `units` wide in config.json and in its weights
    file alike, which stores the new kernel without its numbers (an HDF5 array with no data written
    reads as zeros), so the two agree and the file stays small."""
    edited(source, target, units)
    with zipfile.ZipFile(target) as archive:
        weights = archive.read(modelfile.WEIGHTS_ENTRY)
    h5 = target.with_suffix(".h5")
    h5.write_bytes(weights)
    with h5py.File(h5, "r+") as store:
        for name, shape in (("0", (FLAT, units)), ("1", (units,))):
            del store[f"layers/dense/vars/{name}"]
            store.create_dataset(f"layers/dense/vars/{name}", shape=shape, dtype="float32", chunks=True)
    with zipfile.ZipFile(target) as old:
        members = [(info, old.read(info)) for info in old.infolist()]
    with zipfile.ZipFile(target, "w") as new:
        for info, data in members:
            new.writestr(info, h5.read_bytes() if info.filename == modelfile.WEIGHTS_ENTRY else data)
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    import keras

    folder = tmp_path_factory.mktemp("model-uploads")
    good = small_model(folder / "good.keras")
    return {
        "good": good,
        "huge": edited(good, folder / "huge.keras", HUGE),
        "wider": edited(good, folder / "wider.keras", 2 * HIDDEN_UNITS),
        "prelu": small_model(folder / "prelu.keras", keras.layers.PReLU()),
    }


def refused(data: bytes, dest: Path, match: str) -> str:
    with pytest.raises(ModelFileError, match=match) as caught:
        check_model_file(data, dest)
    assert not dest.exists() or not list(dest.iterdir())  # nothing kept, no staging file left
    return str(caught.value)


# The declared weights --------------------------------------------------------------------------------


def test_a_small_file_declaring_a_huge_dense_layer_is_refused_before_anything_is_built(models, tmp_path):
    data = models["huge"].read_bytes()
    assert len(data) < 100_000
    message = refused(data, tmp_path / "kept", "more than the 50,000,000 a model may have")
    declared = FLAT * HUGE + HUGE + 4 * 3 * 3 + 4 + 4 * 4 + HIDDEN_UNITS * len(LABELS) + len(LABELS)
    assert message.startswith(f"its config.json declares {declared:,} weights, more than")
    assert "layer 'dense', a Dense" in message and f"({FLAT}, {HUGE})" in message
    assert "upload a smaller model, or have the server's owner raise FER_MAX_MODEL_PARAMS" in message


def test_a_config_that_disagrees_with_the_weights_it_holds_is_refused(models, tmp_path):
    message = refused(
        models["wider"].read_bytes(), tmp_path / "kept", "its config.json and its weights disagree"
    )
    assert f"layer 'dense' (Dense) declares weights of shapes [({FLAT}, 32), (32,)]" in message
    assert f"model.weights.h5 holds [({FLAT}, 16), (16,)]" in message
    assert "upload the .keras file `fer train` wrote, unchanged" in message


def test_a_layer_whose_weights_the_check_does_not_know_is_refused(models, tmp_path):
    message = refused(
        models["prelu"].read_bytes(), tmp_path / "kept", "is a PReLU, a kind of layer whose weights"
    )
    assert "rebuild the model from them" in message


def test_weights_that_keras_adds_on_top_of_those_a_layer_declares_are_refused(models, tmp_path):
    """A Dense layer's LoRA rank makes Keras build two more kernels, of (inputs, rank) and (rank, units)."""
    lora = edited(models["good"], tmp_path / "lora.keras", HIDDEN_UNITS, lora_rank=HUGE)
    message = refused(lora.read_bytes(), tmp_path / "kept", "asks for LoRA or quantized weights")
    assert "layer 'dense' (Dense)" in message


def test_the_parameter_cap_is_read_from_its_setting(models, tmp_path, monkeypatch):
    monkeypatch.setenv(modelfile.MAX_MODEL_PARAMS_VARIABLE, "1,000")
    assert modelfile.max_model_params() == 1000
    refused(
        models["good"].read_bytes(), tmp_path / "kept", "more than the 1,000 a model may have on this server"
    )
    monkeypatch.setenv(modelfile.MAX_MODEL_PARAMS_VARIABLE, "lots")
    with pytest.raises(
        ValueError, match="FER_MAX_MODEL_PARAMS must be a whole number of weights above 0, got 'lots'"
    ):
        modelfile.max_model_params()


def test_the_declared_weights_of_the_projects_models_are_the_weights_they_hold(models):
    """Every architecture `fer train` builds, and a model nested in another, pass the comparison."""
    import keras

    from fer.config import ModelConfig
    from fer.models import build

    folder = models["good"].parent
    for arch in ("seed", "vgg", "vgg-lite", "vgg-steady", "vgg-smooth", "vgg-small"):
        path = folder / f"{arch}.keras"
        modelfile.save_model(build(ModelConfig(arch=arch, image_size=48, num_classes=7)), path, {})
        modelfile.check_declared_weights(path)
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.LayerNormalization()])
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.SeparableConv2D(3, 3)(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(x)
    x = keras.layers.Conv2D(8, 3, groups=2)(x)
    nested = keras.Model(inputs, inner(keras.layers.GlobalAveragePooling2D()(x)))
    modelfile.save_model(nested, folder / "nested.keras", {})
    modelfile.check_declared_weights(folder / "nested.keras")
    modelfile.check_declared_weights(BUNDLED_MODEL)


# The check's own process -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> Path:
    """The best.keras of a tiny one-epoch run (it also carries the optimizer's state)."""
    from fer import train
    from fer.config import TrainConfig

    dataset = expw_faces(tmp_path_factory.mktemp("uploads-data") / "expw", 42)
    config = TrainConfig(
        datasets=(str(dataset),), epochs=1, arch="vgg-small", width=4, image_size=48, batch_size=8
    )
    run_dir = tmp_path_factory.mktemp("uploads-run") / "run"
    with pytest.MonkeyPatch.context() as patch:  # conftest's FER_HOME, which module fixtures run before
        patch.setenv("FER_HOME", str(tmp_path_factory.getbasetemp() / "fer-home"))
        train.train(config, run_dir)
    return run_dir / "best.keras"


@pytest.mark.slow
def test_normal_models_pass_the_check_in_its_own_process(models, trained_model, tmp_path):
    for path in (BUNDLED_MODEL, trained_model, models["good"]):
        kept = check_model_file(path.read_bytes(), tmp_path / "kept")
        assert kept.read_bytes() == path.read_bytes()
    assert len(list((tmp_path / "kept").iterdir())) == 3


@pytest.mark.slow
def test_a_model_that_outgrows_the_checks_memory_is_refused_and_only_the_check_ends(
    models, tmp_path, monkeypatch
):
    """With the parameter cap raised, a file whose config and weights agree on a 1.3 GB layer gets
    past the first rule; the memory limit of the check's process refuses it."""
    path = inflated(models["good"], tmp_path / "inflated.keras", 2**19 + 2**18)
    assert path.stat().st_size < 1_000_000
    monkeypatch.setenv(modelfile.MAX_MODEL_PARAMS_VARIABLE, str(10**12))
    modelfile.check_declared_weights(path)  # the config and the weights agree
    monkeypatch.setenv(modelfile.CHECK_MB_VARIABLE, "1024")
    message = refused(
        path.read_bytes(), tmp_path / "kept", "took more than the 1,024 MB of memory a model check"
    )
    assert "have the server's owner raise FER_MODEL_CHECK_MB" in message
    assert modelfile.check_model_file(models["good"].read_bytes(), tmp_path / "kept").is_file()  # still fine


@pytest.mark.slow
def test_a_check_over_its_time_is_stopped_and_refused(models, tmp_path, monkeypatch):
    monkeypatch.setenv(modelfile.CHECK_SECONDS_VARIABLE, "1")  # TensorFlow's import alone takes longer
    message = refused(
        models["good"].read_bytes(), tmp_path / "kept", "took longer than the 1 s a model check"
    )
    assert "have the server's owner raise FER_MODEL_CHECK_SECONDS" in message


# Through the Classify page ----------------------------------------------------------------------------


def classify_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/classify.py").run()
    assert not at.exception
    return at


def test_the_classify_page_refuses_the_huge_model_and_keeps_the_bundled_one(models):
    at = classify_page()
    data = models["huge"].read_bytes()
    at.file_uploader(key="model_upload").set_value(("huge.keras", data, "application/octet-stream")).run()
    assert not at.exception
    [error] = at.error
    assert error.value.startswith("huge.keras cannot be used as a model: its config.json declares ")
    assert "more than the 50,000,000 a model may have on this server" in error.value
    assert "FER_MAX_MODEL_PARAMS" in error.value
    model = at.selectbox(key="classify_model")
    assert model.value == str(BUNDLED_MODEL) and not any(o.startswith("Uploaded") for o in model.options)


# A real server ------------------------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
MODEL_INPUT = '.st-key-model_upload [data-testid="stFileUploaderDropzoneInput"]'


@pytest.mark.slow
def test_a_real_server_refuses_the_upload_keeps_answering_and_its_memory_stays_flat(
    models, tmp_path, browser
):
    """A model declaring a 1.3 GB layer (Keras would allocate it and more), uploaded in a browser."""
    upload = edited(models["good"], tmp_path / "big.keras", 2**19 + 2**18)  # 576 x 786,432 numbers
    (tmp_path / "home").mkdir()
    with server(tmp_path / "home") as (url, pid):
        context = browser.new_context(viewport={"width": 1100, "height": 1400})  # conftest's Chromium
        try:
            page = context.new_page()
            page.set_default_timeout(180_000)
            page.goto(f"{url}/classify")
            page.get_by_text("upload a photo to see what the model reads").wait_for()  # the model is loaded
            before = memory_kb(pid)
            page.get_by_text("Use your own model file").click()
            page.locator(MODEL_INPUT).set_input_files(str(upload))
            error = page.get_by_text("big.keras cannot be used as a model")
            error.wait_for()
            assert healthy(url)
            after = memory_kb(pid)
            text = error.inner_text()
        finally:
            context.close()
    # The server held the bundled model before; the refusal added nothing that counts (a build of the
    # declared layer alone would take 1.8 GB).
    assert after["VmHWM"] - before["VmRSS"] < 300 * 1024, (before, after)
    assert "a model may have on this server" in text and "FER_MAX_MODEL_PARAMS" in text
