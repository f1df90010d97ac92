"""Preprocessing speed: the project's pipeline against the report's per-face Pillow loop, same run.

Every expw-sample face is cropped, resized to 224x224 and made grayscale:
- baseline: for each face, open the photo, crop the box, resize, convert to grayscale, save a PNG
  (the report's way, one face at a time);
- fer cold: `fer.preprocess.prepare` into an empty cache (every core, one decode per photo,
  grayscale JPEG decoding), then the same PNGs written by `fer.export.export`;
- fer warm: the same `prepare` again, answered from the cache and read in full.

The photos are read once before timing so that every variant finds them in the OS page cache.

    .venv/bin/python benchmarks/preprocess.py [DATASET] [--size 224]

DATASET defaults to data/expw-sample.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fer import datasets, export, preprocess

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "expw-sample"


def baseline(dataset: datasets.Dataset, size: int, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    for row in dataset.faces.itertuples():
        try:
            image = Image.open(dataset.photo_path(row.photo)).convert("RGB")
            face = image.crop((row.left, row.top, row.right, row.bottom)).resize((size, size))
            face.convert("L").save(out / f"{Path(row.photo).stem}_{row.face}.png", compress_level=1)
            done += 1
        except OSError:
            pass
    return done


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(DEFAULT))
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    dataset = datasets.load(args.dataset)
    for photo in dataset.faces["photo"].unique():
        dataset.photo_path(photo).read_bytes()
    faces = len(dataset.faces)
    settings = preprocess.PrepSettings(size=args.size)
    print(f"{dataset.name}: {faces:,} faces, {args.size}x{args.size} grayscale, {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_base, made = timed(baseline, dataset, args.size, tmp / "baseline")
        t_cold, prepared = timed(preprocess.prepare, dataset, settings, cache_dir=tmp / "cache")
        t_export, _ = timed(export.export, prepared, tmp / "export")
        t_cold1, _ = timed(lambda: preprocess.prepare(dataset, settings, cache_dir=tmp / "cache1", workers=1))

        def warm():
            again = preprocess.prepare(dataset, settings, cache_dir=tmp / "cache")
            assert again.from_cache
            return np.array(again.images)  # read every pixel, not just map the file

        t_warm, _ = timed(warm)

    rows = [
        ("baseline: per-face Pillow loop + PNG", t_base, made),
        ("fer cold, 1 process (cache)", t_cold1, faces),
        ("fer cold, all cores (cache)", t_cold, faces),
        ("fer cold, all cores + PNG export", t_cold + t_export, faces),
        ("fer warm (cache read in full)", t_warm, faces),
    ]
    print(f"{'variant':<40}{'seconds':>9}{'faces/s':>10}{'vs baseline':>13}")
    for name, seconds, count in rows:
        print(f"{name:<40}{seconds:>9.2f}{count / seconds:>10,.0f}{t_base / seconds:>12.1f}x")


if __name__ == "__main__":
    main()
