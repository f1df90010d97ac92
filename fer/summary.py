"""What a dataset holds, from its manifest alone: counts per label and split, and what a threshold keeps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fer import datasets, splits
from fer.labels import ordered
from fer.preprocess import keep_mask


def summarize(
    dataset: datasets.Dataset,
    min_confidence: float | None = None,
    split_settings: splits.SplitSettings = splits.SplitSettings(),
) -> dict:
    """The JSON-ready summary `python -m fer summary` prints (fields in DESIGN.md)."""
    faces = dataset.faces
    kept = keep_mask(faces, min_confidence)
    split = splits.assign(faces, split_settings)
    labels = ordered(faces["label"].unique())
    kept_labels = faces["label"][kept]

    def count(series: pd.Series) -> dict[str, int]:
        counts = series.value_counts()
        return {label: int(counts.get(label, 0)) for label in labels}

    all_counts, kept_counts = count(faces["label"]), count(kept_labels)
    confidence = faces["confidence"].to_numpy(dtype=float)
    known = confidence[~np.isnan(confidence)]
    return {
        "dataset": str(dataset.root),
        "name": dataset.name,
        "format": dataset.format,
        "min_confidence": min_confidence,
        "faces": int(len(faces)),
        "kept": int(kept.sum()),
        "dropped": int(len(faces) - kept.sum()),
        "photos": int(faces["photo"].nunique()),
        "labels": labels,
        "per_label": {label: {"faces": all_counts[label], "kept": kept_counts[label]} for label in labels},
        "per_split": {
            name: {
                "faces": int((split == name).sum()),
                "kept": int(((split == name) & kept).sum()),
                "per_label": count(kept_labels[split[kept] == name]),
            }
            for name in splits.SPLITS
        },
        "split_source": "dataset"
        if (faces["split"] != "").all()
        else f"drawn by photo, seed {split_settings.seed}",
        "confidence": None
        if not len(known)
        else {
            "min": float(known.min()),
            "median": float(np.median(known)),
            "max": float(known.max()),
            "missing": int(len(confidence) - len(known)),
        },
        "skipped": int(len(dataset.skipped)),
        "skipped_reasons": _reason_counts(dataset.skipped),
        "skipped_faces": [
            {"photo": r.photo, "face": int(r.face), "reason": r.reason} for r in dataset.skipped.itertuples()
        ],
    }


def _reason_counts(skipped: pd.DataFrame) -> dict[str, int]:
    """Reasons with their specifics (line numbers, values) cut off, so alike problems count together."""
    kinds = (
        skipped["reason"].map(lambda r: r.split(" (")[0].split(":")[0]) if len(skipped) else skipped["reason"]
    )
    return {k: int(n) for k, n in kinds.value_counts().items()}


def format_summary(summary: dict) -> str:
    """The summary as a short plain-text table."""
    threshold = summary["min_confidence"]
    lines = [
        f"{summary['name']} ({summary['format']}): {summary['faces']:,} faces in {summary['photos']:,} photos",
        f"kept {summary['kept']:,} at min confidence {threshold:g}, dropped {summary['dropped']:,}"
        if threshold is not None and not math.isnan(threshold)
        else f"kept {summary['kept']:,} (no confidence threshold)",
        "",
        f"{'label':<12}{'faces':>8}{'kept':>8}" + "".join(f"{s:>8}" for s in splits.SPLITS),
    ]
    for label in summary["labels"]:
        row = summary["per_label"][label]
        by_split = "".join(f"{summary['per_split'][s]['per_label'][label]:>8,}" for s in splits.SPLITS)
        lines.append(f"{label:<12}{row['faces']:>8,}{row['kept']:>8,}{by_split}")
    totals = "".join(f"{summary['per_split'][s]['kept']:>8,}" for s in splits.SPLITS)
    lines.append(f"{'total':<12}{summary['faces']:>8,}{summary['kept']:>8,}{totals}")
    lines.append(f"(split: {summary['split_source']}; split columns count kept faces)")
    if summary["skipped"]:
        lines.append("")
        lines.append(f"skipped {summary['skipped']:,} faces:")
        lines.extend(f"  {n:>6,}  {reason}" for reason, n in summary["skipped_reasons"].items())
    return "\n".join(lines)
