"""Strings that come from data are shown as text on every page and chart.

Labels, dataset folders, photo and file names, run names and error messages come from files anyone
can make, and a shared dashboard shows them to every visitor. Streamlit renders bodies, captions,
alerts, widget labels and image captions as Markdown, and Plotly renders a subset of HTML in a chart's
text: a label such as `![x](http://host/beacon.png)` must show as those characters, never as an image
the visitor's browser fetches or a link it offers. A failed run's traceback is for the server's log,
never for the page.

The run here is real: the seed model trained for one epoch on a generic CSV whose labels, folder,
photo names and run name are all markup.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers import face_crop, open_page, photo, serving, write_csv
from streamlit.testing.v1 import AppTest

from fer import paths, runs
from fer import train as T
from fer.config import TrainConfig
from pages import common

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
HOSTILE = [
    "![x](http://host/beacon.png)",
    "[please log in again](http://host/phish)",
    '<a href="http://host/a">click</a>',
]
LABELS = [*HOSTILE, "happy"]
DATASET = "faces [here](http:phish) <img src=x>"  # folder and run names cannot hold a slash
RUN = "run ![r](http:beacon) <a href=x> *b*"
PHOTO = "[p](http:phish) <b>{}</b>.png"
MARKUP = ("](http", "<a ", "<img", "![")  # what a Markdown body must not hold unescaped
# Fields that Streamlit shows as plain text (select options, code, values, table headers) or that are not text.
PLAIN = {"options", "default", "value", "raw_value", "raw_values", "spec", "id", "form_id", "code_text",
         "placeholder", "file_name", "url", "mime", "language", "formatted_options", "columns"}  # fmt: skip
TRACEBACK = "Traceback (most recent call last)"


# The hostile run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory) -> Path:
    """A FER_HOME holding the dataset (a CSV of photos without boxes) and the finished run."""
    home = tmp_path_factory.getbasetemp() / "hostile-home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_HOME", str(home))
        folder = paths.data_dir() / DATASET
        rows = []
        for k, label in enumerate(LABELS):
            for i in range(10):
                name = PHOTO.format(f"{k}-{i}")
                photo(folder / name, (48, 48), seed=10 * k + i)
                rows.append((name, label))
        csv = write_csv(folder / "faces.csv", ["image", "label"], rows)
        run = paths.runs_dir() / RUN
        if runs.read_status(run).get("state") != "done":
            config = TrainConfig(datasets=(str(csv),), arch="seed", epochs=1, image_size=48, batch_size=16,
                                 augment=False)  # fmt: skip
            T.train(config, run)
    return home


@pytest.fixture
def hostile_run(hostile_home, monkeypatch) -> Path:
    monkeypatch.setenv("FER_HOME", str(hostile_home))
    monkeypatch.setenv(paths.ROOTS_VARIABLE, "")
    return paths.runs_dir() / RUN


# What a page shows --------------------------------------------------------------------------------


def _nodes(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def _strings(message, name=""):
    """(field name, text) for every string in a protobuf message, nested ones included."""
    for field, value in message.ListFields():
        single = isinstance(value, (str, bytes, int, float)) or hasattr(value, "ListFields")
        for item in [value] if single else value:
            if isinstance(item, str):
                yield field.name, item
            elif hasattr(item, "ListFields"):
                yield from _strings(item, field.name)


def markdown_texts(at: AppTest) -> list[str]:
    """Every string of the page that Streamlit renders as Markdown."""
    texts = []
    for node in _nodes(at._tree):
        proto = getattr(node, "proto", None)
        if proto is not None:
            texts += [text for field, text in _strings(proto) if field not in PLAIN]
    return texts


def chart_texts(at: AppTest) -> list[str]:
    def walk(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    return [text for chart in at.get("plotly_chart") for text in walk(json.loads(chart.proto.spec))]


def unescaped(text: str) -> str:
    """The text Markdown reads as markup: its code spans (shown as they are) and backslash escapes left
    out."""
    return re.sub(r"\\.", "", re.sub(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)", "", text))


def assert_shown_as_text(at: AppTest) -> None:
    texts = markdown_texts(at)
    assert texts, "no Markdown on the page"
    for text in texts:
        assert not any(markup in unescaped(text) for markup in MARKUP), text
    for text in chart_texts(at):
        assert "<a " not in text and "<img" not in text, text


def plain(text: str) -> str:
    """What a visitor reads of a Markdown body written by common.md: escapes and joiners left out."""
    return re.sub(r"\\(.)", r"\1", text).replace("\u2060", "")


# The pages ----------------------------------------------------------------------------------------


def test_the_markdown_escape_shows_every_special_character_as_it_is():
    # Each of these was rendered by Chromium with Streamlit's Markdown, and showed as written.
    texts = [*HOSTILE, "*b* _i_ __u__ `c` ~~s~~ ~t~", "$x^2$ and $5", ":smile: :material/home: :streamlit:",
             ":red[r] :name{.cls} ::: x", "# h", "> q", "- item", "1. x", "a|b", "& &amp; \\", "[ref]: http://h/r",
             "<http://host/auto>", "www.host.com me@host.com https://host", "a -> b <- c -- d >= e"]  # fmt: skip
    for text in texts:
        escaped = common.md(text)
        assert plain(escaped) == text
        bare = unescaped(escaped)  # what is left for Markdown to read
        assert not re.search(r"[][`*<>#|~$&{}]|^[-+]\s|^\d+[.)]\s|://|www\.|\w@|:\w", bare), (text, escaped)
    # Ordinary text stays as it is, on one line.
    for text in ("happy", "p_happy", "DatasetError: dataset not found: /data/gone (no such file).", "0.93"):
        assert common.md(text) == text
    assert common.md("a\nb  c") == "a b c"
    assert common.md("a `b` c", code=True) == "``a `b` c``"
    assert common.plot_text('<a href="x">y</a> & <br>') == '&lt;a href="x"&gt;y&lt;/a&gt; &amp; &lt;br&gt;'


@pytest.mark.slow
def test_results_show_hostile_labels_as_text(hostile_run):
    at = open_page("results", **{common.RUN: str(hostile_run)})
    assert at.selectbox(key="results_run").value == str(hostile_run)
    assert len(at.metric) == 5
    assert_shown_as_text(at)
    heatmap = next(t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]
                   if t["type"] == "heatmap")  # fmt: skip
    metrics = runs.read_metrics(hostile_run)
    assert sorted(metrics["labels"]) == sorted(LABELS)
    assert heatmap["x"] == [common.plot_text(label) for label in metrics["labels"]]
    # Every cell that holds faces: its faces, captioned with the labels as text.
    labels = metrics["labels"]
    cells = [(t, p) for i, t in enumerate(labels) for j, p in enumerate(labels)
             if metrics["confusion_matrix"][i][j]]  # fmt: skip
    for true, predicted in cells:
        at.selectbox(key="results_true").select(true)
        at.selectbox(key="results_predicted").select(predicted).run()
        assert not at.exception
        assert at.image and all(common.md(predicted) in c for c in at.image[0].captions)
        assert_shown_as_text(at)


@pytest.mark.slow
def test_train_home_data_and_classify_show_hostile_names_as_text(hostile_run):
    csv = str(paths.data_dir() / DATASET / "faces.csv")
    at = open_page("train", **{common.DATASET: csv})
    assert any(plain(s.value).startswith(f"Run {RUN} finished") for s in at.success)
    assert_shown_as_text(at)

    at = open_page("home", **{common.DATASET: csv})
    [bars] = [t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]]
    assert sorted(bars["x"]) == sorted(common.plot_text(label) for label in LABELS)
    assert_shown_as_text(at)

    at = open_page("data", **{common.DATASET: csv})
    shown = [plain(m.value) for m in at.markdown]
    assert all(f"**{label}**" in shown for label in LABELS)
    assert_shown_as_text(at)

    at = open_page("classify", **{common.MODEL: str(hostile_run / runs.BEST)})
    assert at.selectbox(key="classify_model").value == str(hostile_run / runs.BEST)
    at.toggle(key="whole").set_value(True)
    at.file_uploader(key="uploads").set_value((PHOTO.format("upload"), photo_bytes(), "image/png")).run()
    assert not at.exception
    assert PHOTO.format("upload") in [plain(h.value) for h in at.subheader]
    heading = next(m.value for m in at.markdown if m.value.startswith("**Face 1:"))
    assert any(plain(heading).startswith(f"**Face 1: {label}**") for label in LABELS)
    [bars] = [t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]]
    assert sorted(bars["y"]) == sorted(common.plot_text(label) for label in LABELS)
    assert_shown_as_text(at)


def photo_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    face_crop(64).save(buffer, format="PNG")
    return buffer.getvalue()


# A failed run -------------------------------------------------------------------------------------


@pytest.fixture
def failed_run(tmp_path, monkeypatch) -> Path:
    """A run that failed in training, as fer.train records it: the error, its traceback in status.json,
    and the process's output (the traceback again) in train.log."""
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    run = runs.new_run_dir(paths.runs_dir(), "broken")
    runs.write_json(run / runs.CONFIG, {"train": asdict(TrainConfig(datasets=("demo",)))})
    trace = (f"{TRACEBACK}:\n  File \"/srv/fer/fer/train.py\", line 250, in train\n    return _train(config)\n"
             "ValueError: no face of label [x](http://host/phish) <img src=x>")  # fmt: skip
    runs.set_status(run, "failed", error="ValueError: no face of label [x](http://host/phish) <img src=x>",
                    traceback=trace)  # fmt: skip
    (run / runs.LOG).write_text(f"Epoch 1/3\n{trace}\n")
    return run


def all_text(at: AppTest) -> str:
    return "\n".join(text for node in _nodes(at._tree) if getattr(node, "proto", None) is not None
                     for _, text in _strings(node.proto))  # fmt: skip


@pytest.mark.parametrize("name", ["results", "train"])
def test_a_failed_run_shows_its_error_and_logs_its_traceback(failed_run, name, caplog):
    with caplog.at_level(logging.ERROR, logger="fer"):
        at = open_page(name, **{common.RUN: str(failed_run)})
    [error] = [plain(e.value) for e in at.error]
    assert "failed: ValueError: no face of label [x](http://host/phish) <img src=x>" in error
    assert TRACEBACK not in all_text(at) and "line 250" not in all_text(at)
    assert_shown_as_text(at)
    assert TRACEBACK in caplog.text and str(failed_run) in caplog.text


def test_an_error_recorded_with_the_end_of_a_traceback_is_shown_in_one_line():
    recorded = ('the training process exited with code 1:   File "/srv/fer/fer/cli.py", line 9, in main\n'
                "    raise SystemExit(train(config))\nMemoryError: out of memory")  # fmt: skip
    assert (
        common.error_line(recorded) == "the training process exited with code 1: MemoryError: out of memory"
    )
    assert common.error_line(f"{TRACEBACK}:\n  File \"x.py\", line 1\nKeyError: 'a'") == "KeyError: 'a'"
    assert common.error_line("DatasetError: dataset not found") == "DatasetError: dataset not found"


# In a real browser --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_browser_fetches_nothing_and_links_nowhere_on_the_results_page(hostile_home, browser):
    with serving(hostile_home) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 3000})  # conftest's Chromium
        tab = context.new_page()
        tab.set_default_timeout(180_000)
        requests = []
        tab.on("request", lambda request: requests.append(request.url))
        tab.goto(f"{url}/results")
        tab.get_by_text("test faces, the model labelled").first.wait_for()
        tab.wait_for_function(
            "() => document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state')"
            " === 'notRunning' && [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
            ".every(chart => chart.querySelector('.main-svg'))"
        )
        links = tab.evaluate(
            "() => [...document.querySelectorAll('a, img, image')].map(e => e.getAttribute('href') ||"
            " e.getAttribute('src') || e.getAttribute('xlink:href') || '').filter(v => v.includes('host'))"
        )
        assert links == []
        # The faces of the chosen cell, captioned, and the confusion matrix's axes, once drawn.
        tab.locator('[data-testid="stImage"] img').first.wait_for()
        charts = tab.locator('[data-testid="stPlotlyChart"]')
        for label in HOSTILE:
            charts.get_by_text(label, exact=True).first.wait_for()
        text = tab.locator("body").inner_text().replace("\u2060", "")
        assert not [r for r in requests if urllib.parse.urlsplit(r).hostname == "host"]
        context.close()
    for label in HOSTILE:
        assert label in text  # in the sentences, the pickers and the image captions
