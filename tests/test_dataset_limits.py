"""What one dataset may hold, and where its files may lead.

A dataset's index lists a face in a few bytes while its manifest holds one in a few hundred, so the
faces of one dataset are capped (FER_MAX_FACES), counted from the index's bytes before any parsing;
a line of an index (a FER2013 pixels cell with it) has a length limit too. And any file of a dataset
folder on the server may be a symbolic link: the Data page refuses a dataset with a file that
resolves outside the folders the server serves.

Unit tests call `fer.datasets` and `fer.uploads`; the Data page is driven headless by AppTest, and
once by Chromium against a real `streamlit run` server, with an upload that would take gigabytes.
"""

from __future__ import annotations

import io
import os
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from helpers import (
    expw,
    expw_faces,
    fer_pixels,
    folders,
    healthy,
    memory_kb,
    photo,
    pixel_text,
    server,
    write_csv,
)
from streamlit.testing.v1 import AppTest

from fer import datasets, paths, uploads

PROJECT = Path(__file__).resolve().parents[1]
APP = str(PROJECT / "streamlit_app.py")


@pytest.fixture
def cap(monkeypatch):
    """Set FER_MAX_FACES for one test."""

    def set_cap(faces: int) -> int:
        monkeypatch.setenv(datasets.MAX_FACES_VARIABLE, str(faces))
        return faces

    return set_cap


def expw_lines(faces: int, name: str = "p.png") -> list[str]:
    """`faces` faces of one photo, as an ExpW label.lst lists them."""
    return [f"{name} {i} 2 2 30 30 {i % 90 + 5} {i % 7}" for i in range(faces)]


def refused_before_parsing(monkeypatch) -> None:
    """Make every parser fail loudly, so a test can show a dataset is refused before any of them runs."""

    def parsed(*args, **kwargs):
        raise AssertionError("the dataset was parsed before its size was checked")

    for name in ("_read_expw", "_read_folders", "_read_fer_csv", "_read_generic_csv"):
        monkeypatch.setattr(datasets, name, parsed)
    monkeypatch.setattr(datasets.pd, "read_csv", parsed)


# The cap on faces -------------------------------------------------------------------------------


def test_the_cap_defaults_to_a_million_faces_and_reads_fer_max_faces(monkeypatch):
    monkeypatch.delenv(datasets.MAX_FACES_VARIABLE, raising=False)
    assert datasets.max_faces() == datasets.MAX_FACES == 1_000_000
    for text, faces in (("2000000", 2_000_000), (" 5_000 ", 5000), ("", 1_000_000)):
        monkeypatch.setenv(datasets.MAX_FACES_VARIABLE, text)
        assert datasets.max_faces() == faces
    for text in ("0", "-3", "lots", "1e6"):
        monkeypatch.setenv(datasets.MAX_FACES_VARIABLE, text)
        with pytest.raises(datasets.DatasetError, match="FER_MAX_FACES must be a whole number"):
            datasets.max_faces()


def test_an_expw_index_over_the_cap_is_refused_before_parsing_with_the_limit_and_the_fix(
    tmp_path, cap, monkeypatch
):
    cap(50)
    root = expw(tmp_path / "expw", expw_lines(50), ["p.png"])
    assert len(datasets.load(root).faces) == 50  # at the cap: accepted
    (root / "label.lst").write_text("".join(f"{line}\n" for line in expw_lines(51)))
    refused_before_parsing(monkeypatch)
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(root)
    assert str(error.value) == (
        "label.lst holds 51 faces, more than the 50 one dataset may hold on this server; "
        "split the dataset, or have the server's owner raise FER_MAX_FACES"
    )


def test_a_last_line_without_a_newline_and_blank_lines_are_counted(tmp_path, cap):
    cap(3)
    index = tmp_path / "label.lst"
    index.write_bytes(b"a\nb\nc")
    assert datasets.count_faces(index) == 3
    index.write_bytes(b"a\n\n\nb\n")  # blank lines hold no face, but four lines are read
    with pytest.raises(datasets.DatasetError, match="holds 4 faces, more than the 3"):
        datasets.count_faces(index)


def test_csv_rows_over_the_cap_are_refused_before_pandas_reads_them(tmp_path, cap, monkeypatch):
    cap(20)
    expw(tmp_path / "set", [], ["a.png"])
    generic = write_csv(tmp_path / "set" / "faces.csv", ["image", "label"], [("image/a.png", "happy")] * 20)
    assert len(datasets.load(generic).faces) == 20  # the header is not a face
    fer = write_csv(
        tmp_path / "fer" / "fer2013.csv",
        ["emotion", "pixels", "Usage"],
        [(i % 7, pixel_text(fer_pixels(i)), "Training") for i in range(21)],
    )
    write_csv(generic, ["image", "label"], [("image/a.png", "happy")] * 21)
    refused_before_parsing(monkeypatch)
    with pytest.raises(
        datasets.DatasetError, match=r"faces\.csv holds 21 faces, more than the 20 .*FER_MAX_FACES"
    ):
        datasets.load(generic)
    for path in (fer, fer.parent):  # the CSV itself, or the folder holding it
        with pytest.raises(datasets.DatasetError, match=r"fer2013\.csv holds 21 faces, more than the 20"):
            datasets.load(path)


def test_an_index_file_over_the_byte_cap_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.MAX_INDEX_MB_VARIABLE, raising=False)
    assert datasets.max_index_bytes() == 384 * 1024**2  # FER2013's CSV, 290 MB, fits
    rows = [(i % 7, pixel_text(fer_pixels(i)), "Training") for i in range(300)]  # about 2.6 MB
    path = write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], rows)
    monkeypatch.setenv(datasets.MAX_INDEX_MB_VARIABLE, "3")
    assert len(datasets.load(path).faces) == 300
    monkeypatch.setenv(datasets.MAX_INDEX_MB_VARIABLE, "2")
    refused_before_parsing(monkeypatch)
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(path)
    size = path.stat().st_size
    assert str(error.value).startswith(
        f"fer2013.csv is {size / 1024**2:.1f} MB ({size:,} bytes), more than the 2 MB one dataset's index"
    )
    assert "raise FER_MAX_INDEX_MB" in str(error.value)
    for text in ("0", "-1", "big", "inf"):
        monkeypatch.setenv(datasets.MAX_INDEX_MB_VARIABLE, text)
        with pytest.raises(datasets.DatasetError, match="FER_MAX_INDEX_MB must be a number of megabytes"):
            datasets.max_index_bytes()


def test_image_folders_over_the_cap_are_refused_naming_how_many_photos(tmp_path, cap):
    root = folders(tmp_path / "faces", {"happy": 3, "sad": 3}, size=(8, 8))
    cap(6)
    assert len(datasets.load(root).faces) == 6
    cap(5)
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(root)
    assert "faces holds 6 photos in its label folders, more than the 5 one dataset may hold" in str(
        error.value
    )
    assert "FER_MAX_FACES" in str(error.value)


def test_a_pixels_cell_far_longer_than_a_face_is_refused_naming_its_line(tmp_path, monkeypatch):
    rows = [(3, pixel_text(fer_pixels(0)), "Training"), (4, " ".join(["255"] * 100_000), "Training")]
    path = write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], rows)
    refused_before_parsing(monkeypatch)
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(path)
    message = str(error.value)
    assert "line 3 of fer2013.csv is longer than the 66,560 bytes" in message
    assert "a pixels cell may hold 16,384 numbers (128 x 128; FER2013's hold 48 x 48 = 2,304)" in message
    # A 128 x 128 face still fits.
    write_csv(path, ["emotion", "pixels", "Usage"], [(3, " ".join(["255"] * 128 * 128), "Training")])
    monkeypatch.undo()
    assert len(datasets.load(path).faces) == 1


def test_one_endless_line_is_refused_without_reading_the_rest(tmp_path, monkeypatch):
    root = expw(tmp_path / "expw", [], ["p.png"])
    with open(root / "label.lst", "wb") as handle:
        handle.write(b"p.png 0 2 2 30 30 9 3\n")
        for _ in range(64):
            handle.write(b"7 " * (1 << 19))  # 64 MB, and not one newline
    reads = []
    real_open = open

    def counted_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        real_read = handle.read
        handle.read = lambda *a: reads.append(1) or real_read(*a)
        return handle

    monkeypatch.setattr(datasets, "open", counted_open, raising=False)
    with pytest.raises(datasets.DatasetError, match=r"line 2 of label\.lst is longer than the 66,560 bytes"):
        datasets.load(root)
    assert len(reads) <= 2  # the first megabyte already shows it


def test_counting_an_index_takes_bounded_memory_whatever_its_size(tmp_path, cap):
    cap(1000)
    index = tmp_path / "label.lst"
    index.write_text("".join(f"{line}\n" for line in expw_lines(600_000)))  # about 18 MB
    tracemalloc.start()
    try:
        with pytest.raises(datasets.DatasetError, match="holds 600,000 faces, more than the 1,000"):
            datasets.count_faces(index)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2, f"counting took {peak:,} bytes"


def test_only_one_big_dataset_is_parsed_at_a_time_and_small_ones_never_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "BIG_DATASET", 100)
    big = expw(tmp_path / "big", expw_lines(100), ["p.png"])
    small = expw(tmp_path / "small", expw_lines(99), ["p.png"])
    loaded = []
    with datasets._PARSING:  # another visitor's big dataset is being parsed
        assert len(datasets.load(small).faces) == 99  # a small one is not held up
        waiting = threading.Thread(target=lambda: loaded.append(datasets.load(big)), daemon=True)
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and not loaded  # the big one waits for the slot
    waiting.join(timeout=120)
    assert not waiting.is_alive() and len(loaded[0].faces) == 100
    assert datasets._PARSING.acquire(blocking=False)  # and gave the slot back
    datasets._PARSING.release()


def test_a_big_dataset_that_fails_to_parse_gives_the_parsing_slot_back(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "BIG_DATASET", 10)
    root = expw(tmp_path / "expw", expw_lines(20), ["p.png"])

    def broken(root):
        raise datasets.DatasetError("cannot read it")

    monkeypatch.setattr(datasets, "_read_expw", broken)
    with pytest.raises(datasets.DatasetError, match="cannot read it"):
        datasets.load(root)
    assert datasets._PARSING.acquire(blocking=False)
    datasets._PARSING.release()


# Links that lead outside the served folders ---------------------------------------------------------


@pytest.fixture
def served(tmp_path) -> tuple[Path, Path]:
    """A served folder and, beside it, one that is not served (holding an ExpW dataset's photos)."""
    inside, outside = tmp_path / "served", tmp_path / "private"
    inside.mkdir()
    expw_faces(outside / "expw", photos=3)
    return inside.resolve(), outside.resolve()


def test_an_expw_photo_image_folder_or_label_lst_linked_outside_is_found(served):
    inside, outside = served
    roots = [inside]
    root = expw_faces(inside / "expw", photos=3)
    assert uploads.photos_outside(datasets.load(root), roots) == []
    os.remove(root / "image" / "p0001.png")
    os.symlink(outside / "expw" / "image" / "p0001.png", root / "image" / "p0001.png")
    assert uploads.photos_outside(datasets.load(root), roots) == ["image/p0001.png"]
    assert uploads.photos_outside(datasets.load(root), [inside, outside]) == []  # both served: fine

    linked = inside / "linked-folder"
    linked.mkdir()
    (linked / "label.lst").write_text((outside / "expw" / "label.lst").read_text())
    os.symlink(outside / "expw" / "image", linked / "image")
    assert uploads.photos_outside(datasets.load(linked), roots) == [f"image/p{i:04d}.png" for i in range(3)]

    index = inside / "linked-index"
    (index / "image").mkdir(parents=True)
    for i in range(3):
        photo(index / "image" / f"p{i:04d}.png", (64, 64), seed=i)
    os.symlink(outside / "expw" / "label.lst", index / "label.lst")
    assert uploads.photos_outside(datasets.load(index), roots) == ["label.lst"]


def test_image_folders_with_a_linked_label_folder_or_photo_are_found(served):
    inside, outside = served
    root = folders(inside / "faces", {"happy": 2}, size=(8, 8))
    assert uploads.photos_outside(datasets.load(root), [inside]) == []
    os.symlink(outside / "expw" / "image", root / "sad")
    os.symlink(outside / "expw" / "image" / "p0002.png", root / "happy" / "zz.png")
    found = uploads.photos_outside(datasets.load(root), [inside])
    assert sorted(found) == ["happy/zz.png", "sad/p0000.png", "sad/p0001.png", "sad/p0002.png"]


def test_a_fer2013_csv_linked_from_a_served_folder_is_found(served):
    inside, outside = served
    real = write_csv(outside / "fer2013.csv", ["emotion", "pixels"], [(3, pixel_text(fer_pixels(0)))])
    (inside / "fer").mkdir()
    os.symlink(real, inside / "fer" / "fer2013.csv")
    assert uploads.photos_outside(datasets.load(inside / "fer"), [inside]) == ["fer2013.csv"]
    # A link that stays inside the served folders is fine.
    (inside / "fer2").mkdir()
    write_csv(inside / "real.csv", ["emotion", "pixels"], [(3, pixel_text(fer_pixels(0)))])
    os.symlink(inside / "real.csv", inside / "fer2" / "fer2013.csv")
    assert uploads.photos_outside(datasets.load(inside / "fer2"), [inside]) == []


def test_a_generic_csv_photo_linked_outside_is_found(served):
    inside, outside = served
    (inside / "set" / "image").mkdir(parents=True)
    photo(inside / "set" / "image" / "a.png", (16, 16))
    os.symlink(outside / "expw" / "image" / "p0000.png", inside / "set" / "image" / "b.png")
    csv = write_csv(
        inside / "set" / "faces.csv", ["image", "label"], [("image/a.png", "happy"), ("image/b.png", "sad")]
    )
    assert uploads.photos_outside(datasets.load(csv), [inside]) == ["image/b.png"]


# Through the Data page ----------------------------------------------------------------------------


def data_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    return at


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_server_dataset_with_a_photo_linked_outside_is_refused_on_the_data_page(tmp_path):
    outside = expw_faces(tmp_path / "private", photos=4)
    mine = expw_faces(paths.data_dir() / "tests" / tmp_path.name / "expw", photos=4)
    os.remove(mine / "image" / "p0002.png")
    os.symlink(outside / "image" / "p0002.png", mine / "image" / "p0002.png")
    linked = paths.data_dir() / "tests" / tmp_path.name / "linked"
    linked.mkdir()
    (linked / "label.lst").write_text((outside / "label.lst").read_text())
    os.symlink(outside / "image", linked / "image")

    at = data_page()
    at.radio(key="data_source").set_value("A folder or CSV on the server").run()
    at.text_input(key="data_path").set_value(str(mine)).run()
    assert not at.exception
    assert "expw is refused: 1 of its files resolves outside the folders this server serves" in errors(at)
    assert "image/p0002.png" in errors(at)
    assert at.session_state["dataset"] == "demo"
    at.text_input(key="data_path").set_value(str(linked)).run()
    assert "linked is refused: 4 of its files resolve outside" in errors(at)
    assert "image/p0000.png, image/p0001.png, image/p0002.png" in errors(at)
    assert at.session_state["dataset"] == "demo"

    os.remove(mine / "image" / "p0002.png")  # the link replaced by the photo itself: accepted
    photo(mine / "image" / "p0002.png", (64, 64))
    at.text_input(key="data_path").set_value(str(mine) + " ").run()
    assert not at.error and at.session_state["dataset"] == str(mine.resolve())


def test_an_uploaded_dataset_over_the_cap_is_refused_on_the_data_page(tmp_path, cap):
    cap(1000)
    image = photo(tmp_path / "p.png", (64, 64)).read_bytes()
    lines = "".join(f"{line}\n" for line in expw_lines(1500)).encode()
    content = zipped({"many/label.lst": lines, "many/image/p.png": image})

    at = data_page()
    at.radio(key="data_source").set_value("Upload a .zip").run()
    at.file_uploader(key="data_zip").set_value(("many.zip", content, "application/zip")).run()
    assert not at.exception
    assert "label.lst holds 1,500 faces, more than the 1,000 one dataset may hold on this server" in errors(
        at
    )
    assert "FER_MAX_FACES" in errors(at)
    assert at.session_state["dataset"] == "demo"

    cap(1500)  # the server's owner raised the cap: the same dataset is accepted
    at.file_uploader(key="data_zip").set_value(("many-again.zip", content, "application/zip")).run()
    assert not at.exception and not at.error
    assert Path(at.session_state["dataset"]).name == "many"


# A real server, and an upload that would take gigabytes ----------------------------------------------

HOSTILE_FACES = 4_000_000  # read uncapped: over a minute and about 3 GB in the server
RSS_LIMIT = 1536 * 1024  # kB: the server's peak memory, TensorFlow and all, must stay under it


@pytest.mark.slow
def test_a_hostile_upload_is_refused_while_the_server_keeps_answering_in_bounded_memory(tmp_path, browser):
    photo(tmp_path / "p.png", (64, 64))
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(hostile, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("hostile/label.lst", "".join(f"{line}\n" for line in expw_lines(HOSTILE_FACES)))
        archive.write(tmp_path / "p.png", "hostile/image/p.png")
    assert hostile.stat().st_size < 20 * 1024**2  # a small upload: about 10 MB, under the zip-bomb ratio
    home = tmp_path / "home"
    home.mkdir()
    limit_ms = 300_000
    env = {k: v for k, v in os.environ.items() if k != "FER_MAX_FACES"}  # the default cap
    with server(home, env) as (url, pid):
        context = browser.new_context()  # the suite's one Chromium (conftest), a visitor of its own
        try:
            page = context.new_page()
            page.set_default_timeout(limit_ms)
            page.goto(f"{url}/data")
            page.get_by_text("Label counts").first.wait_for()
            page.get_by_text("Upload a .zip").first.click()
            dropzone = page.locator('.st-key-data_zip [data-testid="stFileUploaderDropzoneInput"]')
            dropzone.wait_for(state="attached")
            dropzone.set_input_files(str(hostile))
            refusal = page.get_by_text("one dataset may hold on this server").first
            answered, peak = 0, 0
            deadline = time.monotonic() + limit_ms / 1000
            while not refusal.is_visible():  # meanwhile, the server answers everyone else
                assert healthy(url), "the server stopped answering while it read the upload"
                answered += 1
                peak = max(peak, memory_kb(pid)["VmHWM"])
                assert peak < RSS_LIMIT, f"the server holds {peak // 1024:,} MB reading the upload"
                assert time.monotonic() < deadline, "the upload was never refused"
                page.wait_for_timeout(200)
            text = refusal.inner_text()
            assert f"label.lst holds {HOSTILE_FACES:,} faces, more than the 1,000,000" in text
            assert healthy(url)
            # Another visitor's page still works, on the same server.
            other = context.new_page()
            other.set_default_timeout(limit_ms)
            other.goto(f"{url}/data")
            other.get_by_text("Label counts").first.wait_for()
        finally:
            context.close()
        peak = memory_kb(pid)["VmHWM"]
    assert answered >= 1
    assert peak < RSS_LIMIT, f"the server's memory peaked at {peak // 1024:,} MB"
