"""Where the model looked: Grad-CAM maps of a face, and the map laid over the face.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of the last convolutional block's output by
how much the class's score rises with it (the gradient, averaged over the block's positions), sums
the channels and keeps the positive part: the places whose features pushed the model toward that
class. The block is coarse (6x6 for a 48-pixel face in `vgg`), so a map shows regions, not pixels;
it is scaled up to the face's size and to [0, 1] per face.

The model is split in two at that block: `features` (the face to the block's output) and the layers
after it, replayed as a chain on the block's output, whose gradient each backend computes its own
way (TensorFlow's GradientTape, `jax.grad`). The split is checked once against the whole model, so a
layout that is not a chain after its last convolution is refused instead of explained wrongly. The
class score is the last Dense layer's input to its softmax (the logit), which does not saturate as a
probability near 1 does.

Keras is imported only when a map is asked for (`fer.logs.load_keras`), as in fer.modelfile: the
overlay helpers, the report and the pages import this module without paying for TensorFlow.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fer import logs

# Layers that belong to a convolutional block after its convolution: normalisation, activation.
_BLOCK_TAIL = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "LayerNormalization")
EXPLANATION = (
    "Warm colours mark the parts of the face that pushed the model toward its answer most; "
    "parts left gray counted little for it."
)


class SaliencyError(ValueError):
    """A model whose maps cannot be computed; the message says why."""


def last_conv_block(model):
    """The layer whose output ends the model's last convolutional block: the last convolution, or the
    batch normalisation / activation layers that follow it directly."""
    layers = list(model.layers)
    convs = [
        k for k, layer in enumerate(layers) if "Conv" in type(layer).__name__ and len(_shape(layer)) == 4
    ]
    if not convs:
        raise SaliencyError(
            f"the model {model.name!r} has no convolutional layer, so there is no map of where it looked"
        )
    k = convs[-1]
    while k + 1 < len(layers) and type(layers[k + 1]).__name__ in _BLOCK_TAIL:
        k += 1
    return layers[k]


def _shape(layer) -> tuple:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return ()


class GradCam:
    """Grad-CAM maps for one loaded model: build once, call `maps` for many faces."""

    def __init__(self, model) -> None:
        keras = logs.load_keras()
        self.model = model
        self.backend = keras.backend.backend()
        if self.backend not in ("tensorflow", "jax"):
            raise SaliencyError(
                f"maps of where the model looked need the TensorFlow or JAX backend, not {self.backend!r}; "
                "set KERAS_BACKEND=tensorflow"
            )
        self.layer = last_conv_block(model)
        self.features = keras.Model(model.input, self.layer.output, name="saliency_features")
        layers = list(model.layers)
        self.head = layers[layers.index(self.layer) + 1 :]
        if not self.head:
            raise SaliencyError(f"the model {model.name!r} ends in a convolution; it has no class scores")
        self._check_split()
        self._step = None  # compiled on first use

    def _logits(self, x):
        """The class scores from the block's output: every later layer, the last one without its softmax."""
        keras = logs.load_keras()
        for layer in self.head[:-1]:
            x = layer(x, training=False)
        last = self.head[-1]
        activation = getattr(last, "activation", None)
        if type(last).__name__ == "Dense" and getattr(activation, "__name__", "") == "softmax":
            x = keras.ops.matmul(x, last.kernel)
            return x + last.bias if last.use_bias else x
        return keras.ops.log(keras.ops.maximum(last(x, training=False), 1e-12))

    def _check_split(self) -> None:
        """Refuse a model that is not a chain after its last block: its replayed head would disagree."""
        keras = logs.load_keras()
        size = tuple(self.model.input_shape[1:])
        probe = np.random.default_rng(0).uniform(0, 255, (2, *size)).astype(np.float32)
        whole = np.asarray(self.model(probe, training=False))
        try:
            logits = np.asarray(self._logits(self.features(probe, training=False)))
        except Exception:  # noqa: BLE001 - a layer fed what it does not take: not a chain
            logits = None
        ok = logits is not None and logits.shape == whole.shape
        split = np.asarray(keras.ops.softmax(logits, axis=-1)) if ok else None
        if split is None or not np.allclose(split, whole, atol=1e-4):
            raise SaliencyError(
                f"the layers of model {self.model.name!r} after its last convolutional block "
                f"({self.layer.name!r}) do not form a chain, so its maps cannot be computed"
            )

    def _compile(self):
        """One compiled step, faces and classes (-1: the top class) -> block outputs and the gradient
        of each face's class score with respect to them: a graph (TensorFlow) or a jit (JAX), since
        replaying the head op by op costs tens of times a classification for one face."""
        size = tuple(self.model.input_shape[1:])
        if self.backend == "tensorflow":
            import tensorflow as tf

            def step(faces, classes):
                blocks = self.features(faces, training=False)
                with tf.GradientTape() as tape:
                    tape.watch(blocks)
                    logits = self._logits(blocks)
                    top = tf.argmax(logits, axis=-1, output_type=tf.int32)
                    chosen = tf.where(classes < 0, top, classes)
                    score = tf.reduce_sum(tf.gather(logits, chosen, axis=1, batch_dims=1))
                return blocks, tape.gradient(score, blocks)

            specs = [tf.TensorSpec((None, *size), tf.float32), tf.TensorSpec((None,), tf.int32)]
            return tf.function(step, input_signature=specs)
        import jax
        import jax.numpy as jnp

        def step(faces, classes):
            blocks = self.features(faces, training=False)

            def score(x):
                logits = self._logits(x)
                chosen = jnp.where(classes < 0, jnp.argmax(logits, axis=-1), classes)
                return jnp.sum(jnp.take_along_axis(logits, chosen[:, None], axis=1))

            return blocks, jax.grad(score)(blocks)

        return jax.jit(step)

    def maps(
        self, faces: np.ndarray, classes: np.ndarray | list[int] | None = None, batch_size: int = 64
    ) -> np.ndarray:
        """(n, size, size) float32 maps in [0, 1] for (n, size, size) uint8 faces: where each face's
        class (`classes`, default the network's top class) drew on. A map that is zero everywhere
        means no position argued for the class."""
        faces = np.asarray(faces)
        size = self.model.input_shape[1:3]
        if faces.ndim != 3 or tuple(faces.shape[1:]) != tuple(size):
            raise SaliencyError(
                f"faces must be an array of shape (n, {size[0]}, {size[1]}) for this model, got {faces.shape}"
            )
        if classes is not None:
            classes = np.asarray(classes, dtype=np.int32).reshape(-1)
            count = int(self.model.output_shape[-1])
            if len(classes) != len(faces) or (len(classes) and (classes.min() < 0 or classes.max() >= count)):
                raise SaliencyError(
                    f"classes must give one class number from 0 to {count - 1} per face ({len(faces)}), "
                    f"got {classes.tolist()[:10]}"
                )
        out = np.zeros(faces.shape, dtype=np.float32)
        for start in range(0, len(faces), batch_size):
            batch = faces[start : start + batch_size].astype(np.float32)[..., None]
            chosen = (
                np.full(len(batch), -1, np.int32) if classes is None else classes[start : start + batch_size]
            )
            if self._step is None:
                self._step = self._compile()
            blocks, gradients = (np.asarray(t, dtype=np.float32) for t in self._step(batch, chosen))
            weights = gradients.mean(axis=(1, 2), keepdims=True)  # one weight per channel
            coarse = np.maximum((weights * blocks).sum(axis=-1), 0.0)
            for k, cam in enumerate(coarse):
                out[start + k] = _upscale(cam, faces.shape[1:])
        return out


def _upscale(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A coarse map resized (bilinear) to the face's shape and scaled so its peak is 1."""
    height, width = shape
    big = np.asarray(
        Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
    )
    big = np.maximum(big, 0.0)
    peak = float(big.max())
    return (big / peak).astype(np.float32) if peak > 0 else np.zeros(shape, dtype=np.float32)


def maps(model, faces: np.ndarray, classes=None) -> np.ndarray:
    """Grad-CAM maps of `faces` for `model` (see GradCam.maps); build a GradCam to reuse for many calls."""
    return GradCam(model).maps(faces, classes)


# Showing a map ------------------------------------------------------------------------------------

# A dark-blue to red to yellow ramp (like "inferno" without its black end), readable over gray faces.
_RAMP = np.array(
    [[40, 60, 160], [120, 50, 170], [210, 50, 100], [245, 120, 40], [255, 220, 60]], dtype=np.float32
)


def colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB along the ramp: (..., 3) float32 in 0-255."""
    position = np.clip(np.asarray(values, dtype=np.float32), 0, 1) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    share = (position - low)[..., None]
    return _RAMP[low] * (1 - share) + _RAMP[low + 1] * share


def overlay(face: np.ndarray, saliency: np.ndarray, *, scale: int = 3, strength: float = 0.7) -> np.ndarray:
    """The gray face with its map laid over it, as an (h*scale, w*scale, 3) uint8 RGB array: each
    pixel's colour is mixed in by as much as the map's value there, so what counted little stays
    gray and readable. `scale` enlarges small faces (48 px) for a screen."""
    face = np.asarray(face)
    saliency = np.asarray(saliency, dtype=np.float32)
    if face.ndim == 3 and face.shape[-1] == 1:
        face = face[..., 0]
    if face.ndim != 2 or saliency.shape != face.shape:
        raise ValueError(
            f"overlay needs a 2-D gray face and a map of the same shape, got {face.shape} and {saliency.shape}"
        )
    if not 0 <= strength <= 1 or scale < 1:
        raise ValueError(f"strength must be in [0, 1] and scale at least 1, got {strength} and {scale}")
    gray = np.repeat(face.astype(np.float32)[..., None], 3, axis=-1)
    alpha = (strength * np.clip(saliency, 0, 1))[..., None]
    mixed = np.clip(gray * (1 - alpha) + colours(saliency) * alpha, 0, 255).astype(np.uint8)
    if scale > 1:
        mixed = np.asarray(
            Image.fromarray(mixed).resize((mixed.shape[1] * scale, mixed.shape[0] * scale), Image.BILINEAR)
        )
    return mixed


def overlay_image(face: np.ndarray, saliency: np.ndarray, **options) -> Image.Image:
    """`overlay` as a PIL image."""
    return Image.fromarray(overlay(face, saliency, **options))
