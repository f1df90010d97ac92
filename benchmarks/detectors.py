"""Face detectors on expw-sample's photos against its labelled boxes, same run, same photos,
each with and without the false-face check (fer.facecheck) that fer.detect.make() puts on them.

For each detector: recall (labelled faces with a detection at IoU >= 0.3), detections per photo
that match no labelled face (some are real faces ExpW did not label), and milliseconds per photo
(single process, after one warm-up photo; the printout names the CPU cores it ran on). The check
runs on the raw detections of the same photo, so "raw" and "checked" differ only by the check;
its cost is printed as a ratio to the detector's own time.

    .venv/bin/python benchmarks/detectors.py [DATASET] [--photos N] [--seed S] [--every K] [--start S]

DATASET is an ExpW-format folder (default data/expw-sample).

Photos are visited in a seeded random order, and the figures so far are printed every K photos
(default 200), so a run stopped early (Ctrl-C) still reports on a random sample. `--photos`
stops after N photos; `--start S` skips the first S (to share the photos between processes). `--save FILE` writes each photo's raw detections and their face scores
(JSON lines), for trying other settings of the check without detecting again.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from fer import datasets, detect, facecheck

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "expw-sample"


class Tally:
    def __init__(self) -> None:
        self.hits, self.unmatched, self.seconds = 0, 0, 0.0

    def add(self, truth: list[tuple], found: list, seconds: float) -> None:
        matched = detect.match(truth, [d.box for d in found])
        self.hits += sum(m is not None for m in matched)
        self.unmatched += len(found) - sum(m is not None for m in matched)
        self.seconds += seconds


def report(name: str, raw: Tally, checked: Tally, photos: int, faces: int) -> None:
    for label, tally in (("raw", raw), ("checked", checked)):
        seconds = raw.seconds + (checked.seconds if tally is checked else 0.0)
        print(
            f"{name:<8}{label:<9}{tally.hits / faces:>11.3f}{tally.unmatched / photos:>17.2f}"
            f"{1000 * seconds / photos:>10.0f}"
        )
    print(f"{name:<8}check cost / detection: {checked.seconds / max(raw.seconds, 1e-9):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(DEFAULT))
    parser.add_argument("--photos", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--start", type=int, default=0, help="skip the first S photos of the order")
    parser.add_argument("--save", type=Path, default=None, help="JSON lines of every raw detection")
    args = parser.parse_args()
    save = args.save.open("w") if args.save else None

    dataset = datasets.load(args.dataset)
    groups = dataset.faces.groupby("photo")
    photos = list(np.random.default_rng(args.seed).permutation(sorted(groups.groups)))
    photos = photos[args.start :][: args.photos]
    print(f"{dataset.name}: {len(photos):,} photos, {os.cpu_count()} cores")
    detectors = {name: detect.make(name) for name in detect.NAMES}
    first = np.asarray(Image.open(dataset.photo_path(photos[0])).convert("RGB"))
    for checked in detectors.values():
        checked.detect(first)  # warm-up: model construction, graph tracing
    tallies = {name: (Tally(), Tally()) for name in detectors}
    done = faces = 0
    try:
        for photo in photos:
            rgb = np.asarray(Image.open(dataset.photo_path(photo)).convert("RGB"))
            truth = [tuple(r) for r in groups.get_group(photo)[["top", "left", "bottom", "right"]].to_numpy()]
            for name, checked in detectors.items():
                start = time.perf_counter()
                found = checked.detector.detect(rgb)
                middle = time.perf_counter()
                boxes = [d.box for d in found]
                scores = checked.scorer.score(rgb, boxes) if found else np.zeros(0)
                kept = [found[i] for i in facecheck.plausible(boxes, scores)]  # = checked.check(rgb, found)
                end = time.perf_counter()
                if save:
                    record = {"photo": str(photo), "detector": name, "truth": truth, "boxes": boxes}
                    save.write(json.dumps({**record, "face_scores": scores.tolist()}) + "\n")
                tallies[name][0].add(truth, found, middle - start)
                tallies[name][1].add(truth, kept, end - middle)
            done, faces = done + 1, faces + len(truth)
            if done % args.every == 0 and done < len(photos):
                table(tallies, done, faces, args.seed)
    except KeyboardInterrupt:
        print("stopped early")
    if done:
        table(tallies, done, faces, args.seed)


def table(tallies: dict, photos: int, faces: int, seed: int) -> None:
    print(f"{photos:,} photos, {faces:,} labelled faces (seed {seed})")
    print(f"{'detector':<8}{'':<9}{'recall@0.3':>11}{'unmatched/photo':>17}{'ms/photo':>10}")
    for name, (raw, checked) in tallies.items():
        report(name, raw, checked, photos, faces)
    print(flush=True)


if __name__ == "__main__":
    main()
