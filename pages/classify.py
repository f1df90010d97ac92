"""Classify: webcam snapshots and uploaded photos, each face boxed, labelled and explained."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from fer import images, modelfile, predict, results, runs, saliency
from pages import common

common.init_session()  # also here: a page opened by its own URL may run before the entry file's defaults


st.title("Classify photos")
st.write(
    "Take a webcam snapshot or upload photos: every face found is boxed on the picture with the "
    "expression the model reads, and how likely each reading is."
)

MODEL_TYPES = ["keras"]
# This browser tab's own model files (kept path -> the name it was uploaded as), and the last upload
# checked (its file id, kept path or None, refusal or None), so a rerun does not check it again.
UPLOADED = "classify_uploaded_models"
LAST_UPLOAD = "classify_last_model_upload"
st.session_state.setdefault(UPLOADED, {})

model_box = st.container()  # the model list goes here, above the upload that may add to it
with st.expander("Use your own model file"):
    st.write(
        "A .keras model file saved by this tool's training (a run's model, as the Results page downloads "
        "it). It is checked before it is used: models holding Python code (Lambda layers) are refused, "
        "and so are models bigger than this server allows."
    )
    upload = st.file_uploader("Model file", type=MODEL_TYPES, key="model_upload")
    if upload is not None:
        last = st.session_state.get(LAST_UPLOAD)
        if last is None or last[0] != upload.file_id:
            try:
                with st.spinner(
                    f"Checking {common.md(upload.name)} (loading a model takes a few seconds)..."
                ):
                    kept = str(modelfile.check_model_file(upload.getvalue()))
            except (ValueError, OSError) as error:
                last = (upload.file_id, None, str(error))
            else:
                last = (upload.file_id, kept, None)
                st.session_state[UPLOADED][kept] = upload.name
                st.session_state[common.MODEL] = kept
                st.session_state["classify_model"] = kept  # select it: the model list is drawn below
            st.session_state[LAST_UPLOAD] = last
        if last[2]:
            st.error(
                f"{common.md(upload.name)} cannot be used as a model: {common.md(last[2])}. Train a model "
                "on the Train page, or upload a .keras file saved by this tool's training."
            )
        else:
            st.success(f"{common.md(upload.name)} is checked and can be chosen in the model list.")

choices = common.model_choices()
for path, name in st.session_state[UPLOADED].items():
    if Path(path).is_file():
        label = f"Uploaded: {name}"
        choices[label if label not in choices else f"{label} ({Path(path).stem[:8]})"] = path
if not choices:
    st.info("No model yet: the bundled model is missing and no training has finished. Train one first.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()
paths = list(choices.values())
linked = common.read_url({common.Q_MODEL: common.checked_model})
if common.Q_MODEL in linked:
    st.session_state[common.MODEL] = linked[common.Q_MODEL]
    st.session_state.pop("classify_model", None)
if st.session_state.get("classify_model") not in paths:
    current = st.session_state[common.MODEL]
    st.session_state["classify_model"] = current if current in paths else paths[0]
with model_box:
    model_path = st.selectbox(
        "Model",
        paths,
        format_func=lambda p: next(label for label, path in choices.items() if path == p),
        key="classify_model",
        help="The bundled model works out of the box; finished trainings appear here too (by their name, "
        "which says the data and the network they were trained on), and your own model files once checked. "
        + results.ARCH_HELP,
    )
st.session_state[common.MODEL] = model_path
common.write_url(
    {common.Q_MODEL: None if model_path == common.DEFAULTS[common.MODEL] else common.model_param(model_path)}
)

if model_path.endswith(".keras"):
    with st.expander("Take this model elsewhere"):
        st.caption(
            "The same network as a file that runs without TensorFlow, on a phone or in another language."
        )
        common.portable_downloads(model_path, Path(model_path).stem, key="classify_download")

left, right = st.columns(2)
whole = left.toggle(
    "Photos are already cropped to one face",
    key="whole",
    help="Skip face detection and read the whole picture as one face (for passport-style crops); "
    "a picture that does not look like a face gets no expression.",
)
mirrored = model_path.endswith(".keras") and modelfile.reads_mirrored(common.model_metadata(model_path))
if mirrored:  # the model always does (its percentages are calibrated on such averages): nothing to switch
    flip = None
    right.caption("This model reads each face and its mirror image and averages the two answers.")
else:
    flip = (
        right.toggle(
            "Also read the mirrored face (slower, a little steadier)",
            key="flip",
            help="Averages the model's answer for the face and its mirror image.",
        )
        or None
    )  # off: as the model file says
steady = left.toggle(
    "Steadier answers (slower)",
    key="steady",
    help="Reads each face found from its box and six slightly moved or scaled copies of it, and "
    "averages them, so the same face framed a little differently gets the same answer more often.",
)
looked = st.toggle(
    "Show where the model looked",
    key="classify_saliency",
    help="Colours each face by how much each part of it counted for the model's answer (Grad-CAM).",
)
if looked:
    st.caption(saliency.EXPLANATION)

try:
    model = common.predictor(model_path)
except Exception as error:  # noqa: BLE001 - a broken model file must not take the page down
    st.error(
        f"The model {common.md(Path(model_path).name)} could not be loaded ({common.md(error)}). "
        "Choose another one."
    )
    st.stop()
labels = model.labels
calibrated = model.metadata.get("calibration")  # None: the network's own percentages
if calibrated:
    st.caption(
        "Percentages are calibrated: of faces given about 60%, about 6 in 10 are right, measured on "
        f"held-out photos ({common.md(results.without_paths(calibrated.get('fitted_on', 'validation faces')))}). In-the-wild photos "
        "unlike those are read less well than the percentages say."
    )
else:
    st.warning(
        "This model has no calibration: its percentages are the network's own, which run higher than how "
        "often it is right. Whoever runs this server can calibrate it on held-out faces."
    )
scores = results.score_lines(model.metadata.get("test_metrics") or {})
if scores:
    with st.expander("How well this model does, by kind of photo"):
        # Which figure applies to which kind of photo, in words: a score means little without it.
        st.markdown("\n".join(f"- {common.md(line)}" for line in scores))
        st.caption(
            "A photo unlike all of these (dim light, a face turned away, a small face in a crowd) is read "
            "less well."
        )


# The faces of a photo with several are a grid of small crops beside the boxed picture, each with its
# number (the one drawn on the picture), label and runners-up; one face's full chart is shown on demand.
THUMBNAIL = 72  # pixels on the longer side of a face's crop in the grid
GRID_COLUMNS = 3  # faces on one row of the grid
SCROLL_AFTER = 9  # more faces than this scroll inside a box of GRID_HEIGHT, so the page stays short
GRID_HEIGHT = 520


def thumbnail(photo: Image.Image, box: tuple[float, float, float, float]) -> bytes:
    """The face the detector boxed, cut from the photo and shrunk to a JPEG THUMBNAIL pixels long."""
    top, left, bottom, right = box
    left, top = min(max(0, round(left)), photo.width - 1), min(max(0, round(top)), photo.height - 1)
    right, bottom = (
        max(left + 1, min(photo.width, round(right))),
        max(top + 1, min(photo.height, round(bottom))),
    )
    crop = photo.crop((left, top, right, bottom)).convert("RGB")
    crop.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@st.cache_data(show_spinner=False, max_entries=256)
def classify(
    data: bytes, model_path: str, whole: bool, flip: bool | None, steady: bool = False
) -> tuple[predict.PhotoResult, bytes, list[bytes]]:
    """The faces in a photo, the photo with them boxed (a JPEG at most 1600 px long) and, where there
    are several, each face's crop for the grid, all from one decode; cached, so redrawing the page
    neither decodes nor classifies the photo again."""
    shared = common.predictor(model_path)
    photo = images.open_photo(data)
    result = shared.predict(photo, whole=whole, flip=flip, steady=steady)
    buffer = io.BytesIO()
    predict.annotate(photo, result, shared.labels).save(buffer, format="JPEG", quality=90)
    crops = [thumbnail(photo, face.box) for face in result.faces] if len(result.faces) > 1 else []
    return result, buffer.getvalue(), crops


MAP_SCALE = 3  # a 48-pixel face's map is shown 3 times larger


@st.cache_data(show_spinner=False, max_entries=64)
def where_looked(
    data: bytes, model_path: str, whole: bool, flip: bool | None, steady: bool = False
) -> list[bytes]:
    """Each face of the photo as the model saw it, with the map of where it looked for its label laid
    over it, as PNGs; cached like `classify`."""
    result, _, _ = classify(data, model_path, whole, flip, steady)
    shared = common.predictor(model_path)
    faces = shared.predictor.crops(images.open_photo(data), result)
    maps = shared.maps(faces, [face.label for face in result.faces])
    pictures = []
    for face, found in zip(faces, maps):
        buffer = io.BytesIO()
        saliency.overlay_image(face, found, scale=MAP_SCALE).save(buffer, format="PNG")
        pictures.append(buffer.getvalue())
    return pictures


def face_heading(number: int, face: predict.Face) -> str:
    return f"**Face {number}: {common.md(face.label)}** — {face.probabilities[face.label]:.0%} likely"


def runners_up(face: predict.Face, count: int = 2) -> str:
    """The next most likely readings of a face, in words: "neutral 20%, sad 9%"."""
    others = sorted(
        ((p, label) for label, p in face.probabilities.items() if label != face.label), reverse=True
    )
    return ", ".join(f"{common.md(label)} {p:.0%}" for p, label in others[:count])


def probability_chart(face: predict.Face) -> go.Figure:
    values = [face.probabilities[label] for label in labels]
    colours = [predict.label_colour(label, labels) if label == face.label else "#c8ccd4" for label in labels]
    figure = go.Figure(
        go.Bar(
            x=values,
            y=[common.plot_text(label) for label in labels],
            orientation="h",
            marker_color=colours,
            text=[f"{v:.0%}" for v in values],
            textposition="outside",
            hovertemplate="%{y}: %{x:.0%} likely<extra></extra>",
        )
    )
    figure.update_layout(
        height=230,
        margin=dict(l=0, r=10, t=10, b=0),
        xaxis=dict(range=[0, 1.15], tickformat=".0%", showgrid=False),
        yaxis=dict(autorange="reversed"),
    )
    return figure


def show_chart(face: predict.Face, key: str) -> None:
    st.plotly_chart(probability_chart(face), width="stretch", key=key, config={"displayModeBar": False})


def show_grid(faces: list[predict.Face], crops: list[bytes], key: str) -> None:
    """Every face as a small entry (crop, number, label, runners-up); the chart of one chosen face.
    `crops` are the maps of where the model looked when those are asked for."""
    with st.container(height=GRID_HEIGHT) if len(faces) > SCROLL_AFTER else st.container():
        for start in range(0, len(faces), GRID_COLUMNS):
            row = st.columns(GRID_COLUMNS)
            for column, number in zip(row, range(start + 1, min(start + GRID_COLUMNS, len(faces)) + 1)):
                face = faces[number - 1]
                column.image(crops[number - 1], width=THUMBNAIL)
                column.markdown(face_heading(number, face))
                column.caption(f"then {runners_up(face)}")
    chosen = st.selectbox(
        "Show all probabilities for face",
        range(1, len(faces) + 1),
        index=None,
        placeholder="Choose a face number",
        key=f"details-{key}",
    )
    if chosen is not None:
        show_chart(faces[chosen - 1], key=f"chart-{key}-{chosen}")


def show_photo(number: int, name: str, data: bytes) -> predict.PhotoResult | None:
    """One photo's answer: the boxed picture beside its faces; None where the photo cannot be read."""
    st.subheader(common.md(name))
    try:
        result, annotated, crops = classify(data, model_path, whole, flip, steady)
    except images.PhotoError as error:
        st.error(f"{common.md(name)}: {common.md(error)}")
        return None
    if result.not_a_face:
        st.warning(
            f"{common.md(name)} does not look like a face (face score {result.face_score:.0%}), so no "
            "expression is given. Crop it closer to one face, or switch off 'Photos are already cropped "
            "to one face' to let the detector look for faces in it."
        )
        st.image(data, width=320)
        return result
    if not result.faces:
        st.warning(
            f"No face found in {common.md(name)}. Try a photo where the face is larger, facing the camera and "
            "evenly lit, or switch on 'Photos are already cropped to one face' for a close-up."
        )
        st.image(data, width=320)
        return result
    key = f"{number}-{hashlib.sha1(data).hexdigest()[:10]}"
    several = len(result.faces) > 1
    maps = face_maps(name, data) if looked else []
    picture, details = st.columns([1, 1] if several else [3, 2])
    picture.image(annotated, width="stretch")
    with details:
        if several:
            show_grid(result.faces, maps or crops, key)
        else:  # one face: its whole chart at once, nothing to open
            st.markdown(face_heading(1, result.faces[0]))
            show_chart(result.faces[0], key=f"chart-{key}-1")
            if maps:
                st.image(maps[0], width=48 * MAP_SCALE, caption="Where the model looked")
    return result


def face_maps(name: str, data: bytes) -> list[bytes]:
    """The maps of where the model looked at each face of a photo; none, and a note, where the model
    cannot give them."""
    try:
        with st.spinner(f"Finding where the model looked in {common.md(name)}..."):
            return where_looked(data, model_path, whole, flip, steady)
    except saliency.SaliencyError as error:
        st.warning(f"Where the model looked cannot be shown for this model: {common.md(error)}.")
        return []


camera_tab, upload_tab = st.tabs(["Webcam snapshot", "Upload photos"])
with camera_tab:
    # The snapshot's answer is drawn beside the camera, in view, not under a full-width preview.
    camera_column, snapshot_answer = st.columns([2, 3])
    with camera_column:
        snapshot = st.camera_input(
            "Take a snapshot", key="camera", help="Your browser asks to use the camera."
        )
with upload_tab:
    uploads = common.photo_uploads("uploads")

photos = ([("webcam snapshot", snapshot.getvalue())] if snapshot is not None else []) + [
    (upload.name, upload.getvalue()) for upload in uploads
]
if not photos:
    st.info("Take a snapshot or upload a photo to see what the model reads in it.")
    st.stop()

results = []
progress = st.progress(0.0, text="Reading faces...") if len(photos) > 1 else None
for number, (name, data) in enumerate(photos, start=1):
    if progress:
        progress.progress(
            (number - 1) / len(photos),
            text=f"Reading faces in {common.md(name)} ({number} of {len(photos)})",
        )
    with snapshot_answer if snapshot is not None and number == 1 else st.container():
        result = show_photo(number, name, data)
    if result is not None:
        results.append((name, result))
if progress:
    progress.empty()

if results:
    st.subheader("All results")
    table = predict.results_table(results, labels)
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button(
        "Download the results (CSV)",
        runs.csv_text(table).encode(),  # safe to open in a spreadsheet, whatever the photos are called
        file_name="expressions.csv",
        mime="text/csv",
        key="download_csv",
    )
