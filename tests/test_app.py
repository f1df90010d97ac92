"""The dashboard, driven headless by Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def test_home_page_renders_on_first_launch_with_the_demo_dataset():
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception
    assert at.session_state["dataset"] == "demo"
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "Synthetic" in text
    assert [m.value for m in at.metric][0] == "1,500"
