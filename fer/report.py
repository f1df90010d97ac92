"""Reading a finished run for people: plain-language metrics, tables, its test faces, and the HTML report.

The Results page and `python -m fer report` share everything here, so the sentences a visitor
reads on the page are the sentences in the report they download. The report is one HTML file that
makes no request and runs no script (inline CSS, inline SVG curves, faces as data URIs): it opens
from an e-mail attachment on a machine with no network, and a label or path containing markup
cannot turn into code, because every string that comes from data goes through `html.escape`.

The face crops are not stored in the run: they are read back from the preprocessing cache of the
datasets the run trained on (the same settings, so the same pixels the model saw), matched on
(dataset, photo, face). When a dataset has moved, `FacesUnavailable` says so and callers show the
numbers without pictures.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from fer import runs as R

# Metric key -> its name on cards and in the report, in the order they are shown.
METRICS = {
    "accuracy": "Accuracy",
    "precision": "Precision (weighted)",
    "recall": "Recall (weighted)",
    "f1": "F1 (weighted)",
    "macro_f1": "Macro F1",
}
STATE_WORDS = {
    "queued": "waiting to start",
    "running": "still training",
    "done": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
    "interrupted": "interrupted (its process stopped without finishing)",
}

Progress = Callable[[int, int], None]


class FacesUnavailable(ValueError):
    """The test faces of a run cannot be shown (a dataset moved or cannot be read); the message says why."""


# Reading a run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a run folder holds that the page and the report show (the model itself aside)."""

    path: Path
    config: dict
    labels: list[str]
    status: dict
    history: pd.DataFrame
    metrics: dict | None
    predictions: pd.DataFrame

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def state(self) -> str:
        return str(self.status.get("state", "interrupted"))

    @property
    def train(self) -> dict:
        return dict(self.config.get("train", {}))

    @property
    def finished(self) -> bool:
        """Done, with the metrics and predictions a finished run writes."""
        return self.state == "done" and self.metrics is not None


def load_run(run_dir: Path | str) -> Run:
    """The run in `run_dir`; ValueError if the folder is not a run (no readable config.json)."""
    path = Path(run_dir)
    config = R.read_json(path / "config.json")
    if not isinstance(config, dict):
        raise ValueError(
            f"run_dir must be a run folder holding config.json (as `python -m fer train` writes), got {path}"
        )
    metrics = R.read_metrics(path)
    labels = R.read_json(path / "labels.json") or config.get("labels") or (metrics or {}).get("labels") or []
    return Run(
        path=path,
        config=config,
        labels=list(labels),
        status=R.read_status(path),
        history=R.read_history(path),
        metrics=metrics,
        predictions=R.read_predictions(path),
    )


def model_metadata(run_dir: Path | str) -> dict:
    """The metadata saved inside the run's best.keras (dataset roots, split counts); {} if none."""
    from fer.modelfile import METADATA

    try:
        with zipfile.ZipFile(Path(run_dir) / "best.keras") as archive:
            return dict(json.loads(archive.read(METADATA)))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


# Plain-language metrics ---------------------------------------------------------------------------


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def sentences(metrics: dict) -> dict[str, str]:
    """One sentence per metric (keys of METRICS), built from the run's own confusion matrix.

    Each sentence says what its metric measures: precision / recall / F1 are averaged over labels
    weighted by how many test faces each label has; macro F1 counts every label the same.
    """
    labels = list(metrics["labels"])
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

    per_f1 = {label: row["f1"] for label, row in metrics["per_class"].items()}
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
        run = load_run(run_dir)
        train, metrics = run.train, run.metrics or {}
        best_val = run.history["val_accuracy"].max() if "val_accuracy" in run.history else math.nan
        rows.append(
            {
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
    train = dict((R.read_json(run / "config.json", {}) or {}).get("train", {}))
    names = [str(n) for n in train.get("datasets", [])]
    roots = model_metadata(run).get("dataset_roots") or []
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
        from fer import splits as S
        from fer.labels import ordered

        train = self.train
        settings = S.SplitSettings(
            val_share=train.get("val_share", 0.1),
            test_share=train.get("test_share", 0.1),
            seed=train.get("seed", 0),
        )
        faces = pd.concat(
            [p.faces.assign(split=S.assign(p.faces, settings)) for p in self.prepared.values()],
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
            index=ordered(faces["label"].unique()), columns=list(S.SPLITS), fill_value=0
        )
        table.index.name, table.columns.name = "label", "split"
        return table.astype(int)


def run_faces(run_dir: Path | str, *, progress: Progress | None = None) -> RunFaces:
    """The prepared faces of the run's datasets; FacesUnavailable when one cannot be read.

    After training this only reads the preprocessing cache. If the cache is gone (or the dataset's
    files changed) the faces are prepared again, which takes as long as it did before training.
    """
    from fer import datasets as D
    from fer import preprocess as P

    run = Path(run_dir)
    train = dict((R.read_json(run / "config.json", {}) or {}).get("train", {}))
    try:
        settings = P.PrepSettings(size=int(train["image_size"]), margin=float(train.get("margin", 0.0)))
    except (KeyError, TypeError, ValueError) as error:
        raise FacesUnavailable(
            f"the run's config.json has no usable image_size / margin ({error})"
        ) from error
    prepared = {}
    for name, location in dataset_locations(run).items():
        try:
            dataset = D.load(location)
            prepared[name] = P.prepare(
                dataset, settings, min_confidence=train.get("min_confidence"), progress=progress
            )
        except (D.DatasetError, OSError, ValueError) as error:
            raise FacesUnavailable(
                f"the faces of dataset {name} cannot be read any more ({error})"
            ) from error
    if not prepared:
        raise FacesUnavailable("the run's config.json names no dataset")
    return RunFaces(prepared=prepared, train=train)


def png_data_uri(image: np.ndarray) -> str:
    """A uint8 image as a `data:image/png;base64,...` URI (no file, no request)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# The HTML report ----------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933;
       max-width: 1040px; margin: 2rem auto; padding: 0 1.2rem; line-height: 1.5; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #d9e2ec; }
.muted { color: #627d98; } .note { background: #fff8e1; border-left: 4px solid #f0b429; padding: 0.6rem 1rem; }
.error { background: #ffeeee; border-left: 4px solid #e12d39; padding: 0.6rem 1rem; }
table { border-collapse: collapse; margin: 0.8rem 0; }
th, td { padding: 0.3rem 0.7rem; border: 1px solid #d9e2ec; text-align: right; }
th { background: #f0f4f8; } td.label, th.label { text-align: left; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 0.8rem; }
.card { border: 1px solid #d9e2ec; border-radius: 8px; padding: 0.7rem 0.9rem; }
.card .value { font-size: 1.8rem; font-weight: 600; } .card p { font-size: 0.9rem; margin: 0.3rem 0 0; }
table.confusion td { min-width: 3.2rem; text-align: center; } table.confusion td.diagonal { font-weight: 700; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; } .pair p { margin: 0; }
.curves { display: flex; flex-wrap: wrap; gap: 1rem; }
.faces { display: flex; flex-wrap: wrap; gap: 0.5rem; margin: 0.3rem 0 0.8rem; }
figure { margin: 0; text-align: center; font-size: 0.75rem; width: 96px; }
figure img { width: 96px; height: 96px; image-rendering: pixelated; border-radius: 4px; display: block; }
figure.wrong img { outline: 3px solid #e12d39; } figure.right img { outline: 3px solid #3ebd93; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; } dt { color: #627d98; }
code { background: #f0f4f8; padding: 0.1rem 0.3rem; border-radius: 3px; word-break: break-all; }
"""


def _when(seconds: object) -> str:
    try:
        return time.strftime("%d %B %Y, %H:%M", time.localtime(float(seconds)))
    except (TypeError, ValueError, OverflowError):
        return "unknown"


def _number(value: object, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(number) else f"{number:.{digits}f}"


def svg_chart(
    title: str, series: list[tuple[str, str, list[float], list[float]]], *, percent: bool = False
) -> str:
    """A small line chart as inline SVG: `series` is (name, colour, x values, y values) per line."""
    width, height, left, right, top, bottom = 470, 260, 56, 96, 30, 40
    points = [(x, y) for _, _, xs, ys in series for x, y in zip(xs, ys) if _finite(x) and _finite(y)]
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<text x="{left}" y="18" font-size="14" font-weight="600">{escape(title)}</text>']  # fmt: skip
    if not points:
        parts.append(
            f'<text x="{left}" y="{height / 2}" font-size="12" fill="#627d98">no epochs yet</text></svg>'
        )
        return "".join(parts)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.08 or 0.05
    y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bcccdc"/>'
    )
    for value in _ticks(y0, y1):
        label = f"{value:.0%}" if percent else f"{value:.2f}"
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(value):.1f}" y2="{sy(value):.1f}" '
                     f'stroke="#f0f4f8"/><text x="{left - 6}" y="{sy(value) + 4:.1f}" font-size="10" '
                     f'text-anchor="end" fill="#627d98">{label}</text>')  # fmt: skip
    step = max(1, math.ceil((x1 - x0) / 8))
    for x in range(math.ceil(x0), math.floor(x1) + 1, step):
        parts.append(f'<text x="{sx(x):.1f}" y="{top + plot_h + 16}" font-size="10" text-anchor="middle" '
                     f'fill="#627d98">{x}</text>')  # fmt: skip
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" font-size="11" text-anchor="middle" '
                 f'fill="#627d98">epoch</text>')  # fmt: skip
    for k, (name, colour, xs, ys) in enumerate(series):
        line = [(sx(x), sy(y)) for x, y in zip(xs, ys) if _finite(x) and _finite(y)]
        if len(line) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in line)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in line]
        ly = top + 12 + 18 * k
        parts.append(f'<line x1="{width - right + 10}" x2="{width - right + 28}" y1="{ly}" y2="{ly}" '
                     f'stroke="{colour}" stroke-width="2"/><text x="{width - right + 32}" y="{ly + 4}" '
                     f'font-size="11">{escape(name)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _ticks(low: float, high: float) -> list[float]:
    """Round tick values between low and high: steps of 1, 2, 2.5 or 5 times a power of ten."""
    raw = (high - low) / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step + 1e-9) + 1)]


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _curves_html(history: pd.DataFrame) -> str:
    if history.empty or "epoch" not in history:
        return '<p class="muted">No epoch has finished, so there are no curves.</p>'
    epochs = history["epoch"].tolist()
    charts = []
    for metric, title, percent in (("loss", "Loss", False), ("accuracy", "Accuracy", True)):
        series = [
            (name, colour, epochs, history[column].tolist())
            for name, colour, column in (
                ("train", "#2563eb", metric),
                ("validation", "#f97316", f"val_{metric}"),
            )
            if column in history
        ]
        charts.append(svg_chart(title, series, percent=percent))
    return f'<div class="curves">{"".join(charts)}</div>'


def _table(frame: pd.DataFrame, formats: dict[str, Callable[[object], str]]) -> str:
    head = "".join(
        f'<th class="{"label" if k == 0 else ""}">{escape(str(c))}</th>' for k, c in enumerate(frame.columns)
    )
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for k, (column, value) in enumerate(zip(frame.columns, record)):
            text = formats.get(column, str)(value)
            cells.append(f'<td class="{"label" if k == 0 else ""}">{escape(text)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _confusion_html(metrics: dict) -> str:
    counts, shares = confusion(metrics), confusion(metrics, shares=True)
    labels = list(counts.index)
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    rows = []
    for i, true in enumerate(labels):
        cells = []
        for j, predicted in enumerate(labels):
            share = float(shares.iloc[i, j])
            ink = "#ffffff" if share > 0.55 else "#1f2933"
            cells.append(
                f'<td class="{"diagonal" if i == j else ""}" style="background: rgba(37, 99, 235, {share:.3f}); '
                f'color: {ink}" title="{escape(true)} called {escape(predicted)}">'
                f"{int(counts.iloc[i, j]):,}<br><small>{share:.0%}</small></td>"
            )
        rows.append(f'<tr><th class="label">{escape(true)}</th>{"".join(cells)}</tr>')
    return (
        '<table class="confusion"><thead><tr><th class="label">true \\ predicted</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _faces_html(run: Run, faces: RunFaces | None, unavailable: str | None, per_group: int) -> str:
    if faces is None or run.predictions.empty:
        why = unavailable or "the run has no predictions.csv"
        return f'<p class="note">No example faces: {escape(why)}. The numbers above are complete.</p>'
    groups = examples(run.predictions, list(run.metrics["labels"]), per_group)
    blocks = []
    for label, group in groups.items():
        parts = []
        for kind, rows in group.items():
            crops = faces.crops(rows) if len(rows) else []
            figures = []
            for row, crop in zip(rows.itertuples(index=False), crops):
                if crop is None:
                    continue
                right = row.predicted == row.label
                caption = (
                    f"{row.predicted} {row.confidence:.0%}"
                    if right
                    else f"called {row.predicted} ({row.confidence:.0%})"
                )
                figures.append(
                    f'<figure class="{"right" if right else "wrong"}"><img src="{png_data_uri(crop)}" '
                    f'alt="{escape(label)} face called {escape(str(row.predicted))}">'
                    f"<figcaption>{escape(caption)}</figcaption></figure>"
                )
            title = "Labelled correctly" if kind == "correct" else "Mistakes"
            body = "".join(figures) or '<span class="muted">none in the test set</span>'
            parts.append(f'<div><p class="muted">{title}</p><div class="faces">{body}</div></div>')
        blocks.append(f'<h3>{escape(label)}</h3><div class="pair">{"".join(parts)}</div>')
    return "".join(blocks)


def _settings_html(run: Run) -> str:
    train = run.train
    items = [
        ("Datasets", ", ".join(dataset_title(d) for d in train.get("datasets", [])) or "unknown"),
        ("Architecture", f"{train.get('arch')} (first-block width {train.get('width')})"),
        ("Faces", f"{train.get('image_size')}×{train.get('image_size')} grayscale, margin {train.get('margin', 0)}"),
        ("Minimum detector confidence", "none" if train.get("min_confidence") is None else str(train["min_confidence"])),
        ("Epochs", f"{len(run.history)} (of at most {train.get('epochs')}), the model kept is from epoch "
                   f"{(run.metrics or {}).get('best_epoch') or run.status.get('best_epoch') or '–'}"),
        ("Batch size, learning rate", f"{train.get('batch_size')}, {train.get('learning_rate')}"),
        ("Dropout, label smoothing", f"{train.get('dropout')}, {train.get('label_smoothing')}"),
        ("Augmentation, class weighting", f"{'on' if train.get('augment') else 'off'}, "
                                          f"{'on' if train.get('class_weight') else 'off'}"),
        ("Seed, val / test share", f"{train.get('seed')}, {train.get('val_share')} / {train.get('test_share')}"),
        ("Training-face cap", "none" if not train.get("max_faces") else f"{int(train['max_faces']):,}"),
    ]  # fmt: skip
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in items)
    command = run.config.get("command")
    made = f"<p>Made by <code>{escape(str(command))}</code></p>" if command else ""
    return f"<dl>{rows}</dl>{made}"


def _counts_html(run: Run, faces: RunFaces | None) -> str:
    if faces is not None:
        table = faces.split_counts()
        if run.metrics and run.metrics.get("split") == "test":
            supports = {label: row["support"] for label, row in run.metrics["per_class"].items()}
            now = {label: int(table.loc[label, "test"]) if label in table.index else 0 for label in supports}
            if now != supports:
                note = ('<p class="note">The dataset has changed since this run was tested: these counts are '
                        "from the dataset as it is now, and differ from the test faces scored below.</p>")  # fmt: skip
            else:
                note = ""
        else:
            note = ""
        frame = table.assign(total=table.sum(axis=1)).reset_index()
        frame.loc[len(frame)] = ["total", *frame.drop(columns="label").sum().tolist()]
        return _table(frame, {c: (lambda v: f"{int(v):,}") for c in frame.columns[1:]}) + note
    counts = model_metadata(run.path).get("counts") or {}
    text = ", ".join(f"{split} {int(n):,}" for split, n in counts.items())
    return (
        f"<p>Faces per split: {escape(text or 'not recorded')}. Faces per label are known for the test split "
        "only (the per-class table below); the dataset could not be read to count the others.</p>"
    )


def build_report(run_dir: Path | str, *, faces_per_cell: int = 4, progress: Progress | None = None) -> str:
    """The run as one self-contained HTML page (see the module docstring); ValueError if not a run.

    `faces_per_cell` faces are shown per label and kind (labelled correctly / mistakes).
    """
    if faces_per_cell < 0:
        raise ValueError(f"faces_per_cell must be at least 0, got {faces_per_cell}")
    run = load_run(run_dir)
    faces, unavailable = None, None
    if run.finished:
        try:
            faces = run_faces(run.path, progress=progress)
        except FacesUnavailable as error:
            unavailable = str(error)
    title = f"Facial-expression model: run {run.name}"
    when = _when(run.status.get("finished") or run.status.get("updated"))
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">Run {escape(STATE_WORDS.get(run.state, run.state))} on {escape(when)}; '
        f"report made on {escape(_when(time.time()))}.</p>",
        "<p>A convolutional network was trained to tell facial expressions apart "
        f"({escape(', '.join(run.labels))}) from grayscale face crops. It was trained on one part of the "
        "faces, tuned on a second (validation) and scored once on a third it never saw (test): the "
        "numbers below are from that test part.</p>",
    ]
    if run.state != "done":
        error = run.status.get("error")
        body.append(
            f'<p class="error">This run is {escape(STATE_WORDS.get(run.state, run.state))}'
            + (f": {escape(str(error))}" if error else "")
            + ". The report shows what it had written so far.</p>"
        )
    body += ["<h2>What was trained on what</h2>", _settings_html(run)]
    body += ["<h3>Faces per label and split</h3>", _counts_html(run, faces)]
    body += ["<h2>Training curves</h2>", _curves_html(run.history)]
    if run.metrics is None:
        body.append('<p class="note">There are no test results: the run did not finish.</p>')
    else:
        metrics, said = run.metrics, sentences(run.metrics)
        cards = "".join(
            f'<div class="card"><div class="muted">{escape(name)}</div>'
            f'<div class="value">{metrics[key]:.1%}</div><p>{escape(said[key])}</p></div>'
            for key, name in METRICS.items()
        )
        body += [f"<h2>How well it does ({escape(str(metrics.get('split', 'test')))} faces)</h2>",
                 f'<div class="cards">{cards}</div>']  # fmt: skip
        percent = lambda v: f"{float(v):.1%}"  # noqa: E731
        body += [
            "<h2>Per label</h2>",
            "<p>Precision: of the faces the model gave this label, the share that had it. Recall: of the faces "
            "that had this label, the share the model found. F1: the harmonic mean of the two. Support: test "
            "faces with this label.</p>",
            _table(
                per_class_table(metrics),
                {"precision": percent, "recall": percent, "f1": percent, "support": lambda v: f"{int(v):,}"},
            ),  # fmt: skip
            "<h2>Confusion matrix</h2>",
            "<p>Rows are the true labels, columns what the model said; each cell shows how many test faces "
            "and what share of the row. The diagonal holds the correct answers.</p>",
            _confusion_html(metrics),
            "<h2>Example faces</h2>",
            "<p>For each label, the test faces the model was most sure about: labelled correctly (green) "
            "and mistakes (red), with the model's answer and its probability.</p>",
            _faces_html(run, faces, unavailable, faces_per_cell),
        ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
