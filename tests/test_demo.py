"""The built-in demo dataset: reproducible, valid ExpW, and its confidences mean something."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer import demo
from fer.labels import LABELS

FACES = 120


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _lines(folder: Path) -> list[list[str]]:
    return [line.split(" ") for line in (folder / "label.lst").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return demo.generate(tmp_path_factory.mktemp("demo") / "demo", faces=FACES, seed=7)


@pytest.fixture
def small_default(monkeypatch):
    """ensure() builds the full 1,500 faces; a few dozen are enough to test when it builds."""
    monkeypatch.setattr(demo, "DEFAULT_FACES", 40)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(dataset, tmp_path):
    again = demo.generate(tmp_path / "again", faces=FACES, seed=7)
    assert _files(again) == _files(dataset)
    other = _files(demo.generate(tmp_path / "other", faces=FACES, seed=8))
    assert other["label.lst"] != _files(dataset)["label.lst"]
    assert other["image/demo_00000.jpg"] != _files(dataset)["image/demo_00000.jpg"]


def test_label_lst_is_valid_expw(dataset):
    lines = _lines(dataset)
    assert len(lines) == FACES
    face_ids = defaultdict(list)
    for fields in lines:
        assert len(fields) == 8, fields
        name, face_id, top, left, right, bottom, confidence, label = fields
        top, left, right, bottom = int(top), int(left), int(right), int(bottom)
        with Image.open(dataset / "image" / name) as photo:
            photo.load()
            width, height = photo.size
        assert 320 <= width <= 480 and 240 <= height <= 360
        assert 0 <= left < right <= width and 0 <= top < bottom <= height, fields
        assert len(confidence.split(".")[1]) == 4 and 0.5 <= float(confidence) <= 120
        assert 0 <= int(label) < len(LABELS)
        face_ids[name].append(int(face_id))
    assert all(ids == list(range(len(ids))) and 1 <= len(ids) <= 3 for ids in face_ids.values())
    assert {int(f[7]) for f in lines} == set(range(len(LABELS)))
    assert sorted(p.name for p in (dataset / "image").iterdir()) == sorted(face_ids)


def test_faces_of_one_photo_do_not_overlap(dataset):
    boxes = defaultdict(list)
    for fields in _lines(dataset):
        boxes[fields[0]].append([int(v) for v in fields[2:6]])
    for photo_boxes in boxes.values():
        for i, (t1, l1, r1, b1) in enumerate(photo_boxes):
            for t2, l2, r2, b2 in photo_boxes[i + 1 :]:
                assert r1 <= l2 or r2 <= l1 or b1 <= t2 or b2 <= t1


def test_readme_and_stamp_say_what_the_data_is(dataset):
    assert "SYNTHETIC" in (dataset / "README.txt").read_text(encoding="utf-8")
    stamp = json.loads((dataset / demo.STAMP).read_text(encoding="utf-8"))
    assert stamp["version"] == demo.VERSION and stamp["faces"] == FACES and stamp["seed"] == 7


def test_plan_is_what_generate_writes(dataset):
    assert [face.line() for face in demo.plan(FACES, seed=7)] == (dataset / "label.lst").read_text(
        encoding="utf-8"
    ).splitlines()


def test_labels_are_balanced():
    counts = np.bincount([face.label for face in demo.plan(700, seed=1)], minlength=len(LABELS))
    assert counts.min() == counts.max() == 100


def test_harder_faces_get_lower_confidence():
    faces = demo.plan(FACES, seed=7)
    easy = [f.confidence for f in faces if not f.difficulty]
    hard = [f.confidence for f in faces if f.difficulty]
    assert len(easy) > FACES / 4 and len(hard) > FACES / 4
    assert np.mean(easy) > np.mean(hard) + 15
    # Each difficulty costs confidence on its own, and two cost more than one.
    many = demo.plan(1500, seed=0)
    base = np.mean([f.confidence for f in many if not f.difficulty])
    for name in ("blur", "small", "occlusion", "turn"):
        assert np.mean([f.confidence for f in many if f.difficulty == {name}]) < base - 8, name
    single = np.mean([f.confidence for f in many if len(f.difficulty) == 1])
    assert np.mean([f.confidence for f in many if len(f.difficulty) >= 2]) < single - 10


def test_small_faces_have_small_boxes(dataset):
    faces = demo.plan(FACES, seed=7)
    small = [f.bottom - f.top for f in faces if "small" in f.difficulty]
    others = [f.bottom - f.top for f in faces if "small" not in f.difficulty]
    assert small and max(small) <= 50 < min(others)


def test_raising_the_threshold_keeps_fewer_and_cleaner_faces():
    faces = demo.plan(FACES, seed=7)
    kept = [f for f in faces if f.confidence >= 70]
    assert 0 < len(kept) < len(faces)

    def easy_share(group):
        return sum(not f.difficulty for f in group) / len(group)

    assert easy_share(kept) > easy_share(faces) + 0.15


def test_the_toolkit_reads_every_demo_face(dataset):
    datasets = pytest.importorskip("fer.datasets")
    loaded = datasets.load(dataset)
    assert loaded.format == "expw" and len(loaded.faces) == FACES and loaded.skipped.empty


def test_ensure_generates_once(tmp_path, small_default):
    folder = demo.ensure(tmp_path)
    assert folder == tmp_path / demo.NAME and len(_lines(folder)) == 40
    before = (folder / "label.lst").stat().st_mtime_ns
    (folder / "sentinel").write_text("still here")
    assert demo.ensure(tmp_path) == folder
    assert (folder / "label.lst").stat().st_mtime_ns == before and (folder / "sentinel").exists()


def test_ensure_regenerates_an_older_version(tmp_path, small_default):
    folder = demo.ensure(tmp_path)
    stamp = json.loads((folder / demo.STAMP).read_text(encoding="utf-8"))
    stamp["version"] = demo.VERSION - 1
    (folder / demo.STAMP).write_text(json.dumps(stamp), encoding="utf-8")
    (folder / "sentinel").write_text("old")
    assert demo.ensure(tmp_path) == folder
    assert not (folder / "sentinel").exists()
    assert json.loads((folder / demo.STAMP).read_text(encoding="utf-8"))["version"] == demo.VERSION
    assert [p.name for p in tmp_path.iterdir()] == [demo.NAME]  # nothing left beside it


def test_ensure_defaults_to_fer_home(tmp_path, monkeypatch, small_default):
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    assert demo.ensure() == tmp_path / demo.NAME
    assert (tmp_path / demo.NAME / "label.lst").is_file()


def test_ensure_from_several_threads_at_once(tmp_path, small_default):
    start = threading.Barrier(3)
    results, errors = [], []

    def worker():
        start.wait()
        try:
            results.append(demo.ensure(tmp_path))
        except Exception as error:  # noqa: BLE001 - any failure in a thread is reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [tmp_path / demo.NAME] * 3
    assert len(_lines(tmp_path / demo.NAME)) == 40
    assert [p.name for p in tmp_path.iterdir()] == [demo.NAME]


def test_ensure_refuses_to_replace_a_foreign_folder(tmp_path, small_default):
    (tmp_path / demo.NAME).mkdir()
    (tmp_path / demo.NAME / "my-photos.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        demo.ensure(tmp_path)
    assert (tmp_path / demo.NAME / "my-photos.txt").read_text() == "precious"


def test_ensure_sweeps_old_leftovers_of_a_crash(tmp_path, small_default):
    old = tmp_path / f".{demo.NAME}.tmp-crashed"
    fresh = tmp_path / f".{demo.NAME}.tmp-running"
    old.mkdir()
    fresh.mkdir()
    long_ago = time.time() - 2 * 3600
    os.utime(old, (long_ago, long_ago))
    demo.ensure(tmp_path)
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a running process


def test_generate_replaces_a_demo_folder_but_never_a_foreign_one(tmp_path):
    folder = demo.generate(tmp_path / "d", faces=10, seed=1)
    demo.generate(folder, faces=12, seed=2)
    assert len(_lines(folder)) == 12
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        demo.generate(foreign, faces=10)
    assert (foreign / "keep.txt").exists()


def test_a_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def flaky(photo):
        calls.append(photo)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return b"jpeg"

    monkeypatch.setattr(demo, "_render_photo", flaky)
    with pytest.raises(RuntimeError):
        demo.generate(tmp_path / "demo", faces=20)
    assert list(tmp_path.iterdir()) == []
