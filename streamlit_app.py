"""Entry point: routes the pages and sets the session defaults every page reads."""

import streamlit as st

from pages import common

st.set_page_config(page_title="Facial expressions", page_icon=":material/mood:", layout="wide")
common.init_session(entry=True)

st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/results.py", title="Results", icon=":material/insights:"),
        st.Page("pages/classify.py", title="Classify", icon=":material/photo_camera:"),
        st.Page("pages/collect.py", title="Your faces", icon=":material/face:"),
    ]
).run()
