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
import re
import time
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
        why = f" ({without_paths(entry['why_none'])})" if entry.get("why_none") else ""
        return (
            f"The model's top probability is off from how often it is right by {before * 100:.1f} points on "
            f"average over the {metrics.get('n', 0):,} test faces (calibration error {before:.3f}); it has no "
            f"calibration{why}, so its percentages are the network's own."
        )
    fitted_on = without_paths(entry.get("fitted_on") or "the validation faces")
    return (
        f"Straight from the network, the top probability was off from how often the model is right by "
        f"{before * 100:.1f} points on average over the {metrics.get('n', 0):,} test faces (calibration "
        f"error {before:.3f}); with a temperature of {temperature:.2f} fitted on {fitted_on}, it is off by "
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
    order = column if column in chosen.columns else runs.PROBABILITY
    return chosen.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)


def examples(
    predictions: pd.DataFrame, labels: list[str], per_group: int
) -> dict[str, dict[str, pd.DataFrame]]:
    """Per label, its most confidently right faces and its most confident mistakes (`per_group` each)."""
    result = {}
    for label in labels:
        faces = predictions[predictions["label"] == label].sort_values(
            runs.PROBABILITY, ascending=False, kind="stable"
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
    """A dataset as a reader sees it: its folder's name, never where it lies on the server."""
    return "built-in demo (synthetic)" if name == "demo" else Path(str(name)).name or str(name)


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


# A run still going --------------------------------------------------------------------------------
# Read from the run folder alone (status, progress, history), so every page and tab shows the same thing.


def _seconds(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def epoch_seconds(history: pd.DataFrame, recent: int = 3) -> float | None:
    """How long one epoch takes: the median of the last `recent` finished epochs' durations (history.csv's
    `seconds`; the first epoch of a run also builds the model, so later ones are preferred); None
    before any epoch has finished."""
    if "seconds" not in history or not len(history):
        return None
    durations = [s for s in (_seconds(v) for v in history["seconds"]) if s is not None]
    if len(durations) > 1:
        durations = durations[1:]
    return float(np.median(durations[-recent:])) if durations else None


FIRST_BATCHES = 3  # batches of a run's first epoch before its time left is estimated from them


def seconds_left(
    history: pd.DataFrame, progress: dict, epochs: int, now: float | None = None
) -> float | None:
    """Estimated seconds until the run's last epoch ends: the epochs still to come at the recent epoch
    duration, plus what is left of the current one. Early stopping can end a run sooner, so this is
    the most it should take. None while it cannot be told (faces still being prepared, no batch yet)."""
    if "batch" not in progress:
        return None
    epoch = int(progress.get("epoch") or 1)
    batch, batches = int(progress.get("batch") or 0), max(int(progress.get("batches") or 1), 1)
    spent = _seconds(progress.get("seconds")) or 0.0
    updated = _seconds(progress.get("updated"))
    if updated is not None:
        spent += max(0.0, (now if now is not None else time.time()) - updated)
    per_epoch = epoch_seconds(history)
    if per_epoch is None:  # the first epoch: from its own batches so far (its first ones also compile)
        if batch < min(FIRST_BATCHES, batches):
            return None
        per_epoch = (_seconds(progress.get("seconds")) or 0.0) / batch * batches
    current = max(per_epoch - spent, 0.0)
    return current + max(int(epochs) - epoch, 0) * per_epoch


def duration_words(seconds: float | None) -> str:
    """A duration as a reader says it: "under a minute", "about 4 min", "about 1 h 20 min"."""
    if seconds is None or not math.isfinite(seconds):
        return "not known yet"
    minutes = round(seconds / 60)
    if seconds < 60:
        return "under a minute"
    if minutes < 60:
        return f"about {minutes} min"  # short: it fits a metric card a quarter of the page wide
    hours, rest = divmod(minutes, 60)
    return f"about {hours} h {rest} min" if rest else f"about {hours} h"


@dataclass
class LiveRun:
    """Where a run stands, read from its folder: what it is doing in words, epochs, time left."""

    state: str  # the status (fer.runs.STATES, or "interrupted")
    stage: str  # "waiting", "starting", "preparing faces", "training", "testing", or the state
    epoch: int  # the epoch under way (training) or the last finished one
    epochs: int  # the most the run will train
    finished_epochs: int
    seconds_left: float | None  # None: not known (yet), or the run is over
    progress: dict  # progress.json as written
    cancelling: bool  # a cancel was asked for and the run is still going

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def fraction(self) -> float:
        """How far through its epochs the run is, 0 to 1 (faces being prepared: 0)."""
        if not self.active:
            return 1.0 if self.state == "done" else min(self.finished_epochs / max(self.epochs, 1), 1.0)
        if self.stage == "testing":
            return 1.0
        if self.stage != "training":
            return 0.0
        batch, batches = int(self.progress.get("batch") or 0), max(int(self.progress.get("batches") or 1), 1)
        return min(max((self.epoch - 1 + min(batch / batches, 1.0)) / max(self.epochs, 1), 0.0), 1.0)

    @property
    def time_left(self) -> str:
        """The time left in words ("" for a run that is over)."""
        if not self.active:
            return ""
        if self.cancelling:
            return "stopping"
        if self.stage == "testing":
            return "under a minute"
        return duration_words(self.seconds_left)

    @property
    def words(self) -> str:
        """One line: "training, epoch 3 of 4", "preparing faces (1,200 of 5,000)", "finished"."""
        if self.cancelling:
            return "cancelling…"
        if self.stage == "training":
            return f"training, epoch {self.epoch} of {self.epochs}"
        if self.stage == "preparing faces":
            done, total = int(self.progress.get("done", 0)), int(self.progress.get("total", 0))
            return f"preparing faces ({done:,} of {total:,})" if total > 1 else "preparing faces"
        if self.stage == "testing":
            return "scoring its test faces"
        if self.stage == "waiting":
            return "waiting for a free training slot"
        if self.stage == "starting":
            return "starting"
        return runs.STATE_WORDS.get(self.state, self.state)


def _waits(run: Path, status: dict) -> bool:
    """Whether a queued run waits for others (a slot taken, or runs before it in line); a queued run
    first in line with a slot free is only starting (its process is still loading)."""
    place = status.get("place") or runs.place_in_line(run)
    if not place:
        return False
    if place > 1:
        return True
    try:
        limit = runs.max_trainings()
    except ValueError:  # the server's setting is wrong: the run will say so when it starts
        return False
    return runs.slots_taken(run.parent) >= limit


def live_run(run_dir: Path | str, status: dict | None = None, now: float | None = None) -> LiveRun:
    """The run in `run_dir` as it stands now; `status` is its read status when the caller has it."""
    run = Path(run_dir)
    status = status if status is not None else runs.read_status(run)
    state = str(status.get("state", "interrupted"))
    train = dict((runs.read_json(run / runs.CONFIG, {}) or {}).get("train", {}))
    history = runs.read_history(run)
    finished = int(history["epoch"].max()) if "epoch" in history and len(history) else 0
    epochs = int(status.get("epochs") or train.get("epochs") or 0)
    progress = runs.read_json(run / runs.PROGRESS, {}) or {}
    progress = progress if isinstance(progress, dict) else {}
    active = state in ("queued", "running")
    if not active:
        stage = state
    elif state == "queued":
        stage = "waiting" if _waits(run, status) else "starting"
    elif progress.get("stage") in ("preparing faces", "testing"):
        stage = str(progress["stage"])
    elif "batch" in progress or finished:
        stage = "training"
    else:
        stage = "starting"
    epoch = (
        int(progress.get("epoch") or status.get("epoch") or finished + 1) if stage == "training" else finished
    )
    left = seconds_left(history, progress, epochs, now) if stage == "training" else None
    return LiveRun(
        state=state,
        stage=stage,
        epoch=epoch,
        epochs=epochs,
        finished_epochs=finished,
        seconds_left=left,
        progress=progress,
        cancelling=active and (run / runs.CANCEL).exists(),
    )


# Words for readers who are not engineers ----------------------------------------------------------

# The networks a run can train, as the Train and Results pages name them (fer.config.ARCHITECTURES).
ARCH_WORDS = {
    "vgg": "VGG-style network: pairs of small convolution layers, slower to train, about 1 point more accurate "
    "than vgg-lite in our full-length tests",
    "vgg-lite": "VGG-style network with single convolution layers where the picture is largest: "
    "about 1.5 times as quick to train on a processor as vgg",
    "vgg-steady": "vgg-lite with smoothed pooling: its answers change less when the face is framed a little "
    "differently, as accurate as vgg-lite in our tests and nearly as quick to train",
    "vgg-smooth": "vgg with smoothed pooling: steadier answers when the face is framed a little differently, "
    "and the same weights as vgg, so a vgg model can start it",
    "vgg-small": "small VGG-style network: one convolution layer where vgg has two, fastest, a little less accurate",
    "seed": "the report's CNN: three convolution blocks, the network this project started from",
}
ARCH_HELP = (
    "The network's name: "
    + "; ".join(f"{name} = {words}" for name, words in ARCH_WORDS.items())
    + ". (The Seed setting is something else: the number that fixes a run's random choices.)"
)
MACRO_F1_HELP = (
    "F1 scores a label by both how often the model is right when it says that label and how many of that "
    "label's faces it finds. Macro F1 averages it over the labels with each counting the same, so a rare "
    "expression (such as disgust) weighs as much as a common one."
)

# What the test faces of each dataset look like, for the sentences that say how a model does on them.
_PHOTO_KINDS = {
    "fer2013": "posed, frontal faces (FER2013: small grayscale close-ups, most looking at the camera)",
    "expw": "faces in everyday photos from the web (ExpW), cut out along boxes people drew",
    "demo": "the built-in synthetic cartoon faces",
}
_DETECTED = (
    "everyday photos from the web (ExpW), the faces found by the face detector as on the Classify page"
)
_DETECTED_BY = "everyday photos from the web (ExpW), the faces found by the {detector} face detector"


def photo_kind(name: str) -> str:
    """What the faces scored under `name` (a key of a model's test_metrics) look like, in plain words."""
    base, _, detector = str(name).partition(" [")
    base, detector = Path(base).name.lower(), detector.rstrip("]")
    if detector and base.startswith("expw"):
        from fer.detect import DEFAULT

        return _DETECTED if detector == DEFAULT else _DETECTED_BY.format(detector=detector)
    for key, words in _PHOTO_KINDS.items():
        if base.startswith(key):
            return words
    if base in ("test", ""):
        return "the faces held back from its own training data"
    return f"the faces of dataset {Path(str(name)).name}"


def tested_on(train: dict) -> str:
    """What the test faces of a run (its training config `train`) look like, in one sentence."""
    kinds = [photo_kind(str(name)) for name in train.get("datasets", [])] or ["its dataset's faces"]
    return (
        "The test faces are " + "; and ".join(kinds) + ": on other kinds of photo it can do better or worse."
    )


def score_lines(test_metrics: dict) -> list[str]:
    """One plain sentence per kind of photo a model was scored on (a model file's test_metrics: either
    one metrics dict or dataset name -> metrics), best first."""
    if not isinstance(test_metrics, dict) or not test_metrics:
        return []
    scores = {"test": test_metrics} if "accuracy" in test_metrics else test_metrics
    lines = []
    for name, score in sorted(scores.items(), key=lambda item: -float(item[1].get("accuracy", 0))):
        if not isinstance(score, dict) or "accuracy" not in score:
            continue
        faces = int(score.get("n") or 0)
        missed = int(score.get("undetected") or 0)
        lines.append(
            f"On {photo_kind(name)}: right {score['accuracy']:.0%} of the time "
            f"({faces:,} faces it never saw while training"
            + (f"; the {missed:,} faces the detector missed count as wrong" if missed else "")
            + ")."
        )
    return lines


_PATH = re.compile(r"(?<![\w.~/:])~?/[^\s'\"`<>|,;()]+")


def without_paths(text: object) -> str:
    """`text` with every server path (/srv/data/runs/x, ~/faces/a.jpg) shortened to its last part: what
    a reader outside the server is shown (error messages, dataset names)."""

    def last_part(match: re.Match) -> str:
        path = match.group()
        core = path.rstrip("/.:")
        return (Path(core).name or "…") + path[len(core) :].lstrip("/")

    return _PATH.sub(last_part, str(text))
