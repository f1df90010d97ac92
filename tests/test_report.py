"""The run report (fer.report) and `python -m fer report`: on a run folder written by hand from a known
confusion, and on a real tiny training of the demo dataset (conftest's tiny_run)."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from helpers import CONFUSION, EVIL, known_run

from fer import cli, report, results
from fer import evaluate as E
from fer import runs as R
from fer.config import TrainConfig


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return known_run(tmp_path / "known-run")


def test_sentences_are_true_for_a_known_confusion(run_dir):
    metrics = R.read_metrics(run_dir)
    said = results.sentences(metrics)
    assert set(said) == set(results.METRICS)
    assert said["accuracy"] == "Of the 25 test faces, the model labelled 16 correctly (64.0%)."
    # Precision: the model called 10 faces happy, 8 rightly (80%); sad 5 of 8; the third 3 of 7.
    assert "Of the faces the model called happy, 80% were happy (8 of 10)" in said["precision"]
    assert f"{metrics['precision']:.1%}" in said["precision"]
    expected_weighted = (10 * 8 / 10 + 10 * 5 / 8 + 5 * 3 / 7) / 25
    assert metrics["precision"] == pytest.approx(expected_weighted)
    # Recall: happy faces found 8 of 10 (80%), sad 5 of 10 (50%), the third 3 of 5 (60%).
    assert "80% of the 10 happy faces but only 50% of the 10 sad faces" in said["recall"]
    assert "64.0%" in said["recall"]  # weighted recall is accuracy
    # Macro F1 lies below weighted F1 here: the smallest label scores lowest.
    assert metrics["macro_f1"] < metrics["f1"]
    assert f"{metrics['macro_f1']:.1%}" in said["macro_f1"] and "below" in said["macro_f1"]


def test_sentences_name_labels_never_predicted():
    metrics = E.metrics(np.array([0, 1, 2, 2]), np.array([0, 0, 0, 0]), ["a", "b", "c"])
    said = results.sentences(metrics)
    assert "never called a face b or c" in said["precision"]
    assert "25% were a (1 of 4)" in said["precision"]


def test_confusion_shares_and_worst_cell(run_dir):
    metrics = R.read_metrics(run_dir)
    counts, shares = results.confusion(metrics), results.confusion(metrics, shares=True)
    assert counts.to_numpy().tolist() == CONFUSION.tolist()
    assert shares.loc["sad", EVIL] == pytest.approx(0.3)
    assert shares.sum(axis=1).to_numpy() == pytest.approx([1, 1, 1])
    assert results.worst_mistake(metrics) == ("sad", EVIL)
    table = results.per_class_table(metrics)
    assert table["support"].tolist() == [10, 10, 5]
    cell = results.cell_faces(R.read_predictions(run_dir), "sad", EVIL)
    assert len(cell) == 3 and set(cell["predicted"]) == {EVIL}


def test_report_holds_the_numbers_escaped_and_self_contained(run_dir):
    page = report.build_report(run_dir)
    metrics = R.read_metrics(run_dir)
    assert page.startswith("<!DOCTYPE html>")
    for key in results.METRICS:
        assert f"{metrics[key]:.1%}" in page
    assert "Of the 25 test faces, the model labelled 16 correctly (64.0%)." in page
    # Every count of the confusion matrix is a cell of its table.
    matrix = page[page.index('<table class="confusion">') :]
    matrix = matrix[: matrix.index("</table>")]
    cells = [int(n) for n in re.findall(r"<td[^>]*>([\d,]+)<br>", matrix)]
    assert cells == CONFUSION.ravel().tolist()
    # Labels from data are escaped; the page has no script and makes no request.
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert not re.search(r"https?:", page)
    assert "<svg" in page and "<polyline" in page  # the curves
    # The dataset has moved: a note instead of faces, and the numbers are all there.
    assert "data:image/png" not in page
    assert "No example faces" in page and "cannot be read" in page


def test_report_of_a_failed_run_shows_its_error(tmp_path):
    run_dir = tmp_path / "failed"
    R.write_json(run_dir / "config.json", {"train": asdict(TrainConfig())})
    R.set_status(run_dir, "failed", error="DatasetError: no usable face <here>")
    page = report.build_report(run_dir)
    assert "failed: DatasetError: no usable face &lt;here&gt;" in page
    assert "There are no test results" in page


def test_report_names_a_runs_teachers_by_file_name_only(tmp_path):
    run_dir = tmp_path / "taught"
    teachers = "/srv/models/big.keras, /srv/runs/other/best.keras"
    R.write_json(run_dir / "config.json", {"train": asdict(TrainConfig(teachers=teachers, distill=0.3))})
    R.set_status(run_dir, "failed", error="stopped")
    page = report.build_report(run_dir)
    assert "<dt>Taught by</dt><dd>big.keras, best.keras (0.3 of each target)</dd>" in page
    assert "/srv" not in page
    plain = tmp_path / "plain"
    R.write_json(plain / "config.json", {"train": asdict(TrainConfig())})
    R.set_status(plain, "failed", error="stopped")
    assert "Taught by" not in report.build_report(plain)


def test_cli_report_writes_the_file(run_dir, tmp_path, capsys):
    out = tmp_path / "shared" / "report.html"
    code = cli.main(["report", str(run_dir), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "16 correctly" in out.read_text()
    assert str(out) in captured.out


def test_cli_report_fails_cleanly_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "report.html"
    code = cli.main(["report", str(tmp_path), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith("error: ") and "config.json" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


# A real tiny training -----------------------------------------------------------------------------


# (The run is conftest's tiny_run: one epoch on the demo dataset, shared with other files.)


@pytest.mark.slow
def test_report_of_a_real_run_shows_its_faces(tiny_run):
    page = report.build_report(tiny_run, faces_per_cell=2)
    metrics = R.read_metrics(tiny_run)
    figures = page.count("<figure")
    assert 0 < figures <= 2 * 2 * len(metrics["labels"])
    assert page.count("data:image/png;base64,") == figures
    assert not re.search(r"https?:", page)
    assert "built-in demo (synthetic)" in page


@pytest.mark.slow
def test_faces_and_counts_of_a_real_run(tiny_run):
    faces = results.run_faces(tiny_run)
    counts = faces.split_counts()
    metrics = R.read_metrics(tiny_run)
    # The counts reproduce the run: its training cap, and its test faces per label.
    assert counts["train"].sum() == R.read_json(tiny_run / "config.json")["train"]["max_faces"]
    assert {label: int(counts.loc[label, "test"]) for label in metrics["labels"]} == {
        label: row["support"] for label, row in metrics["per_class"].items()
    }
    predictions = R.read_predictions(tiny_run)
    crops = faces.crops(predictions.head(5))
    assert all(c is not None and c.shape == (48, 48) and c.dtype == np.uint8 for c in crops)
    assert len({c.tobytes() for c in crops}) == 5  # five different faces, not one repeated
    moved = predictions.head(1).assign(photo="image/not-there.jpg")
    assert faces.crops(moved) == [None]
