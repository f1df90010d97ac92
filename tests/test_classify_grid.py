"""The Classify page with many faces in a photo: a compact grid beside the boxed picture, one chart on
demand, and a webcam answer beside the camera; one face still shows its whole chart at once."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import GROUP_PHOTOS, face_crop, group_photo
from PIL import Image
from streamlit.testing.v1 import AppTest

from fer import predict
from fer.labels import LABELS

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
FACES = 12  # more than fit on screen at once: the grid must scroll, not the page grow


def classify_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/classify.py").run()
    assert not at.exception
    return at


def noise_picture(seed: int, size: tuple[int, int] = (640, 480), kind: str = "PNG") -> bytes:
    """A picture no other test uploads, so the page's cache cannot already hold its answer."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


@pytest.fixture
def many_boxes(monkeypatch):
    """A detector that finds FACES faces on a 4 x 3 grid of any photo."""

    def detect(self, photo):
        width, height = photo.size
        boxes = [
            (row * height / 3, column * width / 4, (row + 1) * height / 3 - 4, (column + 1) * width / 4 - 4)
            for row in range(3)
            for column in range(4)
        ]
        return boxes[:FACES], [0.99] * FACES

    monkeypatch.setattr(predict.Predictor, "_detect", detect)


def face_headings(block) -> list[str]:
    return [m.value for m in block.markdown if m.value.startswith("**Face ")]


def charts(block) -> list:
    return list(block.get("plotly_chart"))


def test_many_faces_are_a_grid_with_numbers_and_one_chart_on_demand(many_boxes):
    at = classify_page()
    at.file_uploader(key="uploads").set_value(("crowd.png", noise_picture(101), "image/png")).run()
    assert not at.exception
    headings = face_headings(at)
    assert [h.split(":")[0] for h in headings] == [f"**Face {n}" for n in range(1, FACES + 1)]
    assert all(any(label in h for label in LABELS) and h.endswith("likely") for h in headings)
    assert len([c for c in at.caption if c.value.startswith("then ")]) == FACES  # the runners-up
    assert len(at.get("image")) == 1 + FACES  # the boxed picture and one crop per face
    assert charts(at) == []  # no chart per face: the page does not grow with the crowd
    table = at.dataframe[0].value
    assert len(table) == FACES and list(table["face"]) == list(range(1, FACES + 1))
    assert list(table["label"]) == [h.split(": ")[1].split("**")[0] for h in headings]

    # The boxed picture is beside the grid, not above it.
    columns = list(at.columns)
    assert any(
        len(picture.get("image")) == 1 and not face_headings(picture) and len(face_headings(grid)) == FACES
        for picture, grid in zip(columns, columns[1:])
    )

    at.selectbox(key=[s.key for s in at.selectbox if s.key.startswith("details-")][0]).set_value(3).run()
    assert not at.exception
    [chart] = charts(at)
    [bars] = json.loads(chart.proto.spec)["data"]
    assert bars["x"] == pytest.approx([table.loc[2, f"p_{label}"] for label in LABELS], abs=1e-3)
    assert len(face_headings(at)) == FACES


def test_one_face_still_shows_its_whole_chart_at_once():
    at = classify_page()
    at.toggle(key="whole").set_value(True)
    buffer = io.BytesIO()
    face_crop(67, "RGB").save(buffer, format="PNG")  # a face no other test uploads
    at.file_uploader(key="uploads").set_value(("one.png", buffer.getvalue(), "image/png")).run()
    assert not at.exception
    [heading] = face_headings(at)
    assert heading.startswith("**Face 1: ") and heading.endswith("likely")
    assert len(charts(at)) == 1
    assert not [s for s in at.selectbox if s.key.startswith("details-")]
    assert len(at.get("image")) == 1 and len(at.dataframe[0].value) == 1


def test_a_webcam_answer_is_drawn_beside_the_camera(many_boxes):
    at = classify_page()
    at.camera_input(key="camera").set_value(
        ("snapshot.jpg", noise_picture(103, kind="JPEG"), "image/jpeg")
    ).run()
    assert not at.exception
    camera_tab = at.tabs[0]
    camera, answer = camera_tab.columns[0], camera_tab.columns[1]
    assert len(camera.get("camera_input")) == 1 and not camera.subheader
    assert [s.value for s in answer.subheader] == ["webcam snapshot"]
    assert len(face_headings(camera_tab)) == FACES and charts(camera_tab) == []
    assert list(at.dataframe[0].value["photo"].unique()) == ["webcam snapshot"]


@pytest.mark.realdata
def test_a_sheet_of_real_photos_gets_one_grid_entry_per_face_found(expw_sample):
    sheet = group_photo(expw_sample)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    at = classify_page()
    at.file_uploader(key="uploads").set_value(("sheet.png", buffer.getvalue(), "image/png")).run()
    assert not at.exception
    faces = len(at.dataframe[0].value)
    assert faces >= len(GROUP_PHOTOS)  # the detector finds several faces on the sheet
    headings = face_headings(at)
    assert [h.split(":")[0] for h in headings] == [f"**Face {n}" for n in range(1, faces + 1)]
    assert charts(at) == [] and len(at.get("image")) == 1 + faces
