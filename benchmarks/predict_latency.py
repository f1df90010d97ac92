"""Prediction latency of a photo (detect + classify) against the `fer` package, same photos, same run.

60 different expw-sample photos (a seeded sample), each resized to 640 pixels on its longer side, go
through `fer.predict.Predictor.predict` (one process per detector) and, where `--peer-python` names a
Python that has the `fer` package from PyPI installed (requirements-peer.txt), through that package's
`FER().detect_emotions` in its own process. Each process is timed per photo after 3 warm-up photos;
the printout gives the median and 90th percentile milliseconds per photo, the recall of the labelled
faces (a detection at IoU >= 0.3 with the labelled box, scaled with the photo) and the process's peak
resident memory.

    .venv/bin/python benchmarks/predict_latency.py --model models/default.keras \\
        [--dataset data/expw-sample] [--photos 60] [--detectors blazeface,mtcnn,blazeface:keras+opencv] \\
        [--peer-python /tmp/ferpeer/bin/python]

The peer's Python is set up once, outside the project's venv (the package is also called `fer`):

    python3.11 -m venv /tmp/ferpeer
    /tmp/ferpeer/bin/pip install --no-deps -r requirements-peer.txt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "data" / "expw-sample"
SIDE = 640
WARMUP = 3

# Run by the peer's Python in isolated mode (-I: neither this folder nor PYTHONPATH on its path, so
# `fer` is the PyPI package). Prints one JSON line: per-photo seconds, (top, left, bottom, right)
# boxes, peak resident memory.
PEER = """
import json, resource, sys, time
import cv2
from fer.fer import FER
paths = json.loads(sys.argv[1])
detector = FER()
for path in paths[:WARMUP]:
    detector.detect_emotions(cv2.imread(path))
seconds, boxes = [], []
for path in paths:
    image = cv2.imread(path)
    start = time.perf_counter()
    found = detector.detect_emotions(image)
    seconds.append(time.perf_counter() - start)
    boxes.append([[int(y), int(x), int(y + h), int(x + w)] for x, y, w, h in (f["box"] for f in found)])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "boxes": boxes, "peak_mb": peak}))
""".replace("WARMUP", str(WARMUP))


# A contender's options after its detector's name ("blazeface:keras+opencv"), to measure the product
# against how it ran before: "keras" runs the network on Keras (TensorFlow loaded) rather than as
# its ONNX twin; "opencv" runs BlazeFace on OpenCV's DNN module rather than LiteRT; "threads2" gives
# BlazeFace's LiteRT two threads; "steady" reads each face from its box and six moved copies
# (Classify's "Steadier answers"); "once" reads each face once, not with its mirror image as well
# (where the model file asks for both).
OPTIONS = ("keras", "opencv", "threads2", "steady", "once")


def ours(model: str, contender: str, paths: list[str]) -> None:
    """The worker: this project's Predictor on the photos, one JSON line like the peer's."""
    import resource
    import time

    from PIL import Image

    from fer import detect
    from fer.predict import Predictor

    detector, _, options = contender.partition(":")
    options = set(filter(None, options.split("+")))
    if options - set(OPTIONS):
        sys.exit(f"unknown options {sorted(options - set(OPTIONS))}; known: {', '.join(OPTIONS)}")
    if "opencv" in options:
        detect._tflite_network = lambda path, threads=1: detect._OpenCvNetwork(path)
    if "threads2" in options:
        detect.BLAZEFACE_THREADS = 2
    predictor = Predictor(model, detector=detector, onnx="keras" not in options)
    flip = False if "once" in options else None  # None: as the model file says
    photos = [Image.open(path).convert("RGB") for path in paths]
    for photo in photos[:WARMUP]:
        predictor.predict(photo, steady="steady" in options, flip=flip)
    seconds, boxes = [], []
    for photo in photos:
        start = time.perf_counter()
        result = predictor.predict(photo, steady="steady" in options, flip=flip)
        seconds.append(time.perf_counter() - start)
        boxes.append([list(face.box) for face in result.faces])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "boxes": boxes, "peak_mb": peak}))


TWIN = """
import json, sys
from pathlib import Path
from fer import portable
twin = portable.onnx_twin(Path(sys.argv[1]))
print(json.dumps({"twin": str(twin) if twin else "none (the network runs on Keras)"}))
"""


def run(command: list[str], **kwargs) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default.keras"))
    parser.add_argument("--dataset", default=str(DATASET))
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detectors", default="blazeface,mtcnn")
    parser.add_argument("--peer-python", default=None, help="a Python with the `fer` package installed")
    parser.add_argument("--worker", nargs=2, metavar=("DETECTOR", "PATHS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        ours(args.model, args.worker[0], json.loads(args.worker[1]))
        return

    from PIL import Image

    from fer import datasets, detect

    dataset = datasets.load(args.dataset)
    groups = dataset.faces.groupby("photo")
    names = sorted(np.random.default_rng(args.seed).choice(sorted(groups.groups), args.photos, replace=False))
    with tempfile.TemporaryDirectory() as folder:
        paths, truth = [], []
        for number, name in enumerate(names):
            image = Image.open(dataset.photo_path(name)).convert("RGB")
            scale = SIDE / max(image.size)
            image = image.resize(
                (round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR
            )
            paths.append(str(Path(folder) / f"{number:03d}.jpg"))
            image.save(paths[-1], quality=90)
            boxes = groups.get_group(name)[["top", "left", "bottom", "right"]].to_numpy() * scale
            truth.append([tuple(box) for box in boxes])
        labelled = sum(len(t) for t in truth)
        print(
            f"{len(paths)} expw-sample photos at {SIDE} px on the longer side ({labelled} labelled faces), "
            f"{WARMUP} warm-up photos, one process each, {os.cpu_count()} cores"
        )
        # A .keras model classifies as its ONNX twin, written the first time it is used (loading
        # TensorFlow for it): written here, beforehand, so that each process times the product as every
        # later use of the model runs it.
        twin = run([sys.executable, "-c", TWIN, args.model])
        print(f"the model's ONNX twin: {twin['twin']}")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        print(f"{'':<40}{'median ms':>10}{'p90 ms':>9}{'recall@0.3':>12}{'peak MB':>9}", flush=True)
        contenders = []
        if args.peer_python:
            contenders.append(
                (
                    "fer package, FER()",
                    [args.peer_python, "-I", "-c", PEER, json.dumps(paths)],
                    dict(env=env, cwd=folder),
                )
            )
        for name in args.detectors.split(","):
            command = [sys.executable, __file__, "--model", args.model, "--worker", name, json.dumps(paths)]
            contenders.append((f"fer.predict, {name}", command, {}))
        for label, command, kwargs in contenders:
            out = run(command, **kwargs)
            hits = sum(
                sum(m is not None for m in detect.match(t, [tuple(b) for b in found]))
                for t, found in zip(truth, out["boxes"])
            )
            ms = 1000 * np.asarray(out["seconds"])
            print(
                f"{label:<40}{np.median(ms):>10.0f}{np.percentile(ms, 90):>9.0f}{hits / labelled:>12.3f}"
                f"{out['peak_mb']:>9.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
