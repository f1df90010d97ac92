"""Opening photos safely, the one way training faces and photos to classify are both read.

Photos come as people have them: phone pictures rotated by EXIF, RGBA, CMYK, 16-bit, palette,
tiny or huge. Every photo goes through the same rules here, so a face cropped for training has
the pixels prediction sees in the same photo:

- one pixel limit (`MAX_PHOTO_PIXELS`), checked from the header before anything is decoded;
- one EXIF rule (`orientation_of`): the transpose it names turns the photo upright for prediction,
  and turns the faces (and, with `upright_box`, the boxes) of a dataset whose boxes are given in
  the stored pixels;
- 16-bit and float pixels scaled into 0-255 (`to_8bit`), see-through pixels laid on white
  (`flatten_alpha`);
- one crop: the box plus margin, clipped to the photo (`crop_box`), resized bilinearly
  (`crop_faces`).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

# Photos above this are refused before decoding (a decompression-bomb guard): 40 MP is a large
# phone picture; a PNG that claims 400 MP in a few kilobytes is an attack.
MAX_PHOTO_PIXELS = 40_000_000
# EXIF orientation -> the transpose that turns what the camera stored upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Where a photo's metadata can carry an orientation (Pillow's getexif reads XMP when EXIF has none).
_ORIENTATION_INFO = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


class PhotoError(ValueError):
    """The photo cannot be read; the message says why and what to do."""


class FaceError(Exception):
    """This face cannot be processed; the message says why."""


class CropSettings(Protocol):
    """What a crop needs to know (fer.preprocess.PrepSettings is one)."""

    @property
    def size(self) -> int: ...  # output side in pixels

    @property
    def margin(self) -> float: ...  # share of the box's width / height added on each side


# Opening ------------------------------------------------------------------------------------------


def check_pixels(image: Image.Image) -> None:
    """PhotoError when a photo (opened, not yet decoded) has more pixels than MAX_PHOTO_PIXELS."""
    width, height = image.size
    if width * height > MAX_PHOTO_PIXELS:
        raise PhotoError(
            f"photo is too large to decode safely ({width}x{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {MAX_PHOTO_PIXELS / 1e6:.0f})"
        )


def orientation_of(image: Image.Image) -> Image.Transpose | None:
    """The transpose a photo's EXIF orientation asks for (None: already upright, or unreadable).

    The one rule for turning photos: `upright` turns images by it, `upright_box` turns boxes by it.
    """
    try:
        return _UPRIGHT.get(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to lose the photo
        return None


def upright(image: Image.Image) -> Image.Image:
    """The photo turned as its EXIF orientation asks (the pixels ImageOps.exif_transpose gives).

    The turned photo carries no orientation any more, so nothing downstream turns it twice.
    """
    turn = orientation_of(image)
    if turn is None:
        return image
    turned = image.transpose(turn)
    for key in _ORIENTATION_INFO:
        turned.info.pop(key, None)
    return turned


def open_photo(source: str | Path | bytes) -> Image.Image:
    """An upright RGB photo from a path or bytes, whatever its mode; PhotoError if it can't be one."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            check_pixels(image)
            image.load()
    except PhotoError as error:
        raise PhotoError(f"{error}: resize it and try again") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PhotoError(f"photo is too large to decode safely ({error}): resize it and try again") from error
    except Image.UnidentifiedImageError as error:
        raise PhotoError(
            "not an image file, or one of a kind this tool cannot read; use a JPEG, PNG or WebP photo"
        ) from error
    except Exception as error:
        raise PhotoError(
            f"not a readable image ({type(error).__name__}: {error}); use a JPEG or PNG"
        ) from error
    return flatten_alpha(to_8bit(upright(image))).convert("RGB")


def open_gray(path: Path, boxes: list[tuple], settings: CropSettings) -> tuple[Image.Image, int, int, float]:
    """Decode a photo as grayscale, at the smallest JPEG scale that keeps every face at least `size`.

    Returns the image, the photo's full width and height, and the image's pixels per photo pixel
    (below 1 where the JPEG was decoded at a reduced scale). The image is the photo as stored, since
    boxes refer to the stored pixels; `image.info["upright"]` is the transpose (or None) that its
    EXIF orientation asks for, which fer.preprocess.process_photo applies to each face it crops.
    PhotoError when the photo has more than MAX_PHOTO_PIXELS; Pillow's own errors otherwise.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(path)
    check_pixels(image)
    width, height = image.size
    scale = 1.0
    if image.format == "JPEG":
        regions = []
        for box in boxes:
            try:
                regions.append(crop_box(box, width, height, settings.margin))
            except FaceError:
                continue  # reported for that face alone by process_photo; the photo's other faces go on
        smallest = min((min(r[2] - r[0], r[3] - r[1]) for r in regions), default=min(width, height))
        factor = max(1.0, smallest / settings.size)
        drafted = image.draft("L", (math.ceil(width / factor), math.ceil(height / factor)))
        if drafted is not None:
            # The decoder shrinks by an integer factor s and rounds the size up (ceil(width / s)):
            # map photo pixels by 1 / s, the box draft returns, not by the ratio of the sizes.
            scale = drafted[1][2] / width
    image.load()
    turn = orientation_of(image)
    if image.mode != "L":
        image = flatten_alpha(to_8bit(image)).convert("L")
    image.info["upright"] = turn
    return image, width, height, scale


def image_from_pixels(text: str) -> Image.Image:
    """A square grayscale image from FER2013-CSV pixel text ("70 80 82 ...")."""
    values = np.array(text.split(), dtype=np.float64)
    side = math.isqrt(values.size)
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8).reshape(side, side))


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and integer / float images scaled into 0-255 ("L"); convert("L") would clip at 255."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image
    array = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if array.max() > 255 else 255.0
    return Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8))


def flatten_alpha(image: Image.Image) -> Image.Image:
    """An image with transparency laid on white, as a viewer shows it; others unchanged.

    Training faces and photos to classify both go through this, so a see-through PNG gives the
    model the same pixels in a dataset as on the Classify page.
    """
    if image.mode not in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


# Boxes and crops ----------------------------------------------------------------------------------


def crop_box(
    box: tuple[float, float, float, float], width: int, height: int, margin: float
) -> tuple[int, ...]:
    """The (left, top, right, bottom) pixel region to crop: box plus margin, clipped to the photo.

    `box` is (top, left, bottom, right); NaN means the whole photo.
    """
    top, left, bottom, right = box
    if math.isnan(top):
        return (0, 0, width, height)
    pad_x, pad_y = (right - left) * margin, (bottom - top) * margin
    region = (
        max(0, math.floor(left - pad_x)),
        max(0, math.floor(top - pad_y)),
        min(width, math.ceil(right + pad_x)),
        min(height, math.ceil(bottom + pad_y)),
    )
    if region[2] <= region[0] or region[3] <= region[1]:
        raise FaceError(
            f"box lies outside the photo (box top={top:g} left={left:g} bottom={bottom:g} right={right:g}; "
            f"photo is {width}x{height})"
        )
    return region


def shifted_box(
    box: tuple[float, float, float, float], dx: float = 0.0, dy: float = 0.0, scale: float = 1.0
) -> tuple[float, float, float, float]:
    """A (top, left, bottom, right) box moved by `dx` of its width (right positive) and `dy` of its
    height (down positive), then scaled by `scale` about its centre. Not clipped: `crop_box` clips it
    to the photo, as it clips every box, so a moved face is cropped the way a detected one is."""
    top, left, bottom, right = box
    width, height = right - left, bottom - top
    centre_x, centre_y = (left + right) / 2 + dx * width, (top + bottom) / 2 + dy * height
    half_w, half_h = width * scale / 2, height * scale / 2
    return (centre_y - half_h, centre_x - half_w, centre_y + half_h, centre_x + half_w)


# Steady answers: a face is read from its box and from slightly moved and scaled copies of it, and
# the probabilities averaged, so that a face framed a little differently (a webcam frame against an
# upload, another detector's box) gets the same answer (measured in benchmarks/stability.py).
STEADY_MOVES = (  # (dx, dy, scale), as shifted_box takes them
    (0.0, 0.0, 1.0),
    (-0.05, 0.0, 1.0),
    (0.05, 0.0, 1.0),
    (0.0, -0.05, 1.0),
    (0.0, 0.05, 1.0),
    (0.0, 0.0, 0.92),
    (0.0, 0.0, 1.08),
)


def steady_boxes(box: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    """The boxes a steady answer reads one face from: the box itself first, then its moved copies."""
    return [shifted_box(box, dx, dy, scale) for dx, dy, scale in STEADY_MOVES]


def upright_box(box: tuple, width: int, height: int, turn: Image.Transpose | None) -> tuple:
    """A (top, left, bottom, right) box in a photo's stored pixels (`width` x `height`), moved to
    where it lies once the photo is turned by `turn` (what `orientation_of` says, or None)."""
    top, left, bottom, right = box
    W, H = width, height
    T = Image.Transpose
    moved = {
        None: (top, left, bottom, right),
        T.FLIP_LEFT_RIGHT: (top, W - right, bottom, W - left),
        T.FLIP_TOP_BOTTOM: (H - bottom, left, H - top, right),
        T.ROTATE_180: (H - bottom, W - right, H - top, W - left),
        T.ROTATE_90: (W - right, top, W - left, bottom),  # counter-clockwise: (x, y) -> (y, W - x)
        T.ROTATE_270: (left, H - bottom, right, H - top),  # clockwise: (x, y) -> (H - y, x)
        T.TRANSPOSE: (left, top, right, bottom),  # (x, y) -> (y, x)
        T.TRANSVERSE: (W - right, H - bottom, W - left, H - top),  # (x, y) -> (H - y, W - x)
    }
    return moved[turn]


def crop_resize(
    image: Image.Image, region: tuple[float, ...], size: int, turn: Image.Transpose | None = None
) -> np.ndarray:
    """The (size, size) uint8 face at `region` (left, top, right, bottom) of a grayscale image,
    turned by `turn` when the photo's EXIF asks for it."""
    face = image.resize((size, size), Image.Resampling.BILINEAR, box=region, reducing_gap=3.0)
    return np.asarray(face if turn is None else face.transpose(turn))


def crop_faces(gray: Image.Image, boxes: list[tuple], settings: CropSettings) -> np.ndarray:
    """(n, size, size) uint8 faces at (top, left, bottom, right) boxes of a grayscale image, cropped
    and resized exactly as the cache's faces are: what evaluation and prediction on photos use."""
    width, height = gray.size
    faces = [crop_resize(gray, crop_box(box, width, height, settings.margin), settings.size) for box in boxes]
    return np.stack(faces) if faces else np.zeros((0, settings.size, settings.size), np.uint8)
