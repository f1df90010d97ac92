"""Results page (being built: issue 5)."""

import streamlit as st

st.title("Results")
st.info("This page is being built.")
