"""A run still going, as every page shows it: where it is in words, the time left estimated from its
epoch durations, the past-runs table and the Cancel button (which answers at once)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from fer import paths, results
from fer import runs as R
from fer.config import TrainConfig

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def going_run(name: str = "going", epochs: int = 4, finished: int = 2, batch: int = 5) -> Path:
    """A run in epoch `finished + 1` of `epochs`, at `batch` of 10, its epochs taking 60 s (the first 90 s,
    which also builds the model); its status names this process, so it reads as running."""
    run = R.new_run_dir(paths.runs_dir(), name)
    R.write_json(run / R.CONFIG, {"train": {**TrainConfig(epochs=epochs).__dict__, "datasets": ["demo"]}})
    seconds = [90.0] + [60.0] * (finished - 1) if finished else []
    R.write_csv(
        run / R.HISTORY,
        pd.DataFrame({"epoch": range(1, finished + 1), "val_accuracy": [0.3] * finished, "seconds": seconds}),
    )
    R.write_json(
        run / R.PROGRESS,
        {"epoch": finished + 1, "epochs": epochs, "batch": batch, "batches": 10, "accuracy": 0.4,
         "seconds": 30.0 * batch / 5, "updated": 1000.0},
    )  # fmt: skip
    R.set_status(run, "running", epoch=finished + 1, epochs=epochs)
    return run


# The estimate -------------------------------------------------------------------------------------


def test_time_left_is_the_rest_of_this_epoch_and_the_epochs_to_come(home):
    run = going_run()  # epoch 3 of 4, half done: 30 s of this one and 60 s for the last
    now = results.live_run(run, now=1000.0)
    assert (now.stage, now.epoch, now.epochs, now.finished_epochs) == ("training", 3, 4, 2)
    assert now.seconds_left == pytest.approx(90.0)
    assert now.words == "training, epoch 3 of 4" and now.time_left == "about 2 min"
    assert now.fraction == pytest.approx(2.5 / 4)
    # Time passing since the last progress write counts too.
    assert results.live_run(run, now=1020.0).seconds_left == pytest.approx(70.0)


def test_in_the_first_epoch_the_estimate_comes_from_its_batches(home):
    run = going_run(finished=0, batch=4)  # 24 s for 4 of 10 batches: 60 s an epoch
    assert results.live_run(run, now=1000.0).seconds_left == pytest.approx(36.0 + 3 * 60.0)
    early = going_run("early", finished=0, batch=results.FIRST_BATCHES - 1)  # still compiling: no guess
    assert results.live_run(early, now=1000.0).time_left == "not known yet"


def test_epoch_seconds_prefers_the_recent_epochs_to_the_first():
    history = pd.DataFrame({"seconds": [100.0, 10.0, 12.0, 11.0]})
    assert results.epoch_seconds(history) == pytest.approx(11.0)
    assert results.epoch_seconds(pd.DataFrame()) is None


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(None, "not known yet"), (20, "under a minute"), (61, "about 1 min"), (600, "about 10 min"),
     (3600, "about 1 h"), (4800, "about 1 h 20 min")],
)  # fmt: skip
def test_duration_words(seconds, words):
    assert results.duration_words(seconds) == words


def test_stages_before_and_after_training_have_no_estimate(home):
    run = going_run()
    R.write_json(run / R.PROGRESS, {"stage": "preparing faces", "done": 120, "total": 500})
    now = results.live_run(run)
    assert now.words == "preparing faces (120 of 500)" and now.seconds_left is None
    assert now.time_left == "not known yet"
    R.set_status(run, "done")
    over = results.live_run(run)
    assert not over.active and over.words == "finished" and over.time_left == ""


def test_a_queued_run_waits_only_when_the_slots_are_taken(home, monkeypatch):
    monkeypatch.setenv(R.MAX_TRAININGS_ENV, "1")
    first = R.new_run_dir(paths.runs_dir(), "first")
    R.write_json(first / R.CONFIG, {"train": TrainConfig().__dict__})
    R.set_status(first, "queued")  # its process (this one) still loading: first in line, a slot free
    assert results.live_run(first).words == "starting"
    (paths.runs_dir() / R.SLOTS).mkdir()  # now a live process holds the one slot, and says so in it
    (paths.runs_dir() / R.SLOTS / "0").write_text(f"{os.getpid()} {socket.gethostname()} other\n")
    assert results.live_run(first).words == "waiting for a free training slot"


# The Train page -----------------------------------------------------------------------------------


def train_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    return at


def test_the_past_runs_table_shows_where_a_run_is_and_its_time_left(home):
    run = going_run()
    at = train_page()
    table = at.dataframe[-1].value
    row = table[table["run"] == run.name].iloc[0]
    assert row["state"] == "training, epoch 3 of 4"
    assert row["epochs done"] == "2 of 4"
    assert row["time left"].startswith("about") or row["time left"] == "under a minute"
    assert row["test accuracy"] == ""  # not "None"
    assert [m.value for m in at.metric if m.label == "Time left"] == [row["time left"]]


def test_with_no_runs_yet_the_past_runs_part_says_so_and_still_looks_for_one(home):
    at = train_page()
    assert any(i.value.startswith("No runs yet") for i in at.info)
    assert at.button(key="start")  # the page goes on below: the past runs' part keeps looking
    run = going_run()  # started meanwhile, elsewhere: the next look (a redraw of the page here) lists it
    at.run()
    table = at.dataframe[-1].value
    assert table["run"].tolist() == [run.name]


def test_a_going_run_shows_its_settings_and_is_named_on_the_train_page(home):
    run = going_run()
    at = train_page()
    settings = dict(zip(at.table[0].value["setting"], at.table[0].value["value"]))
    assert settings["epochs"] == "4"
    at.text_input(key=f"train_naming_name_{run.name}").input("Going strong")
    at.text_area(key=f"train_naming_note_{run.name}").input("flips on")
    at.button(key=f"train_naming_save_{run.name}").click().run()
    assert not at.exception, at.exception
    assert R.read_naming(run) == {"name": "Going strong", "note": "flips on"}
    table = at.dataframe[-1].value
    assert table[table["run"] == run.name].iloc[0]["name"] == "Going strong"


def test_cancel_says_cancelling_on_the_redraw_its_click_starts(home):
    run = going_run()
    at = train_page()
    at.button(key="cancel").click().run()
    assert not at.exception, at.exception
    assert (run / R.CANCEL).exists()
    assert any(w.value.startswith("Cancelling…") for w in at.warning)
    assert at.button(key="cancel").disabled and at.button(key="cancel").label == "Cancelling…"
    table = at.dataframe[-1].value
    assert table[table["run"] == run.name].iloc[0]["state"] == "cancelling…"
    assert R.read_status(run)["pid"] == os.getpid()  # asked, not killed: it stops after its batch


# The Results page ---------------------------------------------------------------------------------


def results_page(run: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.query_params["run"] = run.name
    at.switch_page("pages/results.py").run()
    assert not at.exception, at.exception
    return at


def test_the_results_page_shows_a_going_run_with_its_time_left_and_no_refresh_button(home):
    run = going_run()
    at = results_page(run)
    [said] = [i.value for i in at.info if i.value.startswith("This run is ")]
    assert said.startswith("This run is training, epoch 3 of 4. Time left: ")
    assert results.live_run(run).time_left in said and "follows it by itself" in said
    assert not [b for b in at.button if "Refresh" in b.label]
    # The next redraw (the page's own, every few seconds) reads the run again: it has moved on.
    R.write_csv(
        run / R.HISTORY,
        pd.DataFrame({"epoch": [1, 2, 3], "val_accuracy": [0.3] * 3, "seconds": [90.0, 60.0, 60.0]}),
    )
    R.write_json(run / R.PROGRESS, {"epoch": 4, "epochs": 4, "batch": 1, "batches": 10, "updated": 1000.0})
    R.set_status(run, "running", epoch=4, epochs=4)
    at.run()
    assert any(i.value.startswith("This run is training, epoch 4 of 4.") for i in at.info)
    R.write_json(run / R.PROGRESS, {"stage": "testing"})
    at.run()
    assert any(
        i.value.startswith("This run is scoring its test faces. Time left: under a minute") for i in at.info
    )


def test_the_results_page_redraws_a_going_run_by_itself():
    """The live part of the Results page (and of the Train page) is a fragment Streamlit reruns every
    few seconds: nobody has to press anything for the page to follow the run."""
    import ast

    for page, name in (("results.py", "live"), ("train.py", "live"), ("train.py", "waiting_line")):
        tree = ast.parse((Path(APP).parent / "pages" / page).read_text())
        [function] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
        every = [
            k.value
            for d in function.decorator_list
            if isinstance(d, ast.Call) and ast.unparse(d.func) == "st.fragment"
            for k in d.keywords
            if k.arg == "run_every"
        ]
        assert every and ast.unparse(every[0]) == "POLL_SECONDS", f"{page}: {name} is not redrawn by itself"
