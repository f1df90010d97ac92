"""What readers who are not engineers see: no command lines or server paths on the Results, Classify and
Your faces pages nor in the shared HTML report; each score says which kind of photo it applies to; the
detector's score and the model's probability have names of their own; model names and macro F1 are
explained."""

from __future__ import annotations

from html import escape as html_escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import known_run, open_page
from streamlit.testing.v1 import AppTest

from fer import evaluate, paths, report, results
from fer import runs as R
from fer.config import TrainConfig
from pages import common

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
SECRET = "/srv/secret-share/faces"  # a server path that must never reach a reader
COMMANDS = ("python -m", "--run-dir", "--resume", "fer train", "fer evaluate", "fer calibrate")


def _nodes(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def _strings(message):
    """Every string in a protobuf message, nested ones included."""
    for _, value in message.ListFields():
        single = isinstance(value, (str, bytes, int, float)) or hasattr(value, "ListFields")
        for item in [value] if single else value:
            if isinstance(item, str):
                yield item
            elif hasattr(item, "ListFields"):
                yield from _strings(item)


def page_texts(at: AppTest) -> list[str]:
    """Every string the page sends to the browser: bodies, labels, help texts, captions, table cells."""
    texts = []
    for node in _nodes(at._tree):
        proto = getattr(node, "proto", None)
        if proto is not None:
            texts += list(_strings(proto))
    for frame in at.dataframe:
        texts += [str(value) for value in frame.value.astype(str).to_numpy().ravel()]
    return texts


def assert_for_readers(texts: list[str], *paths_: object) -> None:
    for text in texts:
        for command in COMMANDS:
            assert command not in text, f"a command line on a readers' page: {text!r}"
        for path in paths_:
            assert str(path) not in text, f"a server path on a readers' page: {text!r}"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# Results --------------------------------------------------------------------------------------------


def test_results_of_a_finished_run_show_no_path_or_command_and_explain_names(home):
    run = known_run(R.new_run_dir(paths.runs_dir(), "known"), dataset=SECRET)
    at = open_page("results", **{common.RUN: str(run)})
    texts = page_texts(at)
    assert_for_readers(texts, SECRET, home)
    assert [m.help for m in at.metric if m.label == "Macro F1"] == [results.MACRO_F1_HELP]
    assert any(results.ARCH_WORDS["seed"] in text for text in texts)  # the caption's help names the network
    assert any(text.startswith("The test faces are the faces of dataset faces") for text in texts)
    settings = dict(zip(at.table[0].value["setting"], at.table[0].value["value"]))
    assert settings["arch"] == f"seed: {results.ARCH_WORDS['seed']}"  # the network's name, explained
    assert "minimum detector score" in settings and not any("confidence" in key for key in settings)


@pytest.mark.parametrize("state", ["cancelled", "interrupted", "failed"])
def test_results_of_a_run_that_stopped_say_so_without_a_command(home, state):
    run = R.new_run_dir(paths.runs_dir(), "stopped")
    R.write_json(run / R.CONFIG, {"train": {**TrainConfig().__dict__, "datasets": [SECRET]}})
    error = f"DatasetError: dataset not found: {SECRET}/label.lst does not exist"
    R.set_status(run, state, error=error, pid=2**22 + 7)  # a pid no process has: not running
    at = open_page("results", **{common.RUN: str(run)})
    texts = page_texts(at)
    assert_for_readers(texts, SECRET, run)
    shown = " ".join(a.value for a in [*at.warning, *at.error])
    assert state in shown or "cancelled" in shown


def test_train_page_of_a_run_that_stopped_without_finishing_names_no_command(home):
    run = R.new_run_dir(paths.runs_dir(), "stopped")
    R.write_json(run / R.CONFIG, {"train": {**TrainConfig().__dict__, "datasets": [SECRET]}})
    R.set_status(run, "interrupted", error="the machine restarted", pid=2**22 + 7)  # no such process
    (run / R.LOG).write_text(f"cache: built {SECRET}/cache/3f2a\nepoch 2/30\nrun folder: {run}\n")
    at = open_page("train", **{common.RUN: str(run)})
    texts = page_texts(at)
    assert_for_readers(texts, run, SECRET)
    assert any("stopped without finishing" in w.value and "resume" in w.value for w in at.warning)
    [log] = [c.value for c in at.code]  # the end of its log, each path cut to its last part
    assert log == "cache: built 3f2a\nepoch 2/30\nrun folder: stopped"


@pytest.mark.parametrize("state", ["cancelled", "interrupted"])
def test_a_run_that_stopped_is_resumed_with_a_button_on_train_and_results(home, monkeypatch, state):
    from fer import launch

    resumed = []
    monkeypatch.setattr(launch, "resume", lambda run: resumed.append(Path(run)) or Path(run))
    run = R.new_run_dir(paths.runs_dir(), f"halted-{state}")
    R.write_json(run / R.CONFIG, {"train": {**TrainConfig().__dict__, "datasets": [SECRET]}})
    R.set_status(run, state, pid=2**22 + 7)  # no such process
    for page in ("train", "results"):
        at = open_page(page, **{common.RUN: str(run)})
        assert not any("whoever runs this server" in t.lower() for t in page_texts(at))
        button = at.button(key=f"resume_{run.name}")
        assert button.label == "Resume training"
        button.click().run()
        assert not at.exception, at.exception
    assert resumed == [run, run]


def test_results_page_with_no_runs_names_no_command(home):
    assert_for_readers(page_texts(open_page("results")))


# The shared report ---------------------------------------------------------------------------------


def test_the_report_shows_no_server_path_or_command(home):
    run = known_run(R.new_run_dir(paths.runs_dir(), "known"), dataset=SECRET)
    html = report.build_report(run)
    assert_for_readers([html], SECRET, home, run)
    assert "Made by" not in html
    assert (
        "faces" in html and html_escape(results.ARCH_WORDS["seed"]) in html
    )  # the dataset by name, the network in words


def test_the_report_of_a_failed_run_shortens_the_paths_in_its_error(home):
    run = known_run(R.new_run_dir(paths.runs_dir(), "broken"), dataset=SECRET)
    R.set_status(run, "failed", error=f"OSError: cannot read {SECRET}/image/a.jpg")
    html = report.build_report(run)
    assert_for_readers([html], SECRET)
    assert "cannot read a.jpg" in html


# Home, Classify, Data ---------------------------------------------------------------------------------


def test_home_says_which_score_applies_to_which_kind_of_photo(home):
    texts = page_texts(open_page("home"))
    assert any("On posed, frontal faces" in t for t in texts)
    assert any("photos from the web" in t and "detector" in t for t in texts)
    assert not any("Accuracy on" in t or "[mtcnn]" in t for t in texts)


def test_home_explains_the_network_in_a_runs_model_name(home):
    import shutil

    run = known_run(R.new_run_dir(paths.runs_dir(), "known"))
    shutil.copyfile(paths.BUNDLED_MODEL, run / R.BEST)
    at = open_page("home", **{common.MODEL: str(run / R.BEST)})
    [name] = [m for m in at.markdown if m.value.startswith("**moved-dataset · seed (run known)")]
    assert name.help == results.ARCH_HELP
    bundled = open_page("home")
    assert all(m.help in (None, "") for m in bundled.markdown if m.value.startswith("**Bundled model"))


def test_classify_explains_its_model_in_words_and_shows_no_command(home):
    at = open_page("classify")
    texts = page_texts(at)
    assert_for_readers(texts, home)
    assert any("posed, frontal faces" in t for t in texts)
    assert any("photos from the web" in t for t in texts)
    assert any(e.label.startswith("How well this model does") for e in at.expander)
    # Runs are listed by names such as "Demo · vgg": the list's help says what vgg and seed are.
    assert all(words in at.selectbox(key="classify_model").help for words in results.ARCH_WORDS.values())


def test_your_faces_shows_no_path_or_command_and_opens_the_collection_on_the_data_page(home):
    from PIL import Image

    from fer import collect

    folder = collect.collection_dir("my-faces")
    collect.add_face(folder, Image.new("RGB", (120, 160), "gray"), (10, 20, 70, 80), 0.98, "happy")
    at = open_page("collect")
    assert_for_readers(page_texts(at), home, folder)
    at.button(key="collect_open_data").click().run()
    assert not at.exception, at.exception
    assert at.session_state[common.DATASET] == str(folder.resolve())
    assert at.text_input(key="data_path").value == str(folder.resolve())  # now on the Data page
    assert any(m.label == "Faces" and m.value == "1" for m in at.metric)


def test_data_calls_the_detector_score_by_its_name(home):
    at = open_page("data")
    texts = page_texts(at)
    assert [s.label for s in at.slider if s.key == "data_threshold"] == ["Minimum detector score"]
    assert "Detector score" in [s.value for s in at.subheader]
    assert not any("detector confidence" in t.lower() for t in texts)


# predictions.csv: probability, and the files written before the rename -----------------------------


def test_predictions_name_the_models_probability_and_old_files_still_read(tmp_path):
    faces = pd.DataFrame({"photo": ["a.jpg", "b.jpg"], "face": [0, 0], "label": ["happy", "sad"]})
    table = evaluate.predictions_table(faces, ["happy", "sad"], np.array([[0.9, 0.1], [0.3, 0.7]]))
    assert "probability" in table.columns and "confidence" not in table.columns
    old = table.rename(columns={"probability": "confidence"})
    R.write_csv(tmp_path / R.PREDICTIONS, old)
    read = R.read_predictions(tmp_path)
    np.testing.assert_allclose(read["probability"], [0.9, 0.7])
    assert results.examples(read, ["happy", "sad"], 1)["sad"]["correct"]["photo"].tolist() == ["b.jpg"]
    assert results.cell_faces(read.drop(columns=["p_happy", "p_sad"]), "happy", "happy")[
        "photo"
    ].tolist() == ["a.jpg"]


# The words themselves ----------------------------------------------------------------------------------


def test_score_lines_name_the_kind_of_photo_for_each_score():
    lines = results.score_lines(
        {
            "fer2013": {"n": 3589, "accuracy": 0.70},
            "expw-sample": {"n": 281, "accuracy": 0.37},
            "expw-sample [blazeface]": {"n": 281, "accuracy": 0.43, "undetected": 10},
            "expw-sample [mtcnn]": {"n": 281, "accuracy": 0.41},
        }
    )
    assert lines[0].startswith("On posed, frontal faces") and "70%" in lines[0]
    assert (
        "found by the face detector" in lines[1]
        and "43%" in lines[1]
        and "10 faces the detector missed" in lines[1]
    )
    assert "found by the mtcnn face detector" in lines[2] and "Classify" not in lines[2]
    assert "boxes people drew" in lines[3] and "37%" in lines[3]
    assert results.score_lines({"n": 10, "accuracy": 0.5}) == [
        "On the faces held back from its own training data: right 50% of the time (10 faces it never saw "
        "while training)."
    ]


def test_without_paths_keeps_the_last_part_of_a_path_and_leaves_the_rest():
    assert (
        results.without_paths("not found: /srv/data/expw does not exist") == "not found: expw does not exist"
    )
    assert results.without_paths("see ~/runs/r1/train.log.") == "see train.log."
    assert (
        results.without_paths("val / test share, 48/64, http://host/x")
        == "val / test share, 48/64, http://host/x"
    )
