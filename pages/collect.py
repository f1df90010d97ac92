"""Your faces: collect labelled faces from webcam snapshots and photos, fine-tune a model on them, and see
before and after on the faces held back.

The faces are an ordinary ExpW dataset under the data folder (fer.collect), so the Data, Train and Results
pages and every command read it; the fine-tuning is an ordinary background run (fer.launch), so its
model appears on the Classify page like any finished run.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from fer import collect, images, launch, runs
from fer.labels import LABELS
from pages import common

common.init_session()  # also here: a page opened by its own URL may run before the entry file's defaults

NEW = "New collection..."
SNAPSHOT = "Webcam snapshot"
# Page-local session keys.
DONE = "collect_done"  # photo digest -> the face numbers saved from it, or None once it was skipped
MESSAGE = "collect_message"  # ("success" | "error", text) left by a button for the next run of the page
WATCHING = "collect_run"  # the fine-tuning run this page follows
OPENING = "collect_opening"  # set by the "Open it on the Data page" callback once the dataset is switched
POLL_SECONDS = 2.0
st.session_state.setdefault(DONE, {})

st.title("Your faces")
st.write(
    "Teach a model your own faces: take webcam snapshots or upload photos, pick the face and its "
    "expression, and save it. With 5 to 10 faces of each expression you want (any of the seven), "
    "fine-tune a model on them in a few minutes and see how it reads the faces it was not trained on, "
    "before and after."
)


@st.cache_data(show_spinner="Finding faces...", max_entries=64)
def faces_in(data: bytes, model_path: str) -> list[tuple[tuple[float, float, float, float], float]]:
    """The faces in a picture, found by Classify's detector: the one the shared predictor holds, which
    loads with the model (and TensorFlow, whose import must not race the model's warm-up)."""
    shared = common.predictor(model_path)
    with shared.lock:
        return collect.find_faces(collect.open_photo(data), shared.predictor.detector)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_url(face) -> str:
    """A (size, size) uint8 face as a data URL, for an image column of a table."""
    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def flash(kind: str, text: str) -> None:
    st.session_state[MESSAGE] = (kind, text)


# The collection ------------------------------------------------------------------------------------
names = collect.list_collections()
pick = st.selectbox(
    "Collection",
    names + [NEW],
    key="collect_pick",
    help="Your faces are kept as a dataset of their own; keep one per person or per occasion.",
)
name = pick
if pick == NEW:
    name = st.text_input(
        "Name of the new collection", value="my-faces", key="collect_new_name", max_chars=40
    ).strip()
try:
    folder = collect.collection_dir(name)
except collect.CollectionError as error:
    st.error(f"{common.md(error)}.")
    st.stop()
if pick == NEW and name in names:
    st.info(f"{common.md(name)} already exists: faces you save are added to it.")


def open_on_data(folder: str) -> None:
    """The "Open it on the Data page" callback: the collection becomes the dataset in use."""
    try:
        st.session_state[common.DATASET] = common.checked_dataset(folder)
    except (ValueError, OSError) as error:
        flash("error", f"The collection cannot be opened as a dataset: {error}.")
        return
    st.session_state[common.MIN_CONFIDENCE] = 0.0
    st.session_state[OPENING] = True


# Its place on the server is not shown: a button opens it on the Data page (no path to type).
st.caption(
    "Your faces are saved on the server as a dataset of their own, created with the first face you save: "
    "open it on the Data page, or train on it like any dataset."
)
if (
    name in names
    and st.button(
        "Open it on the Data page",
        key="collect_open_data",
        icon=":material/dataset:",
        on_click=open_on_data,
        args=(str(folder),),
    )
    and st.session_state.pop(OPENING, False)
):
    st.switch_page("pages/data.py")


def save_face(data: bytes, digest: str, number: int, box: tuple, score: float, label: str) -> None:
    try:
        collect.add_face(folder, collect.open_photo(data), box, score, label)
    except (collect.CollectionError, images.PhotoError, OSError) as error:
        flash("error", f"The face was not saved: {error}.")
        return
    saved = st.session_state[DONE].setdefault(digest, set())
    if saved is not None:
        saved.add(number)
    st.session_state["collect_pick"] = folder.name  # a new collection now exists: keep it chosen
    flash("success", f"Saved face as {label}.")


def skip_photo(digest: str) -> None:
    st.session_state[DONE][digest] = None


def delete_face(photo: str, face: int) -> None:
    try:
        collect.delete_face(folder, photo, face)
    except OSError as error:
        flash("error", f"The face could not be deleted: {error}.")
        return
    flash("success", "Deleted the face.")


def show_pending(label: str, data: bytes, beside: bool = True) -> None:
    """One picture still to label: its faces boxed and numbered, the face and expression to choose
    (`beside` the picture, or under it where the picture already sits in a column)."""
    digest = hashlib.sha1(data).hexdigest()[:16]
    done = st.session_state[DONE].get(digest, set())
    if done is None:
        return
    try:
        photo = collect.open_photo(data)
        found = faces_in(data, st.session_state[common.MODEL])
    except images.PhotoError as error:
        st.error(f"{common.md(label)}: {common.md(error)}")
        return
    except Exception as error:  # noqa: BLE001 - a model that cannot load must not take the page down
        st.error(
            f"Faces cannot be found: the model did not load ({common.md(error)}). Choose another on Classify."
        )
        return
    whole = False
    if not found:
        whole = True
        found = [((0.0, 0.0, float(photo.height), float(photo.width)), 0.0)]
    left = [i for i in range(len(found)) if i not in done]
    if not left:
        more = " Clear the photo to take the next one." if label == SNAPSHOT else ""
        st.success(f"Every face of {common.md(label)} is saved.{more}")
        return
    st.markdown(f"**{common.md(label)}**")
    picture, choices = st.columns([3, 2]) if beside else (st.container(), st.container())
    with choices:
        if whole:
            st.warning(
                "No face was found. Save the whole picture as the face only if it is a close-up of one face; "
                "otherwise retake it with the face larger, facing the camera and evenly lit."
            )
        if len(left) > 1:
            number = st.radio(
                "Which face",
                left,
                format_func=lambda i: f"Face {i + 1}",
                horizontal=True,
                key=f"collect_face_{digest}",
                help="The numbers are drawn on the picture.",
            )
        else:
            number = left[0]
        expression = st.radio(
            "Expression", LABELS, index=None, horizontal=True, key=f"collect_label_{digest}_{number}"
        )
        box, score = found[number]
        buttons = st.container(horizontal=True)
        buttons.button(
            "Save face",
            key=f"collect_save_{digest}",
            type="primary",
            icon=":material/save:",
            disabled=expression is None,
            on_click=save_face,
            args=(data, digest, number, box, score, expression),
            help="Choose its expression first.",
        )
        buttons.button(
            "Skip this picture",
            key=f"collect_skip_{digest}",
            icon=":material/close:",
            on_click=skip_photo,
            args=(digest,),
            help="Leave it out. For a new snapshot, clear the photo above and take another.",
        )
    picture.image(jpeg(collect.draw_faces(photo, [b for b, _ in found], chosen=number)), width="stretch")


st.subheader("Add faces")
message = st.session_state.pop(MESSAGE, None)
if message:
    (st.success if message[0] == "success" else st.error)(common.md(message[1]))
camera_tab, upload_tab = st.tabs(["Webcam snapshot", "Upload photos"])
with camera_tab:
    # The snapshot's faces are shown beside the camera, in view, as on Classify.
    camera_column, snapshot_faces = st.columns([2, 3])
    with camera_column:
        snapshot = st.camera_input(
            "Take a snapshot",
            key="collect_camera",
            help="Your browser asks to use the camera. To retake, clear the photo and take another.",
        )
    if snapshot is not None:
        with snapshot_faces:
            show_pending(SNAPSHOT, snapshot.getvalue(), beside=False)
with upload_tab:
    uploads = common.photo_uploads("collect_uploads")
if snapshot is None and not uploads:
    st.info("Take a snapshot or upload photos to add faces.")
for label, data in [(upload.name, upload.getvalue()) for upload in uploads]:
    with st.container(border=True):
        show_pending(label, data)

# The faces saved -----------------------------------------------------------------------------------
st.subheader("Faces saved")
found = collect.counts(folder)
saved_faces = collect.read_faces(folder)
columns = st.columns(len(LABELS))
for column, label in zip(columns, LABELS):
    column.metric(label, found[label])
if saved_faces:
    with st.expander(f"See or delete the {len(saved_faces)} faces saved"):
        for label in LABELS:
            mine = [f for f in saved_faces if f.label == label]
            if not mine:
                continue
            st.markdown(f"**{label}**")
            row = st.columns(8)
            for index, face in enumerate(mine):
                column = row[index % len(row)]
                try:
                    column.image(jpeg(collect.face_image(folder, face)), width=72)
                except OSError:
                    column.caption("(photo missing)")
                column.button(
                    "Delete",
                    key=f"collect_delete_{face.photo}_{face.face}",
                    icon=":material/delete:",
                    on_click=delete_face,
                    args=(face.photo, face.face),
                )

# Fine-tuning ---------------------------------------------------------------------------------------
st.subheader("Fine-tune a model on your faces")
problem = collect.readiness(found)
models = common.model_choices()
if not models:
    st.info("No model to start from: the bundled model is missing and no training has finished.")
    st.stop()
start_label = st.selectbox(
    "Start from",
    list(models),
    key="collect_start",
    help="The model keeps every expression it knows and adapts to your faces.",
)
epochs = st.number_input(
    "Epochs",
    min_value=1,
    max_value=100,
    value=collect.EPOCHS,
    key="collect_epochs",
    help="Passes over your faces. A few faces take seconds an epoch on a CPU.",
)
st.caption(
    f"About {collect.HOLD_BACK:.0%} of each expression's faces (one of five, two of ten) are held back: the "
    f"model never trains on them, and they show how it reads faces before and after. Whoever runs this "
    "server can do the same from the command line (docs/own-faces.md)."
)
if problem:
    st.info(common.md(problem[:1].upper() + problem[1:]) + ".")
if st.button(
    "Fine-tune", key="collect_finetune", type="primary", icon=":material/play_arrow:", disabled=bool(problem)
):
    try:
        run = collect.start_finetune(folder, Path(models[start_label]), epochs=int(epochs))
    except (collect.CollectionError, ValueError, OSError) as error:
        st.error(f"The fine-tuning could not be started: {common.md(error)}")
        st.stop()
    st.session_state[WATCHING] = str(run)

finetuned = [str(run) for run in collect.finetune_runs(folder)]
if not finetuned:
    st.stop()
if st.session_state.get(WATCHING) not in finetuned:  # none yet, deleted, or another collection's
    st.session_state[WATCHING] = finetuned[0]
if len(finetuned) > 1:
    st.selectbox(
        "Fine-tuning run",
        finetuned,
        format_func=lambda run: Path(run).name,
        key=WATCHING,
        help="Every fine-tuning of this collection, newest first.",
    )
watching = st.session_state[WATCHING]


@st.fragment(run_every=POLL_SECONDS)
def live(run_dir: str) -> None:
    run = Path(run_dir)
    status = launch.status(run)
    if status["state"] not in launch.ACTIVE:
        st.rerun()
    progress = runs.read_json(run / runs.PROGRESS, {}) or {}
    epoch, total = (
        int(progress.get("epoch", 0) or 0),
        int(status.get("epochs") or progress.get("epochs") or 1),
    )
    text = (
        f"Fine-tuning ({common.md(run.name)}): epoch {epoch} of {total}"
        if epoch
        else f"Starting the fine-tuning ({common.md(run.name)}): loading the model and your faces..."
    )
    st.progress(min(max(epoch - 1, 0) / total, 1.0), text=text)


@st.cache_data(show_spinner="Reading the held-back faces before and after...", max_entries=16)
def comparison(run_dir: str, stamp: float) -> collect.Comparison:
    train = (runs.read_json(Path(run_dir) / runs.CONFIG, {}) or {}).get("train") or {}
    start = str(train.get("init_from") or "")
    # The starting model through the shared predictor (Classify's, loaded once); one that is gone is
    # left to compare, which says so.
    classify = common.predictor(start).classify if Path(start).is_file() else None
    return collect.compare(Path(run_dir), classify=classify)


run = Path(watching)
status = launch.status(run)
if status["state"] in launch.ACTIVE:
    live(watching)
    st.stop()
if status["state"] != "done":
    st.error(
        f"The fine-tuning {common.md(run.name)} did not finish ({common.md(status['state'])}): "
        f"{common.md(common.error_line(status.get('error') or 'no error was recorded'))}"
    )
    st.stop()
try:
    result = comparison(watching, (run / runs.PREDICTIONS).stat().st_mtime)
except (collect.CollectionError, OSError, ValueError) as error:
    st.error(f"Before and after cannot be shown for {common.md(run.name)}: {common.md(error)}")
    st.stop()
st.markdown(f"**{common.md(run.name)}**: {len(result.faces)} held-back faces, never trained on.")
before, after = st.columns(2)
before.metric(
    f"Before: {common.model_label(result.start_model)}",
    f"{result.before:.0%}",
    help="Share of the held-back faces the starting model reads right.",
)
after.metric(
    "After fine-tuning",
    f"{result.after:.0%}",
    delta=f"{(result.after - result.before) * 100:+.0f} points",
    help="Share of the same faces the fine-tuned model reads right.",
)
if len(result.faces) < 10:
    st.caption(f"So few faces make these percentages rough: one face is {1 / max(len(result.faces), 1):.0%}.")
table = result.faces[["label", "before", "after"]].copy()
table.insert(0, "face", [png_url(face) for face in result.images])
table["before"] = [f"{'✓' if b == t else '✗'} {b}" for b, t in zip(table["before"], table["label"])]
table["after"] = [f"{'✓' if a == t else '✗'} {a}" for a, t in zip(table["after"], table["label"])]
st.dataframe(
    pd.DataFrame(table),
    hide_index=True,
    width="stretch",
    column_config={
        "face": st.column_config.ImageColumn("face (as the model sees it)"),
        "label": "your label",
        "before": "before",
        "after": "after",
    },
)
st.success(
    f"The fine-tuned model is in the Classify page's model list as "
    f"{common.md(common.model_label(str(run / runs.BEST)))}.",
    icon=":material/check_circle:",
)
st.page_link("pages/classify.py", label="Classify with it", icon=":material/photo_camera:")
