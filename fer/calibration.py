"""Honest probabilities: temperature scaling fitted on held-out faces, and how far off they were.

A network trained with cross-entropy says "85%" on faces it gets right 70% of the time; people
read that number as a promise. Temperature scaling divides the model's log-probabilities by one
number T (> 1 softens them, < 1 sharpens them) chosen to make the validation faces' answers as
likely as possible. Dividing by a positive number keeps the order of the classes, so the label
and the accuracy never change; only the percentages do.

Fitted on the val faces of several datasets, each face counts once by default, so a large set
(FER2013's 3,589 faces) outweighs a small in-the-wild one; `weights` give each dataset its own share
of the fit instead (`shares`), which moves T toward the sets given more.

The fitted T lives in the model file's metadata (`"calibration"`), and `apply` is the one place
it is used: every probability the project shows or writes passes through it, and a model without
the entry is left exactly as it is. Pure NumPy, so pages and the report can import it freely.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 15  # equal-width confidence bins for the calibration error and the reliability diagram
TEMPERATURE_RANGE = (0.05, 20.0)  # the search's bounds; a fit at either edge means the data says little
# Held-out faces a run needs to fit its own temperature: on fewer, a fitted temperature leaves the
# percentages further off than none (benchmarks/calibration_faces.py, docs/classifying.md).
MIN_FIT_FACES = 50
_TINY = 1e-12  # a probability of 0 has no logarithm; this stands for it


def _log(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _TINY, None))


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a softmax model would give with its logits divided by T."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number above 0, got {temperature!r}")
    logits = _log(probabilities) / float(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    scaled /= scaled.sum(axis=-1, keepdims=True)
    kind = np.asarray(probabilities).dtype
    return scaled.astype(kind if kind.kind == "f" else np.float32)  # the caller's float type


def nll(
    probabilities: np.ndarray, y: np.ndarray, temperature: float = 1.0, weights: np.ndarray | None = None
) -> float:
    """Mean negative log-likelihood of the true labels `y` under the probabilities scaled by T,
    each face weighed by `weights` (None: all alike)."""
    logits = _log(probabilities) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits).sum(axis=-1))
    losses = log_norm - logits[np.arange(len(y)), np.asarray(y, dtype=int)]
    return float(np.mean(losses) if weights is None else np.sum(weights * losses) / np.sum(weights))


def _checked_weights(weights, count: int) -> np.ndarray | None:
    if weights is None:
        return None
    weights = np.asarray(weights, dtype=np.float64)
    if (
        weights.shape != (count,)
        or not np.all(np.isfinite(weights))
        or weights.min() < 0
        or weights.sum() <= 0
    ):
        raise ValueError(
            f"weights must be one finite number of at least 0 per face ({count}), not all 0; got "
            f"{weights.shape[0] if weights.ndim == 1 else weights.shape} of them"
        )
    return weights


def fit_temperature(probabilities: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The T in TEMPERATURE_RANGE that minimises the NLL of `y`, each face weighed by `weights`
    (None: all alike); a golden-section search on log T (the NLL is convex in 1/T, so it has one
    minimum)."""
    probabilities, y = np.asarray(probabilities), np.asarray(y, dtype=int)
    if probabilities.ndim != 2 or len(probabilities) != len(y) or not len(y):
        raise ValueError(
            f"fitting a temperature needs one row of probabilities per label, got {probabilities.shape} "
            f"probabilities for {len(y)} labels"
        )
    weights = _checked_weights(weights, len(y))
    low, high = (math.log(b) for b in TEMPERATURE_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(probabilities, y, math.exp(a), weights), nll(probabilities, y, math.exp(b), weights)
    for _ in range(80):  # the bracket shrinks by 0.618 a step: 80 steps reach float precision
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(probabilities, y, math.exp(a), weights)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(probabilities, y, math.exp(b), weights)
    return float(math.exp((low + high) / 2))


def shares(sizes: list[int], how: str | list[float] | None = None) -> list[float]:
    """Each dataset's share of a fit (summing to 1) from its number of faces `sizes`: None or
    "faces": in proportion to its faces (each face counts once); "equal": the same for each; a list
    of numbers (one per dataset, at least 0, not all 0): in proportion to them."""
    if not sizes or min(sizes) < 1:
        raise ValueError(f"every dataset needs at least one face to fit on, got {sizes}")
    if how is None or how == "faces":
        raw = [float(n) for n in sizes]
    elif how == "equal":
        raw = [1.0] * len(sizes)
    elif isinstance(how, str):
        raise ValueError(f"weights must be 'faces', 'equal' or one number per dataset, got {how!r}")
    else:
        raw = list(how)
        if len(raw) != len(sizes):
            raise ValueError(f"give one weight per dataset: {len(sizes)} datasets, {len(raw)} weights")
        if (
            not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                for w in raw
            )
            or not sum(raw) > 0
        ):
            raise ValueError(f"weights must be numbers of at least 0, not all 0, got {raw}")
    total = sum(raw)
    return [w / total for w in raw]


def face_weights(sizes: list[int], dataset_shares: list[float]) -> np.ndarray:
    """One weight per face, datasets in the order of `sizes` (their faces in a row), so that each
    dataset's faces together weigh its share; they add up to the number of faces."""
    weights = np.concatenate([np.full(n, share / n) for n, share in zip(sizes, dataset_shares)])
    return weights * (len(weights) / weights.sum())


def reliability(probabilities: np.ndarray, y: np.ndarray, bins: int = BINS) -> list[dict]:
    """The reliability diagram's data: for each of `bins` equal-width bins of top probability
    ((0, 1/bins], ..., ((bins-1)/bins, 1]), its bounds, the faces in it, their mean top probability
    and the share of them whose top label is right (None for both where the bin is empty)."""
    probabilities, y = np.asarray(probabilities, dtype=np.float64), np.asarray(y, dtype=int)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    right = probabilities.argmax(axis=1) == y if len(probabilities) else np.zeros(0, bool)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        inside = which == k
        count = int(inside.sum())
        rows.append(
            {
                "low": k / bins,
                "high": (k + 1) / bins,
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else None,
                "accuracy": float(right[inside].mean()) if count else None,
            }
        )
    return rows


def ece(probabilities: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: over equal-width bins of top probability, the gap between mean
    top probability and accuracy, weighted by the share of faces in the bin."""
    rows = reliability(probabilities, y, bins)
    total = sum(row["count"] for row in rows)
    if not total:
        raise ValueError("the calibration error needs at least one face")
    return float(
        sum(row["count"] / total * abs(row["confidence"] - row["accuracy"]) for row in rows if row["count"])
    )


def fit(probabilities: np.ndarray, y: np.ndarray, fitted_on: str, weights: np.ndarray | None = None) -> dict:
    """The `"calibration"` entry of a model's metadata, fitted on these (held-out) faces, each
    weighed by `weights` (None: all alike). Its errors before and after are over all the faces,
    each counted once."""
    temperature = fit_temperature(probabilities, y, weights)
    return {
        "method": "temperature",
        "temperature": round(temperature, 6),
        "fitted_on": fitted_on,
        "faces": int(len(y)),
        "ece_before": ece(probabilities, y),
        "ece_after": ece(scale(probabilities, temperature), y),
    }


def temperature_of(metadata: dict | None) -> float | None:
    """The temperature a model's metadata carries, None where it has no calibration; ValueError
    where its calibration entry makes no sense (a model file is input like any other)."""
    entry = (metadata or {}).get("calibration")
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("method") != "temperature":
        raise ValueError(
            f"its calibration must be an object with method 'temperature', got {str(entry)[:200]}"
        )
    value = entry.get("temperature")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(
            f"its calibration temperature must be a finite number above 0, got {str(value)[:80]}"
        )
    return float(value)


def apply(probabilities: np.ndarray, metadata: dict | None) -> np.ndarray:
    """The probabilities a model with this metadata should show: scaled by its calibration's
    temperature, or returned untouched where it has none."""
    temperature = temperature_of(metadata)
    if temperature is None or not len(probabilities):
        return probabilities
    return scale(probabilities, temperature)


def summary(raw: np.ndarray, calibrated: np.ndarray, y: np.ndarray, metadata: dict | None) -> dict:
    """What metrics.json records of a model's calibration on scored faces: its temperature (None
    without one), the error before and after, and the reliability data of both."""
    return {
        "temperature": temperature_of(metadata),
        "fitted_on": ((metadata or {}).get("calibration") or {}).get("fitted_on"),
        "ece_before": ece(raw, y),
        "ece_after": ece(calibrated, y),
        "bins": BINS,
        "reliability_before": reliability(raw, y),
        "reliability_after": reliability(calibrated, y),
    }
