"""What a run means, in words and tables: plain-language metrics, per-label and confusion tables,
the test faces of a confusion cell, run comparison, and the run's own test faces.

The Results page and the HTML report (fer.report) share everything here, so the sentences a
visitor reads on the page are the sentences in the report they download. Nothing here renders:
the page draws with Streamlit, the report with HTML.

The face crops are not stored in the run: they are read back from the preprocessing cache of the
datasets the run trained on (the same settings, so the same pixels the model saw), matched on
(dataset, photo, face). When a dataset has moved, `FacesUnavailable` says so and callers show the
numbers without pictures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer import runs

# Metric key -> its name on cards and in the report, in the order they are shown.
METRICS = {
    "accuracy": "Accuracy",
    "precision": "Precision (weighted)",
    "recall": "Recall (weighted)",
    "f1": "F1 (weighted)",
    "macro_f1": "Macro F1",
}
Progress = Callable[[int, int], None]


class FacesUnavailable(ValueError):
    """The test faces of a run cannot be shown (a dataset moved or cannot be read); the message says why."""


# Plain-language metrics ---------------------------------------------------------------------------


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def sentences(metrics: dict, name: Callable[[str], str] = str) -> dict[str, str]:
    """One sentence per metric (keys of METRICS), built from the run's own confusion matrix.

    Each sentence says what its metric measures: precision / recall / F1 are averaged over labels
    weighted by how many test faces each label has; macro F1 counts every label the same. `name`
    writes a label as the sentence shows it (the Results page escapes labels for Markdown).
    """
    labels = [name(label) for label in metrics["labels"]]
    cm = np.asarray(metrics["confusion_matrix"], dtype=int)
    n, correct = int(cm.sum()), int(np.trace(cm))
    hits, called, actual = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    result = {
        "accuracy": f"Of the {n:,} test faces, the model labelled {correct:,} correctly "
        f"({_share(correct, n):.1%})."
    }

    used = [i for i in range(len(labels)) if called[i]]
    best = max(used, key=lambda i: (_share(hits[i], called[i]), called[i]))
    never = [labels[i] for i in range(len(labels)) if not called[i]]
    result["precision"] = (
        f"Of the faces the model called {labels[best]}, {_share(hits[best], called[best]):.0%} were "
        f"{labels[best]} ({hits[best]:,} of {called[best]:,}), its most trustworthy label; that share, "
        f"averaged over all labels with each weighted by how many test faces it has, is {metrics['precision']:.1%}"
        + (f" (it never called a face {_or(never)}: those count as 0)." if never else ".")
    )

    present = [i for i in range(len(labels)) if actual[i]]
    top = max(present, key=lambda i: (_share(hits[i], actual[i]), actual[i]))
    bottom = min(present, key=lambda i: (_share(hits[i], actual[i]), -actual[i]))
    result["recall"] = (
        f"The model found {_share(hits[top], actual[top]):.0%} of the {actual[top]:,} {labels[top]} faces "
        f"but only {_share(hits[bottom], actual[bottom]):.0%} of the {actual[bottom]:,} {labels[bottom]} "
        f"faces; averaged over labels, weighted by how many test faces each has, it finds "
        f"{metrics['recall']:.1%} of a label's faces (with that weighting recall always equals accuracy)."
        if len(present) > 1
        else f"The model found {metrics['recall']:.1%} of the {labels[top]} faces, the only label in the test set."
    )

    per_f1 = {name(label): row["f1"] for label, row in metrics["per_class"].items()}
    ranked = sorted((labels[i] for i in present), key=lambda label: per_f1[label])
    result["f1"] = (
        f"F1 balances the two (per label, the harmonic mean of precision and recall): averaged over labels, "
        f"weighted by how many test faces each has, it is {metrics['f1']:.1%}, from {per_f1[ranked[-1]]:.0%} "
        f"for {ranked[-1]} down to {per_f1[ranked[0]]:.0%} for {ranked[0]}."
    )

    macro, weighted = metrics["macro_f1"], metrics["f1"]
    if len(set(actual.tolist())) == 1:
        relation = "the same as the weighted F1, since every label has as many test faces as the others"
    elif macro < weighted - 0.005:
        relation = (
            f"below the weighted {weighted:.1%}, so on the whole labels with fewer test faces score lower"
        )
    elif macro > weighted + 0.005:
        relation = (
            f"above the weighted {weighted:.1%}, so on the whole labels with fewer test faces score higher"
        )
    else:
        relation = (
            f"about the weighted {weighted:.1%}, so a label's size makes little difference on the whole"
        )
    result["macro_f1"] = (
        f"With every label counting the same, however many test faces it has, F1 is {macro:.1%}: {relation}."
    )
    return result


def _or(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def calibration_sentence(metrics: dict) -> str | None:
    """What the run's calibration did to its test probabilities, in one plain paragraph; None for a
    run that recorded none (trained before runs calibrated themselves)."""
    entry = metrics.get("calibration")
    if not isinstance(entry, dict) or "ece_before" not in entry:
        return None
    before, after, temperature = entry["ece_before"], entry.get("ece_after"), entry.get("temperature")
    if temperature is None:
        return (
            f"The model's top probability is off from how often it is right by {before * 100:.1f} points on "
            f"average over the {metrics.get('n', 0):,} test faces (calibration error {before:.3f}); it has no "
            "calibration, so its percentages are the network's own."
        )
    return (
        f"Straight from the network, the top probability was off from how often the model is right by "
        f"{before * 100:.1f} points on average over the {metrics.get('n', 0):,} test faces (calibration "
        f"error {before:.3f}); fitted on the validation faces (temperature {temperature:.2f}), it is off by "
        f"{after * 100:.1f} points ({after:.3f}). So a face given about 60% is right about 6 times in 10."
    )


def reliability_frame(metrics: dict) -> pd.DataFrame:
    """The reliability diagram of the run's test faces: one row per non-empty confidence bin and
    kind ("before" / "after" calibration) with its bounds, faces, mean top probability and accuracy."""
    entry = metrics.get("calibration") or {}
    rows = [
        {"kind": kind, **row}
        for kind in ("before", "after")
        for row in entry.get(f"reliability_{kind}") or []
        if row.get("count")
    ]
    return pd.DataFrame(rows, columns=["kind", "low", "high", "count", "confidence", "accuracy"])


def per_class_table(metrics: dict) -> pd.DataFrame:
    """One row per label: precision, recall, F1 (shares 0-1) and support (test faces)."""
    rows = [{"label": label, **metrics["per_class"][label]} for label in metrics["labels"]]
    return pd.DataFrame(rows, columns=["label", "precision", "recall", "f1", "support"])


def confusion(metrics: dict, *, shares: bool = False) -> pd.DataFrame:
    """The confusion matrix, true labels as rows and predicted as columns; with `shares`, each row
    divided by its total (the share of that label's faces given each prediction; 0 for an empty row)."""
    labels = list(metrics["labels"])
    cm = np.asarray(metrics["confusion_matrix"], dtype=float if shares else int)
    if shares:
        totals = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    frame = pd.DataFrame(cm, index=labels, columns=labels)
    frame.index.name, frame.columns.name = "true", "predicted"
    return frame


def worst_mistake(metrics: dict) -> tuple[str, str]:
    """The (true, predicted) cell off the diagonal holding the most faces: the first one worth a look.
    The first label with itself when the model made no mistake."""
    labels = list(metrics["labels"])
    cm = np.asarray(metrics["confusion_matrix"], dtype=int).copy()
    np.fill_diagonal(cm, -1)
    if cm.max() <= 0:
        return labels[0], labels[0]
    true, predicted = np.unravel_index(int(cm.argmax()), cm.shape)
    return labels[true], labels[predicted]


def most_confused(metrics: dict, count: int) -> list[tuple[str, str, int]]:
    """The `count` cells off the diagonal holding the most faces, as (true, predicted, faces), fullest
    first; cells with no face are left out."""
    labels = list(metrics["labels"])
    cm = np.asarray(metrics["confusion_matrix"], dtype=int)
    cells = [(int(cm[i, j]), -i, -j) for i in range(len(labels)) for j in range(len(labels)) if i != j]
    return [(labels[-i], labels[-j], n) for n, i, j in sorted(cells, reverse=True)[:count] if n > 0]


def cell_faces(predictions: pd.DataFrame, true_label: str, predicted_label: str) -> pd.DataFrame:
    """Test faces of one confusion-matrix cell, the model's most confident first (none without predictions)."""
    if not {"label", "predicted"} <= set(predictions.columns):
        return pd.DataFrame(columns=predictions.columns)
    chosen = predictions[(predictions["label"] == true_label) & (predictions["predicted"] == predicted_label)]
    column = f"p_{predicted_label}"
    order = column if column in chosen.columns else "confidence"
    return chosen.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)


def examples(
    predictions: pd.DataFrame, labels: list[str], per_group: int
) -> dict[str, dict[str, pd.DataFrame]]:
    """Per label, its most confidently right faces and its most confident mistakes (`per_group` each)."""
    result = {}
    for label in labels:
        faces = predictions[predictions["label"] == label].sort_values(
            "confidence", ascending=False, kind="stable"
        )
        right = faces["predicted"] == label
        result[label] = {"correct": faces[right].head(per_group), "mistakes": faces[~right].head(per_group)}
    return result


# Run comparison -----------------------------------------------------------------------------------


def compare_table(run_dirs: list[Path | str]) -> pd.DataFrame:
    """Side-by-side settings and test metrics of several runs, one row each (metrics empty when a run
    has none yet)."""
    rows = []
    for run_dir in run_dirs:
        run = runs.load_run(run_dir)
        train, metrics = run.train, run.metrics or {}
        best_val = run.history["val_accuracy"].max() if "val_accuracy" in run.history else math.nan
        rows.append(
            {
                "name": run.title,
                "run": run.name,
                "state": run.state,
                "datasets": ", ".join(dataset_title(d) for d in train.get("datasets", [])),
                "arch": train.get("arch"),
                "image size": train.get("image_size"),
                "epochs": len(run.history),
                "best val accuracy": best_val,
                "test faces": metrics.get("n"),
                **{title: metrics.get(key) for key, title in METRICS.items()},
            }
        )
    return pd.DataFrame(rows)


def dataset_title(name: str) -> str:
    return "built-in demo (synthetic)" if name == "demo" else str(name)


# The run's test faces -----------------------------------------------------------------------------


def dataset_locations(run_dir: Path | str) -> dict[str, str]:
    """Where each dataset of the run's config is now: the name as the config gives it -> a path to load.

    The model records absolute roots (a relative path in the config means: relative to where training
    ran); failing that, the name is tried as given and relative to the project folder.
    """
    from fer.paths import PROJECT

    run = Path(run_dir)
    train = dict((runs.read_json(run / runs.CONFIG, {}) or {}).get("train", {}))
    names = [str(n) for n in train.get("datasets", [])]
    roots = runs.model_metadata(run).get("dataset_roots") or []
    located = {}
    for k, name in enumerate(names):
        if name == "demo" or (k < len(roots) and roots[k] == "demo"):
            located[name] = "demo"
            continue
        candidates = [Path(roots[k])] if k < len(roots) else []
        candidates += [Path(name).expanduser(), PROJECT / name]
        located[name] = str(next((c for c in candidates if c.exists()), candidates[0]))
    return located


@dataclass
class RunFaces:
    """The faces of every dataset a run trained on, prepared with the run's settings (from the cache)."""

    prepared: dict  # dataset name as in the run's config -> fer.preprocess.Prepared
    train: dict  # the run's training config
    _index: dict = field(default_factory=dict, repr=False)

    def _lookup(self, name: str) -> dict[tuple[str, int], int]:
        if name not in self._index:
            faces = self.prepared[name].faces
            self._index[name] = {
                (str(photo), int(face)): i
                for i, (photo, face) in enumerate(zip(faces["photo"], faces["face"]))
            }
        return self._index[name]

    def crops(self, rows: pd.DataFrame) -> list[np.ndarray | None]:
        """The (size, size) uint8 face of each prediction row, or None where it is no longer there."""
        first = next(iter(self.prepared))
        names = (
            rows["dataset"].astype(str) if "dataset" in rows.columns else pd.Series(first, index=rows.index)
        )
        out: list[np.ndarray | None] = []
        for name, photo, face in zip(names, rows["photo"], rows["face"]):
            position = self._lookup(name).get((str(photo), int(face))) if name in self.prepared else None
            out.append(None if position is None else np.asarray(self.prepared[name].images[position]))
        return out

    def split_counts(self) -> pd.DataFrame:
        """Faces per label (rows) and split (columns: train, val, test) as the run's training saw them:
        the same threshold, split and training-face cap (`max_faces`) as fer.faces.load_splits."""
        from fer import splits
        from fer.labels import ordered

        train = self.train
        settings = splits.SplitSettings(
            val_share=train.get("val_share", 0.1),
            test_share=train.get("test_share", 0.1),
            seed=train.get("seed", 0),
        )
        faces = pd.concat(
            [p.faces.assign(split=splits.assign(p.faces, settings)) for p in self.prepared.values()],
            ignore_index=True,
        )
        chosen = np.flatnonzero((faces["split"] == "train").to_numpy())
        cap = train.get("max_faces")
        if cap and len(chosen) > cap:
            dropped = np.setdiff1d(
                chosen, np.random.default_rng(train.get("seed", 0)).choice(chosen, cap, replace=False)
            )
            faces = faces.drop(index=dropped)
        table = pd.crosstab(faces["label"], faces["split"]).reindex(
            index=ordered(faces["label"].unique()), columns=list(splits.SPLITS), fill_value=0
        )
        table.index.name, table.columns.name = "label", "split"
        return table.astype(int)


def run_faces(run_dir: Path | str, *, progress: Progress | None = None) -> RunFaces:
    """The prepared faces of the run's datasets; FacesUnavailable when one cannot be read.

    After training this only reads the preprocessing cache. If the cache is gone (or the dataset's
    files changed) the faces are prepared again, which takes as long as it did before training.
    """
    from fer import datasets, preprocess

    run = Path(run_dir)
    train = dict((runs.read_json(run / runs.CONFIG, {}) or {}).get("train", {}))
    try:
        settings = preprocess.PrepSettings(
            size=int(train["image_size"]), margin=float(train.get("margin", 0.0))
        )
    except (KeyError, TypeError, ValueError) as error:
        raise FacesUnavailable(
            f"the run's config.json has no usable image_size / margin ({error})"
        ) from error
    prepared = {}
    for name, location in dataset_locations(run).items():
        try:
            dataset = datasets.load(location)
            prepared[name] = preprocess.prepare(
                dataset, settings, min_confidence=train.get("min_confidence"), progress=progress
            )
        except (datasets.DatasetError, OSError, ValueError) as error:
            raise FacesUnavailable(
                f"the faces of dataset {name} cannot be read any more ({error})"
            ) from error
    if not prepared:
        raise FacesUnavailable("the run's config.json names no dataset")
    return RunFaces(prepared=prepared, train=train)
