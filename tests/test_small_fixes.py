"""Small things users hit: Home waits for no model, a tiny photo makes the detector log nothing, the
export size follows the dataset's faces, sample captions fit, refused paths name the served folders,
duplicates are found without an export, and the pages read on the dark theme."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from helpers import PROJECT, expw_faces, fer_pixels, photo, pixel_text, write_csv
from PIL import Image
from streamlit.testing.v1 import AppTest

from fer import cli, datasets, export, modelfile, paths, preprocess

APP = str(PROJECT / "streamlit_app.py")


def data_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    return at


def open_path(at: AppTest, path: Path) -> AppTest:
    at.radio(key="data_source").set_value("A folder or CSV on the server").run()
    at.text_input(key="data_path").input(str(path)).run()
    assert not at.exception
    return at


def mine(tmp_path: Path, name: str) -> Path:
    """A folder under the data folder (the only root tests may rely on), unique per test."""
    return paths.data_dir() / "tests" / tmp_path.name / name


def fer_csv(path: Path, rows: int = 14, side: int = 48) -> Path:
    usage = ["Training", "PublicTest", "PrivateTest"]
    return write_csv(
        path,
        ["emotion", "pixels", "Usage"],
        [(i % 7, pixel_text(fer_pixels(i, side)), usage[i % 3]) for i in range(rows)],
    )


# Home: the page first, the model in the background ------------------------------------------------


def test_home_shows_the_models_scores_without_waiting_for_the_model_to_load(monkeypatch):
    from pages import common

    release, started = threading.Event(), threading.Event()

    class SlowPredictor:  # a model load that lasts until the test ends it
        def __init__(self, model_path: str) -> None:
            started.set()
            if not release.wait(120):
                raise RuntimeError("never released")

    monkeypatch.setattr(common, "SharedPredictor", SlowPredictor)
    common._loading.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception
        captions = " ".join(c.value for c in at.caption)
        accuracy = modelfile.read_metadata(paths.BUNDLED_MODEL)["test_metrics"]["fer2013"]["accuracy"]
        assert (
            "On posed, frontal faces (FER2013" in captions and f"right {accuracy:.0%} of the time" in captions
        )  # read from its file, without the model
        assert started.wait(30)  # the load was started, for the Classify page...
        loading = common._loading(str(paths.BUNDLED_MODEL), paths.BUNDLED_MODEL.stat().st_mtime)
        assert not loading.ready  # ...and the page did not wait for it
    finally:
        release.set()
        common._loading.clear()
    assert isinstance(loading.result(), SlowPredictor)  # one load, shared once it is done


# The detector on photos too small for it ------------------------------------------------------------


@pytest.mark.slow
def test_the_detector_finds_no_face_in_tiny_or_blank_photos_and_logs_no_error():
    code = (
        "import numpy as np\n"
        "from fer import detect\n"
        "detector = detect.make('mtcnn')\n"
        "for shape in [(10, 10, 3), (30, 30, 3), (13, 200, 3), (0, 0, 3), (120, 160, 3)]:\n"
        "    print(len(detector.detect(np.full(shape, 128, np.uint8))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"] * 5
    assert "Incompatible shapes" not in done.stderr and "INVALID_ARGUMENT" not in done.stderr


# The export size ----------------------------------------------------------------------------------


def test_the_export_size_starts_at_the_datasets_own_face_size(tmp_path):
    small = fer_csv(mine(tmp_path, "fer") / "fer2013.csv")
    assert export.default_size(datasets.load(small)) == 48
    boxed = datasets.load(expw_faces(mine(tmp_path, "boxes"), photos=7))  # 30-pixel boxes: clamped up
    assert export.face_size(boxed) == 30 and export.default_size(boxed) == 48

    big = mine(tmp_path, "big")
    lines = [f"p{i}.png 0 0 0 {side} {side} 50 {i % 7}" for i, side in enumerate([100, 118, 300])]
    for i in range(3):
        photo(big / "image" / f"p{i}.png", (320, 320), seed=i)
    (big / "label.lst").write_text("\n".join(lines) + "\n")
    assert export.default_size(datasets.load(big)) == 120  # the median box, to a multiple of 8

    at = open_path(data_page(), small)
    assert at.number_input(key="data_export_size").value == 48
    assert "FER2013" in at.number_input(key="data_export_size").help
    open_path(at, big)
    assert at.number_input(key="data_export_size").value == 120


def test_prepare_writes_faces_at_the_datasets_own_size_by_default(tmp_path, capsys):
    source = fer_csv(tmp_path / "fer2013.csv", rows=7)
    assert (
        cli.main(["prepare", str(source), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path)]) == 0
    )
    written = sorted((tmp_path / "out").rglob("*.png"))
    assert len(written) == 7
    assert {Image.open(p).size for p in written} == {(48, 48)}


# Sample captions ----------------------------------------------------------------------------------


def plain(caption: str) -> str:
    return caption.replace("\\", "").replace("\u2060", "")


def test_sample_captions_fit_under_a_face_whatever_the_photos_name(tmp_path):
    root = mine(tmp_path, "long-names")
    for i in range(14):
        label = ["happy", "sad"][i % 2]
        photo(root / "train" / label / f"Training_{10118481 + i * 7919}.png", (48, 48), seed=i)
    at = open_path(data_page(), root)
    captions = [plain(c) for image in at.get("image") for c in image.captions]
    assert len(captions) == 12
    assert all(len(c) <= export.CAPTION_CHARS for c in captions)
    assert len(set(captions)) == 12  # still told apart: the names' ends are kept

    assert export.short_name("fer2013.csv#17") == "row 17"
    assert export.short_name("train/happy/img3.png") == "img3"
    assert export.short_name("Training_10118481.jpg") == "Tra…0118481"


# Refused paths ------------------------------------------------------------------------------------


def test_a_refused_path_names_the_served_folders_how_relative_paths_read_and_how_to_add_one(
    tmp_path, monkeypatch
):
    served = tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("FER_DATA_ROOTS", str(served))
    with pytest.raises(paths.PathError) as refused:
        paths.check_dataset_path("../elsewhere/expw-sample")
    message = str(refused.value)
    assert str(paths.data_dir().resolve()) in message and str(served.resolve()) in message
    assert f"a relative path is read from {paths.PROJECT}" in message
    assert "FER_DATA_ROOTS" in message

    at = open_path(data_page(), Path("../elsewhere/expw-sample"))
    shown = " ".join(e.value for e in at.error).replace("\\", "")
    assert str(served.resolve()) in shown and "FER_DATA_ROOTS" in shown
    assert at.session_state["dataset"] == "demo"


# Duplicates ---------------------------------------------------------------------------------------


def twins(tmp_path: Path) -> Path:
    """Image folders whose train and test splits share two identical photos."""
    root = mine(tmp_path, "twins")
    for split in ("train", "test"):
        for i in range(2):
            photo(root / split / "happy" / f"same{i}.png", (48, 48), seed=i)
        photo(root / split / "sad" / f"own-{split}.png", (48, 48), seed=10 if split == "train" else 11)
    return root


@pytest.mark.slow
def test_duplicates_are_found_on_request_without_an_export(tmp_path):
    at = open_path(data_page(), twins(tmp_path))
    assert not at.warning
    at.button(key="data_find_duplicates").click().run()
    assert not at.exception and not at.error
    assert "2 identical images sit in more than one split (4 faces)" in " ".join(w.value for w in at.warning)
    assert not at.download_button  # no export was made


@pytest.mark.slow
def test_duplicates_show_at_once_when_the_faces_are_already_processed(tmp_path):
    root = twins(tmp_path)
    preprocess.prepare(datasets.load(root), preprocess.PrepSettings(size=48), workers=1)
    at = open_path(data_page(), root)
    assert "2 identical images sit in more than one split" in " ".join(w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "data_find_duplicates"]


def test_the_prepared_folder_is_where_prepare_keeps_the_faces(tmp_path):
    dataset = datasets.load(twins(tmp_path))
    settings = preprocess.PrepSettings(size=48)
    assert not (export.prepared_folder(dataset, settings, tmp_path) / "meta.json").is_file()
    prepared = preprocess.prepare(dataset, settings, cache_dir=tmp_path, workers=1)
    assert prepared.cache_dir == export.prepared_folder(dataset, settings, tmp_path)
    assert (prepared.cache_dir / "meta.json").is_file()


# Dark theme ---------------------------------------------------------------------------------------

LIGHT, DARK = "#ffffff", "#0e1117"  # Streamlit's two backgrounds


def luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    low, high = sorted([luminance(a), luminance(b)])
    return (high + 0.05) / (low + 0.05)


def test_the_theme_follows_the_browser_and_the_data_pages_colours_read_on_both():
    config = tomllib.loads((PROJECT / ".streamlit" / "config.toml").read_text())
    assert "base" not in config.get("theme", {})  # no forced light theme: the browser's preference wins
    at = data_page()
    colours = set()
    for chart in at.get("plotly_chart"):
        figure = json.loads(chart.proto.spec)
        text = json.dumps({"data": figure["data"], "shapes": figure["layout"].get("shapes", [])})
        colours |= set(re.findall(r"#[0-9a-fA-F]{6}\b", text))
    assert colours  # the kept / dropped bars and the threshold line
    assert all(contrast(c, LIGHT) >= 3 and contrast(c, DARK) >= 3 for c in colours), colours
