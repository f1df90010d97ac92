"""The Your faces page, driven headless by AppTest: uploaded pictures become saved faces of a collection,
counted per expression, deletable, and a model fine-tuned on them is compared before and after."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import home_beside
from PIL import Image
from streamlit.testing.v1 import AppTest

from fer import collect, datasets

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


@pytest.fixture
def home(tmp_path_factory, monkeypatch, request) -> Path:
    """A FER_HOME of its own: the page's runs and collections meet no other test's."""
    path = home_beside(tmp_path_factory, f"collect-{request.node.name[:40]}")
    monkeypatch.setenv("FER_HOME", str(path))
    return path


def collect_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/collect.py").run()
    assert not at.exception
    return at


def png(seed: int) -> bytes:
    """A generated picture with no face in it (the page offers it whole, as a close-up)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def counts(at: AppTest) -> dict[str, int]:
    return {m.label: int(m.value) for m in at.metric if m.label in collect.LABELS}


def save_first(at: AppTest, expression: str) -> None:
    """Choose the expression of the first picture still to label, and save it."""
    [radio for radio in at.radio if radio.label == "Expression"][0].set_value(expression).run()
    [button for button in at.button if button.label == "Save face"][0].click().run()
    assert not at.exception


def test_the_page_opens_empty_and_asks_for_faces(home):
    at = collect_page()
    assert any("Take a snapshot or upload photos" in i.value for i in at.info)
    assert counts(at) == dict.fromkeys(collect.LABELS, 0)
    assert at.button(key="collect_finetune").disabled
    assert any("no faces yet" in i.value for i in at.info)


def test_uploaded_pictures_are_saved_counted_skipped_and_deleted(home):
    at = collect_page()
    at.file_uploader(key="collect_uploads").set_value(
        [
            ("one.png", png(1), "image/png"),
            ("two.png", png(2), "image/png"),
            ("three.png", png(3), "image/png"),
        ]
    ).run()
    assert not at.exception
    assert any("No face was found" in w.value for w in at.warning)  # offered whole, with the warning
    save = [b for b in at.button if b.label == "Save face"]
    assert len(save) == 3 and all(b.disabled for b in save)  # no expression chosen yet
    save_first(at, "happy")
    assert any("Saved face as happy" in s.value for s in at.success)
    save_first(at, "sad")
    [button for button in at.button if button.label == "Skip this picture"][0].click().run()
    assert not [b for b in at.button if b.label == "Save face"]  # all three dealt with
    assert counts(at) == {**dict.fromkeys(collect.LABELS, 0), "happy": 1, "sad": 1}
    folder = home / "own-faces" / "my-faces"
    faces = datasets.load(folder).faces
    assert sorted(faces["label"]) == ["happy", "sad"] and (faces["bottom"] == 72).all()
    # Deleting one from the list of saved faces.
    [button for button in at.button if button.label == "Delete"][0].click().run()
    assert not at.exception
    assert sum(counts(at).values()) == 1 and len(collect.read_faces(folder)) == 1
    # A second visit picks the collection from the list.
    again = collect_page()
    assert again.selectbox(key="collect_pick").options[0] == "my-faces"
    assert sum(counts(again).values()) == 1


def test_the_face_picked_of_several_is_saved_with_the_detectors_box_and_score(home, monkeypatch):
    from fer import predict

    # (top, left, bottom, right) as the detector gives them; the page numbers faces left to right.
    right, left = (8.0, 40.0, 30.0, 62.0), (10.0, 4.0, 34.0, 28.0)
    monkeypatch.setattr(predict, "detect_faces", lambda detector, photo: ([right, left], [0.97, 0.93]))
    at = collect_page()
    at.file_uploader(key="collect_uploads").set_value([("two.png", png(77), "image/png")]).run()
    assert not at.exception and not at.warning  # faces were found: no offer of the whole picture
    [which] = [radio for radio in at.radio if radio.label == "Which face"]
    assert which.options == ["Face 1", "Face 2"]
    which.set_value(1).run()  # Face 2: the one on the right
    save_first(at, "happy")
    assert not [radio for radio in at.radio if radio.label == "Which face"]  # one face left to label
    save_first(at, "sad")
    assert any("Every face of two.png is saved" in s.value for s in at.success)
    faces = collect.read_faces(home / "own-faces" / "my-faces")
    assert [(f.box, f.score, f.label) for f in faces] == [(right, 0.97, "happy"), (left, 0.93, "sad")]
    assert len({f.photo for f in faces}) == 1  # one photo, stored once, two lines


def test_a_bad_collection_name_is_refused(home):
    at = collect_page()
    at.text_input(key="collect_new_name").set_value("../../etc").run()
    assert not at.exception
    assert any("collection name must be" in e.value for e in at.error)


@pytest.mark.slow
def test_fine_tuning_from_the_page_shows_before_and_after(home):
    at = collect_page()
    at.file_uploader(key="collect_uploads").set_value(
        [(f"p{seed}.png", png(10 + seed), "image/png") for seed in range(6)]
    ).run()
    for seed in range(6):
        save_first(at, ("happy", "surprise")[seed % 2])
    assert at.button(key="collect_finetune").disabled is False
    at.number_input(key="collect_epochs").set_value(1).run()
    at.button(key="collect_finetune").click().run()
    assert not at.exception
    deadline = time.monotonic() + 300
    while not any(m.label == "After fine-tuning" for m in at.metric):
        assert time.monotonic() < deadline, [e.value for e in at.error]
        assert not at.error, [e.value for e in at.error]
        time.sleep(2)
        at.run()
    before = next(m for m in at.metric if m.label.startswith("Before"))
    assert "Bundled model" in before.label and before.value.endswith("%")
    table = at.dataframe[0].value
    assert len(table) == 2 and sorted(table["label"]) == ["happy", "surprise"]  # one of three of each
    assert all(cell.startswith("data:image/png;base64,") for cell in table["face"])
    assert any("Classify page's model list" in s.value for s in at.success)
    # The model is offered on Classify.
    at.switch_page("pages/classify.py").run()
    assert any("(run my-faces-" in label for label in at.selectbox(key="classify_model").options)
