"""Face detectors on expw-sample's photos against its labelled boxes, same run, same photos.

For each detector: recall (labelled faces with a detection at IoU >= 0.3), detections per photo
that match no labelled face (some are real faces ExpW did not label), and milliseconds per photo
(single process, after one warm-up photo; the printout names the CPU cores it ran on).

    .venv/bin/python benchmarks/detectors.py [DATASET] [--photos N] [--seed S]

DATASET is an ExpW-format folder (default data/expw-sample).

`--photos` scores a seeded random sample of photos instead of all of them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from fer import datasets, detect

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "expw-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(DEFAULT))
    parser.add_argument("--photos", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = datasets.load(args.dataset)
    groups = dataset.faces.groupby("photo")
    photos = sorted(groups.groups)
    if args.photos and args.photos < len(photos):
        photos = sorted(np.random.default_rng(args.seed).choice(photos, args.photos, replace=False))
    images = {p: np.asarray(Image.open(dataset.photo_path(p)).convert("RGB")) for p in photos}
    faces = sum(len(groups.get_group(p)) for p in photos)
    print(f"{dataset.name}: {len(photos):,} photos, {faces:,} labelled faces, {os.cpu_count()} cores")
    print(f"{'detector':<10}{'recall@0.3':>12}{'unmatched/photo':>17}{'ms/photo':>10}")
    for name in detect.NAMES:
        detector = detect.make(name)
        detector.detect(images[photos[0]])  # warm-up: model construction, graph tracing
        hits, unmatched, seconds = 0, 0, 0.0
        for photo in photos:
            truth = [tuple(r) for r in groups.get_group(photo)[["top", "left", "bottom", "right"]].to_numpy()]
            start = time.perf_counter()
            found = detector.detect(images[photo])
            seconds += time.perf_counter() - start
            matched = detect.match(truth, [d.box for d in found])
            hits += sum(m is not None for m in matched)
            unmatched += len(found) - sum(m is not None for m in matched)
        print(
            f"{name:<10}{hits / faces:>12.3f}{unmatched / len(photos):>17.2f}{1000 * seconds / len(photos):>10.0f}"
        )


if __name__ == "__main__":
    main()
