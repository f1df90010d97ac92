"""The Data page, driven headless by Streamlit's AppTest on the demo and on tiny generated datasets."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from helpers import expw_faces, photo, write_csv
from streamlit.testing.v1 import AppTest

from fer import paths

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def data_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    return at


def metrics(at: AppTest) -> dict[str, int]:
    return {m.label: int(m.value.replace(",", "")) for m in at.metric}


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def own_dataset(tmp_path: Path, photos: int = 14) -> Path:
    """A tiny ExpW dataset under the data folder (the only root tests may rely on), unique per test."""
    return expw_faces(paths.data_dir() / "tests" / tmp_path.name / "expw", photos=photos)


def test_first_launch_shows_the_demo_with_counts_chart_histogram_and_samples():
    at = data_page()
    assert at.session_state["dataset"] == "demo"
    assert metrics(at) == {"Kept": 1500, "Dropped": 0, "Faces": 1500}
    slider = at.slider(key="data_threshold")
    assert slider.value == 0.0 and slider.max >= 110  # the demo's scores reach 110.8
    assert len(at.get("plotly_chart")) == 2  # label counts and the confidence histogram
    images = at.get("image")
    assert len(images) == 7 and all(len(i.value) == 6 for i in images)  # six faces for each label
    assert all(float(caption) >= 0 for image in images for caption in image.captions)  # confidences
    assert not at.error


def test_moving_the_threshold_updates_the_counts_and_the_session():
    at = data_page()
    at.slider(key="data_threshold").set_value(60.0).run()
    assert not at.exception
    counts = metrics(at)
    assert 0 < counts["Kept"] < 1500 and counts["Kept"] + counts["Dropped"] == 1500
    assert at.session_state["min_confidence"] == 60.0
    captions = [float(c) for image in at.get("image") for c in image.captions]
    assert len(captions) == 42 and min(captions) >= 59.5  # samples come from kept faces only (3 digits shown)
    at.slider(key="data_threshold").set_value(90.0).run()
    assert metrics(at)["Kept"] < counts["Kept"]


def test_a_path_outside_the_data_roots_is_refused_and_the_dataset_kept(tmp_path):
    at = data_page()
    at.radio(key="data_source").set_value("A folder or CSV on the server").run()
    at.text_input(key="data_path").input("/etc").run()
    assert not at.exception
    assert "/etc is outside the folders this server serves datasets from" in errors(at)
    assert "Still using Built-in demo dataset" in errors(at)
    assert at.session_state["dataset"] == "demo"
    assert metrics(at)["Faces"] == 1500
    root = own_dataset(tmp_path, photos=7)
    at.text_input(key="data_path").input(str(root)).run()
    at.text_input(key="data_path").input(str(root / ".." / ".." / ".." / ".." / "..")).run()
    assert "is outside the folders" in errors(at)
    assert at.session_state["dataset"] == str(root.resolve()) and metrics(at)["Faces"] == 7


def test_a_good_path_under_the_data_folder_switches_to_it(tmp_path):
    root = own_dataset(tmp_path, photos=14)
    at = data_page()
    at.slider(key="data_threshold").set_value(50.0).run()
    at.radio(key="data_source").set_value("A folder or CSV on the server").run()
    at.text_input(key="data_path").input(str(root)).run()
    assert not at.exception and not at.error
    assert at.session_state["dataset"] == str(root.resolve())
    assert metrics(at) == {"Kept": 14, "Dropped": 0, "Faces": 14}
    assert at.session_state["min_confidence"] == 0.0  # a new dataset starts with every face kept
    assert at.slider(key="data_threshold").max == 1.0  # helpers' confidences run 0.1 .. 0.9
    at.slider(key="data_threshold").set_value(0.5).run()
    assert metrics(at)["Kept"] < 14


def test_a_csv_whose_columns_cannot_be_guessed_asks_for_a_mapping(tmp_path):
    folder = paths.data_dir() / "tests" / tmp_path.name
    for name in ("a.png", "b.png"):
        photo(folder / name)
    csv = write_csv(folder / "faces.csv", ["picture", "mood"], [("a.png", "happy"), ("b.png", "sad")])
    at = data_page()
    at.radio(key="data_source").set_value("A folder or CSV on the server").run()
    at.text_input(key="data_path").input(str(csv)).run()
    assert "cannot tell which column holds the image" in errors(at)
    assert at.session_state["dataset"] == "demo"
    at.text_input(key="data_columns").input("image=picture,label=mood").run()
    assert not at.exception and not at.error
    assert at.session_state["dataset"] != "demo" and at.session_state["dataset"].endswith("faces.csv")
    assert metrics(at)["Faces"] == 2
    at.run()  # the mapping is remembered: no second error on the next rerun
    assert not at.error and metrics(at)["Faces"] == 2


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()


def test_an_uploaded_zip_is_extracted_and_used_and_a_bad_one_refused(tmp_path):
    at = data_page()
    at.radio(key="data_source").set_value("Upload a .zip").run()
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("../evil.txt", "x")
    at.file_uploader(key="data_zip").set_value(("evil.zip", bad.getvalue(), "application/zip")).run()
    assert "climbs out of the folder" in errors(at)
    assert at.session_state["dataset"] == "demo"

    content = zipped(expw_faces(tmp_path / "src" / "mine", photos=9))
    at.file_uploader(key="data_zip").set_value(("mine.zip", content, "application/zip")).run()
    assert not at.exception and not at.error
    used = Path(at.session_state["dataset"])
    assert used.name == "mine" and used.parent.parent == paths.uploads_dir().resolve()
    assert metrics(at)["Faces"] == 9


@pytest.mark.slow
def test_export_builds_a_zip_of_the_kept_faces_and_offers_it(tmp_path):
    root = own_dataset(tmp_path, photos=21)
    at = data_page()
    at.radio(key="data_source").set_value("A folder or CSV on the server").run()
    at.text_input(key="data_path").input(str(root)).run()
    at.slider(key="data_threshold").set_value(0.5).run()
    kept = metrics(at)["Kept"]
    at.number_input(key="data_export_size").set_value(48).run()
    at.button(key="data_export").click().run()
    assert not at.exception and not at.error
    assert at.download_button[0].label.startswith(f"Download {kept} faces")
    exported = Path(at.session_state["data_exported"]["zip"])
    with zipfile.ZipFile(exported) as archive:
        names = archive.namelist()
        pngs = [n for n in names if n.endswith(".png")]
        assert len(pngs) == kept and "faces.csv" in names
        assert archive.read(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    at.slider(key="data_threshold").set_value(0.2).run()  # other settings: the old zip is not offered
    assert not at.download_button
