"""Links to a view: each page keeps what it shows in the address's query parameters, and a new
session (a reload, a new tab, a shared link) opening that address shows the same view. Every value
from an address is checked like the input it stands for; one that fails is dropped with a warning
naming it, never a traceback, and never a path outside the served folders.

Driven headless by AppTest: `at.query_params` is the address a session opens (and, after a run,
the one the page wrote); a fresh AppTest is a fresh browser session.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import expw_faces, two_runs_home
from streamlit.testing.v1 import AppTest

from fer import paths
from fer.config import TrainConfig
from pages import common

PROJECT = Path(__file__).resolve().parents[1]
APP = str(PROJECT / "streamlit_app.py")
DUPLICATION = "was created with a default value but also had its value set via the Session State API"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A server home with a dataset of its own (`mine`, confidences 0.1 to 0.9), two finished runs
    (`older`, `newer`), and the suite's demo dataset linked in; no extra data roots."""
    folder = two_runs_home(tmp_path / "home", monkeypatch)
    expw_faces(folder / "datasets" / "mine", photos=18)
    return folder


@pytest.fixture(autouse=True)
def duplication_warnings(monkeypatch) -> list[str]:
    """What Streamlit would log about a widget given a default value and a Session State value (it
    checks only under a running server, and says so once per process): recorded here, under AppTest."""
    from streamlit.elements.lib import policies

    said: list[str] = []
    monkeypatch.setattr(policies, "runtime", SimpleNamespace(exists=lambda: True))
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda message, *args, **_: said.append(message % args))
    yield said
    assert not [s for s in said if DUPLICATION in s], said


def opened(page: str, **query: str | list[str]) -> AppTest:
    """A new browser session opening `page` at an address with `query`."""
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def address(at: AppTest) -> dict[str, str | list[str]]:
    return dict(at.query_params)


def link_warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if w.value.startswith("The link's")]


# Data: dataset and threshold --------------------------------------------------------------------


def test_a_data_link_opens_the_same_dataset_and_threshold(home):
    mine = str((home / "datasets" / "mine").resolve())
    first = opened("pages/data.py")
    assert address(first) == {}  # the defaults leave the address bare
    first.radio(key="data_source").set_value("A folder or CSV on the server").run()
    first.text_input(key="data_path").input(mine).run()
    first.slider(key="data_threshold").set_value(0.5).run()
    assert address(first) == {"dataset": mine, "threshold": "0.5"}

    second = opened("pages/data.py", **address(first))  # the copied address, in a new session
    assert not link_warnings(second)
    assert second.session_state[common.DATASET] == mine
    assert second.slider(key="data_threshold").value == 0.5
    assert second.radio(key="data_source").value == "A folder or CSV on the server"
    assert second.text_input(key="data_path").value == mine
    kept = {m.label: m.value for m in second.metric}
    assert kept == {m.label: m.value for m in first.metric} and kept["Faces"] == "18"
    assert address(second) == address(first)


@pytest.mark.parametrize(
    "dataset, why",
    [
        ("/etc", "outside the folders this server serves"),
        ("datasets/../../../../etc", "outside the folders this server serves"),
        ("{home}/datasets/../../etc", "outside the folders this server serves"),
        ("{home}/datasets/missing", "does not exist"),
        ("{home}/datasets", "cannot be read as a dataset"),
    ],
)
def test_a_dataset_the_data_page_would_refuse_is_refused_from_a_link(home, dataset, why):
    at = opened("pages/data.py", dataset=dataset.format(home=home), threshold="0.4")
    warnings = link_warnings(at)
    assert len(warnings) == 1 and "The link's dataset" in warnings[0] and why in warnings[0], warnings
    assert "Showing the default instead" in warnings[0]
    assert at.session_state[common.DATASET] == "demo"
    assert not at.error
    # The threshold alone still applies (to the demo, whose scores go higher); the bad value is gone.
    assert at.session_state[common.MIN_CONFIDENCE] == 0.4
    assert address(at) == {"threshold": "0.4"}
    at.run()  # said once: the next rerun has nothing to warn about
    assert not link_warnings(at)


def test_a_dataset_whose_photos_lead_outside_is_refused_from_a_link(home, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes((home / "datasets" / "mine" / "image" / "p0000.png").read_bytes())
    linked = expw_faces(home / "datasets" / "linked", photos=3)
    (linked / "image" / "p0000.png").unlink()
    (linked / "image" / "p0000.png").symlink_to(outside)
    at = opened("pages/data.py", dataset=str(linked))
    assert "outside the folders this server serves" in link_warnings(at)[0]
    assert at.session_state[common.DATASET] == "demo"


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", ""])
def test_a_bad_threshold_is_named_and_the_default_kept(home, value):
    at = opened("pages/data.py", threshold=value)
    if value:
        assert any("The link's threshold" in w for w in link_warnings(at))
    assert at.session_state[common.MIN_CONFIDENCE] == 0.0
    assert "threshold" not in address(at)


# Train: non-default settings, kept across pages --------------------------------------------------


def test_a_train_link_fills_the_form_and_holds_only_what_differs(home):
    at = opened("pages/train.py", epochs="7", dropout="0.35", arch="seed", augment="false")
    assert not link_warnings(at)
    assert at.number_input(key="epochs").value == 7
    assert at.slider(key="dropout").value == 0.35
    assert at.selectbox(key="arch").value == "seed"
    assert at.checkbox(key="augment").value is False
    assert at.select_slider(key="batch_size").value == TrainConfig().batch_size
    assert address(at) == {"epochs": "7", "dropout": "0.35", "arch": "seed", "augment": "false"}
    at.number_input(key="epochs").set_value(TrainConfig().epochs).run()  # back to the default: left out
    assert address(at) == {"dropout": "0.35", "arch": "seed", "augment": "false"}


@pytest.mark.parametrize(
    "key, value, why",
    [
        ("epochs", "0", "from 1 to 500"),
        ("epochs", "2.5", "whole number"),
        ("batch_size", "99", "one of 8, 16"),
        ("learning_rate", "1", "one of 0.0001"),
        ("dropout", "0.33", "multiple of 0.05"),
        ("image_size", "../48", "one of 48"),
        ("augment", "maybe", "true or false"),
        ("start_from", "../../models/default.keras", '"bundled" or the folder name'),
    ],
)
def test_a_bad_train_setting_is_named_and_the_default_kept(home, key, value, why):
    at = opened("pages/train.py", **{key: value}, seed="5")
    warnings = link_warnings(at)
    assert len(warnings) == 1 and f"The link's {key}" in warnings[0] and why in warnings[0], warnings
    assert at.number_input(key="seed").value == 5  # the good one still applies
    assert key not in address(at)


def test_train_settings_stay_while_other_pages_show(home):
    at = opened("pages/train.py")
    at.number_input(key="epochs").set_value(12).run()
    at.select_slider(key="batch_size").set_value(128).run()
    at.switch_page("pages/data.py").run()
    assert address(at) == {}
    at.switch_page("pages/results.py").run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.number_input(key="epochs").value == 12
    assert at.select_slider(key="batch_size").value == 128
    assert address(at) == {"epochs": "12", "batch_size": "128"}


def test_a_train_link_takes_a_starting_model_by_name_only(home):
    at = opened("pages/train.py", start_from="bundled")
    assert at.selectbox(key="start_from").value.startswith("Bundled model")
    assert address(at) == {"start_from": "bundled"}


# Results: run and compared runs ------------------------------------------------------------------


def test_a_results_link_opens_the_same_run_and_comparison(home):
    first = opened("pages/results.py")
    assert address(first) == {"run": "newer"}  # the run shown is in the address, newest or not
    first.selectbox(key="results_run").select(str(home / "runs" / "older")).run()
    # The comparison started with the run first shown (newer); the older one joins it.
    first.multiselect(key="results_compare").select(str(home / "runs" / "older")).run()
    assert address(first) == {"run": "older", "compare": ["newer", "older"]}

    second = opened("pages/results.py", **address(first))
    assert not link_warnings(second)
    assert second.selectbox(key="results_run").value == str(home / "runs" / "older")
    compared = second.multiselect(key="results_compare").value
    assert compared == [str(home / "runs" / name) for name in ("newer", "older")]
    assert address(second) == address(first)


@pytest.mark.parametrize("run", ["../runs/older", "/etc", "missing", "older/../newer", ""])
def test_a_run_the_server_does_not_list_is_refused_from_a_link(home, run):
    at = opened("pages/results.py", run=run, compare=["newer", run or "x"])
    if run:
        assert any(w.startswith("The link's run") for w in link_warnings(at)), link_warnings(at)
    assert any(w.startswith("The link's compare") for w in link_warnings(at))
    assert at.selectbox(key="results_run").value == str(home / "runs" / "newer")  # the default: newest
    assert address(at) == {"run": "newer"}


# Classify: the model ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_classify_link_takes_the_bundled_model_or_a_run_by_name(tiny_run):
    at = opened("pages/classify.py", model=tiny_run.name)
    assert not link_warnings(at)
    assert at.selectbox(key="classify_model").value == str(tiny_run / "best.keras")
    assert address(at) == {"model": tiny_run.name}
    bad = opened("pages/classify.py", model=str(tiny_run / "best.keras"))  # a path: refused
    assert "The link's model" in link_warnings(bad)[0]
    assert bad.selectbox(key="classify_model").value == str(paths.BUNDLED_MODEL)
    assert address(bad) == {}


# The helpers themselves --------------------------------------------------------------------------


def test_parsers_take_what_the_widgets_offer_and_name_the_rule_otherwise():
    assert common.one_of([1e-4, 1e-3])("0.001") == 1e-3
    assert common.one_of(["vgg", "seed"])("seed") == "seed"
    assert common.whole(0)("12") == 12 and common.share(0.0, 0.9, 0.05)("0.45") == 0.45
    assert common.flag("on") is True and common.flag("FALSE") is False
    for parse, text in (
        (common.whole(1, 5), "6"),
        (common.share(0, 1, 0.1), "nan"),
        (common.threshold, "-0.1"),
    ):
        with pytest.raises(ValueError, match="it must"):
            parse(text)
