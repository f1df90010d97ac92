"""The Train page, driven headless by AppTest: settings, starting a run, watching it from two tabs,
cancelling and deleting. The runs are real `python -m fer train` processes on a tiny dataset."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from helpers import expw_faces, held_python, home_beside
from streamlit.testing.v1 import AppTest

from fer import launch
from fer import runs as R
from fer.config import TrainConfig

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
TIMEOUT = 300.0  # seconds for a one-epoch run on 42 faces, with the machine loaded


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """This file's own FER_HOME: a tab shows the run going in its home, which must be this file's."""
    return home_beside(tmp_path_factory, "app-train-home")


@pytest.fixture(autouse=True)
def _own_home(home, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(home))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """42 faces, one per photo, labels cycling through all seven: 28 train, 7 val, 7 test."""
    return expw_faces(tmp_path_factory.mktemp("app-train-data") / "expw", 42)


def open_train_page(dataset: Path | str | None = None) -> AppTest:
    """A new browser tab on the Train page (a new session: nothing carried over but the run store)."""
    at = AppTest.from_file(APP, default_timeout=180)
    if dataset is not None:
        at.session_state["dataset"] = str(dataset)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    return " ".join(
        str(e.value) for kind in (at.markdown, at.caption, at.success, at.info, at.error) for e in kind
    )


def start_run(at: AppTest, **settings) -> Path:
    before = set(R.list_runs())
    for key, value in settings.items():
        if isinstance(value, bool):
            at.checkbox(key=key).set_value(value)
        elif key == "arch":
            at.selectbox(key=key).set_value(value)
        elif key in ("batch_size", "image_size", "learning_rate"):
            at.select_slider(key=key).set_value(value)
        else:
            at.number_input(key=key).set_value(value)
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    (run_dir,) = set(R.list_runs()) - before
    return run_dir


def wait_until_ended(run_dir: Path) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while (status := launch.status(run_dir))["state"] in launch.ACTIVE:
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_dir} did not end; log:\n{launch.log_tail(run_dir)}")
        time.sleep(0.5)
    return status


def test_page_renders_on_first_launch_with_the_defaults():
    at = open_train_page()
    defaults = TrainConfig()
    assert at.title[0].value == "Train"
    assert at.selectbox(key="arch").value == defaults.arch
    assert at.number_input(key="epochs").value == defaults.epochs
    assert at.select_slider(key="batch_size").value == defaults.batch_size
    assert at.select_slider(key="learning_rate").value == defaults.learning_rate
    assert at.slider(key="dropout").value == defaults.dropout
    assert at.slider(key="val_share").value == defaults.val_share
    assert at.checkbox(key="augment").value is defaults.augment
    assert at.checkbox(key="class_weight").value is defaults.class_weight
    assert at.number_input(key="seed").value == defaults.seed
    for widget in (at.selectbox(key="arch"), at.number_input(key="epochs"), at.slider(key="dropout")):
        assert widget.help, "every setting explains itself"
    assert "Built-in demo dataset" in texts(at)
    assert at.button(key="start")


def test_an_unreadable_dataset_ends_the_page_politely(tmp_path):
    at = open_train_page(tmp_path / "missing")
    assert "could not be read" in at.error[0].value and "does not exist" in at.error[0].value
    assert "start" not in [b.key for b in at.button]


@pytest.mark.slow
def test_a_run_started_on_the_page_is_watched_from_two_tabs_until_done(tiny_dataset, tmp_path, monkeypatch):
    # The run's process waits for `go` before it trains, so both tabs see it still going, however
    # quickly a one-epoch run would otherwise end.
    python, go = held_python(tmp_path)
    monkeypatch.setattr(sys, "executable", str(python))
    at = open_train_page(tiny_dataset)
    run_dir = start_run(
        at, arch="seed", epochs=1, batch_size=8, augment=False, max_faces=20, seed=5, learning_rate=3e-3
    )
    train = R.read_json(run_dir / "config.json")["train"]
    assert (train["arch"], train["epochs"], train["batch_size"], train["max_faces"]) == ("seed", 1, 8, 20)
    assert (train["augment"], train["seed"], train["learning_rate"]) == (False, 5, 3e-3)
    assert train["datasets"] == [str(tiny_dataset)]
    assert f"**Run {run_dir.name}**" in texts(at)
    assert "cancel" in [b.key for b in at.button]

    second = open_train_page()  # another tab (or a reload): it finds the run in the run store
    assert f"**Run {run_dir.name}**" in texts(second)
    assert "cancel" in [b.key for b in second.button]

    go.touch()
    assert wait_until_ended(run_dir)["state"] == "done", launch.log_tail(run_dir)
    for tab in (at.run(), second.run()):
        assert not tab.exception, tab.exception
        message = tab.success[0].value
        assert run_dir.name in message and "test accuracy" in message
        assert tab.session_state["run"] == str(run_dir)  # the Results page opens on it
        assert "cancel" not in [b.key for b in tab.button]
    metrics = R.read_json(run_dir / "metrics.json")
    assert f"{metrics['accuracy']:.1%}" in at.success[0].value
    # Its results render: the Results page opens on this run, with its metric cards.
    at.switch_page("pages/results.py").run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric][0] == f"{metrics['accuracy']:.1%}"


def test_a_run_cancelled_on_the_page_shows_a_note_and_can_then_be_deleted(
    tiny_dataset, tmp_path, monkeypatch
):
    """The run's process never trains (it waits for a file no one creates), so it is still going when
    Cancel is clicked, on any machine. Cancelling a run in the middle of training is
    tests/test_launch.py's."""
    python, _ = held_python(tmp_path)
    monkeypatch.setattr(sys, "executable", str(python))
    at = open_train_page(tiny_dataset)
    run_dir = start_run(at, arch="seed", epochs=200, batch_size=8)
    assert launch.status(run_dir)["state"] == "queued"
    at.button(key="cancel").click().run()
    assert not at.exception, at.exception
    assert wait_until_ended(run_dir)["state"] == "cancelled"
    at.run()
    assert any(f"Run {run_dir.name} was cancelled" in e.value for e in at.info)

    at.selectbox(key="delete_run").set_value(run_dir.name).run()
    assert at.button(key="delete").disabled, "deleting needs the confirmation box ticked"
    at.checkbox(key="delete_confirm").check().run()
    at.button(key="delete").click().run()
    assert not at.exception, at.exception
    assert not run_dir.exists()
    assert any(f"Run {run_dir.name} was deleted" in e.value for e in at.success)
    if R.list_runs():  # other runs are left to delete: the confirmation box is unticked again
        assert at.checkbox(key="delete_confirm").value is False


@pytest.mark.slow
def test_a_run_started_from_the_bundled_model_fine_tunes_it(tiny_dataset):
    from fer import paths
    from fer.modelfile import read_metadata

    at = open_train_page(tiny_dataset)
    start = at.selectbox(key="start_from")
    assert start.value == "A new model (fresh weights)" and start.help
    bundled = next(option for option in start.options if option.startswith("Bundled model"))
    start.set_value(bundled).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="arch").disabled and at.select_slider(key="image_size").disabled
    assert "The network and image size are the starting model's" in texts(at)
    run_dir = start_run(at, epochs=1, batch_size=8, max_faces=14)
    train = R.read_json(run_dir / "config.json")["train"]
    model = read_metadata(paths.BUNDLED_MODEL)["model"]
    assert train["init_from"] == str(paths.BUNDLED_MODEL)
    assert (train["arch"], train["width"], train["image_size"]) == (
        model["arch"],
        model["width"],
        model["image_size"],
    )
    assert wait_until_ended(run_dir)["state"] == "done", launch.log_tail(run_dir)
    assert read_metadata(run_dir / "best.keras")["labels"] == read_metadata(paths.BUNDLED_MODEL)["labels"]
