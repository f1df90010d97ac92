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
