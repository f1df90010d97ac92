"""Is it a face? Second opinions on what a detector found, and on pictures given as one face.

Detectors make two kinds of false faces on real photos: parts of a face boxed again (an eye or a
mouth inside a face already found), and patches of texture (hair, foliage, fabric) that pass a
fast first stage. Both are dropped here, after any detector, by rules that need no knowledge of it:

- a face score from MTCNN's output network (O-Net, the last and most careful of its three stages,
  weights shipped inside the `mtcnn` package) on each box, squared about its centre and scaled to
  48x48 as MTCNN itself does: a box scoring under MIN_FACE_SCORE is dropped;
- a box lying mostly (INSIDE_SHARE or more of its area) inside a larger box already kept is dropped;
- a box whose side is under SIDE_SHARE of the photo's largest kept face is dropped.

The same face score answers the other question: a picture handed in as one pre-cropped face
(Classify's "already cropped" switch, `fer predict --whole`) that scores under WHOLE_MIN_SCORE
is reported as not a face rather than given an expression.

benchmarks/detectors.py measures the filter (recall and false faces with and without it, and its
cost against detection); benchmarks/facecheck.py measures the whole-picture check on real faces
and on photos without one. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_FACE_SCORE = 0.5  # O-Net's face probability under which a detection is dropped
INSIDE_SHARE = 0.6  # a box with this share of its area inside a larger kept box is a part of that face
SIDE_SHARE = 0.25  # a box this much smaller (in side) than the photo's largest face is not a face
WHOLE_MIN_SCORE = 0.025  # a pre-cropped picture scoring under this is reported as not a face
PATCH = 48  # O-Net's input side
BATCH = 256  # patches per network call

Box = tuple[float, float, float, float]  # (top, left, bottom, right)


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def inside_share(small: Box, large: Box) -> float:
    """The share of `small`'s area that lies inside `large` (0 for an empty box)."""
    height = min(small[2], large[2]) - max(small[0], large[0])
    width = min(small[3], large[3]) - max(small[1], large[1])
    area = _area(small)
    return max(0.0, height) * max(0.0, width) / area if area > 0 else 0.0


def plausible(
    boxes: Sequence[Box],
    scores: Sequence[float] | None = None,
    *,
    min_score: float = MIN_FACE_SCORE,
    inside: float = INSIDE_SHARE,
    side: float = SIDE_SHARE,
) -> list[int]:
    """Indices (in the given order) of the boxes that can be faces of one photo.

    `scores` are face scores in [0, 1] (None: every box passes the score rule). Boxes are visited
    largest first; each must score at least `min_score`, lie less than `inside` of its area in a
    box already kept, and have a side (the geometric mean of height and width) at least `side`
    times that of the largest box kept.
    """
    order = sorted(range(len(boxes)), key=lambda i: _area(boxes[i]), reverse=True)
    kept: list[int] = []
    largest = 0.0
    for i in order:
        box = boxes[i]
        if _area(box) <= 0 or (scores is not None and scores[i] < min_score):
            continue
        length = _area(box) ** 0.5
        if kept and length < side * largest:
            continue
        if any(inside_share(box, boxes[k]) >= inside for k in kept):
            continue
        kept.append(i)
        largest = max(largest, length)
    return sorted(kept)


def _patches(rgb: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Each box squared about its centre (its longer side), cut from the photo (outside it: mid grey,
    as MTCNN pads) and scaled to PATCH x PATCH; float32 in MTCNN's [-1, 1] scale."""
    from PIL import Image

    height, width = rgb.shape[:2]
    out = np.zeros((len(boxes), PATCH, PATCH, 3), np.float32)
    for n, (top, left, bottom, right) in enumerate(boxes):
        side = max(bottom - top, right - left, 1.0)
        cy, cx = (top + bottom) / 2, (left + right) / 2
        y, x = int(round(cy - side / 2)), int(round(cx - side / 2))
        s = max(1, int(round(side)))
        canvas = np.full((s, s, 3), 128, np.uint8)
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + s, height), min(x + s, width)
        if y1 > y0 and x1 > x0:
            canvas[y0 - y : y1 - y, x0 - x : x1 - x] = rgb[y0:y1, x0:x1]
        patch = Image.fromarray(canvas).resize((PATCH, PATCH), Image.Resampling.BILINEAR)
        out[n] = (np.asarray(patch, np.float32) - 127.5) / 128
    return out


def _onet_onnx() -> bytes:
    """MTCNN's O-Net as an ONNX graph that gives the (not a face, face) probabilities of (n, 48, 48, 3)
    patches, built with fer.portable's graph writer from the weights the `mtcnn` package ships (read
    without importing the package, whose code needs TensorFlow). The layers as the package's `ONet`
    defines them: four convolutions with PReLU (max pooling after the first three), the last map
    read column by column (its Permute), a dense layer with PReLU, and the face / not-a-face softmax."""
    import joblib
    from onnx import TensorProto, helper

    from fer import paths, portable

    weights = joblib.load(paths.package_file("mtcnn", "assets/weights/onet.lz4"))
    graph = portable.OnnxGraph()
    x = graph.node("Transpose", ["patches"], "nchw", perm=[0, 3, 1, 2])
    # TensorFlow's "same" pooling puts an odd padding's extra row at the end.
    pools = [(3, "SAME_UPPER"), (3, "VALID"), (2, "SAME_UPPER"), None]
    for block, pool in enumerate(pools):
        kernel, bias, alpha = weights[3 * block : 3 * block + 3]
        x = graph.node(
            "Conv",
            [x, graph.constant(np.transpose(kernel, (3, 2, 0, 1)), "conv"), graph.constant(bias, "bias")],
            "conv",
        )
        x = graph.node("PRelu", [x, graph.constant(np.reshape(alpha, (-1, 1, 1)), "alpha")], "prelu")
        if pool:
            size, padding = pool
            x = graph.node(
                "MaxPool", [x], "pool", kernel_shape=[size, size], strides=[2, 2], auto_pad=padding
            )
    x = graph.node("Transpose", [x], "permute", perm=[0, 3, 2, 1])  # the package's Permute((2, 1, 3))
    x = graph.node("Flatten", [x], "flatten")

    def dense(x: str, kernel: int, hint: str) -> str:
        return graph.node(
            "Gemm",
            [x, graph.constant(weights[kernel], hint), graph.constant(weights[kernel + 1], hint)],
            hint,
        )

    x = graph.node("PRelu", [dense(x, 12, "fc5"), graph.constant(weights[14], "alpha")], "prelu")
    scores = graph.node("Softmax", [dense(x, 19, "face")], "scores", axis=-1)
    model = graph.model(
        "onet",
        [helper.make_tensor_value_info("patches", TensorProto.FLOAT, [None, PATCH, PATCH, 3])],
        [helper.make_tensor_value_info(scores, TensorProto.FLOAT, [None, 2])],
    )
    return model.SerializeToString()


class FaceScorer:
    """MTCNN's output network as a face / not-a-face scorer for boxes in a photo, run by ONNX Runtime
    (no TensorFlow: a few megabytes and well under a millisecond a face). Loads on first use."""

    def __init__(self) -> None:
        self._session = None

    def _network(self):
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1  # a few 48x48 patches a photo: one thread is enough
            options.inter_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(
                _onet_onnx(), options, providers=["CPUExecutionProvider"]
            )
        return self._session

    def _run(self, patches: np.ndarray) -> np.ndarray:
        scores = [
            self._network().run(None, {"patches": np.ascontiguousarray(patches[i : i + BATCH])})[0][:, 1]
            for i in range(0, len(patches), BATCH)
        ]
        return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)

    def score(self, rgb: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """The face probability of each (top, left, bottom, right) box of an RGB (or gray) uint8 photo."""
        return self._run(_patches(_rgb(rgb), boxes))

    def score_pictures(self, pictures: Sequence[np.ndarray]) -> np.ndarray:
        """The face probability of each RGB (or gray) uint8 picture taken whole as one face: the higher
        of the picture's and its mirror image's (a face is a face both ways; on FER2013's val faces
        this refuses fewer real faces for as many pictures without one refused)."""
        patches = [_patches(_rgb(p), [(0.0, 0.0, float(p.shape[0]), float(p.shape[1]))]) for p in pictures]
        if not patches:
            return np.zeros(0, np.float32)
        patches = np.concatenate(patches)
        return np.maximum(self._run(patches), self._run(patches[:, :, ::-1]))

    def score_whole(self, picture) -> float:
        """The face probability of one RGB (or gray) picture (an array or a PIL image) taken whole."""
        return float(self.score_pictures([np.asarray(picture)])[0])


def _rgb(picture: np.ndarray) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.ndim == 2:
        return np.repeat(picture[:, :, None], 3, axis=2)
    return picture[:, :, :3]


class CheckedDetector:
    """Any detector (an object with `name` and `detect(rgb) -> list of detections with .box`), its
    detections passed through `plausible` with O-Net face scores. Detections keep their own score."""

    def __init__(self, detector, scorer: FaceScorer | None = None) -> None:
        self.detector = detector
        self.name = detector.name
        self.scorer = scorer or FaceScorer()

    def __getattr__(self, attribute):  # the wrapped detector's own settings (min_score, ...)
        if attribute == "detector":
            raise AttributeError(attribute)
        return getattr(self.detector, attribute)

    def check(self, rgb: np.ndarray, found: list) -> list:
        """The detections of `found` (from this photo) that pass the rules, in their order."""
        if not found:
            return []
        boxes = [d.box for d in found]
        return [found[i] for i in plausible(boxes, self.scorer.score(rgb, boxes))]

    def detect(self, rgb: np.ndarray) -> list:
        return self.check(rgb, self.detector.detect(rgb))
