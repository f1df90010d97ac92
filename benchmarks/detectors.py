"""Face detectors on expw-sample's photos against its labelled boxes, same run, same photos.

For each detector: recall (labelled faces with a detection at IoU >= 0.3), detections per photo
that match no labelled face (some are real faces ExpW did not label), and milliseconds per photo
(single process, after one warm-up photo; the printout names the CPU cores it ran on).

    .venv/bin/python benchmarks/detectors.py [DATASET] [--photos N] [--seed S] [--detectors a,b]
    .venv/bin/python benchmarks/detectors.py [DATASET] --tune --model MODEL.keras

DATASET is an ExpW-format folder (default data/expw-sample). The candidates are every detector of
`fer.detect.NAMES` plus "mtcnn@640": MTCNN on a copy shrunk to at most 640 pixels on its longer side,
its boxes mapped back; each as the product runs it (its detections through the false-face check,
fer.facecheck) and, named NAME:raw, without that check.

`--photos` scores a seeded random sample of photos instead of all of them.

`--tune` chooses BlazeFace's framing (fer.detect.FRAME_SCALE, FRAME_UP) on the dataset's val part:
for each framing on a small grid (`--scales`, `--ups`: comma-separated values), `fer evaluate --detect`'s accuracy on the val faces (never the test
faces) with MODEL, and the recall; the framing with the best accuracy is the one to put in
fer/detect.py.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from fer import datasets, detect

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "expw-sample"


class Downscaled:
    """A detector run on a copy at most `side` pixels long, its boxes mapped back to the photo."""

    def __init__(self, detector, side: int) -> None:
        self.detector, self.side = detector, side

    def detect(self, rgb: np.ndarray) -> list[detect.Detection]:
        scale = min(1.0, self.side / max(rgb.shape[:2]))
        if scale == 1.0:
            return self.detector.detect(rgb)
        height, width = (max(1, round(v * scale)) for v in rgb.shape[:2])
        small = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))
        return [detect.Detection(*(v / scale for v in d.box), d.score) for d in self.detector.detect(small)]


def make(name: str):
    """A candidate by name: a detector of fer.detect.NAMES, "@SIDE" for a shrunk copy, ":raw" for its
    detections without the false-face check (fer.facecheck) that fer.detect.make puts on them."""
    raw = name.endswith(":raw")
    name = name.removesuffix(":raw")
    if "@" in name:
        base, side = name.split("@")
        return Downscaled(detect.make(base, check=not raw), int(side))
    return detect.make(name, check=not raw)


def score(detector, photos, images, groups) -> tuple[int, int, float]:
    """Labelled faces found, unmatched detections, seconds in detect()."""
    hits, unmatched, seconds = 0, 0, 0.0
    for photo in photos:
        truth = [tuple(r) for r in groups.get_group(photo)[["top", "left", "bottom", "right"]].to_numpy()]
        start = time.perf_counter()
        found = detector.detect(images[photo])
        seconds += time.perf_counter() - start
        matched = detect.match(truth, [d.box for d in found])
        hits += sum(m is not None for m in matched)
        unmatched += len(found) - sum(m is not None for m in matched)
    return hits, unmatched, seconds


def tune(
    dataset_path: str,
    model: Path,
    scales: tuple[float, ...] = (1.1, 1.17, 1.24, 1.31, 1.4),
    ups: tuple[float, ...] = (0.08, 0.12, 0.16, 0.2),
) -> None:
    from fer.evaluate import evaluate

    print(f"BlazeFace framing on {dataset_path}'s val part, model {model.name}, {os.cpu_count()} cores")
    print(f"{'scale':>6}{'up':>6}{'accuracy':>10}{'undetected':>12}")
    best = None
    for scale, up in itertools.product(scales, ups):
        detect.FRAME_SCALE, detect.FRAME_UP = scale, up
        result, _ = evaluate(dataset_path, model, split="val", detector="blazeface")
        print(f"{scale:>6.2f}{up:>6.2f}{result['accuracy']:>10.4f}{result['undetected']:>12}", flush=True)
        if best is None or result["accuracy"] > best[0]:
            best = (result["accuracy"], scale, up)
    print(f"best: scale {best[1]}, up {best[2]} (val accuracy {best[0]:.4f})")


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(DEFAULT))
    parser.add_argument("--photos", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    candidates = detect.NAMES + ("mtcnn@640",)
    parser.add_argument(
        "--detectors", default=",".join(c + suffix for c in candidates for suffix in ("", ":raw"))
    )
    parser.add_argument("--tune", action="store_true", help="choose BlazeFace's framing on the val part")
    parser.add_argument("--model", type=Path, default=None, help="the model --tune scores with")
    parser.add_argument("--scales", default="1.1,1.17,1.24,1.31,1.4", help="--tune: the FRAME_SCALE values")
    parser.add_argument("--ups", default="0.08,0.12,0.16,0.2", help="--tune: the FRAME_UP values")
    args = parser.parse_args()
    if args.tune:
        if args.model is None:
            parser.error("--tune needs --model")
        tune(args.dataset, args.model, _numbers(args.scales), _numbers(args.ups))
        return

    dataset = datasets.load(args.dataset)
    groups = dataset.faces.groupby("photo")
    photos = sorted(groups.groups)
    if args.photos and args.photos < len(photos):
        photos = sorted(np.random.default_rng(args.seed).choice(photos, args.photos, replace=False))
    images = {p: np.asarray(Image.open(dataset.photo_path(p)).convert("RGB")) for p in photos}
    faces = sum(len(groups.get_group(p)) for p in photos)
    print(f"{dataset.name}: {len(photos):,} photos, {faces:,} labelled faces, {os.cpu_count()} cores")
    print(f"{'detector':<12}{'recall@0.3':>12}{'unmatched/photo':>17}{'ms/photo':>10}", flush=True)
    for name in args.detectors.split(","):
        detector = make(name)
        detector.detect(images[photos[0]])  # warm-up: model construction, graph tracing
        hits, unmatched, seconds = score(detector, photos, images, groups)
        print(
            f"{name:<12}{hits / faces:>12.3f}{unmatched / len(photos):>17.2f}{1000 * seconds / len(photos):>10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
