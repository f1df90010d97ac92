"""Results: how well a run's model does, where it goes wrong (with the faces), how runs compare, and
the files to share. The numbers, sentences and faces come from fer.results, which the HTML report
(fer.report, offered here as a download) uses too."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from fer import launch, paths, report, results, runs, saliency
from pages import common

common.init_session()  # also here: a page opened by its own URL may run before the entry file's defaults

TRUE, PREDICTED, CHART = "results_true", "results_predicted", "results_confusion"
COMPARE = "results_compare"  # the comparison's widget key
COMPARED = "results_compared"  # the runs compared, kept while other pages show (Streamlit drops the widget's)
MAX_FACES = 40  # faces shown for one cell; the table below them lists every one
POLL_SECONDS = 2.0  # how often a run still going is read again
RUNS_POLL_SECONDS = 10.0  # how often the list of runs is read again (one may start or go elsewhere)


def _stamp(run: str) -> tuple[float, ...]:
    """Modification times of the files a run rewrites, so cached readings follow a live run."""
    times = []
    for name in (runs.STATUS, runs.HISTORY, runs.METRICS, runs.PREDICTIONS, runs.NAME):
        try:
            times.append((Path(run) / name).stat().st_mtime)
        except OSError:
            times.append(0.0)
    return tuple(times)


@st.cache_data(show_spinner=False, max_entries=32)
def _run(run: str, stamp: tuple[float, ...]) -> runs.Run:
    return runs.load_run(run)


@st.cache_resource(show_spinner=False, max_entries=4)
def _faces(run: str, stamp: tuple[float, ...], _progress) -> results.RunFaces:
    return results.run_faces(run, progress=_progress)


def run_faces(run: str) -> results.RunFaces:
    """The run's test faces; a progress bar while they are prepared (only if the cache is gone)."""
    bar = st.empty()

    def progress(done: int, total: int) -> None:
        if done < total:
            bar.progress(done / max(total, 1), text=f"Preparing the test faces: {done:,} of {total:,}")

    try:
        return _faces(run, _stamp(run), progress)
    finally:
        bar.empty()


def percents(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Shares as percentages, shown with one decimal ("percent" formatting varies the decimals)."""
    return frame.assign(**{c: frame[c] * 100 for c in columns if c in frame.columns})


def percent_column(title: str, help: str | None = None) -> st.column_config.NumberColumn:
    return st.column_config.NumberColumn(title, format="%.1f%%", help=help)


# The chosen run -----------------------------------------------------------------------------------


def status(run: runs.Run) -> None:
    """Say plainly where a run that has ended without results stands (a run still going: `live`)."""
    state = run.state
    error = common.md(results.without_paths(common.error_line(run.status.get("error") or "")))
    resume = "Resume it to carry on from its last finished epoch."
    if state == "failed":
        # The traceback stays in the run folder and goes to the server's log, never to the page.
        st.error(f"This run failed: {error or 'no error was recorded'}", icon=":material/error:")
        common.log_failure(run.path)
    elif state == "cancelled":
        st.warning(f"This run was cancelled before it finished. {resume}", icon=":material/cancel:")
    elif state == "interrupted":
        st.warning(
            f"This run was interrupted: {error or 'its process stopped without finishing'}. {resume}",
            icon=":material/warning:",
        )
    elif state == "done" and run.metrics is None:
        st.error(
            "This run says it is done, but its test results are missing or unreadable, so there is "
            "nothing to show. Train it again, or ask whoever runs this server to score its model."
        )
    if state in launch.RESUMABLE:
        common.resume_button(run.path)


@st.fragment(run_every=POLL_SECONDS)
def live(run_dir: str) -> None:
    """A run still going, redrawn every few seconds from its folder: where it is, the time left, its
    curves. When it ends, the whole page redraws with its results."""
    run = Path(run_dir)
    now = results.live_run(run)
    if not now.active:
        st.rerun()
    left = "" if now.stage in ("waiting", "starting") else f" Time left: {now.time_left}."
    st.info(
        f"This run is {now.words}.{left} Its test results appear here when it finishes: this page follows "
        "it by itself.",
        icon=":material/hourglass_top:",
    )
    st.progress(now.fraction)
    history = runs.read_history(run)
    if len(history):
        training_curves(history)
    else:
        st.caption("No epoch has finished yet, so there are no curves.")


def downloads(run: runs.Run) -> None:
    """The model, the predictions and the HTML report; each file is read (or built) only when clicked."""
    model, predictions = run.path / runs.BEST, run.path / runs.PREDICTIONS
    if not (model.is_file() or predictions.is_file()):
        return
    left, middle, right = st.columns(3)
    left.download_button(
        "Model (best.keras)",
        data=model.read_bytes,
        file_name=f"{run.name}.keras",
        mime="application/octet-stream",
        on_click="ignore",
        disabled=not model.is_file(),
        icon=":material/download:",
        key="results_download_model",
    )
    middle.download_button(
        "Predictions (CSV)",
        # Written again through the spreadsheet rule, so a run saved before it was kept is safe too.
        data=functools.partial(runs.csv_text, run.predictions),
        file_name=f"{run.name}-predictions.csv",
        mime="text/csv",
        on_click="ignore",
        disabled=not predictions.is_file(),
        icon=":material/download:",
        key="results_download_predictions",
        help="One row per test face: its true label, the model's answer (predicted), its probability for "
        "that answer (probability), then its probability for every label (p_...).",
    )
    right.download_button(
        "Report (HTML)",
        data=functools.partial(report.build_report, run.path),
        file_name=f"{run.name}-report.html",
        mime="text/html",
        on_click="ignore",
        disabled=not run.finished,
        icon=":material/download:",
        key="results_download_report",
        help="One self-contained page to share: settings, curves, metrics, confusion matrix, example faces",
    )
    common.portable_downloads(str(model), run.name, key="results_download")


METRIC_HELP = {
    "accuracy": "Share of the test faces the model labels correctly.",
    "precision": "When the model says an expression, how often it is right; averaged over the expressions, "
    "each weighted by how many test faces it has.",
    "recall": "Of the faces showing an expression, the share the model finds; averaged the same way.",
    "f1": "Precision and recall combined in one number per expression (their harmonic mean), then averaged "
    "the same way.",
    "macro_f1": results.MACRO_F1_HELP,
}


def metric_cards(metrics: dict) -> None:
    said = results.sentences(metrics, name=common.md)
    for column, (key, title) in zip(st.columns(len(results.METRICS)), results.METRICS.items()):
        with column.container(border=True):
            st.metric(title, f"{metrics[key]:.1%}", help=METRIC_HELP.get(key))
            st.caption(said[key])


# The confusion matrix and the faces of one cell ---------------------------------------------------


def chosen_cell(metrics: dict) -> tuple[str, str]:
    """The (true, predicted) cell picked so far; at first the largest mistake, the one worth a look."""
    labels = list(metrics["labels"])
    for key, default in zip((TRUE, PREDICTED), results.worst_mistake(metrics)):
        if st.session_state.get(key) not in labels:  # first visit, or a run with other labels
            st.session_state[key] = default
    return st.session_state[TRUE], st.session_state[PREDICTED]


def picked_cell(labels: list[str]) -> None:
    """A click on the confusion matrix moves the two cell pickers to that cell."""
    points = st.session_state[CHART].selection.points
    if points and points[0].get("customdata"):
        true, predicted = points[0]["customdata"][:2]
        st.session_state[TRUE], st.session_state[PREDICTED] = labels[int(true)], labels[int(predicted)]


def confusion_figure(metrics: dict, shares: bool, chosen: tuple[str, str]) -> go.Figure:
    """The confusion matrix as a heatmap (true label rows, predicted columns), the chosen cell outlined."""
    counts, share = results.confusion(metrics), results.confusion(metrics, shares=True)
    labels = list(counts.index)
    names = [common.plot_text(label) for label in labels]  # the axes' categories, shown as text
    text = [
        [f"{share.iloc[i, j]:.0%}" if shares else f"{counts.iloc[i, j]:,}" for j in range(len(labels))]
        for i in range(len(labels))
    ]
    figure = go.Figure(
        go.Heatmap(
            z=(share if shares else counts).to_numpy().tolist(),
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            hoverinfo="skip",
            colorbar={"title": "share" if shares else "faces"},
        )
    )
    # Streamlit reports no selection events from Plotly heatmaps, so every cell gets an
    # invisible marker at its centre that does; with hoverdistance -1 the nearest marker takes a
    # click anywhere in its cell.
    cells = [(t, p) for t in labels for p in labels]
    figure.add_trace(
        go.Scatter(
            x=[common.plot_text(p) for _, p in cells],
            y=[common.plot_text(t) for t, _ in cells],
            mode="markers",
            marker={"size": 30, "opacity": 0, "symbol": "square"},
            showlegend=False,
            # The cell's label positions, not the labels: the chart holds no label but as text.
            customdata=[
                [labels.index(t), labels.index(p), int(counts.loc[t, p]), float(share.loc[t, p])]
                for t, p in cells
            ],
            hovertemplate="true %{y}, predicted %{x}<br>"
            "%{customdata[2]:,} faces (%{customdata[3]:.0%} of the row)<extra>click to see them</extra>",
        )
    )
    row, column = labels.index(chosen[0]), labels.index(chosen[1])
    figure.add_shape(
        type="rect",
        x0=column - 0.5,
        x1=column + 0.5,
        y0=row - 0.5,
        y1=row + 0.5,
        line={"color": "#f97316", "width": 3},
    )
    figure.update_layout(
        xaxis={"title": "predicted", "side": "top", "type": "category"},
        yaxis={"title": "true", "autorange": "reversed", "type": "category"},
        hoverdistance=-1,
        clickmode="event+select",
        height=120 + 48 * len(labels),
        margin={"t": 60, "b": 10},
    )
    return figure


def cell_faces(run: runs.Run) -> None:
    """The two cell pickers, then the test faces of the chosen cell with their probabilities."""
    labels = list(run.metrics["labels"])
    left, right = st.columns(2)
    true = left.selectbox("True label", labels, key=TRUE)
    predicted = right.selectbox("Predicted label", labels, key=PREDICTED)
    if run.predictions.empty:
        st.info("This run has no predictions.csv, so the faces of a cell cannot be listed.")
        return
    rows = results.cell_faces(run.predictions, true, predicted)
    what = "labelled correctly" if true == predicted else f"called {common.md(predicted)}"
    if rows.empty:
        st.info(f"No {common.md(true)} test face was {what}.")
        return
    shown = rows.head(MAX_FACES)
    st.markdown(
        f"**{len(rows):,}** {common.md(true)} test face{'s' if len(rows) != 1 else ''} {what}"
        + (f" (the {MAX_FACES} the model was surest about first):" if len(rows) > MAX_FACES else ":")
    )
    try:
        crops = run_faces(str(run.path)).crops(shown)
    except results.FacesUnavailable as error:
        st.warning(
            f"The faces cannot be shown: {common.md(results.without_paths(error))}. The table lists them by "
            "photo.",
            icon=":material/image_not_supported:",
        )
        crops = []
    # Rows as dicts: a label need not be a Python name, so itertuples would rename its column.
    found = [(crop, row) for crop, row in zip(crops, shown.to_dict("records")) if crop is not None]
    pictures = [crop for crop, _ in found]
    if found and st.toggle(
        "Show where the model looked",
        key="results_saliency",
        help="Colours each face by how much each part of it counted for the answer "
        f"{common.md(predicted)} (Grad-CAM).",
    ):
        pictures = looked_at(run, predicted, found) or pictures
    if found:
        st.image(
            pictures,
            caption=[  # image captions are Markdown too
                f"{common.md(predicted)} {r[f'p_{predicted}']:.0%}"
                + ("" if true == predicted else f", {common.md(true)} {r[f'p_{true}']:.0%}")
                for _, r in found
            ],
            width=96,
            output_format="PNG",  # 48-pixel faces: JPEG would smear them
        )
    elif crops:
        st.warning("None of these faces is in the dataset any more (it changed since training).")
    probabilities = [f"p_{label}" for label in labels]
    st.dataframe(
        percents(rows[[c for c in ["photo", "face", *probabilities] if c in rows.columns]], probabilities),
        hide_index=True,
        column_config={f"p_{label}": percent_column(label) for label in labels},
    )


def looked_at(run: runs.Run, predicted: str, found: list) -> list:
    """The faces with the map of where the run's model looked for `predicted` laid over them; none
    (with a note saying why) where that cannot be shown."""
    model = run.path / runs.BEST
    if not model.is_file():
        st.info("This run has no best.keras, so where its model looked cannot be shown.")
        return []
    keys = tuple((str(row.get("dataset", "")), str(row["photo"]), int(row["face"])) for _, row in found)
    try:
        with st.spinner("Finding where the model looked..."):
            maps = _maps(str(model), model.stat().st_mtime, predicted, keys, [crop for crop, _ in found])
    except (saliency.SaliencyError, ValueError) as error:
        st.warning(f"Where the model looked cannot be shown: {common.md(error)}.")
        return []
    st.caption(saliency.EXPLANATION)
    return [saliency.overlay(crop, found_map, scale=2) for (crop, _), found_map in zip(found, maps)]


@st.cache_data(show_spinner=False, max_entries=16)
def _maps(model_path: str, stamp: float, predicted: str, keys: tuple, _faces: list):
    """Maps of the faces `keys` name (their pixels in `_faces`) for the label `predicted`."""
    shared = common.predictor(model_path)
    if predicted not in shared.labels:
        raise ValueError(f"the model does not know the label {predicted!r}")
    return shared.maps(np.stack(_faces), [predicted] * len(_faces))


# Curves and comparison ----------------------------------------------------------------------------


def curves_figure(history: pd.DataFrame, metric: str, title: str) -> go.Figure:
    figure = go.Figure()
    for column, name in ((metric, "train"), (f"val_{metric}", "validation")):
        if column in history:
            figure.add_scatter(x=history["epoch"], y=history[column], mode="lines+markers", name=name)
    figure.update_layout(
        title=title,
        xaxis_title="epoch",
        xaxis_dtick=max(1, -(-len(history) // 10)),
        height=320,
        margin={"t": 50, "b": 10},
    )
    if metric == "accuracy":
        figure.update_yaxes(tickformat=".0%")
    return figure


def training_curves(history: pd.DataFrame) -> None:
    st.subheader("Training curves")
    left, right = st.columns(2)
    common.chart(curves_figure(history, "loss", "Loss"), left, key="results_loss")
    common.chart(curves_figure(history, "accuracy", "Accuracy"), right, key="results_accuracy")


def reliability_figure(metrics: dict) -> go.Figure:
    """Accuracy against mean top probability per confidence bin, before and after calibration, with
    the diagonal an honest model's points lie on."""
    frame = results.reliability_frame(metrics)
    figure = go.Figure()
    figure.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="honest", line={"dash": "dash", "color": "#9fb3c8"}
    )
    for kind, name, colour in (("before", "as trained", "#9aa5b1"), ("after", "calibrated", "#2563eb")):
        rows = frame[frame["kind"] == kind]
        if len(rows):
            figure.add_scatter(
                x=rows["confidence"],
                y=rows["accuracy"],
                mode="lines+markers",
                name=name,
                line={"color": colour},
                customdata=rows["count"],
                hovertemplate="said %{x:.0%}, right %{y:.0%} of %{customdata:,} faces<extra></extra>",
            )
    figure.update_layout(
        title="How often it is right, by how sure it says it is",
        xaxis_title="probability of its answer",
        yaxis_title="share right",
        height=380,
        margin={"t": 50, "b": 10},
    )
    figure.update_xaxes(range=[0, 1], tickformat=".0%")
    figure.update_yaxes(range=[0, 1], tickformat=".0%")
    return figure


def calibration_section(metrics: dict) -> None:
    st.subheader("How far to trust its percentages")
    said = results.calibration_sentence(metrics)
    if said is None:
        st.info("This run recorded no calibration: it was trained before runs calibrated themselves.")
        return
    st.markdown(common.md(said))
    st.caption(
        "Each point is the test faces whose top probability fell in one band: across, their mean "
        "probability; up, the share labelled correctly. On the dashed diagonal, a face given about 60% "
        "is right about 6 times in 10."
    )
    common.chart(reliability_figure(metrics), key="results_reliability")


def compare(run_dirs: list[Path], current: runs.Run) -> None:
    finished = [str(p) for p in run_dirs if (p / runs.METRICS).is_file()]
    if len(finished) < 2:
        st.caption("Finish two or more runs to compare them here.")
        return
    if COMPARE not in st.session_state:  # first visit, a link, or back from another page
        default = [str(current.path)] if str(current.path) in finished else []
        st.session_state[COMPARE] = st.session_state.get(COMPARED, default)
    st.session_state[COMPARE] = [p for p in st.session_state[COMPARE] if p in finished]  # deleted meanwhile
    chosen = st.multiselect(
        "Runs to compare",
        finished,
        format_func=lambda p: f"{runs.run_title(p)} · {Path(p).name}",
        key=COMPARE,
    )
    st.session_state[COMPARED] = chosen
    if len(chosen) < 2:
        st.caption("Choose two or more runs.")
        return
    shares = ["best val accuracy", *results.METRICS.values()]
    st.dataframe(
        percents(results.compare_table(chosen), shares),
        hide_index=True,
        column_config={
            **{title: percent_column(title) for title in shares},
            results.METRICS["macro_f1"]: percent_column(results.METRICS["macro_f1"], results.MACRO_F1_HELP),
            "arch": st.column_config.TextColumn("network", help=results.ARCH_HELP),
        },
    )
    figure = go.Figure()
    for run in chosen:
        history = _run(run, _stamp(run)).history
        if "val_accuracy" in history:
            figure.add_scatter(
                x=history["epoch"],
                y=history["val_accuracy"],
                mode="lines+markers",
                name=common.plot_text(f"{runs.run_title(run)} · {Path(run).name}"),
            )
    figure.update_layout(
        title="Validation accuracy per epoch",
        xaxis_title="epoch",
        xaxis_rangemode="tozero",
        yaxis_tickformat=".0%",
        height=360,
    )
    common.chart(figure, key="results_compare_chart")


@st.fragment(run_every=RUNS_POLL_SECONDS)
def runs_appearing(known: set[str]) -> None:
    """Redraw the page when a run is started or deleted elsewhere (another tab, another visitor), so
    the run picker lists it with no click."""
    if {str(p) for p in runs.list_runs(paths.runs_dir())} != known:
        st.rerun()


# The page -----------------------------------------------------------------------------------------

st.title("Results")
run_dirs = runs.list_runs(paths.runs_dir())
runs_appearing({str(p) for p in run_dirs})
if not run_dirs:
    st.info(
        "No training runs yet. Train a model on the Train page, and its results appear here.",
        icon=":material/info:",
    )
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

linked = common.read_url(
    {common.Q_RUN: common.checked_run, common.Q_COMPARE: common.checked_runs}, many=(common.Q_COMPARE,)
)
if common.Q_RUN in linked:
    st.session_state[common.RUN] = linked[common.Q_RUN]
    st.session_state.pop("results_run", None)  # the run picker starts again at the link's run
if common.Q_COMPARE in linked:
    st.session_state[COMPARED] = linked[common.Q_COMPARE]
    st.session_state.pop(COMPARE, None)
options = [str(p) for p in run_dirs]
states = {p: runs.read_status(Path(p)).get("state", "interrupted") for p in options}
titles = {p: runs.run_title(p) for p in options}
remembered = st.session_state.get(common.RUN)
chosen = st.selectbox(
    "Run",
    options,
    index=options.index(remembered) if remembered in options else 0,
    format_func=lambda p: f"{titles[p]} · {Path(p).name} ({runs.STATE_WORDS.get(states[p], states[p])})",
    key="results_run",
)
st.session_state[common.RUN] = chosen
try:
    run = _run(chosen, _stamp(chosen))
except ValueError as error:
    st.error(f"This run folder cannot be read: {common.md(error)}. Choose another run.")
    st.stop()

train = run.train
if run.note:
    st.markdown(common.note_markdown(run.note))
st.caption(
    common.md(", ".join(results.dataset_title(d) for d in train.get("datasets", [])))
    + f" · {common.md(train.get('arch'))} network · {common.md(train.get('image_size'))} px faces · "
    f"{len(run.history)} of {common.md(train.get('epochs'))} epochs",
    help=results.ARCH_HELP,
)
if run.state in ("queued", "running"):
    live(chosen)
else:
    status(run)
downloads(run)
with st.expander("Its settings, name and note"):
    common.run_settings(train)
    common.naming_editor(run.path, "results_naming")
if run.finished and common.train_again_button(run.path, "results_train_again"):
    st.switch_page("pages/train.py")

if run.finished:
    metrics = run.metrics
    st.subheader(f"How well it does on {metrics['n']:,} {common.md(metrics.get('split', 'test'))} faces")
    st.caption(common.md(results.tested_on(train)))
    metric_cards(metrics)

    st.subheader("Per label")
    st.dataframe(
        percents(results.per_class_table(metrics), ["precision", "recall", "f1"]),
        hide_index=True,
        column_config={
            "precision": percent_column("precision"),
            "recall": percent_column("recall"),
            "f1": percent_column("F1"),
            "support": st.column_config.NumberColumn("test faces", format="localized"),
        },
    )

    st.subheader("Where it goes wrong")
    shares = st.toggle("Shares of each true label instead of counts", key="results_shares")
    st.caption(
        "Rows: the true label; columns: what the model said. Click a cell, or pick one below, to see its faces."
    )
    common.chart(
        confusion_figure(metrics, shares, chosen_cell(metrics)),
        on_select=functools.partial(picked_cell, list(metrics["labels"])),
        selection_mode="points",
        key=CHART,
    )
    cell_faces(run)
    calibration_section(metrics)

if len(run.history) and run.state not in ("queued", "running"):
    training_curves(run.history)

st.subheader("Compare runs")
compare(run_dirs, run)
compared = st.session_state.get(COMPARED) or []
common.write_url(
    {
        common.Q_RUN: run.name,
        # Left out while it is the comparison a visit starts with: this run alone.
        common.Q_COMPARE: [Path(p).name for p in compared] if compared != [str(run.path)] else None,
    }
)
