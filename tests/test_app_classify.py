"""The Classify page, driven headless by AppTest with the bundled model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from helpers import face_crop, lambda_model
from PIL import Image
from streamlit.testing.v1 import AppTest

from fer.labels import LABELS
from fer.paths import BUNDLED_MODEL

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def classify_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/classify.py").run()
    assert not at.exception
    return at


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def face_headings(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("**Face ")]


def test_first_launch_offers_the_bundled_model_and_asks_for_a_photo():
    at = classify_page()
    assert at.selectbox(key="classify_model").value == str(BUNDLED_MODEL)
    assert any("upload a photo" in i.value for i in at.info)


def test_a_pre_cropped_upload_is_one_face_with_a_table_row():
    at = classify_page()
    at.toggle(key="whole").set_value(True)
    at.file_uploader(key="uploads").set_value(("crop.png", png(face_crop(64)), "image/png")).run()
    assert not at.exception
    [heading] = face_headings(at)
    table = at.dataframe[0].value
    assert list(table["photo"]) == ["crop.png"] and table.loc[0, "label"] in LABELS
    assert table.loc[0, "label"] in heading
    downloads = [button.label for button in at.download_button]
    assert downloads.count("Download the results (CSV)") == 1
    assert {"Model (ONNX)", "Model (TFLite)"} <= set(downloads)  # the model, to run elsewhere


def test_a_photo_is_decoded_once_and_not_again_when_the_page_redraws(monkeypatch):
    """The boxed picture comes from the same decode as the faces, and both are cached: a redraw
    (any widget touched) neither decodes nor classifies the photo again."""
    from fer import images

    calls = []
    real = images.open_photo
    monkeypatch.setattr(images, "open_photo", lambda source: calls.append(1) or real(source))
    at = classify_page()
    at.toggle(key="whole").set_value(True)
    # A photo no other test uploads, so the cache cannot already hold it.
    photo = png(face_crop(mode="RGB").resize((70, 80)))
    at.file_uploader(key="uploads").set_value(("green.png", photo, "image/png")).run()
    assert not at.exception and len(face_headings(at)) == 1
    assert len(calls) == 1
    assert len(at.get("image")) == 1  # the photo with its face boxed
    at.run()
    assert len(calls) == 1 and len(face_headings(at)) == 1 and len(at.get("image")) == 1


def test_a_photo_with_no_face_says_what_to_try_and_a_broken_file_does_not_stop_the_others():
    at = classify_page()
    blank = png(Image.new("RGB", (320, 240), "gray"))
    at.file_uploader(key="uploads").set_value(
        [("broken.jpg", b"\xff\xd8\xff" + b"\x00" * 40, "image/jpeg"), ("blank.png", blank, "image/png")]
    ).run()
    assert not at.exception
    assert any("broken.jpg" in e.value and "use a JPEG" in e.value for e in at.error)
    assert any("No face found in blank.png" in w.value and "already cropped" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert list(table["photo"]) == ["blank.png"] and table.loc[0, "label"] == ""


@pytest.mark.realdata
def test_real_photos_uploaded_together_and_a_webcam_snapshot_are_labelled(expw_sample):
    at = classify_page()
    photos = [
        (name, (expw_sample / "image" / name).read_bytes(), "image/jpeg")
        for name in ("afraid_man_208.jpg", "amazed_actor_137.jpg")
        if (expw_sample / "image" / name).is_file()
    ]
    assert photos, "expected photos from expw-sample"
    at.file_uploader(key="uploads").set_value(photos).run()
    assert not at.exception
    assert len(face_headings(at)) >= len(photos)
    table = at.dataframe[0].value
    assert set(table["photo"]) == {name for name, _, _ in photos}
    assert table["label"].isin(LABELS).all()

    at.file_uploader(key="uploads").set_value(None)
    at.camera_input(key="camera").set_value(("snapshot.jpg", photos[0][1], "image/jpeg")).run()
    assert not at.exception
    assert list(at.dataframe[0].value["photo"].unique()) == ["webcam snapshot"]


# Your own model file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_models(tmp_path_factory) -> dict[str, bytes]:
    """Model files a visitor might upload: a good one with labels of its own, and one with a Lambda."""
    from fer.config import ModelConfig
    from fer.modelfile import save_model
    from fer.models import build

    folder = tmp_path_factory.mktemp("own-models")
    good = folder / "good.keras"
    metadata = {"labels": ["calm", "cross"], "image_size": 48, "margin": 0.0}
    save_model(build(ModelConfig(arch="seed", image_size=48, num_classes=2)), good, metadata)
    return {"good": good.read_bytes(), "lambda": lambda_model(folder / "lambda.keras").read_bytes()}


def upload_model(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="model_upload").set_value((name, data, "application/octet-stream")).run()
    assert not at.exception
    return at


def test_a_text_file_uploaded_as_a_model_is_refused_and_the_bundled_model_stays():
    at = upload_model(classify_page(), "m.keras", b"this is a text file, not a model")
    [error] = at.error
    assert error.value.startswith("m.keras cannot be used as a model: ")
    assert "not a Keras model file" in error.value
    assert (
        "Train a model on the Train page, or upload a .keras file saved by this tool's training"
        in error.value
    )
    model = at.selectbox(key="classify_model")
    assert model.value == str(BUNDLED_MODEL) and not any(o.startswith("Uploaded") for o in model.options)
    assert at.session_state["model"] == str(BUNDLED_MODEL)


def test_a_model_with_a_lambda_layer_is_refused(own_models):
    at = upload_model(classify_page(), "lambda.keras", own_models["lambda"])
    [error] = at.error
    assert "lambda.keras cannot be used as a model" in error.value and "Lambda layer" in error.value
    assert at.selectbox(key="classify_model").value == str(BUNDLED_MODEL)


def test_a_good_model_file_is_accepted_selected_and_used(own_models):
    at = upload_model(classify_page(), "mine.keras", own_models["good"])
    assert not at.error
    assert "mine.keras is checked" in at.success[0].value
    model = at.selectbox(key="classify_model")
    kept = Path(model.value)
    assert (
        kept.parent.name == "models" and kept.suffix == ".keras" and kept.read_bytes() == own_models["good"]
    )
    assert model.options[0].startswith("Bundled model") and "Uploaded: mine.keras" in model.options
    assert at.session_state["model"] == str(kept)

    at.toggle(key="whole").set_value(True)
    at.file_uploader(key="uploads").set_value(("crop.png", png(face_crop(48)), "image/png")).run()
    assert not at.exception
    assert at.dataframe[0].value.loc[0, "label"] in ("calm", "cross")  # the uploaded model's labels

    at.selectbox(key="classify_model").set_value(str(BUNDLED_MODEL)).run()  # back to the bundled one
    assert not at.exception and at.session_state["model"] == str(BUNDLED_MODEL)
    assert at.dataframe[0].value.loc[0, "label"] in LABELS


def test_a_model_that_reads_mirrored_faces_says_so_and_another_offers_the_switch(own_models):
    at = classify_page()  # the bundled model reads each face with its mirror image
    assert not [t for t in at.toggle if t.key == "flip"]
    assert any("its mirror image" in c.value for c in at.caption)
    at = upload_model(at, "mine.keras", own_models["good"])  # a model file that does not
    assert [t for t in at.toggle if t.key == "flip"]
    at.toggle(key="flip").set_value(True).run()
    assert not at.exception


def test_a_pre_cropped_picture_that_is_not_a_face_gets_no_expression():
    at = classify_page()
    at.toggle(key="whole").set_value(True)
    at.file_uploader(key="uploads").set_value(
        ("wall.png", png(Image.new("RGB", (80, 80), (200, 190, 170))), "image/png")
    ).run()
    assert not at.exception
    assert face_headings(at) == []
    assert any(
        "wall.png does not look like a face" in w.value and "switch off" in w.value for w in at.warning
    )
    assert at.dataframe[0].value.loc[0, "label"] == ""
