"""Face detection with detectors whose weights ship inside their packages (nothing is downloaded).

Two candidates, compared on expw-sample's labelled boxes by benchmarks/detectors.py:
- "haar": OpenCV's frontal-face Haar cascade (opencv-python-headless 4.x carries the XML files;
  OpenCV 5's wheels no longer do, hence the pin below 5);
- "mtcnn": the `mtcnn` package's three-stage CNN (weights in the package, runs on TensorFlow).

Detectors take an RGB uint8 array and return boxes in its pixels as (top, left, bottom, right),
the order the datasets use, with a score (higher is surer; the scales differ between detectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAMES = ("haar", "mtcnn")


@dataclass(frozen=True)
class Detection:
    top: float
    left: float
    bottom: float
    right: float
    score: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.top, self.left, self.bottom, self.right)


class HaarDetector:
    name = "haar"

    def __init__(self, min_size: int = 24) -> None:
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV's face cascade is missing ({path}); install opencv-python-headless<5")
        self._cv2, self.min_size = cv2, min_size

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        cv2 = self._cv2
        gray = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=1.1,
            minNeighbors=5,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        return [
            Detection(float(y), float(x), float(y + h), float(x + w), float(score))
            for (x, y, w, h), score in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights))
        ]


def _refine_stage():
    """MTCNN's second stage, skipped when the first proposes no candidate box.

    The package runs its refining network on whatever the proposal network found, an empty batch
    included, and counts the error TensorFlow raises on it as "no face"; TensorFlow logs that error
    ("Incompatible shapes: [0,24,24,3] ...") on the server's stderr for every photo without a
    candidate (a tiny photo, a blank one). With no candidate there is nothing to refine."""
    from mtcnn.stages import StageRNet

    class RefineStage(StageRNet):
        def __call__(self, images_normalized, bboxes_batch, **kwargs):
            if len(bboxes_batch) == 0:
                return bboxes_batch
            return super().__call__(images_normalized=images_normalized, bboxes_batch=bboxes_batch, **kwargs)

    return RefineStage()


class MtcnnDetector:
    name = "mtcnn"
    MIN_SIDE = 12  # the proposal network's window: a photo narrower than this holds no face it can find

    def __init__(self, min_score: float = 0.9) -> None:
        from mtcnn import MTCNN
        from mtcnn.stages import StagePNet

        self._mtcnn, self.min_score = MTCNN(stages=[StagePNet(), _refine_stage()]), min_score

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        if rgb.ndim != 3 or min(rgb.shape[:2]) < self.MIN_SIDE:
            return []
        found = self._mtcnn.detect_faces(np.ascontiguousarray(rgb), box_format="xywh")
        return [
            Detection(float(y), float(x), float(y + h), float(x + w), float(face["confidence"]))
            for face in found
            for x, y, w, h in [face["box"]]
            if face["confidence"] >= self.min_score and w > 0 and h > 0
        ]


def make(name: str, *, check: bool = True):
    """A detector by name ("haar" or "mtcnn").

    With `check` (the default) its detections go through fer.facecheck's second opinion, which
    drops parts of faces boxed again and patches that do not look like a face; `check=False` gives
    the detector's raw output (for measuring what the check changes)."""
    if name not in NAMES:
        raise ValueError(f"detector must be one of {', '.join(NAMES)}, got {name!r}")
    detector = HaarDetector() if name == "haar" else MtcnnDetector()
    if not check:
        return detector
    from fer import facecheck

    return facecheck.CheckedDetector(detector)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (top, left, bottom, right) boxes."""
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[3], b[3]) - max(a[1], b[1])
    if height <= 0 or width <= 0:
        return 0.0
    inter = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(
    truth: list[tuple[float, ...]], found: list[tuple[float, ...]], threshold: float = 0.3
) -> list[int | None]:
    """For each labelled box, the index of the detection matched to it (IoU >= threshold), or None.

    Greedy by IoU, one detection per labelled box at most.
    """
    pairs = sorted(
        ((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True
    )
    matched: list[int | None] = [None] * len(truth)
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if matched[i] is None and j not in used:
            matched[i] = j
            used.add(j)
    return matched
