"""Classify: webcam snapshots and uploaded photos, each face boxed, labelled and explained."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from fer import images, modelfile, predict, runs
from pages import common

common.init_session()  # also here: a page opened by its own URL may run before the entry file's defaults

PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]

st.title("Classify photos")
st.write(
    "Take a webcam snapshot or upload photos: every face found is boxed on the picture with the "
    "expression the model reads, and how likely each reading is."
)

MODEL_TYPES = ["keras"]
# This session's own model files (kept path -> the name it was uploaded as), and the last upload
# checked (its file id, kept path or None, refusal or None), so a rerun does not check it again.
UPLOADED = "classify_uploaded_models"
LAST_UPLOAD = "classify_last_model_upload"
st.session_state.setdefault(UPLOADED, {})

model_box = st.container()  # the model list goes here, above the upload that may add to it
with st.expander("Use your own model file"):
    st.write(
        "A `.keras` file saved by `python -m fer train` (a run's model, as the Results page downloads "
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
                "on the Train page, or upload a .keras file saved by `python -m fer train`."
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
if st.session_state.get("classify_model") not in paths:
    current = st.session_state[common.MODEL]
    st.session_state["classify_model"] = current if current in paths else paths[0]
with model_box:
    model_path = st.selectbox(
        "Model",
        paths,
        format_func=lambda p: next(label for label, path in choices.items() if path == p),
        key="classify_model",
        help="The bundled model works out of the box; finished trainings appear here too, and your "
        "own model files once checked.",
    )
st.session_state[common.MODEL] = model_path

left, right = st.columns(2)
whole = left.toggle(
    "Photos are already cropped to one face",
    key="whole",
    help="Skip face detection and read the whole picture as one face (for passport-style crops).",
)
flip = right.toggle(
    "Also read the mirrored face (slower, a little steadier)",
    key="flip",
    help="Averages the model's answer for the face and its mirror image.",
)

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
        f"held-out photos ({common.md(calibrated.get('fitted_on', 'validation faces'))}). In-the-wild photos "
        "unlike those are read less well than the percentages say."
    )
else:
    st.warning(
        "This model has no calibration: its percentages are the network's own, which run higher than how "
        "often it is right. `python -m fer calibrate` fits them on held-out faces."
    )


@st.cache_data(show_spinner=False, max_entries=256)
def classify(data: bytes, model_path: str, whole: bool, flip: bool) -> tuple[predict.PhotoResult, bytes]:
    """The faces in a photo and the photo with them boxed (a JPEG at most 1600 px long), from one
    decode; cached, so redrawing the page neither decodes nor classifies the photo again."""
    shared = common.predictor(model_path)
    photo = images.open_photo(data)
    result = shared.predict(photo, whole=whole, flip=flip)
    buffer = io.BytesIO()
    predict.annotate(photo, result, shared.labels).save(buffer, format="JPEG", quality=90)
    return result, buffer.getvalue()


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


camera_tab, upload_tab = st.tabs(["Webcam snapshot", "Upload photos"])
with camera_tab:
    snapshot = st.camera_input("Take a snapshot", key="camera", help="Your browser asks to use the camera.")
with upload_tab:
    uploads = st.file_uploader(
        "Photos (several at once)",
        type=PHOTO_TYPES,
        accept_multiple_files=True,
        key="uploads",
        help="JPEG, PNG, WebP and the like; phone pictures are turned upright.",
    )

photos = ([("webcam snapshot", snapshot.getvalue())] if snapshot is not None else []) + [
    (upload.name, upload.getvalue()) for upload in uploads or []
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
    st.subheader(common.md(name))
    try:
        result, annotated = classify(data, model_path, whole, flip)
    except images.PhotoError as error:
        st.error(f"{common.md(name)}: {common.md(error)}")
        continue
    results.append((name, result))
    if not result.faces:
        st.warning(
            f"No face found in {common.md(name)}. Try a photo where the face is larger, facing the camera and "
            "evenly lit, or switch on 'Photos are already cropped to one face' for a close-up."
        )
        st.image(data, width=320)
        continue
    picture, charts = st.columns([3, 2])
    picture.image(annotated, width="stretch")
    for index, face in enumerate(result.faces, start=1):
        likely = face.probabilities[face.label]
        charts.markdown(f"**Face {index}: {common.md(face.label)}** — {likely:.0%} likely")
        charts.plotly_chart(
            probability_chart(face),
            width="stretch",
            key=f"chart-{number}-{hashlib.sha1(data).hexdigest()[:10]}-{index}",
            config={"displayModeBar": False},
        )
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
