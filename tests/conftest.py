"""Shared fixtures: the real datasets beside the project, and a private cache per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _real(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        if os.environ.get("FER_REQUIRE_DATASETS"):
            pytest.fail(f"{path} is missing but FER_REQUIRE_DATASETS is set (CI must run real-data tests)")
        pytest.skip(f"{path} is absent (real-data test)")
    return path


@pytest.fixture(scope="session")
def fer2013() -> Path:
    return _real("fer2013")


@pytest.fixture(scope="session")
def expw_sample() -> Path:
    return _real("expw-sample")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One preprocessing cache for the whole run, so real-data tests share their crops."""
    return tmp_path_factory.mktemp("fer-cache")


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Keep every test's caches and demo data out of the project's data/ folder."""
    home = tmp_path_factory.getbasetemp() / "fer-home"
    monkeypatch.setenv("FER_HOME", str(home))


@pytest.fixture(autouse=True)
def _navigation_kept(monkeypatch):
    """Let a page's button clicks through under AppTest.

    AppTest sets PagesManager.uses_pages_directory back to None before every run
    (streamlit/testing/v1/app_test.py), so each run starts in the old pages/-folder mode: the page runs
    alone, pages/common.init_session switches the mode off and reruns through the entry file, and the
    rerun drops the click that started the run. A server keeps the flag off once the entry file has
    called st.navigation; this does the same for AppTest: its reset lands on a subclass, and the real
    class keeps what st.navigation set."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import app_test

    class ResetHere(PagesManager):
        pass

    monkeypatch.setattr(app_test, "PagesManager", ResetHere)
