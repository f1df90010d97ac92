"""Choosing, on val faces only, how much a small in-the-wild set should weigh in a model's
calibration against a large one (`fer calibrate --weights`).

Fitting one temperature on the pooled val faces of FER2013 (3,589) and expw-sample (283) lets
FER2013 decide it. For each share of the fit given to the second dataset, this scores the
temperature out of sample: the val faces of each dataset are split in 5 folds (seeded, repeated
--repeats times), the temperature is fitted on 4 folds with those shares and applied to the 5th,
and each dataset's calibration error (15 equal-width bins) is taken over its faces so scored. It
prints, per share, the temperature fitted on all the val faces and both datasets' held-out errors,
and the share that keeps the larger of the two errors, each as a share of its target (--targets),
smallest; and the share that keeps the larger raw error smallest. Last, the noise floor: the
calibration error a perfectly honest model would show on as many faces (each face right with
the probability it is given, drawn 300 times), at the chosen share's temperature. Test faces are
never read.

    .venv/bin/python benchmarks/calibration_weights.py [MODEL] [--datasets A B] [--targets 0.05,0.10]
    .venv/bin/python benchmarks/calibration_weights.py [MODEL] [--datasets A B] --noise test

`--vector` also measures, on the same folds and for a few shares, vector scaling: softmax(a log p + b)
with a bias b for each label (a richer fit, which can change labels: so each dataset's accuracy
too).

`--noise SPLIT` chooses nothing: for the model as calibrated in its file, it prints each dataset's
calibration error on SPLIT, how much resampling those faces moves it (standard deviation over 500
bootstrap draws) and the honest model's floor on as many faces.

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


def probabilities_of(
    model: Path, dataset: str, split: str = "val", calibrated: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities of the dataset's faces of `split` (the network's own unless `calibrated`),
    and their labels."""
    result, table = evaluate(dataset, model, split=split, calibrated=calibrated)
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


def honest_error(probabilities: np.ndarray, rng: np.random.Generator, draws: int = 300) -> np.ndarray:
    """The calibration error of `draws` made-up label sets in which each face is right with exactly
    its top probability: what sampling alone adds on this many faces."""
    top = probabilities.max(axis=1)
    others = probabilities.shape[1] - 1
    # The answer first, the rest spread over the other labels (never above the answer's share).
    stand_in = np.column_stack([top, *[(1 - top) / others] * others])
    errors = []
    for _ in range(draws):
        right = rng.random(len(top)) < top
        errors.append(calibration.ece(stand_in, np.where(right, 0, 1)))
    return np.array(errors)


VECTOR_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5)


def fit_vector(log_p: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(a, b_1..b_K-1) minimising the weighted NLL of softmax(a log p + b), b_K = 0 (SciPy's L-BFGS)."""
    from scipy.optimize import minimize

    count = log_p.shape[1]
    chosen = np.eye(count)[y]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = theta[0] * log_p + np.append(theta[1:], 0.0)
        logits -= logits.max(axis=1, keepdims=True)
        q = np.exp(logits)
        q /= q.sum(axis=1, keepdims=True)
        nll = -np.log(np.clip(q[np.arange(len(y)), y], 1e-300, None))
        gap = (q - chosen) * weights[:, None]
        total = weights.sum()
        gradient = np.append((gap * log_p).sum(), gap.sum(axis=0)[:-1]) / total
        return float(weights @ nll / total), gradient

    return minimize(loss, np.append(0.4, np.zeros(count - 1)), jac=True, method="L-BFGS-B").x


def vector_scaled(log_p: np.ndarray, theta: np.ndarray) -> np.ndarray:
    logits = theta[0] * log_p + np.append(theta[1:], 0.0)
    logits -= logits.max(axis=1, keepdims=True)
    q = np.exp(logits)
    return q / q.sum(axis=1, keepdims=True)


def noise(args: argparse.Namespace, rng: np.random.Generator) -> None:
    for dataset in args.datasets:
        probabilities, y = probabilities_of(args.model, dataset, args.noise, calibrated=True)
        drawn = [rng.integers(0, len(y), len(y)) for _ in range(500)]
        spread = np.std([calibration.ece(probabilities[rows], y[rows]) for rows in drawn])
        floor = honest_error(probabilities, rng)
        print(
            f"{Path(dataset).name} {args.noise}, {len(y):,} faces: calibration error "
            f"{calibration.ece(probabilities, y):.4f}, bootstrap standard deviation {spread:.4f}; a perfectly "
            f"honest model: {floor.mean():.4f} on average, {np.percentile(floor, 95):.4f} at the 95th percentile"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--datasets", nargs=2, default=DATASETS, metavar="DATASET")
    parser.add_argument("--targets", default="0.05,0.10", help="each dataset's target calibration error")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vector", action="store_true", help="also measure vector scaling")
    parser.add_argument("--noise", choices=("val", "test"), help="only measure the noise on this split")
    args = parser.parse_args()
    targets = np.array([float(t) for t in args.targets.split(",")])

    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    if args.noise:
        noise(args, rng)
        return
    parts = [probabilities_of(args.model, d) for d in args.datasets]
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

    log_p = np.log(np.clip(probabilities, 1e-12, None))
    vector = np.zeros((len(VECTOR_SHARES), args.repeats, 4))  # errors and accuracies of both datasets
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
        for i, share in enumerate(VECTOR_SHARES if args.vector else ()):
            scored = np.zeros_like(probabilities)
            for fold in range(FOLDS):
                held = folds == fold
                rows = np.flatnonzero(~held)
                rows = rows[np.argsort(source[rows], kind="stable")]
                sizes = [int((source[rows] == k).sum()) for k in (0, 1)]
                weights = calibration.face_weights(sizes, [1 - share, share])
                scored[held] = vector_scaled(log_p[held], fit_vector(log_p[rows], y[rows], weights))
            vector[i, repeat] = [calibration.ece(scored[source == k], y[source == k]) for k in (0, 1)] + [
                float((scored[source == k].argmax(axis=1) == y[source == k]).mean()) for k in (0, 1)
            ]
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
    chosen = fitted(everything, by_target)
    for name, (p, _) in zip(names, parts):
        floor = honest_error(calibration.scale(p, chosen), rng)
        print(
            f"a perfectly honest model on {len(p):,} faces like {name}'s (temperature {chosen:.3f}): calibration "
            f"error {floor.mean():.4f} on average, {np.percentile(floor, 95):.4f} at the 95th percentile"
        )
    if args.vector:
        print(
            f"vector scaling: share of {names[1]} | held-out calibration error {names[0]} | {names[1]} | accuracy"
        )
        for share, row in zip(VECTOR_SHARES, vector.mean(axis=1)):
            print(f"{share:.3f} | {row[0]:.4f} | {row[1]:.4f} | {row[2]:.4f} | {row[3]:.4f}")
        print(
            f"accuracy without it: {names[0]} {(parts[0][0].argmax(axis=1) == parts[0][1]).mean():.4f}, "
            f"{names[1]} {(parts[1][0].argmax(axis=1) == parts[1][1]).mean():.4f}"
        )
    print(f"took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
