"""Runs have a name and a note: stored in the run folder (name.json), checked for length, editable on
the Results and Train pages, and shown wherever runs are listed (the run pickers, the comparison,
the Classify model list, the HTML report). A run nobody named is called after its data and network.
A finished run's settings show with it, and "Train again with these settings" fills the Train form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import EVIL, known_run, two_runs_home
from streamlit.testing.v1 import AppTest

from fer import report, results
from fer import runs as R
from fer.config import TrainConfig
from pages import common

PROJECT = Path(__file__).resolve().parents[1]
APP = str(PROJECT / "streamlit_app.py")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A server home with two finished runs (`older`, `newer`) and the suite's demo linked in."""
    return two_runs_home(tmp_path / "home", monkeypatch)


def page(path: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).switch_page(path).run()
    assert not at.exception, at.exception
    return at


# The store ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "datasets, arch, title",
    [
        (["demo"], "vgg", "Demo · vgg"),
        (["/srv/data/fer2013"], "vgg", "FER2013 · vgg"),
        (["/srv/data/expw-sample", "/srv/fer2013.csv"], "seed", "ExpW-sample + FER2013 · seed"),
        (["/srv/data/my faces"], "vgg-small", "my faces · vgg-small"),
    ],
)
def test_a_run_nobody_named_is_called_after_its_data_and_network(datasets, arch, title):
    assert R.default_title({"train": {"datasets": datasets, "arch": arch}}) == title


def test_a_name_and_note_are_stored_in_the_run_folder_and_checked(tmp_path):
    run = known_run(tmp_path / "run")
    assert R.load_run(run).title == "moved-dataset · seed" and R.load_run(run).note == ""
    written = R.write_naming(run, "  Baseline\n  with   flips ", "line one\r\nline two\n")
    assert written == {"name": "Baseline with flips", "note": "line one\nline two"}
    assert json.loads((run / R.NAME).read_text()) == written
    loaded = R.load_run(run)
    assert (loaded.title, loaded.note, loaded.name) == ("Baseline with flips", "line one\nline two", "run")
    assert R.run_title(run) == "Baseline with flips"
    with pytest.raises(ValueError, match="name must be at most 80 characters, got 81"):
        R.write_naming(run, "x" * 81)
    with pytest.raises(ValueError, match="note must be at most 2000 characters, got 2001"):
        R.write_naming(run, "ok", "y" * 2001)
    with pytest.raises(ValueError, match="name must not be empty"):
        R.write_naming(run, " \n ")
    with pytest.raises(ValueError, match="run folder"):
        R.write_naming(tmp_path, "not a run")
    assert R.load_run(run).title == "Baseline with flips"  # nothing refused was written
    # A file edited by hand beyond the limits is cut, not refused.
    (run / R.NAME).write_text(json.dumps({"name": "z" * 500, "note": 7}))
    assert R.read_naming(run) == {"name": "z" * 80, "note": "7"}
    (run / R.NAME).write_text("[not an object")
    assert R.read_naming(run) == {} and R.load_run(run).title == "moved-dataset · seed"


def test_the_report_and_the_comparison_show_the_name_and_note(tmp_path):
    first, second = known_run(tmp_path / "first"), known_run(tmp_path / "second")
    R.write_naming(first, f"Try {EVIL}", f"note {EVIL}\nsecond line")
    html = report.build_report(first)
    assert "<title>Facial-expression model: Try &lt;script&gt;" in html
    assert "note &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;\nsecond line" in html
    assert EVIL not in html
    table = results.compare_table([first, second])
    assert table["name"].tolist() == [f"Try {EVIL}", "moved-dataset · seed"]
    assert table["run"].tolist() == ["first", "second"]


def test_the_model_list_shows_run_names(home):
    run = home / "runs" / "newer"
    (run / R.BEST).write_bytes(b"not read here")
    R.write_naming(run, "Happy-heavy try")
    assert common.model_choices()["Happy-heavy try (run newer)"] == str(run / R.BEST)


# The pages ----------------------------------------------------------------------------------------


def test_a_run_is_named_on_the_results_page_and_listed_by_that_name(home):
    at = page("pages/results.py")
    newer = str(home / "runs" / "newer")
    assert at.selectbox(key="results_run").value == newer
    assert at.selectbox(key="results_run").options[0].startswith("moved-dataset · seed · newer (")
    settings = at.table[0].value
    assert dict(zip(settings["setting"], settings["value"]))["epochs"] == "3"
    # A form: its fields are sent with its button.
    at.text_input(key="results_naming_name_newer").input("First try")
    at.text_area(key="results_naming_note_newer").input("Flips on.\nTo compare with *older*.")
    at.button(key="results_naming_save_newer").click().run()
    assert not at.exception
    assert R.read_naming(newer) == {"name": "First try", "note": "Flips on.\nTo compare with *older*."}
    at.run()
    assert at.selectbox(key="results_run").options[0].startswith("First try · newer (")
    assert any(m.value == "Flips on.  \nTo compare with \\*older\\*." for m in at.markdown)
    compared = at.multiselect(key="results_compare")
    assert compared.options[0] == "First try · newer"


def test_a_name_over_the_limit_is_not_saved_and_says_why(home):
    at = page("pages/results.py")
    box = at.text_input(key="results_naming_name_newer")
    assert (
        box.max_chars == R.MAX_NAME and at.text_area(key="results_naming_note_newer").max_chars == R.MAX_NOTE
    )
    box.input("   ")
    at.button(key="results_naming_save_newer").click().run()
    assert any("The name was not saved: name must not be empty" in e.value for e in at.error)
    assert not (home / "runs" / "newer" / R.NAME).exists()


def test_a_run_is_named_on_the_train_page(home):
    at = page("pages/train.py")
    at.text_input(key="train_naming_name_newer").input("Named on Train")
    at.button(key="train_naming_save_newer").click().run()
    assert R.read_naming(home / "runs" / "newer")["name"] == "Named on Train"
    at.run()
    assert any(m.value == "**Named on Train**" for m in at.markdown)
    table = at.dataframe[-1].value
    assert table["name"].tolist() == ["Named on Train", "moved-dataset · seed"]


def test_train_again_fills_the_train_form_from_the_results_page(home):
    run = home / "runs" / "older"
    config = json.loads((run / R.CONFIG).read_text())
    config["train"].update(epochs=9, batch_size=16, dropout=0.25, image_size=32, datasets=["demo"])
    config["train"]["min_confidence"] = 40.0
    R.write_json(run / R.CONFIG, config)
    at = page("pages/results.py")
    at.selectbox(key="results_run").select(str(run)).run()
    at.button(key="results_train_again").click().run()
    assert not at.exception
    assert at.number_input(key="epochs").value == 9  # now on the Train page
    assert at.select_slider(key="batch_size").value == 16
    assert at.slider(key="dropout").value == 0.25
    assert at.selectbox(key="arch").value == "seed"
    # 32-pixel faces are a command-line size: the form keeps its default and says so.
    assert at.select_slider(key="image_size").value == TrainConfig().image_size
    said = [i.value for i in at.info if "The form holds the settings of run older" in i.value]
    assert said and "image_size 32 (it must be one of 48" in said[0], [i.value for i in at.info]
    assert at.session_state[common.DATASET] == "demo" and at.session_state[common.MIN_CONFIDENCE] == 40.0
    assert dict(at.query_params)["epochs"] == "9" and dict(at.query_params)["threshold"] == "40"


def test_train_again_on_the_train_page_fills_its_form_from_the_run_it_shows(home):
    run = home / "runs" / "newer"
    config = json.loads((run / R.CONFIG).read_text())
    config["train"].update(epochs=11, dropout=0.4, datasets=["demo"])
    R.write_json(run / R.CONFIG, config)
    at = page("pages/train.py")  # a new tab: it shows the newest run, finished
    settings = dict(zip(at.table[0].value["setting"], at.table[0].value["value"]))
    assert settings["epochs"] == "11" and settings["dropout"] == "0.4"
    assert at.number_input(key="epochs").value == TrainConfig().epochs
    at.button(key="train_again").click().run()
    assert not at.exception
    assert at.number_input(key="epochs").value == 11 and at.slider(key="dropout").value == 0.4
    assert any("The form holds the settings of run newer" in i.value for i in at.info)
    assert dict(at.query_params)["epochs"] == "11"
