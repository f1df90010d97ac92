"""CSV files people download are safe to open in a spreadsheet, and the product reads its own back exactly;
a killed writer's temporary file does not outlive the next write of its target; `--lr-patience` below 1
is refused.

Labels and photo names come from uploads, so every CSV the product writes for people (a run's
predictions.csv, `fer evaluate --predictions`, the Classify and Results downloads, the faces.csv of the
exported zip) is written here with labels and photo names a spreadsheet would take for formulas.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import face_crop, photo
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from fer import cli, datasets, export, paths, preprocess
from fer import evaluate as E
from fer import runs as R
from fer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 300.0  # seconds for one `python -m fer` process to import TensorFlow and write, on a loaded machine

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# Label folder names, so every photo name starts with one too ("=1+1/a0.png").
HOSTILE_LABELS = ["=1+1", "+cmd|' -c calc'!a0", "-2+3", "@sum(a1)", "'quoted"]
TEXT = ("dataset", "photo", "split", "label", "predicted", "file")


def cells(text: str) -> list[list[str]]:
    """The cells of a CSV as a spreadsheet sees them: Python's csv module, newlines inside cells kept."""
    return list(csv.reader(io.StringIO(text, newline="")))


def assert_neutral(text: str, text_columns=TEXT) -> list[dict[str, str]]:
    """No text cell of `text` starts with a character that makes a spreadsheet read a formula; every
    other cell is a number or empty. Returns the rows as the csv module reads them."""
    header, *rows = cells(text)
    assert not [name for name in header if name.startswith(TRIGGERS)], header
    for row in rows:
        assert len(row) == len(header), row
        for name, cell in zip(header, row):
            if name in text_columns:
                assert not cell.startswith(TRIGGERS), f"{name}: {cell!r}"
            elif cell:
                float(cell)  # a number stays a number, a negative one included
    return [dict(zip(header, row)) for row in rows]


# The rule --------------------------------------------------------------------------------------------

ODD = [
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "-1",
    "@SUM(A1)",
    "\tx",
    "\r=1",
    "'already quoted",
    "''",
    "'",
    "plain",
    "",
    "nan",
    "NA",
    "007",
    "a,b\nc",
    "x\ry",
]


def odd_frame() -> pd.DataFrame:
    n = len(ODD)
    return pd.DataFrame(
        {
            "photo": ODD,
            "label": ODD[::-1],
            "face": np.arange(n),
            "top": np.linspace(-7.5, 3.25, n),  # negative coordinates stay numbers
            "p_=x": np.linspace(0, 1, n),
        }
    )


def test_text_cells_are_neutralised_numbers_are_not_and_reading_back_gives_the_original(tmp_path):
    frame = odd_frame()
    text = R.csv_text(frame)
    rows = assert_neutral(text, ("photo", "label"))
    assert [row["photo"] for row in rows][:4] == ["'" + v for v in ODD[:4]]
    assert rows[10]["photo"] == "" and rows[9]["photo"] == "plain" and rows[13]["photo"] == "007"
    assert [float(row["top"]) for row in rows] == list(frame["top"])
    assert cells(text)[0][-1] == "p_=x"  # a name that starts safely is left as it is

    R.write_csv(tmp_path / "t.csv", frame)
    assert (tmp_path / "t.csv").read_bytes().decode() == text
    back = R.read_csv(tmp_path / "t.csv", ("photo", "label"))
    assert list(back.columns) == list(frame.columns)
    assert list(back["photo"]) == ODD and list(back["label"]) == ODD[::-1]
    assert back["top"].tolist() == frame["top"].tolist() and back["face"].tolist() == list(range(len(ODD)))
    assert pd.api.types.is_float_dtype(back["top"]) and pd.api.types.is_float_dtype(back["p_=x"])
    assert R.csv_text(back) == text  # written, read, written again: the same file


def test_a_column_name_that_starts_like_a_formula_is_neutralised_and_read_back(tmp_path):
    frame = pd.DataFrame({"=name": ["a"], "-n": [-1.5]})
    assert cells(R.csv_text(frame))[0] == ["'=name", "'-n"]
    R.write_csv(tmp_path / "t.csv", frame)
    back = R.read_csv(tmp_path / "t.csv")
    assert list(back.columns) == ["=name", "-n"] and back.iloc[0].tolist() == ["a", -1.5]


# A training's predictions.csv, `fer evaluate --predictions` and the exported zip -------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """Image folders named after hostile labels (so every photo name starts like a formula too), 12
    photos each, beside a happy folder whose photos have hostile names of their own."""
    root = tmp_path_factory.mktemp("hostile") / "set"
    seed = 0
    for label in HOSTILE_LABELS:
        for i in range(12):
            photo(root / label / f"a{i}.png", (64, 64), seed=seed)
            seed += 1
    for i, name in enumerate(["=HYPERLINK(x)", "+1", "-1", "@a", "'b", "c"] * 2):
        photo(root / "happy" / f"{name}{i}.png", (64, 64), seed=seed)
        seed += 1
    return root


@pytest.fixture(scope="module")
def hostile_run(hostile, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "hostile"
    code = cli.main(
        [
            "train",
            str(hostile),
            "--run-dir",
            str(run_dir),
            "--max-faces",
            "60",
            "--epochs",
            "1",
            "--width",
            "4",
            "--no-augment",
            "--test-share",
            "0.3",
        ]
    )
    assert code == 0
    return run_dir


def _expected_photos(dataset: Path) -> set[str]:
    return set(datasets.load(str(dataset)).faces["photo"])


def test_a_runs_predictions_are_neutralised_and_read_back_as_they_were(hostile, hostile_run):
    rows = assert_neutral((hostile_run / R.PREDICTIONS).read_bytes().decode())
    assert any(row["photo"].startswith("'") for row in rows)
    predictions = R.read_predictions(hostile_run)
    assert len(predictions) == len(rows)
    assert set(predictions["photo"]) <= _expected_photos(hostile)
    assert set(predictions["label"]) | set(predictions["predicted"]) <= {*HOSTILE_LABELS, "happy"}
    assert {p.split("/")[0] for p in predictions["photo"]} == set(predictions["label"])
    labels = R.read_json(hostile_run / R.LABELS)
    assert sorted(labels) == sorted([*HOSTILE_LABELS, "happy"])
    assert predictions[[f"p_{label}" for label in labels]].sum(axis=1).to_numpy() == pytest.approx(
        1, abs=1e-4
    )


def test_evaluate_predictions_are_neutralised_and_read_back_as_they_were(hostile, hostile_run, tmp_path):
    out = tmp_path / "scored.csv"
    code = cli.main(
        [
            "evaluate",
            str(hostile),
            "--model",
            str(hostile_run / R.BEST),
            "--split",
            "all",
            "--predictions",
            str(out),
        ]
    )
    assert code == 0
    rows = assert_neutral(out.read_bytes().decode())
    assert len(rows) == len(_expected_photos(hostile))
    back = R.read_csv(out, ("dataset", "photo", "split", "label", "predicted"))
    assert set(back["photo"]) == _expected_photos(hostile)
    assert set(back["label"]) == {*HOSTILE_LABELS, "happy"}


def test_the_exported_zips_faces_csv_is_neutralised(hostile, tmp_path):
    prepared = preprocess.prepare(datasets.load(str(hostile)), preprocess.PrepSettings(size=48))
    zip_path = export.export_zip(prepared, tmp_path / "faces.zip")
    with zipfile.ZipFile(zip_path) as archive:
        text = archive.read("faces.csv").decode()
        names = set(archive.namelist())
    rows = assert_neutral(text, ("file", "photo", "label", "split"))
    assert len(rows) == len(prepared.faces)
    assert any(row["file"].startswith("'") for row in rows)
    back = R.read_csv(zip_path.parent / _extract(zip_path, "faces.csv"), ("file", "photo", "label", "split"))
    assert set(back["file"]) <= names  # read back, the column names the files again
    assert sorted(back["photo"]) == sorted(prepared.faces["photo"])
    assert set(back["label"]) == {*HOSTILE_LABELS, "happy"}


def _extract(zip_path: Path, name: str) -> str:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extract(name, zip_path.parent)
    return name


# The dashboard's downloads ---------------------------------------------------------------------------


@pytest.fixture
def downloads(monkeypatch) -> list[tuple[str | None, bytes]]:
    """Every download the pages offer while the test runs, as (file name, bytes); a download made only
    when clicked is made at once."""
    offered: list[tuple[str | None, bytes]] = []
    real_add, real_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def add(self, data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        if is_for_static_download:
            offered.append((file_name, bytes(data)))
        return real_add(self, data, mimetype, coordinates, file_name, is_for_static_download)

    def add_deferred(self, data, mimetype, coordinates, file_name=None, **kwargs):
        if str(file_name).endswith(".csv"):
            made = data()
            offered.append((file_name, made.encode() if isinstance(made, str) else bytes(made)))
        return real_deferred(self, data, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", add)
    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return offered


def _png(side: int = 64) -> bytes:
    buffer = io.BytesIO()
    face_crop(side).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_classify_download_is_neutralised(downloads):
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("pages/classify.py").run()
    at.toggle(key="whole").set_value(True)
    names = ['=HYPERLINK("http://x").jpg', "-2.png", "plain.png"]
    at.file_uploader(key="uploads").set_value(
        [(name, _png(60 + i), "image/png") for i, name in enumerate(names)]
    ).run()
    assert not at.exception
    [data] = [d for n, d in downloads if n == "expressions.csv"][-1:]
    rows = assert_neutral(data.decode(), ("photo", "label"))
    assert [row["photo"] for row in rows] == ["'" + names[0], "'" + names[1], names[2]]
    assert all(0 <= float(row["probability"]) <= 1 for row in rows)


def _hostile_run_folder(run_dir: Path, write) -> pd.DataFrame:
    """A finished run folder (no model) whose labels and photo names start like formulas; its
    predictions.csv written by `write(path, table)`. Returns the predictions table."""
    labels = ["=1+1", "-sad", "happy"]
    y_true, y_pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    config = TrainConfig(datasets=("/nowhere/moved",), arch="seed", epochs=1)
    R.write_json(run_dir / R.CONFIG, {"train": asdict(config), "labels": labels})
    R.write_json(run_dir / R.LABELS, labels)
    R.write_json(run_dir / R.METRICS, {**E.metrics(y_true, y_pred, labels), "split": "test"})
    faces = pd.DataFrame(
        {
            "dataset": "/nowhere/moved",
            "photo": ["=HYPERLINK(1).jpg", "@a.jpg", "+b.jpg", "'c.jpg"],
            "face": 0,
            "split": "test",
            "label": [labels[i] for i in y_true],
        }
    )
    probabilities = np.full((4, 3), 0.1)
    probabilities[np.arange(4), y_pred] = 0.8
    table = E.predictions_table(faces, labels, probabilities)
    write(run_dir / R.PREDICTIONS, table)
    R.set_status(run_dir, "done")
    return table


@pytest.mark.parametrize(
    "write",
    [R.write_csv, lambda path, table: table.to_csv(path, index=False)],
    ids=["written-now", "written-before-the-rule"],
)
def test_the_results_predictions_download_is_neutralised(downloads, tmp_path, monkeypatch, write):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    table = _hostile_run_folder(paths.runs_dir() / "hostile", write)
    at = AppTest.from_file(APP, default_timeout=120).switch_page("pages/results.py").run()
    assert not at.exception
    [data] = [d for n, d in downloads if n == "hostile-predictions.csv"][-1:]
    rows = assert_neutral(data.decode())
    assert [row["label"] for row in rows] == ["'=1+1", "'-sad", "happy", "happy"]
    (tmp_path / "download.csv").write_bytes(data)
    back = R.read_csv(tmp_path / "download.csv", ("dataset", "photo", "split", "label", "predicted"))
    assert list(back["label"]) == list(table["label"]) and list(back["predicted"]) == list(table["predicted"])
    # The faces of the worst cell (-sad called happy) are found by their label names.
    [shown] = [frame.value for frame in at.dataframe if "photo" in frame.value.columns]
    assert list(shown["photo"]) == ["@a.jpg"]
    if write is R.write_csv:  # what the product wrote, it offers as it was
        assert [row["photo"] for row in rows] == ["'" + p for p in table["photo"]]
        assert back.equals(table)


# A killed writer's temporary file ------------------------------------------------------------------------


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if R.is_temporary(p.name))


def _big_model(path: Path) -> Path:
    """A model file of some tens of megabytes, so that writing it takes a while."""
    from fer.config import ModelConfig
    from fer.modelfile import save_model
    from fer.models import build

    model = build(ModelConfig(arch="seed", image_size=160, num_classes=3))
    save_model(model, path, {"labels": ["a", "b", "c"], "image_size": 160})
    return path


def _export(source: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fer", "export", str(source), "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_an_export_killed_while_writing_leaves_nothing_once_exported_again(tmp_path):
    source = _big_model(tmp_path / "source" / "big.keras")
    out = tmp_path / "out" / "model.keras"
    out.parent.mkdir()
    for _ in range(4):  # kill it the moment its temporary file appears; should it finish first, again
        process = _export(source, out)
        killed = False
        try:
            deadline = time.monotonic() + TIMEOUT
            while process.poll() is None:
                if _temporaries(out.parent):
                    process.send_signal(signal.SIGKILL)
                    killed = True
                    break
                assert time.monotonic() < deadline, "the export never started writing"
                time.sleep(0.002)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            error = process.stderr.read().decode()
            process.stderr.close()
        if killed:
            assert process.returncode == -signal.SIGKILL
            break
        assert process.returncode == 0, error[-3000:]
    else:
        pytest.fail("every export finished before it could be killed while writing")
    left = _temporaries(out.parent)
    assert len(left) == 1 and re.fullmatch(r"\.model\..+\.tmp\.keras", left[0]), left
    assert not out.exists() or zipfile.is_zipfile(out)

    process = _export(source, out)
    assert process.wait(timeout=TIMEOUT) == 0, process.stderr.read().decode()[-3000:]
    process.stderr.close()
    assert _temporaries(out.parent) == [] and sorted(p.name for p in out.parent.iterdir()) == ["model.keras"]
    with zipfile.ZipFile(out) as archive:
        assert "fer.json" in archive.namelist()


def test_a_live_writers_temporary_file_is_never_removed(tmp_path):
    target = tmp_path / "model.keras"
    seen = []
    R.write_atomic(target, lambda p: seen.append(p.name) or p.write_bytes(b"one"))
    [mine] = seen  # ".model.<host>_<this pid>_<random>.tmp.keras"
    assert f"_{os.getpid()}_" in mine and mine.startswith(".model.") and mine.endswith(".tmp.keras")

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:

        def named(pid: int, tail: str, for_target: str = "model") -> str:
            name = mine.replace(f"_{os.getpid()}_", f"_{pid}_", 1).replace(".model.", f".{for_target}.", 1)
            return name.replace(".tmp.", f"{tail}.tmp.", 1)

        live = {named(os.getpid(), "x"), named(sleeper.pid, "y")}  # this process's, and another live one's
        host = mine[len(".model.") :].split("_")[0]
        other_host = named(gone.pid, "v").replace(
            f".{host}_", ".0000ffff_" if host != "0000ffff" else ".1111ffff_"
        )
        other_target = named(gone.pid, "z", for_target="other")
        dead = named(gone.pid, "w")
        for name in (*live, other_host, other_target, dead):
            (tmp_path / name).write_bytes(b"partial")

        R.write_atomic(target, lambda p: p.write_bytes(b"two"))
        assert target.read_bytes() == b"two"
        # The dead writer's file of this target goes; live writers' files, another target's and another
        # host's (whose pids mean nothing here) stay.
        assert set(_temporaries(tmp_path)) == {*live, other_host, other_target}

        removed = R.sweep_temporary(tmp_path)  # the whole folder: all but the live writers' files
        assert set(removed) == {other_host, other_target}
        assert set(_temporaries(tmp_path)) == live
    finally:
        sleeper.kill()
        sleeper.wait()


# --lr-patience --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1"])
def test_train_refuses_an_lr_patience_below_one(value, tmp_path, capsys):
    run_dir = tmp_path / "run"
    tiny = ["--epochs", "1", "--max-faces", "60", "--width", "4"]  # should it be taken, a short training
    code = cli.main(["train", "demo", "--run-dir", str(run_dir), "--lr-patience", value, *tiny])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "lr_patience must be at least 1" in err and f"got {value}" in err
    assert not run_dir.exists()
