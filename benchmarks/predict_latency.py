"""Prediction latency: one 640x480 photo (detect + classify) and one pre-cropped face, single process.

Median milliseconds over `--runs` calls after warm-up, and the process's peak resident memory.
The photo (`--photo`, default data/expw-sample/image/afraid_man_208.jpg, the one the published figures
used) is resized to 640x480; the face is a fixed crop of it in grayscale.

    .venv/bin/python benchmarks/predict_latency.py --model MODEL.keras [--runs 50] [--detector mtcnn]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from PIL import Image

from fer.predict import Predictor

PHOTO = Path(__file__).resolve().parents[1] / "data" / "expw-sample" / "image" / "afraid_man_208.jpg"


def median_ms(function, runs: int) -> float:
    for _ in range(3):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--detector", default="mtcnn")
    parser.add_argument("--photo", type=Path, default=PHOTO)
    args = parser.parse_args()

    predictor = Predictor(args.model, detector=args.detector)
    buffer = io.BytesIO()
    Image.open(args.photo).convert("RGB").resize((640, 480)).save(buffer, "JPEG", quality=90)
    photo = buffer.getvalue()
    face = io.BytesIO()
    Image.open(args.photo).convert("L").crop((28, 38, 142, 152)).save(face, "PNG")
    face = face.getvalue()

    found = len(predictor.predict(photo).faces)
    photo_ms = median_ms(lambda: predictor.predict(photo), args.runs)
    face_ms = median_ms(lambda: predictor.predict(face, whole=True), args.runs)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"model {args.model.name}, detector {args.detector}, {args.runs} runs after warm-up, {os.cpu_count()} cores"
    )
    print(f"640x480 photo, detect + classify ({found} face): median {photo_ms:.0f} ms")
    print(f"pre-cropped face, classify only: median {face_ms:.1f} ms")
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
