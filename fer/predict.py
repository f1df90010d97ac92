"""Classify the faces in users' photos: detector, then exactly the model's own preprocessing, then the model.

Photos come as users have them: phone pictures rotated by EXIF, RGBA, CMYK, 16-bit, palette,
tiny or huge. `fer.images.open_photo` turns every one upright and into RGB for the detector; faces
are cropped from its grayscale version with the crop and resize training faces get
(`fer.images.crop_faces`), at the size and margin the model was trained with (read from the model
file), so prediction cannot drift from training.

Model files can come from visitors too (`check_model_file`): a .keras file is a zip holding a
config that Keras turns into objects, so it is checked as an upload (size, members) and loaded in
Keras' safe mode with Python code refused, and kept only once it has classified a face.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer import images
from fer import preprocess as P
from fer.train import ModelFileError

# The detector sees at most this long a side; boxes are mapped back to the full photo.
DETECT_SIDE = 1280
# Uploaded model files: the server's upload cap, and what their zip may expand to (weights barely
# compress, so a model that expands far beyond its size is a zip bomb, not a model).
MAX_MODEL_BYTES = 200 * 1024**2
MAX_MODEL_EXPANDED_BYTES = 1024**3
MAX_MODEL_MEMBERS = 1000
MAX_MODEL_RATIO = 100.0


@dataclass
class Face:
    box: tuple[float, float, float, float]  # (top, left, bottom, right) in the upright photo's pixels
    label: str
    probabilities: dict[str, float]
    detector_score: float | None = None  # None for a whole-photo face


@dataclass
class PhotoResult:
    width: int
    height: int
    faces: list[Face] = field(default_factory=list)


class Predictor:
    """A loaded model (and detector) ready for photos. Load once, use for many."""

    def __init__(self, model_path: str | Path, detector: str = "mtcnn") -> None:
        from fer.train import load_model

        self.model, self.metadata = load_model(Path(model_path))
        self.labels, self.settings = _check_model(self.model, self.metadata, Path(model_path))
        self.detector_name = detector
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            from fer import detect

            self._detector = detect.make(self.detector_name)
        return self._detector

    def classify(self, faces: np.ndarray, flip: bool = False) -> np.ndarray:
        """Probabilities for (n, size, size) uint8 faces; `flip` averages with the mirrored faces."""
        from fer.train import predict_probabilities

        probabilities = predict_probabilities(self.model, faces)
        if flip and len(faces):
            probabilities = (probabilities + predict_probabilities(self.model, faces[:, :, ::-1])) / 2
        return probabilities

    def predict(self, source, *, whole: bool = False, flip: bool = False) -> PhotoResult:
        """Every face in the photo with its box, label and probabilities; no face, an empty list."""
        photo = source if isinstance(source, Image.Image) else images.open_photo(source)
        width, height = photo.size
        if whole:
            boxes, scores = [(0.0, 0.0, float(height), float(width))], [None]
        else:
            boxes, scores = self._detect(photo)
        faces = images.crop_faces(photo.convert("L"), boxes, self.settings)
        probabilities = self.classify(faces, flip=flip)
        result = PhotoResult(width, height)
        for box, score, row in zip(boxes, scores, probabilities):
            result.faces.append(
                Face(
                    box=tuple(round(v, 1) for v in box),
                    label=self.labels[int(np.argmax(row))],
                    probabilities={label: float(p) for label, p in zip(self.labels, row)},
                    detector_score=score,
                )
            )
        return result

    def _detect(self, photo: Image.Image) -> tuple[list[tuple], list[float]]:
        return detect_faces(self.detector, photo)


def detect_faces(detector, photo: Image.Image) -> tuple[list[tuple], list[float]]:
    """Boxes (in `photo`'s pixels) and scores of the faces `detector` finds in an RGB photo, run
    on a copy at most DETECT_SIDE pixels long: what Classify and `evaluate --detect` both use."""
    scale = min(1.0, DETECT_SIDE / max(photo.size))
    small = (
        photo
        if scale == 1.0
        else photo.resize(
            (max(1, round(photo.size[0] * scale)), max(1, round(photo.size[1] * scale))),
            Image.Resampling.BILINEAR,
        )
    )
    found = detector.detect(np.asarray(small))
    return [tuple(v / scale for v in d.box) for d in found], [d.score for d in found]


def _check_model(model, metadata: dict, path: Path) -> tuple[list[str], P.PrepSettings]:
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
        settings = P.settings_of(metadata)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(
            f"{path}: its fer.json must give the image_size (48 to 224) and margin the model was trained "
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
    if dest_dir is None:
        from fer.paths import data_dir

        dest_dir = data_dir() / "models"
    dest_dir = Path(dest_dir)
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
            predictor = Predictor(staging, detector="haar")  # the detector loads lazily: never here
            size = predictor.settings.size
            probabilities = predictor.classify(np.full((1, size, size), 128, dtype=np.uint8))
        except ModelFileError as error:
            raise ModelFileError(
                str(error).replace(f"{staging}: ", "").replace(str(staging), "the file")
            ) from error
        except Exception as error:  # noqa: BLE001 - loaded but unusable: say so, whatever broke
            raise ModelFileError(
                f"the model loads but cannot classify a face ({type(error).__name__}: {error})"
            ) from error
        if probabilities.shape != (1, len(predictor.labels)) or not np.isfinite(probabilities).all():
            raise ModelFileError(
                f"the model loads but gives no usable probabilities for a face (got {probabilities!r:.200})"
            )
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target


# Showing results ----------------------------------------------------------------------------------

# One colour per canonical label (others cycle through them), chosen to stay readable on photos.
_COLOURS = ["#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e", "#7f7f7f"]


def label_colour(label: str, labels: list[str]) -> str:
    from fer.labels import LABELS

    order = list(LABELS) + [x for x in labels if x not in LABELS]
    return _COLOURS[order.index(label) % len(_COLOURS)] if label in order else _COLOURS[-1]


def annotate(photo: Image.Image, result: PhotoResult, labels: list[str]) -> Image.Image:
    """A copy of the photo with each face boxed and labelled ("1 happy 87%"), sized for a screen."""
    from PIL import ImageDraw, ImageFont

    image = photo.convert("RGB").copy()
    scale = min(1.0, 1600 / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(image.size) / 40)))
    for number, face in enumerate(result.faces, start=1):
        top, left, bottom, right = (v * scale for v in face.box)
        colour = label_colour(face.label, labels)
        draw.rectangle((left, top, right, bottom), outline=colour, width=line)
        text = f"{number} {face.label} {face.probabilities[face.label]:.0%}"
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        height = y1 - y0 + 2 * line
        y = top - height if top - height >= 0 else bottom
        draw.rectangle((left, y, left + x1 - x0 + 2 * line, y + height), fill=colour)
        draw.text((left + line, y + line - y0), text, fill="white", font=font)
    return image


def results_table(results: list[tuple[str, PhotoResult]], labels: list[str]) -> pd.DataFrame:
    """One row per face over many photos: photo, face number, label, its probability, box, every
    class probability; a photo with no face gets one row with an empty label, so none goes missing."""
    rows = []
    for name, result in results:
        if not result.faces:
            rows.append({"photo": name, "face": 0, "label": "", "probability": np.nan})
        for number, face in enumerate(result.faces, start=1):
            top, left, bottom, right = face.box
            rows.append(
                {
                    "photo": name,
                    "face": number,
                    "label": face.label,
                    "probability": round(face.probabilities[face.label], 4),
                    "top": top,
                    "left": left,
                    "bottom": bottom,
                    "right": right,
                    **{f"p_{label}": round(face.probabilities.get(label, np.nan), 4) for label in labels},
                }
            )
    columns = ["photo", "face", "label", "probability", "top", "left", "bottom", "right"]
    return pd.DataFrame(rows, columns=columns + [f"p_{label}" for label in labels])
