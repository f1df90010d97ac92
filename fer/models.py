"""Architectures: pure functions from a frozen config to an uncompiled `keras.Model`.

Models take uint8-range grayscale faces of shape (size, size, 1) and scale them to [0, 1] with
their own first layer, so training, evaluation and prediction cannot drift apart. They end in a
softmax over the labels. Plain Keras 3 only: the same code runs on TensorFlow and on JAX.

This module is Keras through and through, so Keras is imported at the top; the configs that name
an architecture live in fer.config, which pages and the command line read without paying for it.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from fer.config import ModelConfig

# Keras' policy for bfloat16 training: weights stay float32, layers compute in bfloat16.
MIXED_POLICY = "mixed_bfloat16"


def build(config: ModelConfig, precision: str = "float32"):
    """The model `config` describes: an uncompiled `keras.Model`. With precision "bfloat16" its layers
    compute in bfloat16 on float32 weights, except the softmax, which stays float32 so probabilities
    sum to 1 as closely as before; see `float32_twin` for the model to save."""
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be float32 or bfloat16, got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_POLICY if precision == "bfloat16" else "float32")
    try:  # the policy is global: restored whatever happens, so no later model inherits it
        inputs = keras.Input(shape=(config.image_size, config.image_size, 1), name="face")
        x = layers.Rescaling(1.0 / 255, name="to_unit")(inputs)
        build_arch = {
            "seed": _seed,
            "vgg": _vgg,
            "vgg-lite": _vgg_lite,
            "vgg-steady": _vgg_steady,
            "vgg-smooth": _vgg_smooth,
            "vgg-small": _vgg_small,
        }[config.arch]
        x = build_arch(x, config)
        softmax = {"dtype": "float32"} if precision == "bfloat16" else {}
        outputs = layers.Dense(config.num_classes, activation="softmax", name="probabilities", **softmax)(x)
        return keras.Model(inputs, outputs, name=config.arch.replace("-", "_"))
    finally:
        keras.config.set_dtype_policy(previous)


def is_mixed(model) -> bool:
    """Whether any layer of `model` computes in a type other than its weights' (bfloat16 training)."""
    return any(
        layer.dtype_policy.compute_dtype != layer.dtype_policy.variable_dtype for layer in model.layers
    )


def float32_twin(model):
    """`model` as a float32 model: the same layers, names and weights, every one computing in float32.
    What a bfloat16 run saves as its best model, so the model that is exported, evaluated and used for
    prediction loads and predicts as one trained in float32 does. A float32 model is returned as is."""
    if not is_mixed(model):
        return model

    def in_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    twin = keras.models.clone_model(model, clone_function=in_float32)
    twin.set_weights(model.get_weights())
    return twin


def _seed(x, config: ModelConfig):
    """The report's CNN, exactly: Conv 32/64/128 (3x3, ReLU) each followed by 2x2 max-pooling,
    Flatten, Dense 128 ReLU, Dropout 0.5."""
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    return layers.Dropout(config.dropout)(x)


# Batch-norm statistics track the last ~10 batches (momentum 0.9), not Keras' default ~100 (0.99):
# with Adam at 1e-3 the weights feeding a BN layer drift faster than a 100-batch average follows,
# and on FER2013 a vgg run's inference-mode accuracy fell to 0.21 while its training-mode accuracy
# was 0.51 (re-estimating the statistics on 2,048 training faces gave 0.56 on val).
BN_MOMENTUM = 0.9


def _conv_bn(x, filters: int):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.Activation("relu")(x)


def _halve(x, smooth: bool):
    """Halve the resolution by max-pooling. `smooth` pools anti-aliased: the 2x2 maximum at every
    pixel, then a [1, 2, 1] blur (two 2x2 averages) sampled at every other pixel, so a face moved by
    a pixel or two changes what the next block sees gradually rather than all at once."""
    if not smooth:
        return layers.MaxPooling2D(2)(x)
    x = layers.MaxPooling2D(2, strides=1, padding="same")(x)
    x = layers.AveragePooling2D(2, strides=1, padding="same")(x)
    return layers.AveragePooling2D(2)(x)


def _vgg(x, config: ModelConfig, convolutions: tuple[int, ...] = (2, 2, 2, 2), smooth: bool = False):
    """VGG-style for 48-96 px faces: four blocks of two 3x3 convolutions with batch norm, each
    halving the resolution; global average pooling keeps the head small at any input size."""
    width = config.width
    # No SpatialDropout2D between blocks: on the CPU it halved training speed (benchmarks/README).
    for filters, count in zip((width, width * 2, width * 4, width * 8), convolutions, strict=True):
        for _ in range(count):
            x = _conv_bn(x, filters)
        x = _halve(x, smooth)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(width * 8, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.Activation("relu")(x)
    return layers.Dropout(config.dropout)(x)


def _vgg_lite(x, config: ModelConfig):
    """The vgg layout with one convolution in each of the first two blocks: the full-resolution
    convolutions are most of a CPU's training time but hold few of the weights (96% are kept)."""
    return _vgg(x, config, (1, 1, 2, 2))


def _vgg_steady(x, config: ModelConfig):
    """vgg-lite with anti-aliased pooling (`_halve`): the same weights, steadier answers when the
    face's box moves or changes size a little (docs/benchmarks.md#steadier-networks)."""
    return _vgg(x, config, (1, 1, 2, 2), smooth=True)


def _vgg_smooth(x, config: ModelConfig):
    """vgg with anti-aliased pooling (`_halve`) and vgg's weights, so it can start from a trained vgg
    model (--init-from); fine-tuned from the bundled model it lost accuracy. From fresh weights with
    the bundled recipe it was steadier but a point under vgg on FER2013
    (docs/training.md#the-bundled-model)."""
    return _vgg(x, config, smooth=True)


def _vgg_small(x, config: ModelConfig):
    """The vgg layout with one convolution per block: about half the compute, for quick runs."""
    width = config.width
    for filters in (width, width * 2, width * 4, width * 8):
        x = _conv_bn(x, filters)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(config.dropout)(x)


def grow(source, target) -> list[str]:
    """Copy a trained model's weights into `target`, an untrained model of the same layout that may
    be wider (more filters per layer), so that `target` computes exactly what `source` did.

    Each weight of `target` keeps its fresh initial values except for a leading block the size of
    the source's weight, which takes the trained values; the weights that carry a new filter's
    output into one of the source's filters in the next layer are zero, so the new filters cannot
    change what the trained ones compute until training brings them in. Returns the layers copied,
    in order. Raises ValueError, naming the first layer that does not fit, when the layouts differ
    or a layer is narrower than the source's."""

    def weighted(model):
        return [layer for layer in model.layers if layer.weights]

    sources, targets = weighted(source), weighted(target)
    if [type(a).__name__ for a in sources] != [type(b).__name__ for b in targets]:
        raise ValueError(
            f"cannot start from that model: its layers ({_layer_kinds(sources)}) are not this "
            f"architecture's ({_layer_kinds(targets)}); start from a model of the same --arch"
        )
    copied = []
    for old_layer, new_layer in zip(sources, targets, strict=True):
        old_values = [np.asarray(w) for w in old_layer.get_weights()]
        new_values = [np.array(w) for w in new_layer.get_weights()]
        for index, (old, new) in enumerate(zip(old_values, new_values, strict=True)):
            if old.ndim != new.ndim or any(a > b for a, b in zip(old.shape, new.shape, strict=True)):
                raise ValueError(
                    f"cannot start from that model: layer {new_layer.name!r} has weights of shape "
                    f"{tuple(new.shape)}, narrower than the source's {tuple(old.shape)}; use a --width "
                    "at least the source model's"
                )
            if old.ndim >= 2:  # a kernel (..., inputs, outputs): new inputs must not reach old outputs
                new[..., old.shape[-2] :, : old.shape[-1]] = 0.0
            new[tuple(slice(0, n) for n in old.shape)] = old
            new_values[index] = new
        new_layer.set_weights(new_values)
        copied.append(new_layer.name)
    return copied


def _layer_kinds(layers) -> str:
    kinds = [type(layer).__name__ for layer in layers]
    return f"{len(kinds)} weighted layers: " + ", ".join(kinds[:4]) + (", ..." if len(kinds) > 4 else "")
