"""A finished run as one self-contained HTML report, for people who will not open the dashboard.

The report is one HTML file that makes no request and runs no script (inline CSS, inline SVG
curves, faces as data URIs): it opens from an e-mail attachment on a machine with no network, and
a label or path containing markup cannot turn into code, because every string that comes from data
goes through `html.escape`. What it says (sentences, tables, faces) comes from fer.results, as on
the Results page; this module only renders it.
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from fer import results, runs, saliency
from fer.config import TrainConfig


def png_data_uri(image: np.ndarray) -> str:
    """A uint8 image as a `data:image/png;base64,...` URI (no file, no request)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def jpeg_data_uri(image: np.ndarray, quality: int = 85) -> str:
    """An RGB or gray uint8 image as a `data:image/jpeg;base64,...` URI (smaller than PNG for maps)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# The HTML report ----------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933;
       max-width: 1040px; margin: 2rem auto; padding: 0 1.2rem; line-height: 1.5; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.4rem; border-bottom: 1px solid #d9e2ec; }
.muted { color: #627d98; } .note { background: #fff8e1; border-left: 4px solid #f0b429; padding: 0.6rem 1rem; }
.run-note { white-space: pre-wrap; background: #f0f4f8; border-left-color: #9fb3c8; }
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
.looked { display: flex; flex-wrap: wrap; gap: 1.2rem; margin: 0.3rem 0 0.8rem; }
.looked .duo { display: flex; gap: 0.2rem; } .looked .duo div { text-align: center; font-size: 0.75rem; }
.looked img { width: 96px; height: 96px; border-radius: 4px; display: block; }
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


def reliability_svg(frame: pd.DataFrame) -> str:
    """The reliability diagram as inline SVG: accuracy against mean top probability per confidence
    bin, before (grey) and after (blue) calibration, with the diagonal a calibrated model follows."""
    size, left, top, right, bottom = 300, 50, 30, 110, 40
    width, height = size + left + right, size + top + bottom

    def sx(x: float) -> float:
        return left + x * size

    def sy(y: float) -> float:
        return top + (1 - y) * size

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'class="reliability"><text x="50" y="18" font-size="14" font-weight="600">'
             "How often it is right, by how sure it says it is</text>",
             f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#bcccdc"/>',
             f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="#9fb3c8" '
             'stroke-dasharray="4 3"/>']  # fmt: skip
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{left - 6}" y="{sy(tick) + 4:.1f}" font-size="10" text-anchor="end" '
                     f'fill="#627d98">{tick:.0%}</text><text x="{sx(tick):.1f}" y="{top + size + 14}" '
                     f'font-size="10" text-anchor="middle" fill="#627d98">{tick:.0%}</text>')  # fmt: skip
    parts.append(f'<text x="{left + size / 2}" y="{height - 6}" font-size="11" text-anchor="middle" '
                 'fill="#627d98">probability of its answer</text>')  # fmt: skip
    for k, (kind, colour) in enumerate((("before", "#9aa5b1"), ("after", "#2563eb"))):
        rows = frame[frame["kind"] == kind] if len(frame) else frame
        points = [(sx(r.confidence), sy(r.accuracy)) for r in rows.itertuples() if _finite(r.confidence)]
        if len(points) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points]
        ly = top + 12 + 18 * k
        name = "as trained" if kind == "before" else "calibrated"
        parts.append(f'<line x1="{left + size + 10}" x2="{left + size + 28}" y1="{ly}" y2="{ly}" '
                     f'stroke="{colour}" stroke-width="2"/><text x="{left + size + 32}" y="{ly + 4}" '
                     f'font-size="11">{name}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _calibration_html(metrics: dict) -> str:
    said = results.calibration_sentence(metrics)
    if said is None:
        return '<p class="note">This run recorded no calibration (it was trained before runs calibrated themselves).</p>'
    return (
        "<p>A probability is honest when, of the faces given about 60%, about 6 in 10 are right: then the "
        "points lie on the dashed diagonal. Each point is the test faces whose top probability fell in one "
        "band, at their mean probability (across) and the share labelled correctly (up).</p>"
        f"<p>{escape(said)}</p>{reliability_svg(results.reliability_frame(metrics))}"
    )


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
    counts, shares = results.confusion(metrics), results.confusion(metrics, shares=True)
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


def _faces_html(
    run: runs.Run, faces: results.RunFaces | None, unavailable: str | None, per_group: int
) -> str:
    if faces is None or run.predictions.empty:
        why = results.without_paths(unavailable or "the run has no predictions.csv")
        return f'<p class="note">No example faces: {escape(why)}. The numbers above are complete.</p>'
    groups = results.examples(run.predictions, list(run.metrics["labels"]), per_group)
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
                probability = getattr(row, runs.PROBABILITY)
                caption = (
                    f"{row.predicted} {probability:.0%}"
                    if right
                    else f"called {row.predicted} ({probability:.0%})"
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


def _looked_html(
    run: runs.Run, faces: results.RunFaces | None, unavailable: str | None, pairs: int, per_pair: int
) -> str:
    """For the most confused pairs of labels, a few of their faces beside the map of where the model
    looked when it gave the wrong label."""
    if faces is None or run.predictions.empty:
        why = results.without_paths(unavailable or "the run has no predictions.csv")
        return f'<p class="note">No maps: {escape(why)}.</p>'
    cells = results.most_confused(run.metrics, pairs)
    if not cells:
        return '<p class="muted">The model confused no two labels on the test faces.</p>'
    if not (run.path / runs.BEST).is_file():
        return f'<p class="note">No maps: the run has no model file ({runs.BEST}).</p>'
    try:
        from fer import modelfile

        model, _ = modelfile.load_model(run.path / runs.BEST)
        grad_cam = saliency.GradCam(model)
    except (ValueError, OSError) as error:  # ModelFileError and SaliencyError are ValueErrors
        return f'<p class="note">No maps: the run\'s model cannot give them ({escape(results.without_paths(error))}).</p>'
    labels = list(run.metrics["labels"])
    blocks = []
    for true, predicted, count in cells:
        rows = results.cell_faces(run.predictions, true, predicted).head(per_pair)
        kept = [crop for crop in faces.crops(rows) if crop is not None]
        if not kept:
            continue
        maps = grad_cam.maps(np.stack(kept), [labels.index(predicted)] * len(kept))
        scale = max(1, round(96 / kept[0].shape[0]))  # shown 96 px wide
        items = "".join(
            f'<div class="duo"><div><img src="{jpeg_data_uri(np.kron(crop, np.ones((scale, scale), np.uint8)))}" '
            f'alt="a {escape(true)} face">face</div><div><img '
            f'src="{jpeg_data_uri(saliency.overlay(crop, found, scale=scale))}" '
            f'alt="where the model looked when it said {escape(predicted)}">where it looked</div></div>'
            for crop, found in zip(kept, maps)
        )
        blocks.append(
            f"<h3>{escape(true)} called {escape(predicted)} ({count:,} test faces)</h3>"
            f'<div class="looked">{items}</div>'
        )
    return (
        "".join(blocks)
        or '<p class="note">No maps: the faces of these cells are not in the dataset any more.</p>'
    )


def _settings_html(run: runs.Run) -> str:
    train = run.train
    items = [
        ("Datasets", ", ".join(results.dataset_title(d) for d in train.get("datasets", [])) or "unknown"),
        ("Network", f"{train.get('arch')}: {results.ARCH_WORDS.get(str(train.get('arch')), 'a custom network')} "
                    f"(first-block width {train.get('width')})"),
        ("Faces", f"{train.get('image_size')}×{train.get('image_size')} grayscale, margin {train.get('margin', 0)}"),
        ("Minimum detector score", "none" if train.get("min_confidence") is None else str(train["min_confidence"])),
        ("Epochs", f"{len(run.history)} (of at most {train.get('epochs')}), the model kept is from epoch "
                   f"{(run.metrics or {}).get('best_epoch') or run.status.get('best_epoch') or '–'}"),
        ("Batch size, learning rate", f"{train.get('batch_size')}, {train.get('learning_rate')}"),
        ("Dropout, label smoothing", f"{train.get('dropout')}, {train.get('label_smoothing')}"),
        ("Augmentation, class weighting", f"{'on' if train.get('augment') else 'off'}, "
                                          f"{'on' if train.get('class_weight') else 'off'}"),
        ("Seed, val / test share", f"{train.get('seed')}, {train.get('val_share')} / {train.get('test_share')}"),
        ("Training-face cap", "none" if not train.get("max_faces") else f"{int(train['max_faces']):,}"),
    ]  # fmt: skip
    if train.get("teachers"):  # by file name: a server's folders are not the reader's business
        names = ", ".join(Path(str(path).strip()).name for path in str(train["teachers"]).split(","))
        items.append(
            ("Taught by", f"{names} ({float(train.get('distill', TrainConfig.distill)):g} of each target)")
        )
    # Read by people outside the server: no command line, and no server path (datasets by folder name).
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(results.without_paths(v))}</dd>" for k, v in items)
    return f"<dl>{rows}</dl>"


def _counts_html(run: runs.Run, faces: results.RunFaces | None) -> str:
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
    counts = runs.model_metadata(run.path).get("counts") or {}
    text = ", ".join(f"{split} {int(n):,}" for split, n in counts.items())
    return (
        f"<p>Faces per split: {escape(text or 'not recorded')}. Faces per label are known for the test split "
        "only (the per-class table below); the dataset could not be read to count the others.</p>"
    )


def build_report(
    run_dir: Path | str,
    *,
    faces_per_cell: int = 4,
    confused_pairs: int = 3,
    maps_per_pair: int = 3,
    progress: results.Progress | None = None,
) -> str:
    """The run as one self-contained HTML page (see the module docstring); ValueError if not a run.

    `faces_per_cell` faces are shown per label and kind (labelled correctly / mistakes); for the
    `confused_pairs` most confused pairs of labels, `maps_per_pair` faces with the map of where the
    model looked (0 pairs: no maps, and the model is not loaded).
    """
    for name, value in (
        ("faces_per_cell", faces_per_cell),
        ("confused_pairs", confused_pairs),
        ("maps_per_pair", maps_per_pair),
    ):
        if value < 0:
            raise ValueError(f"{name} must be at least 0, got {value}")
    run = runs.load_run(run_dir)
    faces, unavailable = None, None
    if run.finished:
        try:
            faces = results.run_faces(run.path, progress=progress)
        except results.FacesUnavailable as error:
            unavailable = str(error)
    title = f"Facial-expression model: {run.title}"
    when = _when(run.status.get("finished") or run.status.get("updated"))
    body = [
        f"<h1>{escape(title)}</h1>",
        *([f'<p class="note run-note">{escape(run.note)}</p>'] if run.note else []),
        f'<p class="muted">Run folder {escape(run.name)}, {escape(runs.STATE_WORDS.get(run.state, run.state))} on {escape(when)}; '
        f"report made on {escape(_when(time.time()))}.</p>",
        "<p>A convolutional network was trained to tell facial expressions apart "
        f"({escape(', '.join(run.labels))}) from grayscale face crops. It was trained on one part of the "
        "faces, tuned on a second (validation) and scored once on a third it never saw (test): the "
        "numbers below are from that test part.</p>",
    ]
    if run.state != "done":
        error = run.status.get("error")
        body.append(
            f'<p class="error">This run is {escape(runs.STATE_WORDS.get(run.state, run.state))}'
            + (f": {escape(results.without_paths(error))}" if error else "")
            + ". The report shows what it had written so far.</p>"
        )
    body += ["<h2>What was trained on what</h2>", _settings_html(run)]
    body += ["<h3>Faces per label and split</h3>", _counts_html(run, faces)]
    body += ["<h2>Training curves</h2>", _curves_html(run.history)]
    if run.metrics is None:
        body.append('<p class="note">There are no test results: the run did not finish.</p>')
    else:
        metrics, said = run.metrics, results.sentences(run.metrics)
        cards = "".join(
            f'<div class="card"><div class="muted">{escape(name)}</div>'
            f'<div class="value">{metrics[key]:.1%}</div><p>{escape(said[key])}</p></div>'
            for key, name in results.METRICS.items()
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
                results.per_class_table(metrics),
                {"precision": percent, "recall": percent, "f1": percent, "support": lambda v: f"{int(v):,}"},
            ),  # fmt: skip
            "<h2>Confusion matrix</h2>",
            "<p>Rows are the true labels, columns what the model said; each cell shows how many test faces "
            "and what share of the row. The diagonal holds the correct answers.</p>",
            _confusion_html(metrics),
            "<h2>How far to trust its percentages</h2>",
            _calibration_html(metrics),
            "<h2>Example faces</h2>",
            "<p>For each label, the test faces the model was most sure about: labelled correctly (green) "
            "and mistakes (red), with the model's answer and its probability.</p>",
            _faces_html(run, faces, unavailable, faces_per_cell),
        ]
        if confused_pairs and maps_per_pair:
            body += [
                "<h2>Where the model looked</h2>",
                "<p>For the labels the model mixed up most, some of those faces (left) and the same face "
                "coloured by how much each part of it counted for the wrong answer (right). "
                f"{escape(saliency.EXPLANATION)} The map is coarse: it shows regions, not single pixels.</p>",
                _looked_html(run, faces, unavailable, confused_pairs, maps_per_pair),
            ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
