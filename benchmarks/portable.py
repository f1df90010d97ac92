"""Portable models against the Keras model they came from: label agreement, size and latency.

Each format `fer export` writes (ONNX and TFLite, float32, float16 and int8 weights) is written from
the same .keras model, then run on every FER2013 test face (3,589, PrivateTest): the share of faces
given the Keras model's label, accuracy against the true labels, the file's size, and per-face
latency (one face per call, as the Classify page and `fer predict` run them; the median over `--runs`
calls after warm-up) and per-face time in batches of 256, each as a ratio to Keras measured in the
same run, the models taking turns call by call so that the machine's load falls on all alike. Keras runs on TensorFlow; ONNX files on ONNX Runtime, TFLite files on LiteRT, all on
the CPU with every core.

    .venv/bin/python benchmarks/portable.py [--model models/default.keras]
        [--dataset ../shared/datasets/fer2013] [--runs 300] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fer import datasets, logs, modelfile, portable, preprocess, splits

PROJECT = Path(__file__).resolve().parents[1]
VARIANTS = [("onnx", None), ("onnx", "float16"), ("onnx", "int8"), ("tflite", None), ("tflite", "float16"),
            ("tflite", "int8")]  # fmt: skip


def test_faces(root: Path, metadata: dict) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's test faces, prepared as the model was trained, and their label numbers."""
    prepared = preprocess.prepare(datasets.load(root), preprocess.settings_of(metadata))
    split = splits.assign(prepared.faces, splits.SplitSettings())
    labels = list(metadata["labels"])
    chosen = (split == "test").to_numpy() & prepared.faces["label"].isin(labels).to_numpy()
    y = prepared.faces["label"][chosen].map({label: i for i, label in enumerate(labels)}).to_numpy()
    return prepared.images[chosen], y


def interleaved_ms(models: dict, faces: np.ndarray, runs: int, batch: int) -> dict[str, float]:
    """Median milliseconds per face of each model, classifying `batch` faces a call. The models take
    turns call by call, so a change in the machine's load falls on all of them alike."""
    for model in models.values():  # warm-up
        for i in range(3):
            modelfile.predict_probabilities(model, faces[i : i + batch], batch_size=batch)
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(runs):
        start = (i * batch) % (len(faces) - batch)
        chunk = faces[start : start + batch]
        for name, model in models.items():
            began = time.perf_counter()
            modelfile.predict_probabilities(model, chunk, batch_size=batch)
            times[name].append((time.perf_counter() - began) / len(chunk))
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PROJECT / "models" / "default.keras")
    parser.add_argument("--dataset", type=Path, default=PROJECT.parent / "shared" / "datasets" / "fer2013")
    parser.add_argument("--runs", type=int, default=300, help="single-face calls timed per format")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()

    logs.load_keras()
    keras_model, metadata = modelfile.load_model(args.model)
    faces, y = test_faces(args.dataset, metadata)
    print(f"{len(faces):,} test faces of {args.dataset}", file=sys.stderr, flush=True)
    models, sizes = {"keras": keras_model}, {"keras": args.model.stat().st_size}
    with tempfile.TemporaryDirectory() as folder:
        for fmt, quantize in VARIANTS:
            name = fmt + (f" {quantize}" if quantize else "")
            out = Path(folder) / f"{fmt}-{quantize or 'float32'}{portable.FORMATS[fmt]}"
            print(f"writing {name}", file=sys.stderr, flush=True)
            portable.export(args.model, out, fmt, quantize)
            models[name], sizes[name] = portable.load_model(out)[0], out.stat().st_size
    rows, reference = [], None
    for name, model in models.items():
        labels = modelfile.predict_probabilities(model, faces).argmax(axis=1)
        reference = labels if reference is None else reference
        rows.append(
            {
                "format": name,
                "bytes": sizes[name],
                "agreement": float((labels == reference).mean()),
                "disagree": int((labels != reference).sum()),
                "accuracy": float((labels == y).mean()),
            }
        )
        print(f"{name}: agreement {rows[-1]['agreement']:.2%}", file=sys.stderr, flush=True)
    print("timing", file=sys.stderr, flush=True)
    face_ms = interleaved_ms(models, faces, args.runs, 1)
    batch_ms = interleaved_ms(models, faces, max(args.runs // 30, 5), 256)
    for row in rows:
        row["face_ms"], row["batch_ms_per_face"] = face_ms[row["format"]], batch_ms[row["format"]]
    base = rows[0]

    print(
        f"{len(faces):,} FER2013 test faces, {os.cpu_count()} CPU cores; ratios against Keras in this run\n"
    )
    print("| format | size | size ratio | same label as Keras | accuracy | ms per face (1 a call) | ratio | ms per face (batches of 256) | ratio |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['format']} | {row['bytes'] / 2**20:.1f} MiB | {row['bytes'] / base['bytes']:.2f} | "
            f"{row['agreement']:.2%} ({row['disagree']} differ) | {row['accuracy']:.4f} | {row['face_ms']:.2f} | "
            f"{row['face_ms'] / base['face_ms']:.2f} | {row['batch_ms_per_face']:.3f} | "
            f"{row['batch_ms_per_face'] / base['batch_ms_per_face']:.2f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"faces": len(faces), "cores": os.cpu_count(), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
