"""Shared fixtures: the real datasets beside the project, a private FER_HOME and cache, one tiny
finished run that tests read, and the browser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import CHROMIUM, face_photo, fake_camera, home_beside, require_browser, suite_home

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
    """One preprocessing cache for the whole run, so real-data tests share their crops: the cache of
    the tests' FER_HOME, so the commands and pages that use their default cache share it too."""
    cache = suite_home(tmp_path_factory) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Keep every test's caches and demo data out of the project's data/ folder."""
    monkeypatch.setenv("FER_HOME", str(suite_home(tmp_path_factory)))


# One tiny finished run, trained once -------------------------------------------------------------

TINY_RUN = "tiny"
TINY_MAX_FACES = 200  # training faces; the demo's test faces are all scored
TINY_TRAIN = ["--arch", "seed", "--image-size", "48", "--epochs", "1", "--batch-size", "32", "--no-augment",
              "--max-faces", str(TINY_MAX_FACES)]  # fmt: skip


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> Path:
    """A FER_HOME whose runs folder holds one finished run, `runs/tiny`: the report's CNN trained for one
    epoch on 200 faces of the built-in demo dataset, through the command line, once for every test
    that only needs *a* finished run or its model. Tests read it and never change it: one that does
    works on a copy (`shutil.copytree(tiny_run, tmp_path / ...)`).

    Its home is one of its own (home_beside), so pages listing the other tests' runs never see it."""
    from fer import cli

    home = home_beside(tmp_path_factory, "trained-home")
    run_dir = home / "runs" / TINY_RUN
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_HOME", str(home))
        if cli.main(["train", "demo", "--run-dir", str(run_dir), *TINY_TRAIN]) != 0:
            pytest.fail(f"the tiny run did not train; see its folder {run_dir}")
    trained = _files(run_dir)
    yield home
    if _files(run_dir) != trained:
        pytest.fail(f"a test changed the shared tiny run {run_dir}; change a copy of it instead")


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file under `folder`: its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def tiny_run(trained_home, monkeypatch) -> Path:
    """The tiny finished run (read-only), with FER_HOME set to its home, where the demo it read is."""
    monkeypatch.setenv("FER_HOME", str(trained_home))
    return trained_home / "runs" / TINY_RUN


@pytest.fixture(autouse=True)
def _navigation_kept(monkeypatch):
    """Let a page's button clicks through under AppTest, by keeping it out of Streamlit's old
    pages/-folder mode as a server is kept once its entry file has called st.navigation.

    AppTest (Streamlit 1.67, streamlit/testing/v1/app_test.py) sets PagesManager.uses_pages_directory
    back to None before every run, so each run starts in that mode: the page runs alone,
    pages/common.leave_pages_folder_mode switches the mode off and reruns through the entry file, and
    the rerun drops the click that started the run. There is no public way to stop the reset; this
    makes it land on a subclass (app_test's own name for the class), so the real class keeps what
    st.navigation set. tests/test_streamlit_internals.py fails, naming this fixture, when an upgrade
    removes or renames what it relies on."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import app_test

    if getattr(app_test, "PagesManager", None) is not PagesManager:
        return  # not the Streamlit this was written for: the internals test says so

    class ResetHere(PagesManager):
        pass

    monkeypatch.setattr(app_test, "PagesManager", ResetHere)


# The browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Debian's Chromium driven by Playwright, with a fake webcam showing a real face where the real
    datasets are present (skipped without Chromium and Playwright)."""
    require_browser()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream"]  # fmt: skip
    photo = face_photo()
    if photo:
        video = fake_camera(tmp_path_factory.mktemp("camera") / "face.y4m", Image.open(photo))
        args.append(f"--use-file-for-fake-video-capture={video}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield chromium
        chromium.close()
