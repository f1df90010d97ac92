"""The two places that rely on Streamlit internals, because Streamlit (1.67) offers no public way to do
what they do: pages/common.leave_pages_folder_mode (the app) and conftest's _navigation_kept (the
AppTest tests). These fail, naming the function to fix, when a Streamlit upgrade removes or renames
what they use."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.runtime import pages_manager
from streamlit.testing.v1 import AppTest, app_test

from pages import common

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
FIX_APP = "Streamlit changed its pages/-folder mode: fix pages/common.py leave_pages_folder_mode"
FIX_TESTS = "Streamlit changed AppTest's page-mode reset: fix tests/conftest.py _navigation_kept"


@pytest.fixture
def flag():
    """PagesManager.uses_pages_directory as it was, put back afterwards."""
    saved = pages_manager.PagesManager.__dict__.get("uses_pages_directory")
    yield
    pages_manager.PagesManager.uses_pages_directory = saved


def test_the_pages_folder_mode_is_still_the_flag_the_app_switches_off(flag):
    manager = getattr(pages_manager, "PagesManager", None)
    assert manager is not None and "uses_pages_directory" in vars(manager), FIX_APP
    # Unset, it is still set from the pages/ folder beside the entry file (ours has one)...
    manager.uses_pages_directory = None
    manager(str(APP))
    assert manager.uses_pages_directory is True, FIX_APP
    # ...and the app's function switches it off once, as st.navigation does.
    assert common.leave_pages_folder_mode() is True, FIX_APP
    assert manager.uses_pages_directory is False, FIX_APP
    assert common.leave_pages_folder_mode() is False, FIX_APP


def test_apptest_still_resets_the_mode_through_its_own_name_for_the_class(flag):
    real = pages_manager.PagesManager
    own = getattr(app_test, "PagesManager", None)
    # conftest's _navigation_kept has replaced app_test's name by a subclass for this test.
    assert own is not None and own is not real and issubclass(own, real), FIX_TESTS
    real.uses_pages_directory = False  # as st.navigation leaves it
    at = AppTest.from_string("import streamlit as st\nst.write('ran')").run()
    assert not at.exception and at.markdown[0].value == "ran"
    assert "uses_pages_directory" in vars(own), f"AppTest no longer resets the mode: {FIX_TESTS}"
    assert real.uses_pages_directory is False, FIX_TESTS
