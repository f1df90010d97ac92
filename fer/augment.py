"""Training-time augmentation in the input pipeline, a whole batch at once.

Keras' random-transform layers inside a model were seen to make a VGG-style model too slow to
finish one FER2013 epoch in minutes under JAX on a GPU, where the plain model takes seconds; on
the CPU they cost as much as a convolution. Here one affine warp per face (flip, shift, rotation,
zoom) is drawn for the batch and sampled with bilinear interpolation (OpenCV, or NumPy without it),
then contrast and brightness are jittered: about a millisecond per batch of 64 48 px faces with
OpenCV, on either backend, because the model never sees it (measured in benchmarks/augment.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    flip: bool = True  # mirror left-right half of the time (expressions are symmetric enough)
    max_shift: float = 0.1  # share of the side
    max_rotation: float = 10.0  # degrees
    max_zoom: float = 0.1  # share: 0.1 means 0.9x to 1.1x
    max_contrast: float = 0.2  # share: 0.2 means 0.8x to 1.2x around the face's mean
    max_brightness: float = 0.1  # share of the full range (255)
    erase: float = 0.0  # share of faces with one random rectangle replaced by noise (random erasing)
    erase_area: tuple[float, float] = (0.02, 0.25)  # the rectangle's share of the face


def augment(
    faces: np.ndarray, rng: np.random.Generator, settings: AugmentSettings = AugmentSettings()
) -> np.ndarray:
    """A randomly transformed copy of a batch of (n, size, size) faces, as float32 in 0-255."""
    n, height, width = faces.shape[:3]
    src = np.asarray(faces, dtype=np.float32).reshape(n, height, width)
    angle = np.deg2rad(rng.uniform(-settings.max_rotation, settings.max_rotation, n))
    zoom = rng.uniform(1 - settings.max_zoom, 1 + settings.max_zoom, n)
    shift = rng.uniform(-settings.max_shift, settings.max_shift, (n, 2)) * (height, width)
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0) if settings.flip else np.ones(n)

    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    # For each output pixel (x, y), where it comes from in the source, about the centre (cx, cy):
    # x' = flip (cos dx + sin dy) + cx - shift_x and y' = -sin dx + cos dy + cy - shift_y, with
    # dx = x - cx, dy = y - cy: undo zoom and rotation, then flip. As an affine matrix per face:
    cy, cx = (height - 1) / 2, (width - 1) / 2
    a, b = flip * cos, flip * sin
    matrices = np.empty((n, 2, 3))
    matrices[:, 0] = np.stack([a, b, cx - shift[:, 1] - a * cx - b * cy], axis=1)
    matrices[:, 1] = np.stack([-sin, cos, cy - shift[:, 0] + sin * cx - cos * cy], axis=1)
    out = _warp(src, matrices)

    contrast = rng.uniform(1 - settings.max_contrast, 1 + settings.max_contrast, n)[:, None, None]
    brightness = rng.uniform(-settings.max_brightness, settings.max_brightness, n)[:, None, None] * 255
    mean = out.mean(axis=(1, 2), keepdims=True)
    out = (out - mean) * contrast + mean + brightness
    np.clip(out, 0, 255, out=out)
    if settings.erase > 0:
        _erase(out, rng, settings)
    return out.astype(np.float32)


def _warp(faces: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Each float32 face sampled bilinearly where its (2, 3) matrix maps the output pixels, edge pixels
    repeated beyond the border: OpenCV's warpAffine where OpenCV is installed, else NumPy. OpenCV is
    about eight times as fast (benchmarks/augment.py); it places the sampling points to 1/32 of a
    pixel, so the two differ by a fraction of a grey level (tests/test_train.py)."""
    try:
        import cv2
    except ImportError:
        return _warp_numpy(faces, matrices)
    _, height, width = faces.shape
    out = np.empty_like(faces)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for face, matrix, result in zip(faces, matrices, out):
        cv2.warpAffine(
            face, matrix, (width, height), dst=result, flags=flags, borderMode=cv2.BORDER_REPLICATE
        )
    return out


def _warp_numpy(faces: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """`_warp` in NumPy, the whole batch in one vectorised step."""
    n, height, width = faces.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    m = matrices[:, :, :, None, None].astype(np.float32)
    sx = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]
    sy = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    sx = np.clip(sx, 0, width - 1)
    sy = np.clip(sy, 0, height - 1)
    x0 = np.minimum(np.floor(sx).astype(np.int32), width - 2)
    y0 = np.minimum(np.floor(sy).astype(np.int32), height - 2)
    fx, fy = sx - x0, sy - y0
    base = (np.arange(n, dtype=np.int32) * height * width)[:, None, None]
    flat = faces.reshape(-1)
    i00 = base + y0 * width + x0
    top = flat[i00] * (1 - fx) + flat[i00 + 1] * fx
    bottom = flat[i00 + width] * (1 - fx) + flat[i00 + width + 1] * fx
    return top * (1 - fy) + bottom * fy


def _erase(faces: np.ndarray, rng: np.random.Generator, settings: AugmentSettings) -> None:
    """Random erasing, in place: each face, with probability `settings.erase`, gets one rectangle of
    uniform noise covering a random share of it (`erase_area`), of aspect ratio 0.3 to 3.3. The
    model must then read an expression from what is left, as with a hand or a shadow over the face."""
    n, height, width = faces.shape
    chosen = rng.random(n) < settings.erase
    area = rng.uniform(*settings.erase_area, n) * height * width
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3), n))
    h = np.clip(np.round(np.sqrt(area * aspect)), 1, height).astype(np.int32)
    w = np.clip(np.round(np.sqrt(area / aspect)), 1, width).astype(np.int32)
    top = (rng.random(n) * (height - h + 1)).astype(np.int32)
    left = (rng.random(n) * (width - w + 1)).astype(np.int32)
    noise = rng.uniform(0, 255, faces.shape).astype(np.float32)
    ys = np.arange(height)[None, :, None]
    xs = np.arange(width)[None, None, :]
    inside = (
        chosen[:, None, None]
        & (ys >= top[:, None, None])
        & (ys < (top + h)[:, None, None])
        & (xs >= left[:, None, None])
        & (xs < (left + w)[:, None, None])
    )
    faces[inside] = noise[inside]
