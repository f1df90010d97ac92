"""Links to a view, in a real browser against a real server: a reload keeps what a page shows, and a
copied address opened in a fresh browser context (no cookies, no session: another person's browser)
shows the same dataset, threshold, run, compared runs, model and Train settings.

The server is `streamlit run streamlit_app.py` (helpers.serving) with a home of its own holding a
small dataset and two finished runs; the browser is conftest's. Waits are for text and for the
page's script to finish, never for a fixed time.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import LOAD_MS, expw_faces, known_run, require_browser, serving, settle, visit

from fer import demo, paths
from fer import runs as R

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    home = tmp_path_factory.mktemp("state-home")
    (home / demo.NAME).symlink_to(demo.ensure(paths.data_dir()))  # the suite's demo, not built again
    mine = expw_faces(home / "datasets" / "mine", photos=18).resolve()
    for age, name in ((200, "older"), (100, "newer")):
        run = known_run(home / "runs" / name)
        stamp = run.stat().st_mtime - age
        os.utime(run / "config.json", (stamp, stamp))
    R.write_naming(home / "runs" / "older", "The older try", "kept for the link test")
    # The newer run gets a model (the bundled one), so Classify lists it.
    shutil.copyfile(paths.BUNDLED_MODEL, home / "runs" / "newer" / R.BEST)
    with serving(home) as url:
        yield url, home, mine
    log = (home / "server.log").read_text()
    assert "its value set via the Session State API" not in log, log[-3000:]


def _context(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 2000})
    context.set_default_timeout(LOAD_MS)
    return context


def _query(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def _chosen(page, key: str) -> str:
    """The option a select box shows (its combobox input's value)."""
    return page.locator(f'.st-key-{key} input[role="combobox"]').input_value()


def _compared(page) -> list[str]:
    """The runs the comparison's multiselect shows, as their chips read."""
    tags = page.locator(".st-key-results_compare .react-aria-ComboBox [data-tag]")
    return [tags.nth(k).get_attribute("aria-label") for k in range(tags.count())]


def _no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert not errors.count(), errors.first.inner_text()


def _reloaded_then_opened_afresh(browser, context, page, ready: str, check):
    """Run `check(page)` after a reload of `page`, then close its browser context and run it again in a
    fresh one that opens the address it had (a copied link). Returns the fresh context and page."""
    page.reload()
    page.get_by_text(ready).first.wait_for()
    settle(page)
    check(page)
    link = page.url
    context.close()
    other = _context(browser)
    page = other.new_page()
    visit(page, link, ready)
    check(page)
    return other, page


def test_a_reload_keeps_the_train_settings_and_a_copied_link_opens_them(server, browser):
    url, _, _ = server
    context = _context(browser)
    page = context.new_page()
    visit(page, f"{url}/train", "Start training")
    field = page.get_by_label("Epochs", exact=True)
    field.fill("7")
    field.press("Enter")
    page.wait_for_url(re.compile(r"[?&]epochs=7\b"))
    settle(page)

    def seven_epochs(page) -> None:
        assert page.get_by_label("Epochs", exact=True).input_value() == "7"
        assert _query(page) == {"epochs": ["7"]}
        _no_exception(page)

    # The fresh browser is someone else's: it has nothing but the address.
    other, _ = _reloaded_then_opened_afresh(browser, context, page, "Start training", seven_epochs)
    other.close()


def _mine_at_half(page) -> str:
    """Once the Data page is drawn: it uses the dataset "mine" at threshold 0.50; the faces it keeps."""
    page.get_by_text("Label counts").first.wait_for()
    settle(page)
    assert page.get_by_text(re.compile(r"Using mine: expw format, 18 faces")).count()
    assert page.get_by_test_id("stSliderThumbValue").first.inner_text() == "0.50"
    kept = page.get_by_test_id("stMetric").filter(has_text="Kept").get_by_test_id("stMetricValue")
    return kept.inner_text()


def test_a_copied_data_link_shows_the_same_dataset_and_threshold(server, browser):
    url, _, mine = server
    context = _context(browser)
    page = context.new_page()
    page.goto(f"{url}/data?dataset={mine}&threshold=0.5")
    first_kept = _mine_at_half(page)
    assert _query(page) == {"dataset": [str(mine)], "threshold": ["0.5"]}
    page.reload()
    page.get_by_text("Label counts").first.wait_for()
    settle(page)
    assert page.get_by_test_id("stSliderThumbValue").first.inner_text() == "0.50"
    link = page.url
    context.close()

    other = _context(browser)
    page = other.new_page()
    page.goto(link)
    assert _mine_at_half(page) == first_kept != "18"
    _no_exception(page)

    # Then to Train through the menu, and a reload there: the same dataset and threshold, not the demo.
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Train", exact=True).click()
    used = re.compile(rf"Dataset: mine, {first_kept} of 18 faces \(detector score at least 0\.5\)")
    page.get_by_text(used).first.wait_for()
    settle(page)
    assert _query(page) == {"dataset": [str(mine)], "threshold": ["0.5"]}
    page.reload()
    page.get_by_text(used).first.wait_for()
    _no_exception(page)
    other.close()


def test_a_copied_results_link_shows_the_same_run_and_a_bad_one_says_so(server, browser):
    url, home, _ = server
    context = _context(browser)
    page = context.new_page()
    visit(page, f"{url}/results?run=older&compare=newer&compare=older", "Compare runs")
    assert _chosen(page, "results_run") == "The older try · older (finished)"
    assert page.get_by_text("kept for the link test").count()  # its note
    both = ["moved-dataset · seed · newer", "The older try · older"]
    assert _compared(page) == both

    def same_view(page) -> None:
        assert _chosen(page, "results_run") == "The older try · older (finished)"
        assert _compared(page) == both and _query(page) == {"run": ["older"], "compare": ["newer", "older"]}

    other, page = _reloaded_then_opened_afresh(browser, context, page, "Compare runs", same_view)
    # A run the server does not list (a path, here) is named in a warning, and the newest run shows.
    visit(page, f"{url}/results?run=..%2F..%2Fetc", "Compare runs")
    assert page.get_by_text(re.compile(r"The link's run \(\.\./\.\./etc\) cannot be used")).count()
    assert _chosen(page, "results_run").endswith(" · newer (finished)")
    assert _query(page) == {"run": ["newer"]}
    _no_exception(page)
    other.close()
    assert Path(home / "runs" / "older").is_dir()


def test_a_copied_classify_link_shows_the_same_model(server, browser):
    url, _, _ = server
    context = _context(browser)
    page = context.new_page()
    visit(page, f"{url}/classify?model=newer", "Take a snapshot or upload a photo")

    def same_model(page) -> None:
        assert _chosen(page, "classify_model") == "moved-dataset · seed (run newer)"
        assert _query(page) == {"model": ["newer"]}

    same_model(page)
    other, page = _reloaded_then_opened_afresh(
        browser, context, page, "Take a snapshot or upload a photo", same_model
    )
    _no_exception(page)
    other.close()
