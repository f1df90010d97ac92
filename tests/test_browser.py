"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real server.

The server is `streamlit run streamlit_app.py` started by the fixture (helpers.serving) on a free
localhost port, with its own FER_HOME, so it uses the demo dataset and the bundled model exactly as on
first launch. The browser is conftest's.
Screenshots go to $FER_SCREENSHOTS when set (scripts/screenshots.sh points it at docs/screenshots
for the README), else to the test's temporary folder.

Kept few and robust: each waits for text a person would wait for, never for a fixed time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import GROUP_PHOTOS, LOAD_MS, face_crop, group_photo, require_browser, serving, settle, visit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    home = tmp_path_factory.mktemp("browser-home")
    with serving(home) as url:
        yield url, home


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 2000}, permissions=["camera"])
    page = context.new_page()
    page.set_default_timeout(LOAD_MS)
    yield page
    context.close()


def _screenshot(page, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    settle(page)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path


@pytest.mark.parametrize(
    "path, text",
    [
        ("", "Facial-expression classifier"),
        ("data", "Label counts"),
        ("train", "Start training"),
        ("results", "Results"),
        ("classify", "Classify photos"),
        ("collect", "Your faces"),
    ],
)
def test_each_page_loads_and_is_captured(server, page, tmp_path, path, text):
    url, _ = server
    visit(page, f"{url}/{path}", text)
    errors = page.locator('[data-testid="stException"]')
    assert not errors.count(), errors.first.inner_text()
    shot = _screenshot(page, path or "home", tmp_path)
    assert shot.stat().st_size > 10_000


def test_an_uploaded_photo_gets_a_label(server, page, tmp_path):
    url, _ = server
    visit(page, f"{url}/classify", "Take a snapshot or upload a photo")
    page.get_by_role("tab", name="Upload photos").click()
    photo = tmp_path / "crop.png"
    face_crop(96).save(photo)
    page.get_by_text("already cropped").first.click()  # a close-up of one face: read whole
    page.wait_for_function("() => document.querySelector('.st-key-whole input')?.checked === true")
    settle(page)
    page.locator('.st-key-uploads [data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
    page.get_by_text("Face 1:").or_(page.get_by_text("No face found")).first.wait_for()
    heading = page.get_by_text("Face 1:").first
    assert heading.count(), page.locator('[data-testid="stAlert"]').all_inner_texts()
    assert any(label in heading.inner_text() for label in ("angry", "disgust", "fear", "happy", "sad",
                                                              "surprise", "neutral"))  # fmt: skip
    page.get_by_text("Show where the model looked").first.click()  # the map over the face
    caption = page.get_by_text("Where the model looked", exact=True)  # under the map, not the switch
    caption.first.wait_for()
    assert page.locator('[data-testid="stImage"] img').count() >= 2  # the boxed photo and the map
    _screenshot(page, "classify-saliency", tmp_path)


@pytest.mark.realdata
def test_a_group_photo_is_a_grid_of_faces_beside_the_boxed_picture(server, page, tmp_path, expw_sample):
    sheet = group_photo(expw_sample)
    photo = tmp_path / "group.png"
    sheet.save(photo)
    url, _ = server
    visit(page, f"{url}/classify", "Take a snapshot or upload a photo")
    page.get_by_role("tab", name="Upload photos").click()
    page.locator('.st-key-uploads [data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
    page.get_by_text(f"Face {len(GROUP_PHOTOS)}:").or_(page.get_by_text("No face found")).first.wait_for()
    settle(page)
    assert page.get_by_text(f"Face {len(GROUP_PHOTOS)}:").count(), page.locator(
        '[data-testid="stAlert"]'
    ).all_inner_texts()
    assert not page.locator('[data-testid="stPlotlyChart"]').count()  # no chart per face: a compact grid
    picture = page.locator('[data-testid="stImage"] img').first.bounding_box()
    first = page.get_by_text("Face 1:").first.bounding_box()
    assert first["x"] > picture["x"] + picture["width"] / 2  # the grid is beside the picture, not below
    _screenshot(page, "classify-group", tmp_path)


def streaming(page) -> None:
    """Wait until the fake camera is really streaming, or the snapshot would be a blank frame."""
    page.wait_for_function(
        "() => { const v = document.querySelector('video'); return v && v.readyState >= 2 && v.videoWidth > 0; }"
    )


@pytest.mark.realdata
def test_a_webcam_snapshot_of_a_face_is_classified(server, page, tmp_path, expw_sample):
    url, _ = server
    page.goto(f"{url}/classify")
    streaming(page)
    page.get_by_role("button", name="Take Photo").click()
    page.get_by_text("Face 1:").or_(page.get_by_text("No face found")).first.wait_for()
    assert page.get_by_text("Face 1:").count(), page.locator('[data-testid="stAlert"]').all_inner_texts()
    assert page.get_by_text("webcam snapshot").count()
    _screenshot(page, "classify-webcam", tmp_path)


@pytest.mark.realdata
def test_a_webcam_snapshot_of_a_face_is_saved_to_a_collection(server, page, tmp_path, expw_sample):
    url, home = server
    page.goto(f"{url}/collect")
    streaming(page)
    page.get_by_role("button", name="Take Photo").click()
    expression = page.locator('[data-testid="stRadio"]').filter(has_text="Expression")
    expression.wait_for()
    assert not page.get_by_text("No face was found").count()  # the detector found the face
    expression.get_by_text("fear", exact=True).click()
    _screenshot(page, "collect-webcam", tmp_path)
    page.get_by_role("button", name="Save face").click()
    page.get_by_text("Saved face as fear").first.wait_for()
    [line] = (home / "own-faces" / "my-faces" / "label.lst").read_text().splitlines()
    photo, _, top, left, right, bottom, score, label = line.split()
    assert label == "2" and float(score) > 0.9 and float(bottom) > float(top) and float(right) > float(left)
    assert (home / "own-faces" / "my-faces" / "image" / photo).is_file()


def test_a_shared_link_to_a_page_opens_it_with_the_menu_on_a_fresh_server(browser, tmp_path):
    # The first visitor of a new server arrives by a page's own URL (a link a colleague shared).
    with serving(tmp_path) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(LOAD_MS)
        visit(page, f"{url}/classify", "Classify photos")
        menu = page.locator('[data-testid="stSidebarNav"]')
        assert menu.get_by_text("Home").count() and menu.get_by_text("Classify").count()
        assert not menu.get_by_text("common").count()  # not the file list of an old-style app
        assert not page.locator('[data-testid="stException"]').count()
        context.close()


def test_a_training_started_in_the_browser_shows_its_curves(server, page, tmp_path):
    url, _ = server
    visit(page, f"{url}/train", "Start training")
    # Two epochs on 300 faces draw both curves; the README's screenshots ($FER_SCREENSHOTS) get a
    # longer run on every face, so their curves show it learning.
    epochs, faces = ("4", "0") if os.environ.get("FER_SCREENSHOTS") else ("2", "300")
    for label, value in (("Epochs", epochs), ("Quick trial: use at most this many faces (0 = all)", faces)):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        settle(page)
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("finished:").first.wait_for(timeout=600_000)
    # The outcome line is drawn before the curves under it: wait for both charts (loss and
    # accuracy, train and val) rather than counting whatever has been drawn so far.
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.nth(1).wait_for()
    settle(page)
    assert charts.count() >= 2
    assert page.get_by_text("test accuracy").count()
    _screenshot(page, "train", tmp_path)
    # Its results: the newest run opens on the Results page, metric cards and confusion matrix.
    page.goto(f"{url}/results")
    page.get_by_text("test faces, the model labelled").first.wait_for()
    page.get_by_text("Where it goes wrong").first.wait_for()
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()  # the confusion matrix
    settle(page)
    # The five metric cards (accuracy, weighted precision / recall / F1, macro F1).
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stMetric\"]').length >= 5")
    _screenshot(page, "results", tmp_path)
