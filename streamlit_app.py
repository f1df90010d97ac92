"""Entry point: routes the pages and sets the session defaults every page reads."""

import streamlit as st

from fer import demo

DATASET = "dataset"  # session key: the dataset the pages work on ("demo" or a path)
MIN_CONFIDENCE = "min_confidence"  # session key: the confidence threshold chosen on the Data page

st.set_page_config(page_title="Facial expressions", page_icon=":material/mood:", layout="wide")
st.session_state.setdefault(DATASET, demo.NAME)
st.session_state.setdefault(MIN_CONFIDENCE, 0.0)

st.navigation([st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)]).run()
