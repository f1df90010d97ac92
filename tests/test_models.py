"""Architectures (fer.models): every one builds, trains a step and ends in a softmax; `seed` is the report's CNN."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from fer.config import ARCHITECTURES, ModelConfig
from fer.models import build


@pytest.mark.parametrize("size", [48, 64])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_builds_and_trains_a_step(arch, size):
    import keras

    keras.utils.set_random_seed(0)
    model = build(ModelConfig(arch=arch, image_size=size, num_classes=5))
    assert model.input_shape == (None, size, size, 1)
    assert model.output_shape == (None, 5)
    # Eager: one step needs no graph tracing, which would cost seconds per model on a small CPU.
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", run_eagerly=True
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, size, size, 1)).astype(np.float32)  # uint8 range: the model scales
    y = np.array([0, 1, 2, 3, 4, 0])
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(float(np.asarray(loss).ravel()[0]))
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after)), "the step changed no weight"
    probabilities = np.asarray(model.predict_on_batch(x))
    assert probabilities.shape == (6, 5)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_models_scale_their_own_input():
    model = build(ModelConfig(arch="seed", image_size=48, num_classes=3))
    first = model.layers[1]
    assert type(first).__name__ == "Rescaling"
    assert first.get_config()["scale"] == pytest.approx(1 / 255)


def test_seed_is_the_reports_cnn_layer_by_layer():
    model = build(ModelConfig(arch="seed", image_size=48, num_classes=7))
    layers = [layer for layer in model.layers if type(layer).__name__ not in ("InputLayer", "Rescaling")]
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    convolutions = [layer for layer in layers if kinds[layers.index(layer)] == "Conv2D"]
    assert [c.filters for c in convolutions] == [32, 64, 128]
    for conv in convolutions:
        assert tuple(conv.kernel_size) == (3, 3)
        assert conv.get_config()["activation"] == "relu"
    for pool in (layer for layer in layers if type(layer).__name__ == "MaxPooling2D"):
        assert tuple(pool.pool_size) == (2, 2)
    hidden, dropout, output = layers[-3:]
    assert (hidden.units, hidden.get_config()["activation"]) == (128, "relu")
    assert dropout.rate == 0.5
    assert (output.units, output.get_config()["activation"]) == (7, "softmax")


@pytest.mark.parametrize(
    ("arch", "per_block"),
    [
        ("vgg", [2, 2, 2, 2]),
        ("vgg-lite", [1, 1, 2, 2]),
        ("vgg-steady", [1, 1, 2, 2]),
        ("vgg-smooth", [2, 2, 2, 2]),
        ("vgg-small", [1, 1, 1, 1]),
    ],
)
def test_the_vgg_family_differs_only_in_convolutions_per_block(arch, per_block):
    model = build(ModelConfig(arch=arch, width=16))
    counts, filters = [0], []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            counts[-1] += 1
            filters.append(layer.filters)
        elif kind == "MaxPooling2D":
            counts.append(0)
    assert counts[:-1] == per_block
    assert sorted(set(filters)) == [16, 32, 64, 128]


def test_vgg_lite_keeps_nearly_all_of_vgg_s_weights():
    vgg, lite = (build(ModelConfig(arch=arch, width=16)).count_params() for arch in ("vgg", "vgg-lite"))
    assert 0.95 * vgg < lite < vgg


def test_vgg_steady_is_vgg_lite_with_smoothed_pooling():
    import keras

    lite, steady = (
        build(ModelConfig(arch=arch, width=8, num_classes=3)) for arch in ("vgg-lite", "vgg-steady")
    )
    assert [w.shape for w in lite.weights] == [w.shape for w in steady.weights]  # the same weights
    steady.set_weights(lite.get_weights())
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype("float32")
    assert not np.allclose(lite.predict_on_batch(faces), steady.predict_on_batch(faces), atol=1e-4)

    # Each halving: the 2x2 maximum at every pixel, blurred by [1, 2, 1] (edges averaged over the
    # pixels inside), sampled at every other pixel.
    from fer.models import _halve

    inputs = keras.Input((8, 8, 1))
    halve = keras.Model(inputs, _halve(inputs, smooth=True))
    x = np.random.default_rng(1).random((1, 8, 8, 1)).astype("float32")
    padded = np.pad(x[0, :, :, 0], ((0, 1), (0, 1)), constant_values=-np.inf)
    peak = np.maximum.reduce([padded[:8, :8], padded[1:, :8], padded[:8, 1:], padded[1:, 1:]])
    pairs = np.pad(peak, ((0, 1), (0, 1)), constant_values=np.nan)
    blurred = np.nanmean([pairs[:8, :8], pairs[1:, :8], pairs[:8, 1:], pairs[1:, 1:]], axis=0)
    expected = (blurred[:, :-1:2] + blurred[:, 1::2])[:-1:2] + (blurred[:, :-1:2] + blurred[:, 1::2])[1::2]
    np.testing.assert_allclose(halve.predict_on_batch(x)[0, :, :, 0], expected / 4, atol=1e-5)


def test_vgg_smooth_takes_a_trained_vgg_models_weights():
    """What lets the bundled vgg model be fine-tuned into vgg-smooth with --init-from."""
    from fer.models import grow

    vgg, smooth = (build(ModelConfig(arch=arch, width=4, num_classes=3)) for arch in ("vgg", "vgg-smooth"))
    assert [w.shape for w in vgg.weights] == [w.shape for w in smooth.weights]
    assert len(grow(vgg, smooth)) == len([layer for layer in vgg.layers if layer.weights])
    for a, b in zip(vgg.get_weights(), smooth.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    pooling = [type(layer).__name__ for layer in smooth.layers if "Pooling2D" in type(layer).__name__]
    assert pooling.count("AveragePooling2D") == 8  # two blurs in each of the four halvings


def test_smoothed_pooling_answers_a_one_pixel_move_gradually():
    """A bright dot moved by one pixel: max-pooling's halved output jumps from one cell to the
    next; the smoothed output changes by less."""
    import keras

    from fer.models import _halve

    inputs = keras.Input((16, 16, 1))
    plain, smooth = (keras.Model(inputs, _halve(inputs, smooth=s)) for s in (False, True))
    dots = np.zeros((2, 16, 16, 1), "float32")
    dots[0, 7, 7], dots[1, 7, 8] = 1, 1
    for model, most in ((plain, 2.0), (smooth, 0.8)):
        out = model.predict_on_batch(dots)
        change = np.abs(out[0] - out[1]).sum()
        assert change <= most and (model is plain) == (change == 2.0), change


def test_dropout_setting_reaches_the_model():
    model = build(ModelConfig(arch="vgg-small", num_classes=3, dropout=0.25))
    assert [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"] == [0.25]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("arch", "resnet"),
        ("image_size", 16),
        ("image_size", 512),
        ("num_classes", 1),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("width", 2),
    ],
)
def test_model_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{field: value})


def test_model_config_round_trips_through_json():
    config = ModelConfig(arch="seed", image_size=64, num_classes=4, dropout=0.3, width=8)
    assert ModelConfig.from_dict(json.loads(config.to_json())) == config
    assert ModelConfig.from_dict({**asdict(config), "something_new": 1}) == config  # unknown keys ignored
    assert ModelConfig.from_dict({}) == ModelConfig()


@pytest.mark.parametrize("arch", ["vgg", "vgg-lite", "vgg-steady", "vgg-smooth", "vgg-small"])
def test_grow_makes_a_wider_model_that_computes_what_the_narrow_one_did(arch):
    import keras

    from fer.models import grow

    keras.utils.set_random_seed(1)
    narrow = build(ModelConfig(arch=arch, num_classes=4, width=4))
    # Trained-looking batch-norm statistics and biases, so that copying them is what is tested.
    for layer in narrow.layers:
        layer.set_weights([w + np.random.default_rng(2).normal(0, 0.3, w.shape) for w in layer.get_weights()])
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta, mean, np.abs(variance) + 0.5])
    wide = build(ModelConfig(arch=arch, num_classes=4, width=8))
    x = np.random.default_rng(3).integers(0, 256, (5, 48, 48, 1)).astype(np.float32)
    before = np.asarray(wide(x, training=False))
    copied = grow(narrow, wide)
    assert len(copied) == len([layer for layer in wide.layers if layer.weights])
    expected = np.asarray(narrow(x, training=False))
    assert not np.allclose(before, expected, atol=1e-3)  # a fresh wide model computes something else
    np.testing.assert_allclose(np.asarray(wide(x, training=False)), expected, atol=1e-5)
    # The new filters are alive: their incoming weights are not all zero, so training can use them.
    first = next(layer for layer in wide.layers if type(layer).__name__ == "Conv2D")
    assert np.abs(first.get_weights()[0][..., 4:]).sum() > 0


def test_grow_refuses_a_narrower_or_different_model():
    from fer.models import grow

    wide = build(ModelConfig(arch="vgg", num_classes=4, width=8))
    with pytest.raises(ValueError, match="narrower than the source's.*--width"):
        grow(wide, build(ModelConfig(arch="vgg", num_classes=4, width=4)))
    with pytest.raises(ValueError, match="same --arch"):
        grow(build(ModelConfig(arch="seed", num_classes=4)), wide)
    with pytest.raises(ValueError, match="narrower"):  # fewer classes in the new model
        grow(
            build(ModelConfig(arch="vgg", num_classes=7, width=4)),
            build(ModelConfig(arch="vgg", num_classes=4, width=4)),
        )


# Precision ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_bfloat16_model_and_its_float32_twin_predict_alike(arch, tmp_path):
    import keras

    from fer.models import float32_twin, is_mixed

    keras.utils.set_random_seed(0)
    mixed = build(ModelConfig(arch=arch, num_classes=7, width=8), "bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert is_mixed(mixed)
    assert mixed.layers[1].compute_dtype == "bfloat16"
    assert mixed.get_layer("probabilities").compute_dtype == "float32"
    # One eager step moves the weights (and batch-norm statistics) off their initial values.
    mixed.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", run_eagerly=True
    )
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (16, 48, 48, 1)).astype(np.float32)
    mixed.train_on_batch(x, np.arange(16) % 7)

    twin = float32_twin(mixed)
    assert not is_mixed(twin)
    assert all(layer.compute_dtype == "float32" for layer in twin.layers)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in mixed.layers]
    for a, b in zip(twin.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    expected, got = mixed.predict(x, verbose=0), twin.predict(x, verbose=0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=0.03)  # bfloat16 keeps 8 significant bits
    assert float32_twin(twin) is twin

    twin.save(tmp_path / "twin.keras")
    loaded = keras.saving.load_model(tmp_path / "twin.keras")
    assert not is_mixed(loaded)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), got)


def test_a_float32_build_is_what_it_always_was():
    from fer.models import is_mixed

    model = build(ModelConfig(width=8))
    assert not is_mixed(model)
    assert all(layer.compute_dtype == "float32" for layer in model.layers)
    with pytest.raises(ValueError, match="precision must be float32 or bfloat16, got 'float16'"):
        build(ModelConfig(width=8), "float16")
