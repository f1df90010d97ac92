"""How a detector frames a face against the boxes the model was trained on.

The model learns from faces cropped at expw-sample's labelled boxes and from FER2013's 48 px photos;
on Classify it sees faces cropped at the detector's boxes. A detector that frames faces differently
(moved, larger, another shape) shows the model faces unlike the ones it learned from. This measures,
in the same run:

- ExpW: for each labelled face that a detection matches (IoU >= 0.3), the detection's centre offset
  from the labelled box's centre (share of the labelled box's width and height; right and down
  positive), its size (square root of the area ratio) and its aspect (width / height) against the
  labelled box's;
- FER2013: each 48 px test photo set at the centre of a gray canvas three times its side (scaled to
  288 px), so a detector can find the face in it; the detection against the photo's own square,
  in the same terms. A FER2013 photo is its face's training crop, so this says how FER2013's crops
  frame a face compared with the detector's boxes.

    .venv/bin/python benchmarks/framing.py [--expw DIR] [--fer2013 DIR] [--detector NAME]
        [--photos N] [--faces N] [--seed S]

Medians and the middle half (25th-75th percentiles) are printed for each measure.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from fer import datasets, detect

ROOT = Path(__file__).resolve().parents[1]


def framing(truth: tuple, found: tuple) -> tuple[float, float, float, float]:
    """(dx, dy, size, aspect ratio) of the box `found` against `truth`, both (top, left, bottom, right)."""
    top, left, bottom, right = truth
    t2, l2, b2, r2 = found
    width, height = right - left, bottom - top
    dx = ((l2 + r2) / 2 - (left + right) / 2) / width
    dy = ((t2 + b2) / 2 - (top + bottom) / 2) / height
    size = np.sqrt(((r2 - l2) * (b2 - t2)) / (width * height))
    aspect = ((r2 - l2) / (b2 - t2)) / (width / height)
    return float(dx), float(dy), float(size), float(aspect)


def summary(name: str, rows: list[tuple]) -> None:
    if not rows:
        print(f"{name}: no face matched")
        return
    values = np.array(rows)
    print(f"{name}: {len(rows)} faces")
    for column, label in enumerate(("centre right of it (share of width)", "centre below it (share of height)",
                                    "size (side ratio)", "aspect (width/height ratio)")):  # fmt: skip
        q1, median, q3 = np.percentile(values[:, column], [25, 50, 75])
        form = "+.3f" if column < 2 else ".3f"
        print(f"  {label:38s} median {median:{form}}   middle half {q1:{form}} to {q3:{form}}")


def expw(folder: Path, detector, photos: int, seed: int) -> list[tuple]:
    dataset = datasets.load(str(folder))
    table = dataset.faces
    groups = table.groupby("photo")
    names = sorted(groups.groups)
    chosen = np.random.default_rng(seed).permutation(len(names))[:photos]
    rows = []
    for k, i in enumerate(chosen, 1):
        photo = names[i]
        truth = [tuple(r) for r in groups.get_group(photo)[["top", "left", "bottom", "right"]].to_numpy()]
        with Image.open(dataset.photo_path(photo)) as image:
            rgb = np.asarray(image.convert("RGB"))
        boxes = [d.box for d in detector.detect(rgb)]
        for t in truth:
            scores = [detect.iou(t, b) for b in boxes]
            if scores and max(scores) >= 0.3:
                rows.append(framing(t, boxes[int(np.argmax(scores))]))
        if k % 100 == 0:
            print(f"  {k} photos", flush=True)
    return rows


def fer2013(folder: Path, detector, faces: int, seed: int) -> tuple[list[tuple], int]:
    files = sorted((folder / "test").glob("*/*.jpg"))
    chosen = np.random.default_rng(seed).permutation(len(files))[:faces]
    rows, tried = [], 0
    for i in chosen:
        with Image.open(files[i]) as image:
            face = image.convert("L").resize((96, 96), Image.BILINEAR)
        canvas = Image.new("L", (288, 288), int(np.asarray(face).mean()))
        canvas.paste(face, (96, 96))
        tried += 1
        boxes = [d.box for d in detector.detect(np.asarray(canvas.convert("RGB")))]
        own = (96.0, 96.0, 192.0, 192.0)
        scores = [detect.iou(own, b) for b in boxes]
        if scores and max(scores) >= 0.3:
            rows.append(framing(own, boxes[int(np.argmax(scores))]))
    return rows, tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--expw", type=Path, default=ROOT / "data" / "expw-sample")
    parser.add_argument("--fer2013", type=Path, default=ROOT / "data" / "fer2013")
    parser.add_argument("--detector", default="mtcnn", choices=detect.NAMES)
    parser.add_argument("--photos", type=int, default=300, help="expw-sample photos (seeded random)")
    parser.add_argument("--faces", type=int, default=300, help="FER2013 test photos (seeded random)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    detector = detect.make(args.detector)
    print(f"detector {args.detector}, {os.cpu_count()} CPU cores")
    summary(f"expw-sample: the detector's box against the labelled box ({args.photos} photos)",
            expw(args.expw, detector, args.photos, args.seed))  # fmt: skip
    rows, tried = fer2013(args.fer2013, detector, args.faces, args.seed)
    summary(
        f"FER2013 test: the detector's box against the photo's own square ({len(rows)} of {tried} found)",
        rows,
    )


if __name__ == "__main__":
    main()
