"""Train: choose the settings, start a run, watch it live, cancel it; the list of past runs.

A run is `python -m fer train` in a process of its own (fer.launch). The page remembers only a run
folder's name: everything it shows is read from the run folder, and the run to watch is found in the
run store, so a reload or a second tab shows the same run still going.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from fer import datasets, launch, paths, results, runs
from fer.config import ARCHITECTURES, TrainConfig
from fer.modelfile import read_metadata
from pages import common

common.init_session()  # also here: a page opened by its own URL may run before the entry file's defaults

# Page-local session keys (only this page reads them, so they are not in common.DEFAULTS).
WATCHING = "train_watching"  # the run folder this page shows, live or finished
ANNOUNCED = "train_announced"  # the finished run already handed to the Results page (once, not every visit)
DELETED = "train_deleted"  # the message left by the delete callback for the next run of the page
POLL_SECONDS = 2.0
# How often the past runs are read again while none is going (one may start elsewhere).
IDLE_POLL_SECONDS = 10.0

DEFAULTS = TrainConfig()
ARCH_LABELS = {
    "vgg-steady": "vgg-steady: VGG-style network, steadier answers, quicker to train (default)",
    "vgg-lite": "vgg-lite: VGG-style network, quicker to train",
    "vgg": "vgg: VGG-style network (the bundled model's)",
    "vgg-smooth": "vgg-smooth: vgg with smoothed pooling, steadier answers",
    "seed": "seed: the report's CNN (three convolution blocks)",
    "vgg-small": "vgg-small: small VGG-style network (fastest, a little less accurate)",
}


def finished_epochs(run: Path) -> int:
    history = runs.read_history(run)
    return int(history["epoch"].max()) if len(history) else 0


def curves(run: Path) -> None:
    history = runs.read_history(run)
    if not len(history):
        st.caption("The loss and accuracy curves appear here after the first epoch.")
        return
    left, right = st.columns(2)
    for column, metric, title in (
        (left, "loss", "Loss (lower is better)"),
        (right, "accuracy", "Accuracy (higher is better)"),
    ):
        figure = go.Figure()
        for name, key, colour in (
            ("training faces", metric, "#3b6fd8"),
            ("validation faces", f"val_{metric}", "#e07b39"),
        ):
            if key in history:
                figure.add_scatter(
                    x=history["epoch"],
                    y=history[key],
                    name=name,
                    mode="lines+markers",
                    line={"color": colour},
                )
        figure.update_layout(
            title=title,
            xaxis_title="epoch",
            xaxis_dtick=max(1, -(-len(history) // 10)),  # whole epochs, at most ten ticks
            height=320,
            margin={"l": 10, "r": 10, "t": 40, "b": 10},
            legend={"orientation": "h", "y": -0.25},
        )
        if metric == "accuracy":
            figure.update_yaxes(tickformat=".0%")
        common.chart(figure, column)


def show_progress(run: Path, status: dict) -> None:
    now = results.live_run(run, status)
    if now.cancelling:
        st.warning(
            "Cancelling… the run stops after its current batch (a run still preparing its faces stops at "
            "once); its finished epochs are kept.",
            icon=":material/hourglass_top:",
        )
    if now.stage == "waiting" and status.get("place"):
        st.progress(0.0, text=f"Waiting for a free training slot: place {status['place']} in line.")
    elif now.stage in ("waiting", "starting"):
        st.progress(0.0, text="Starting the training process...")
    elif now.stage == "preparing faces":
        done, total = int(now.progress.get("done", 0)), max(int(now.progress.get("total", 1)), 1)
        st.progress(
            min(done / total, 1.0),
            text=f"Preparing faces (crop, resize, grayscale): {done:,} of {total:,}",
        )
    elif now.stage == "testing":
        st.progress(1.0, text="Training finished; scoring the held-out test faces...")
    else:
        batch, batches = int(now.progress.get("batch", 0)), max(int(now.progress.get("batches", 1)), 1)
        history = runs.read_history(run)
        best = history["val_accuracy"].max() if "val_accuracy" in history else None
        first, second, third, fourth = st.columns(4)
        first.metric(
            "Epoch", f"{now.epoch} of {now.epochs}", help="One epoch is one pass over every training face."
        )
        second.metric(
            "Time left",
            now.time_left,
            help="Estimated from how long its epochs take. It is the most it should take: training stops "
            "early when the model stops improving.",
        )
        third.metric(
            "Training accuracy",
            f"{now.progress.get('accuracy', float('nan')):.1%}",
            help="Share of training faces right so far in this epoch.",
        )
        fourth.metric(
            "Best validation accuracy",
            "-" if best is None or pd.isna(best) else f"{best:.1%}",
            help="Share of held-back faces the best model so far gets right: the honest measure.",
        )
        st.progress(
            min(batch / batches, 1.0),
            text=f"Epoch {now.epoch} of {now.epochs}: batch {batch:,} of {batches:,}",
        )


def request_cancel(run_dir: str) -> None:
    """The Cancel button's callback: asks the run to stop and returns at once, so the page says
    "Cancelling…" on the redraw the click starts (the run folder's cancel file tells every tab)."""
    try:
        launch.cancel(Path(run_dir), wait=False)
    except ValueError:  # deleted meanwhile: nothing left to cancel
        pass


@st.fragment(run_every=POLL_SECONDS)
def live(run_dir: str) -> None:
    """Redrawn every few seconds from the run folder, without rerunning the rest of the page."""
    run = Path(run_dir)
    status = launch.status(run)
    if status["state"] not in launch.ACTIVE:
        st.rerun()  # it has ended: the whole page redraws with the outcome and stops polling
    cancelling = (run / runs.CANCEL).exists()
    st.markdown(
        f"**Run {common.md(run.name)}** is "
        + ("being cancelled." if cancelling else f"{runs.STATE_WORDS[status['state']]}.")
    )
    show_progress(run, status)
    st.button(
        "Cancelling…" if cancelling else "Cancel",
        key="cancel",
        icon=":material/stop:",
        disabled=cancelling,
        on_click=request_cancel,
        args=(run_dir,),
        help="Stop this run after its current batch.",
    )
    curves(run)


def at_once() -> str:
    """How many trainings this server runs at once, in words ("" when its setting cannot be read)."""
    try:
        return f"at most {runs.max_trainings()} at once"
    except ValueError:  # the server's own misconfiguration: starting a run says what is wrong with it
        return ""


def cancel_queued(name: str) -> None:
    """A waiting run's Cancel button: it leaves the line at once and never trains."""
    try:
        launch.cancel(paths.runs_dir() / name)
    except ValueError:  # deleted meanwhile: nothing left to cancel
        pass


@st.fragment(run_every=POLL_SECONDS)
def waiting_line() -> None:
    """The runs waiting for a training slot, each with its place and a Cancel button; redrawn as it moves."""
    line = launch.queue()
    if not line:
        return
    st.subheader("Waiting to start")
    st.caption(
        f"This server trains {at_once() or 'a limited number of runs at once'}; the others wait here and "
        "start in the order they were started."
    )
    for place, run in enumerate(line, start=1):
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.markdown(f"**Place {place}:** {common.md(run.name)}")
        right.button(
            "Cancel",
            key=f"cancel_queued_{run.name}",
            icon=":material/close:",
            on_click=cancel_queued,
            args=(run.name,),
            help="Take this run out of the line: it never starts.",
        )


def outcome(run: Path, status: dict) -> None:
    state, name = status["state"], common.md(run.name)
    error = common.md(common.error_line(status.get("error") or ""))
    if state == "done":
        metrics = runs.read_json(run / runs.METRICS, {}) or {}
        accuracy, faces = metrics.get("accuracy"), metrics.get("n")
        score = (
            f"test accuracy {accuracy:.1%} on {faces:,} faces it never saw" if accuracy is not None else ""
        )
        st.success(f"Run {name} finished: {score}.", icon=":material/check_circle:")
        if st.session_state.get(ANNOUNCED) != str(run):
            st.session_state[common.RUN] = str(run)
            st.session_state[ANNOUNCED] = str(run)
        st.page_link("pages/results.py", label="See its results", icon=":material/insights:")
        finished_run(run)
    elif state == "failed":
        # Its traceback (and the log that holds it) stays in the run folder and goes to the server's log.
        st.error(f"Run {name} failed: {error or 'no error was recorded'}")
        common.log_failure(run)
    elif state == "cancelled":
        st.info(f"Run {name} was cancelled after {finished_epochs(run)} finished epoch(s).")
    else:
        st.warning(
            f"Run {name} stopped without finishing ({error or 'its process ended'}). Its last finished epoch "
            "is saved: resume it to carry on from there."
        )
    if state in launch.RESUMABLE:
        common.resume_button(run)
    if status.get("log") and state != "failed":
        with st.expander("End of the training log"):
            st.code(results.without_paths(status["log"]), language=None)  # no server path on the page
    curves(run)


def finished_run(run: Path) -> None:
    """A finished run's name, note and settings, and the button that trains it again."""
    st.markdown(f"**{common.md(runs.run_title(run))}**")
    note = runs.read_naming(run).get("note")
    if note:
        st.markdown(common.note_markdown(note))
    with st.expander("Its settings, name and note"):
        common.run_settings((runs.read_json(run / runs.CONFIG, {}) or {}).get("train") or {})
        common.naming_editor(run, "train_naming")
    common.train_again_button(run, "train_again")


def watch_run() -> None:
    """The "Watch run" callback: the run picked becomes the one this browser tab stays on."""
    st.session_state[WATCHING] = str(paths.runs_dir() / st.session_state["watch"])


def unconfirm() -> None:
    st.session_state["delete_confirm"] = False


def delete_run(name: str) -> None:
    """Delete button callback: runs before the page, so it can also reset the confirmation box."""
    run = paths.runs_dir() / name
    try:
        launch.delete(run)
    except ValueError as error:
        st.session_state[DELETED] = ("error", f"Run {common.md(name)} was not deleted: {common.md(error)}")
        return
    for key in (WATCHING, common.RUN):
        if st.session_state.get(key) == str(run):
            st.session_state[key] = "" if key == common.RUN else None
    st.session_state["delete_confirm"] = False
    st.session_state[DELETED] = ("success", f"Run {common.md(name)} was deleted.")


st.title("Train")
st.write(
    "Teach a new model to read facial expressions from the chosen dataset. Training runs on the server "
    "in the background: you can close this tab or reload it and come back to the same run."
)

# A link's dataset, threshold and settings; the form as this browser tab left it --------------------
common.read_dataset_url()
FORM = common.train_form()
from_link = common.read_url(
    {**{key: parse for key, (parse, _) in FORM.items()}, common.Q_START: common.checked_model}
)
saved = st.session_state.setdefault(common.TRAIN_SETTINGS, {})
saved.update(from_link)
filled = st.session_state.pop(common.TRAIN_FILL, None)
for key, (_, default) in FORM.items():
    # Streamlit forgets a widget's value while another page shows: it comes back from `saved`.
    if key not in st.session_state or key in from_link or filled:
        st.session_state[key] = saved.get(key, default)

# The dataset ---------------------------------------------------------------------------------------
dataset = st.session_state[common.DATASET]
threshold = float(st.session_state[common.MIN_CONFIDENCE] or 0.0)
try:
    facts = common.dataset_summary(dataset, threshold or None)
except (datasets.DatasetError, ValueError) as error:
    st.error(
        f"The dataset {common.md(common.dataset_label(dataset))} could not be read: {common.md(error)}. "
        "Choose another one."
    )
    st.page_link("pages/data.py", label="Choose a dataset on the Data page", icon=":material/dataset:")
    st.stop()
with st.container(border=True):
    left, right = st.columns([3, 1], vertical_alignment="center")
    kept = (
        f"{facts['kept']:,} of {facts['faces']:,} faces (detector score at least {threshold:g})"
        if threshold
        else f"all {facts['faces']:,} faces"
    )
    left.markdown(f"**Dataset:** {common.md(common.dataset_label(dataset))}, {kept}")
    right.page_link("pages/data.py", label="Change on the Data page", icon=":material/dataset:")

# The settings --------------------------------------------------------------------------------------
FRESH = "A new model (fresh weights)"
starts = {FRESH: "", **common.model_choices()}
# Kept as a path: a run's label changes when it is renamed (and it is gone when the run is deleted).
if st.session_state.get("start_from") not in starts or common.Q_START in from_link or filled:
    wanted = saved.get(common.Q_START, "")
    st.session_state["start_from"] = next((label for label, path in starts.items() if path == wanted), FRESH)
if filled:
    refused = filled["refused"]
    st.info(
        f"The form holds the settings of run {common.md(filled['run'])}"
        + (f", except: {common.md('; '.join(refused))}." if refused else "."),
        icon=":material/replay:",
    )
start_label = st.selectbox(
    "Start from",
    list(starts),
    key="start_from",
    help="Fine-tune a trained model on this dataset instead of starting from scratch: it keeps what it "
    "learned and adapts to these faces, in far fewer epochs. The dataset's expressions must be ones the "
    "model knows.",
)
init_from = starts[start_label]
start_model: dict = {}
if init_from:
    try:
        start_model = read_metadata(Path(init_from)).get("model") or {}
    except ValueError as error:
        st.error(
            f"{common.md(start_label)} cannot be used to start from: {common.md(error)}. Choose another model."
        )
        st.stop()
    st.caption(
        f"The network and image size are the starting model's: {ARCH_LABELS.get(start_model.get('arch'), '?')}, "
        f"{common.md(start_model.get('image_size', '?'))} pixels. A lower learning rate (such as 0.0003) keeps more of what "
        "it learned."
    )
first, second, third = st.columns(3)
arch = first.selectbox(
    "Network",
    ARCHITECTURES,
    format_func=ARCH_LABELS.get,
    key="arch",
    disabled=bool(init_from),
    help="The shape of the model. The default gives the same answer more often when a face is framed a "
    "little differently, and trains about 1.4 times as fast as vgg on a processor; vgg scored about 1 "
    "point higher in our full-length tests. The report's CNN reproduces the report. " + results.ARCH_HELP,
)
image_size = first.select_slider(
    "Image size (pixels)",
    options=common.IMAGE_SIZES,
    key="image_size",
    disabled=bool(init_from),
    help="Each face is shrunk to this many pixels a side. Bigger keeps more detail but trains much slower.",
)
epochs = first.number_input(
    "Epochs",
    min_value=1,
    max_value=500,
    key="epochs",
    help="How many times the model studies every training face. It stops early when it stops improving.",
)
batch_size = second.select_slider(
    "Batch size",
    options=common.BATCH_SIZES,
    key="batch_size",
    help="How many faces the model looks at before each small correction. Larger is faster per face.",
)
learning_rate = second.select_slider(
    "Learning rate",
    options=common.LEARNING_RATES,
    format_func=lambda rate: f"{rate:g}",
    key="learning_rate",
    help="How big each correction is: too big and it never settles, too small and it crawls. "
    "It is halved automatically when progress stalls.",
)
dropout = second.slider(
    "Dropout",
    min_value=0.0,
    max_value=0.9,
    step=0.05,
    key="dropout",
    help="Share of the model switched off at random while it learns, so it cannot just memorise the faces.",
)
val_share = second.slider(
    "Validation share",
    min_value=0.05,
    max_value=0.5,
    step=0.05,
    key="val_share",
    help="Share of the faces held back to check progress after each epoch (when the dataset does not come "
    "with its own validation faces).",
)
augment = third.checkbox(
    "Augmentation",
    key="augment",
    help="Show the model slightly flipped, shifted, turned and zoomed copies of each face, so it learns "
    "the expression rather than the exact picture.",
)
class_weight = third.checkbox(
    "Class weighting",
    key="class_weight",
    help="Count mistakes on rare expressions (such as disgust) more, so they are not ignored.",
)
seed = third.number_input(
    "Seed",
    min_value=0,
    max_value=2**31 - 1,
    key="seed",
    help="Fixes the random choices. The same seed and settings give the same run again.",
)
max_faces = third.number_input(
    "Quick trial: use at most this many faces (0 = all)",
    min_value=0,
    step=100,
    key="max_faces",
    help="Train on a random sample of the training faces to try settings in minutes. 0 uses them all.",
)

# The form as it stands: kept for this browser tab's other pages, and in the address for a link.
saved.update({key: st.session_state[key] for key in FORM})
saved[common.Q_START] = init_from
common.write_url(
    common.dataset_url()
    | {key: saved[key] for key, (_, default) in FORM.items() if saved[key] != default}
    | {common.Q_START: common.model_param(init_from) if init_from else None}
)

active = launch.active_runs()
if active:
    waiting = len(launch.queue())
    st.caption(
        f"{len(active) - waiting} run(s) training and {waiting} waiting on this server, which trains "
        f"{at_once() or 'a limited number at once'}: a run started beyond that waits its turn."
    )
if st.button("Start training", key="start", type="primary", icon=":material/play_arrow:"):
    try:
        config = TrainConfig(
            datasets=(dataset,),
            arch=start_model.get("arch", arch),
            width=int(start_model.get("width", DEFAULTS.width)),
            image_size=int(start_model.get("image_size", image_size)),
            init_from=init_from or None,
            epochs=int(epochs),
            batch_size=int(batch_size),
            learning_rate=float(learning_rate),
            dropout=float(dropout),
            val_share=float(val_share),
            augment=bool(augment),
            class_weight=bool(class_weight),
            seed=int(seed),
            min_confidence=threshold or None,
            max_faces=int(max_faces) or None,
        )
    except ValueError as error:
        st.error(f"These settings cannot be used: {common.md(error)}.")
        st.stop()
    try:
        run = launch.start(config)
    except (OSError, ValueError) as error:
        st.error(f"The run could not be started: {common.md(error)}")
        st.stop()
    st.session_state[WATCHING] = str(run)
    active = launch.active_runs()

# The run being watched -----------------------------------------------------------------------------
# A session stays on the run it started (or picked below), finished or not: another visitor's run
# starting or still going never takes its place. A session without one (a new tab, a reload) shows
# the run still going, found in the run store, else the newest run, so a reload still shows how it
# ended.
own = st.session_state.get(WATCHING)
if own and not Path(own).is_dir():  # deleted meanwhile
    own = st.session_state[WATCHING] = None
choices = ([own] if own and Path(own) not in active else []) + [str(run) for run in active]
watching = own or (choices[0] if choices else None)
if not watching:
    newest = runs.list_runs(paths.runs_dir())[:1]
    watching = str(newest[0]) if newest else None
if len(choices) > 1:
    st.session_state["watch"] = Path(watching).name  # follows the run started or picked last
    st.selectbox("Watch run", [Path(run).name for run in choices], key="watch", on_change=watch_run)

if watching:
    st.subheader("Current run")
    run = Path(watching)
    status = launch.status(run)
    if status["state"] in launch.ACTIVE:
        live(watching)
        with st.expander("Its settings, name and note"):  # outside the part redrawn every few seconds
            common.run_settings((runs.read_json(run / runs.CONFIG, {}) or {}).get("train") or {})
            common.naming_editor(run, "train_naming")
    else:
        outcome(run, status)

waiting_line()

# Past runs -----------------------------------------------------------------------------------------
st.subheader("Past runs")
message = st.session_state.pop(DELETED, None)
if message:
    (st.success if message[0] == "success" else st.error)(message[1])
run_dirs = runs.list_runs(paths.runs_dir())


def past_runs() -> None:
    """The table of runs, redrawn every few seconds (see below). A run that started or ended elsewhere
    (another tab, another visitor) redraws the whole page, so its panel and the poll rate follow."""
    if bool(launch.active_runs()) != bool(active):
        st.rerun()
    listed = runs.list_runs(paths.runs_dir())
    if not listed:
        st.info("No runs yet: choose the settings above and start one.")
        return
    rows = []
    for run in listed:
        status = launch.status(run)
        now = results.live_run(run, status)
        train = (runs.read_json(run / runs.CONFIG, {}) or {}).get("train", {})
        metrics = (runs.read_json(run / runs.METRICS, {}) or {}) if status["state"] == "done" else {}
        created = status.get("created")
        rows.append(
            {
                "run": run.name,
                "name": runs.run_title(run),
                "state": now.words
                + (
                    f" (place {status['place']} in line)"
                    if now.stage == "waiting" and status.get("place")
                    else ""
                ),
                "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "",
                "network": train.get("arch"),
                "epochs done": f"{now.finished_epochs} of {train.get('epochs', '?')}",
                "time left": now.time_left,
                # Text, so a run without a score yet shows an empty cell rather than "None".
                "test accuracy": f"{metrics['accuracy']:.1%}" if "accuracy" in metrics else "",
                "datasets": ", ".join(common.dataset_label(name) for name in train.get("datasets", [])),
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "network": st.column_config.TextColumn(help=results.ARCH_HELP),
            "epochs done": st.column_config.TextColumn(
                help="Finished epochs, of the most the run may train."
            ),
            "time left": st.column_config.TextColumn(
                help="For a run still going: estimated from how long its epochs take (training can stop "
                "sooner, when the model stops improving)."
            ),
            "test accuracy": st.column_config.TextColumn(
                help="Share of the held-back test faces the finished model labels correctly."
            ),
        },
    )


# While a run is going the table follows it closely; otherwise it looks now and then for one starting.
st.fragment(past_runs, run_every=POLL_SECONDS if active else IDLE_POLL_SECONDS)()
finished = [run.name for run in run_dirs if launch.status(run)["state"] not in launch.ACTIVE]
if finished:
    with st.expander("Delete a run"):
        # A confirmation is for one run: choosing another run unticks it.
        name = st.selectbox("Run to delete", finished, key="delete_run", on_change=unconfirm)
        sure = st.checkbox(
            "Yes, delete this run, its model and its results for good", value=False, key="delete_confirm"
        )
        st.button(
            "Delete run",
            key="delete",
            icon=":material/delete:",
            disabled=not sure,
            on_click=delete_run,
            args=(name,),
            help="Tick the box above first. A run still going cannot be deleted: cancel it first.",
        )
