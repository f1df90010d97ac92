"""Choosing, on val faces only, how much a small in-the-wild set should weigh in a model's
calibration against a large one (`fer calibrate --weights`).

Fitting one temperature on the pooled val faces of FER2013 (3,589) and expw-sample (283) lets
FER2013 decide it. For each share of the fit given to the second dataset, this scores the
temperature out of sample: the val faces of each dataset are split in 5 folds (seeded, repeated
--repeats times), the temperature is fitted on 4 folds with those shares and applied to the 5th,
and each dataset's calibration error (15 equal-width bins) is taken over its faces so scored. It
prints, per share, the temperature fitted on all the val faces and both datasets' held-out errors,
and the share that keeps the larger of the two errors, each as a share of its target (--targets),
smallest; and the share that keeps the larger raw error smallest. Test faces are never read.

    .venv/bin/python benchmarks/calibration_weights.py [MODEL] [--datasets A B] [--targets 0.05,0.10]

MODEL defaults to the bundled model; --datasets to data/fer2013 data/expw-sample. Each fit takes the
temperature on a fine grid of log T (0.25 to 10 in steps of 0.2%) rather than fer.calibration's search, so a few
thousand fits take seconds; the differences are far below the figures' noise.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fer import calibration
from fer.evaluate import evaluate
from fer.paths import BUNDLED_MODEL

ROOT = Path(__file__).resolve().parents[1]
DATASETS = (str(ROOT / "data" / "fer2013"), str(ROOT / "data" / "expw-sample"))
SHARES = np.round(np.arange(0.05, 0.8001, 0.025), 3)
FOLDS = 5


def val_probabilities(model: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The network's own probabilities of the dataset's val faces, and their labels."""
    result, table = evaluate(dataset, model, split="val", calibrated=False)
    labels = result["labels"]
    probabilities = table[[f"p_{label}" for label in labels]].to_numpy(dtype=np.float64)
    y = table["label"].map({label: i for i, label in enumerate(labels)}).to_numpy(dtype=int)
    return probabilities, y


def per_face_losses(log_p: np.ndarray, y: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """(temperatures, faces): each face's negative log-likelihood at each temperature."""
    rows = []
    for t in temperatures:
        logits = log_p / t
        logits -= logits.max(axis=1, keepdims=True)
        rows.append(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(y)), y])
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--datasets", nargs=2, default=DATASETS, metavar="DATASET")
    parser.add_argument("--targets", default="0.05,0.10", help="each dataset's target calibration error")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    targets = np.array([float(t) for t in args.targets.split(",")])

    start = time.perf_counter()
    parts = [val_probabilities(args.model, d) for d in args.datasets]
    print(
        f"scored {' and '.join(f'{len(y):,}' for _, y in parts)} val faces in {time.perf_counter() - start:.0f} s"
    )
    probabilities = np.concatenate([p for p, _ in parts])
    y = np.concatenate([labels for _, labels in parts])
    source = np.concatenate([np.full(len(labels), k) for k, (_, labels) in enumerate(parts)])
    temperatures = np.exp(np.arange(np.log(0.25), np.log(10.0), 0.002))
    losses = per_face_losses(np.log(np.clip(probabilities, 1e-12, None)), y, temperatures)

    def fitted(rows: np.ndarray, share: float) -> float:
        sizes = [int((source[rows] == k).sum()) for k in (0, 1)]
        weights = calibration.face_weights(sizes, [1 - share, share])
        order = np.argsort(source[rows], kind="stable")  # face_weights wants each dataset's faces in a row
        return float(temperatures[np.argmin(losses[:, rows[order]] @ weights)])

    rng = np.random.default_rng(args.seed)
    errors = np.zeros((len(SHARES), args.repeats, 2))
    for repeat in range(args.repeats):
        folds = np.empty(len(y), dtype=int)
        for k in (0, 1):
            rows = np.flatnonzero(source == k)
            rng.shuffle(rows)
            folds[rows] = np.arange(len(rows)) % FOLDS
        for i, share in enumerate(SHARES):
            scored = np.zeros_like(probabilities)
            for fold in range(FOLDS):
                held = folds == fold
                t = fitted(np.flatnonzero(~held), share)
                scored[held] = calibration.scale(probabilities[held], t)
            errors[i, repeat] = [calibration.ece(scored[source == k], y[source == k]) for k in (0, 1)]
    mean = errors.mean(axis=1)
    names = [Path(d).name for d in args.datasets]
    print(
        f"share of {names[1]} | temperature (all val faces) | held-out calibration error {names[0]} | {names[1]} "
        f"(mean of {args.repeats} x {FOLDS}-fold)"
    )
    everything = np.arange(len(y))
    for i, share in enumerate(SHARES):
        print(f"{share:.3f} | {fitted(everything, share):.3f} | {mean[i, 0]:.4f} | {mean[i, 1]:.4f}")
    by_target = SHARES[np.argmin((mean / targets).max(axis=1))]
    by_error = SHARES[np.argmin(mean.max(axis=1))]
    print(f"smallest larger error as a share of its target ({args.targets}): share {by_target:.3f}")
    print(f"smallest larger error: share {by_error:.3f}")
    print(f"faces each face-count share would give {names[1]}: {len(parts[1][1]) / len(y):.3f}")
    print(f"took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
