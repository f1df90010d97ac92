"""Home: what the tool does, and the dataset it is working on."""

import plotly.express as px
import streamlit as st

from fer import datasets, summary

st.title("Facial-expression classifier")
st.write(
    "Train a model that reads facial expressions (angry, disgust, fear, happy, sad, surprise, neutral) "
    "from labelled face photos, then use it on webcam snapshots and uploaded pictures. "
    "Start with the built-in demo dataset, or point the tool at your own."
)


@st.cache_data(show_spinner="Reading the dataset...")
def dataset_summary(path: str) -> dict:
    return summary.summarize(datasets.load(path))


path = st.session_state["dataset"]
try:
    facts = dataset_summary(path)
except (datasets.DatasetError, ValueError) as error:
    st.error(f"The dataset could not be read: {error}")
    st.stop()

st.subheader(f"Dataset: {facts['name']}")
if facts["format"] == "expw" and path == "demo":
    st.caption(
        "Synthetic: drawn cartoon faces generated on this machine, so every page works with no download."
    )
left, right = st.columns(2)
left.metric("Faces", f"{facts['faces']:,}")
right.metric("Photos", f"{facts['photos']:,}")
counts = {label: row["faces"] for label, row in facts["per_label"].items()}
figure = px.bar(x=list(counts), y=list(counts.values()), labels={"x": "label", "y": "faces"})
st.plotly_chart(figure, width="stretch")
