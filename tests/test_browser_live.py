"""A run going, as a person watches it in a real browser: the past-runs table and the Results page
follow it without a click, Cancel answers at once, and at phone width no chart toolbar covers a title.

The server trains one run at a time (FER_MAX_TRAININGS=1) on a 48-face dataset, and the test holds that
one slot itself, so the order of events is fixed by construction: a run started on the page waits in
line (and is cancelled there), a second waits while a second tab opens its Results page, and when the
test frees the slot it trains (three epochs of one batch, the report's small CNN) and its row leaves
"waiting" for "finished" by itself. Every wait is for a state a person would see; nothing is timed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest
from helpers import LOAD_MS, expw_faces, known_run, require_browser, server, wait_for

from fer import runs as R
from fer.config import TrainConfig

pytestmark = pytest.mark.slow

TRAINING_MS = 300_000  # a loaded machine: the short run's process starts, trains and tests within this


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    require_browser()
    home = tmp_path_factory.mktemp("browser-live-home")
    dataset = expw_faces(home / "tiny-expw", 48)  # under FER_HOME, a folder the server may read
    with server(home, env={**os.environ, R.MAX_TRAININGS_ENV: "1"}) as (url, _):
        yield url, home, dataset


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 2200})
    context.set_default_timeout(LOAD_MS)
    yield context
    context.close()


def settle(page) -> None:
    page.wait_for_function(
        "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
        " return app && app.getAttribute('data-test-script-state') === 'notRunning'; }"
    )


def grid_rows(page) -> list[list[str]]:
    """The rows of the last table on the page (the past runs), as text."""
    return page.evaluate(
        """() => {
            const tables = document.querySelectorAll('[data-testid="stDataFrame"] table');
            const table = tables[tables.length - 1];
            return table ? [...table.querySelectorAll('tr')].map(r => [...r.children].map(c => c.innerText)) : [];
        }"""
    )


def wait_for_row(page, run: str, column: str, pattern: str, timeout: int = TRAINING_MS) -> None:
    """Wait, without touching the page, until the past-runs row of `run` has `column` matching `pattern`."""
    try:
        _wait_for_row(page, run, column, pattern, timeout)
    except Exception as error:
        raise AssertionError(
            f"row {run} never had {column} ~ {pattern!r}; the table: {grid_rows(page)}"
        ) from error


def _wait_for_row(page, run: str, column: str, pattern: str, timeout: int) -> None:
    page.wait_for_function(
        """([run, column, pattern]) => {
            const tables = document.querySelectorAll('[data-testid="stDataFrame"] table');
            const table = tables[tables.length - 1];
            if (!table) return false;
            const rows = [...table.querySelectorAll('tr')].map(r => [...r.children].map(c => c.innerText));
            const at = rows[0].indexOf(column);
            return rows.some(r => r[0] === run && new RegExp(pattern).test(r[at]));
        }""",
        arg=[run, column, pattern],
        timeout=timeout,
    )


def go_to(page, name: str) -> None:
    """Open a page through the menu, as a person does: the session (and its dataset) stays."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(name, exact=True).click()
    settle(page)


def set_number(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    settle(page)


def start(page, epochs: str) -> str:
    """Start a run of `epochs` epochs with the page's other settings; returns its name, once the past-runs
    table lists it."""
    set_number(page, "Epochs", epochs)
    before = [row[0] for row in grid_rows(page)[1:]]
    page.get_by_role("button", name="Start training").click()
    handle = page.wait_for_function(
        """before => {
            const tables = document.querySelectorAll('[data-testid="stDataFrame"] table');
            const table = tables[tables.length - 1];
            const names = table ? [...table.querySelectorAll('tr')].slice(1).map(r => r.children[0].innerText) : [];
            return names.find(name => !before.includes(name)) || false;
        }""",
        arg=before,
    )
    return handle.json_value()


def test_a_run_is_followed_without_a_click_and_cancel_answers_at_once(live_server, context):
    url, home, dataset = live_server
    slots = home / "runs" / ".slots"
    slots.mkdir(parents=True, exist_ok=True)
    held = open(slots / "0", "a+")  # the one training slot, taken by this test: runs wait in line
    fcntl.flock(held, fcntl.LOCK_EX)
    held.write(
        f"{os.getpid()} {socket.gethostname()} {home / 'runs' / 'held-by-the-test'}\n"
    )  # as a run signs it
    held.flush()
    try:
        page = context.new_page()
        page.goto(f"{url}/data")
        page.get_by_text("A folder or CSV on the server").click()
        field = page.get_by_label("Dataset path on the server", exact=True)
        field.fill(str(dataset))
        field.press("Enter")
        page.get_by_text("48 faces in 48 photos").first.wait_for()
        go_to(page, "Train")
        page.get_by_test_id("stSelectbox").filter(has_text="Network").click()
        page.get_by_role("option", name="seed: the report's CNN (three convolution blocks)").click()
        settle(page)

        # Cancel answers at once. A waiting run's process is stopped there and then, so the first thing the
        # page says after the click is "Cancelling…" or, when the process was already gone by the redraw,
        # that it was cancelled (a training run says "Cancelling…" until its batch ends: tests/test_live.py).
        first = start(page, "3")
        wait_for_row(page, first, "state", "^waiting for a free training slot")
        page.evaluate(
            """run => { window.firstAnswer = null;
                const look = () => {
                    const text = document.body.innerText;
                    if (window.firstAnswer === null && text.includes('Cancelling…')) window.firstAnswer = 'cancelling';
                    if (window.firstAnswer === null && text.includes(`Run ${run} was cancelled`)) window.firstAnswer = 'cancelled';
                };
                new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
            }""",
            first,
        )
        page.locator(".st-key-cancel button").first.click()  # the watched run's, not the line's
        page.get_by_text(f"Run {first} was cancelled").first.wait_for()
        assert page.evaluate("() => window.firstAnswer") in ("cancelling", "cancelled")
        wait_for_row(page, first, "state", "^cancelled$")

        # A second run waits; a second tab shows it on the Results page.
        second = start(page, "3")
        wait_for_row(page, second, "state", "^waiting for a free training slot")
        results = context.new_page()
        results.goto(f"{url}/results")
        results.get_by_text("This run is waiting for a free training slot").first.wait_for()
    finally:
        held.close()  # the slot is free: the second run trains

    # Its row follows it with no click and no reload: from waiting to training (a run of three one-batch
    # epochs may finish between two redraws, so the row may go straight to finished) to finished. How a row
    # reads in each epoch, with its time left, is checked on a run in its third epoch in test_live.py.
    wait_for_row(page, second, "state", "^(training, epoch [1-3] of 3|finished)$", timeout=TRAINING_MS)
    wait_for_row(page, second, "state", "^finished$", timeout=TRAINING_MS)
    wait_for_row(page, second, "test accuracy", r"^\d+\.\d%$")
    # The Results tab, never touched, shows its test results.
    results.get_by_text("test faces, the model labelled").first.wait_for(timeout=TRAINING_MS)
    assert results.get_by_role("button", name="Refresh").count() == 0


@contextlib.contextmanager
def run_written_elsewhere(home: Path, name: str):
    """A run folder as another tab (or visitor) starts one: its config, four epochs on the demo
    dataset, written by the test; the folder is removed afterwards."""
    run = R.new_run_dir(home / "runs", name)
    try:
        R.write_json(run / R.CONFIG, {"train": {**TrainConfig(epochs=4).__dict__, "datasets": ["demo"]}})
        yield run
    finally:
        shutil.rmtree(run)


def test_a_run_started_elsewhere_shows_on_an_open_train_page_by_itself(live_server, context):
    """A Train page opened while nothing trains finds a run that another tab (or visitor) starts, and
    follows it to its end, with no click. The run is written by the test: its status names this process,
    so it reads as running, in its third epoch of four, until the test says it was cancelled."""
    url, home, _ = live_server
    page = context.new_page()
    page.goto(f"{url}/train")
    page.get_by_text("Past runs").first.wait_for()
    settle(page)
    with run_written_elsewhere(home, "started-elsewhere") as run:
        R.write_csv(
            run / R.HISTORY,
            pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.3, 0.3], "seconds": [9.0, 9.0]}),
        )
        R.write_json(run / R.PROGRESS, {"epoch": 3, "epochs": 4, "batch": 5, "batches": 10, "seconds": 4.0})
        R.set_status(run, "running", epoch=3, epochs=4)
        wait_for_row(page, run.name, "state", "^training, epoch 3 of 4$", timeout=LOAD_MS)
        page.get_by_text(f"Run {run.name}").first.wait_for()  # the page now watches it too
        R.set_status(run, "cancelled")
        wait_for_row(page, run.name, "state", "^cancelled$", timeout=LOAD_MS)


def test_a_run_started_elsewhere_is_listed_on_an_open_results_page_by_itself(live_server, context):
    """The Results page's run picker gains a run that another tab (or visitor) starts, with no click."""
    url, home, _ = live_server
    page = context.new_page()
    page.goto(f"{url}/results")
    page.get_by_text("Results").first.wait_for()
    settle(page)
    with run_written_elsewhere(home, "listed-elsewhere") as run:
        R.set_status(run, "cancelled")

        def listed() -> bool:
            picker = page.locator(".st-key-results_run")
            if not picker.count():  # the page had no runs yet: the picker appears with this one
                return False
            picker.click()
            found = page.get_by_role("option", name=re.compile(run.name)).count() > 0
            page.keyboard.press("Escape")
            return found

        wait_for(listed, "the new run in the Results page's run picker", run, timeout=LOAD_MS / 1000)


# Phone width ----------------------------------------------------------------------------------------

COVERED = """() => {
    // Boxes of every chart title (inside the chart: its title and notes such as the threshold's; or the
    // bold text just above it), of every heading on the page, and of every toolbar (Plotly's and
    // Streamlit's) drawn over a chart; returns the titles a toolbar covers.
    const boxes = el => [...el.getClientRects()].filter(r => r.width > 0 && r.height > 0);
    const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const titles = [], bars = [];
    const text = el => { const range = document.createRange(); range.selectNodeContents(el); return boxes(range); };
    document.querySelectorAll('[data-testid="stHeading"] :is(h1, h2, h3)').forEach(
        h => titles.push([h.textContent, text(h)]));  // the words' boxes, not the heading's full width
    for (const chart of document.querySelectorAll('[data-testid="stPlotlyChart"]')) {
        chart.querySelectorAll('.gtitle, .annotation-text').forEach(t => titles.push([t.textContent, boxes(t)]));
        const element = chart.closest('[data-testid="stElementContainer"]');
        const above = element && element.previousElementSibling;
        const strong = above && above.querySelector('[data-testid="stMarkdown"] strong');
        if (strong) titles.push([strong.textContent, boxes(strong)]);
        chart.querySelectorAll('.modebar').forEach(m => bars.push(...boxes(m)));
    }
    document.querySelectorAll('[data-testid="stElementToolbar"]').forEach(t => bars.push(...boxes(t)));
    const covered = titles.filter(([, rects]) => rects.some(r => bars.some(b => hit(r, b)))).map(([t]) => t);
    return {titles: titles.map(([t]) => t), bars: bars.length, covered};
}"""


@pytest.mark.parametrize("path", ["", "data", "train", "results"])
def test_at_phone_width_no_toolbar_covers_a_chart_title(live_server, browser, path):
    url, home, _ = live_server
    runs = home / "runs"
    if not (runs / "phone-a").is_dir():  # finished runs with curves, without training one
        for name in ("phone-a", "phone-b"):
            known_run(R.new_run_dir(runs, name))
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = phone.new_page()
        page.set_default_timeout(LOAD_MS)
        page.goto(f"{url}/{path}")
        page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for()
        settle(page)
        charts = page.locator('[data-testid="stPlotlyChart"]')
        seen = []
        for k in range(charts.count()):
            chart = charts.nth(k)
            chart.scroll_into_view_if_needed()
            chart.hover()  # the toolbars show on hover (a tap on a phone); their boxes count, faded in or not
            page.locator('[data-testid="stPlotlyChart"] .modebar').nth(k).wait_for(state="attached")
            found = page.evaluate(COVERED)
            assert not found["covered"], f"a toolbar covers {found['covered']} on /{path}"
            seen += found["titles"]
        assert seen, f"no chart title found on /{path}"
    finally:
        phone.close()
