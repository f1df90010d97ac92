"""Classify page (being built: issue 5)."""

import streamlit as st

st.title("Classify")
st.info("This page is being built.")
