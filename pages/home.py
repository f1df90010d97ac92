"""Home: what the tool does, and the dataset and model it is working with."""

from pathlib import Path

import plotly.express as px
import streamlit as st

from fer import datasets, results
from pages import common

common.init_session()  # also here: a page opened by its own URL may run before the entry file's defaults

st.title("Facial-expression classifier")
st.write(
    "This tool trains models that read facial expressions (angry, disgust, fear, happy, sad, surprise, "
    "neutral) from labelled face photos, and shows how well they do. Use a model on webcam snapshots "
    "and uploaded photos, and share the results as a report anyone can open."
)

path = st.session_state[common.DATASET]
model_path = st.session_state[common.MODEL]
try:
    facts = common.dataset_summary(path)
except (datasets.DatasetError, ValueError) as error:
    st.error(f"The dataset could not be read: {common.md(error)}. Choose another one on the Data page.")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/dataset:")
    st.stop()

data_column, model_column = st.columns(2)
with data_column:
    st.subheader("Dataset")
    st.markdown(f"**{common.md(common.dataset_label(path))}**")
    if path == "demo":
        st.caption("Synthetic: cartoon faces the app draws itself, so every page works with no download.")
    left, right = st.columns(2)
    left.metric("Faces", f"{facts['faces']:,}")
    right.metric("Photos", f"{facts['photos']:,}")
    st.page_link(
        "pages/data.py", label="Look at the data, or choose another dataset", icon=":material/dataset:"
    )
with model_column:
    st.subheader("Model")
    if model_path and Path(model_path).is_file():
        st.markdown(
            f"**{common.md(common.model_label(model_path))}**",
            # A run's model is named after its data and network ("Demo · vgg"): the help says what vgg is.
            help=None if model_path == common.DEFAULTS[common.MODEL] else results.ARCH_HELP,
        )
        # The model's facts are in its file; the model itself loads in the background, for the Classify
        # page, so this page never waits for TensorFlow.
        common.warm_up(model_path)
        try:
            metadata = common.model_metadata(model_path)
            # Which figure applies to which kind of photo, in words: a score means little without it.
            for line in results.score_lines(metadata.get("test_metrics") or {}):
                st.caption(common.md(line))
        except Exception as error:  # noqa: BLE001 - a broken model must not take the home page down
            st.warning(
                f"The model could not be read ({common.md(error)}); choose another on the Classify page."
            )
    else:
        st.info("No model yet: train one on the Train page.")
    st.page_link(
        "pages/classify.py", label="Classify a webcam snapshot or photos", icon=":material/photo_camera:"
    )
    st.page_link("pages/train.py", label="Train a new model", icon=":material/model_training:")

counts = {label: row["faces"] for label, row in facts["per_label"].items()}
figure = px.bar(
    x=[common.plot_text(label) for label in counts],
    y=list(counts.values()),
    labels={"x": "label", "y": "faces"},
    title="Faces per label",
)
common.chart(figure)
