"""Classify the faces in users' photos: detector, then exactly the model's own preprocessing, then the model.

Photos come as users have them: phone pictures rotated by EXIF, RGBA, CMYK, 16-bit, palette,
tiny or huge. `fer.images.open_photo` turns every one upright and into RGB for the detector; faces
are cropped from its grayscale version with the crop and resize training faces get
(`fer.images.crop_faces`), at the size and margin the model was trained with (read from the model
file), so prediction cannot drift from training.

Models are loaded through fer.modelfile (Keras' safe mode, Python code refused), which also checks
model files that visitors upload, or from the .tflite / .onnx files `fer export` writes (fer.portable),
which run without TensorFlow. A .keras model's network runs as its ONNX twin where it can
(fer.portable.onnx_twin): with BlazeFace on LiteRT and the face check on ONNX Runtime, a process that
only classifies photos loads no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer import detect, facecheck, images, modelfile, portable

# The detector sees at most this long a side; boxes are mapped back to the full photo.
DETECT_SIDE = 1280
DEFAULT_DETECTOR = detect.DEFAULT  # fer.detect.NAMES; what Classify and the own-faces page find faces with


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
    # A picture given as one face (`whole`): how much it looks like a face (fer.facecheck, 0 to 1),
    # and whether it looked too little like one to be given an expression (then `faces` is empty).
    face_score: float | None = None
    not_a_face: bool = False


class Predictor:
    """A loaded model (and detector) ready for photos. Load once, use for many."""

    def __init__(
        self, model_path: str | Path, detector: str = DEFAULT_DETECTOR, *, onnx: bool = True
    ) -> None:
        self.path = Path(model_path)
        # A .keras file's network runs as its ONNX twin (fer.portable.onnx_twin) where it can: no
        # TensorFlow in a process that only classifies. `onnx=False` keeps it on Keras. A .tflite or
        # .onnx file has no twin: it runs as it is, without TensorFlow (and without saliency maps).
        twin = portable.onnx_twin(self.path) if onnx else None
        if twin is not None:
            self.model = portable.load_model(twin)[0]
            self.metadata = modelfile.read_metadata(self.path)
        else:
            self.model, self.metadata = portable.load_model(self.path)  # .keras, .tflite or .onnx
        self.labels, self.settings = modelfile.check_model(self.model, self.metadata, self.path)
        self.detector_name = detector
        # The fitted calibration (None: the network's own, uncalibrated probabilities).
        self.calibration: dict | None = self.metadata.get("calibration")
        self._keras_model = None if twin is not None else self.model
        self._detector = None
        self._grad_cam = None
        self._face_scorer: facecheck.FaceScorer | None = None

    @property
    def face_scorer(self) -> facecheck.FaceScorer:
        """The check that a picture given as one face looks like one."""
        if self._face_scorer is None:
            self._face_scorer = facecheck.FaceScorer()
        return self._face_scorer

    @property
    def detector(self):
        if self._detector is None:
            # The detections' check and the whole-picture check share one O-Net.
            self._detector = detect.make(self.detector_name, scorer=self.face_scorer)
        return self._detector

    def classify(self, faces: np.ndarray, flip: bool | None = None) -> np.ndarray:
        """Probabilities for (n, size, size) uint8 faces, calibrated where the model file carries a
        calibration; `flip` averages with the mirrored faces (None: as the model file says,
        fer.modelfile.reads_mirrored)."""
        return modelfile.predict_probabilities(self.model, faces, metadata=self.metadata, flip=flip)

    def steady_probabilities(
        self, gray: Image.Image, boxes: list[tuple], flip: bool | None = None
    ) -> np.ndarray:
        """(n, labels) probabilities of the faces at `boxes` in `gray`, each the mean over the box and
        its slightly moved and scaled copies (fer.images.steady_boxes), in one model call."""
        if not boxes:
            return np.zeros((0, len(self.labels)), np.float32)
        moved = [b for box in boxes for b in images.steady_boxes(box)]
        faces = images.crop_faces(gray, moved, self.settings)
        per_copy = self.classify(faces, flip=flip).reshape(len(boxes), len(images.STEADY_MOVES), -1)
        return per_copy.mean(axis=1)

    def predict(
        self, source, *, whole: bool = False, flip: bool | None = None, steady: bool = False
    ) -> PhotoResult:
        """Every face in the photo with its box, label and probabilities; no face, an empty list.
        `steady` reads each found face from its box and slightly moved copies of it and averages them
        (not for a `whole` photo, which is its own crop)."""
        photo = source if isinstance(source, Image.Image) else images.open_photo(source)
        width, height = photo.size
        result = PhotoResult(width, height)
        if whole:
            result.face_score = self._face_score(photo)
            result.not_a_face = (
                result.face_score is not None and result.face_score < facecheck.WHOLE_MIN_SCORE
            )
            if result.not_a_face:
                return result
            boxes, scores = [(0.0, 0.0, float(height), float(width))], [None]
        else:
            boxes, scores = self._detect(photo)
        if steady and not whole:
            probabilities = self.steady_probabilities(photo.convert("L"), boxes, flip=flip)
        else:
            probabilities = self.classify(
                images.crop_faces(photo.convert("L"), boxes, self.settings), flip=flip
            )
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

    def crops(self, source, result: PhotoResult) -> np.ndarray:
        """The (n, size, size) uint8 faces of `result` as the model saw them, cut from its photo again."""
        photo = source if isinstance(source, Image.Image) else images.open_photo(source)
        return images.crop_faces(photo.convert("L"), [face.box for face in result.faces], self.settings)

    def maps(self, faces: np.ndarray, labels: list[str] | None = None) -> np.ndarray:
        """Where the model looked (fer.saliency, Grad-CAM): one [0, 1] map per (n, size, size) uint8
        face, for its label in `labels` (default: the network's top class)."""
        from fer import saliency

        if self._grad_cam is None:
            if self._keras_model is None:  # the network runs as its ONNX twin: maps need Keras' gradients
                self._keras_model = modelfile.load_model(self.path)[0]
            self._grad_cam = saliency.GradCam(self._keras_model)
        classes = None if labels is None else [self.labels.index(label) for label in labels]
        return self._grad_cam.maps(faces, classes)

    def _face_score(self, photo: Image.Image) -> float:
        """How much the whole photo looks like a face (fer.facecheck, 0 to 1)."""
        return self.face_scorer.score_whole(photo)

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


# Showing results ----------------------------------------------------------------------------------

# One colour per canonical label (others cycle through them), chosen to stay readable on photos.
_COLOURS = ["#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e", "#7f7f7f"]


def label_colour(label: str, labels: list[str]) -> str:
    from fer.labels import LABELS

    order = list(LABELS) + [x for x in labels if x not in LABELS]
    return _COLOURS[order.index(label) % len(_COLOURS)] if label in order else _COLOURS[-1]


def annotate(photo: Image.Image, result: PhotoResult, labels: list[str]) -> Image.Image:
    """A copy of the photo with each face boxed and labelled ("1 happy 62% likely"), sized for a screen."""
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
        text = f"{number} {face.label} {face.probabilities[face.label]:.0%} likely"
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
