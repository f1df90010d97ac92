"""The Results page, driven headless by Streamlit's AppTest: no run yet, a finished tiny run (conftest's
tiny_run), a failed run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import EVIL, known_run
from streamlit.testing.v1 import AppTest

from fer import paths, results
from fer import runs as R
from fer.config import TrainConfig
from pages import common

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
PAGE = "pages/results.py"


def results_page(run: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if run is not None:
        at.session_state[common.RUN] = str(run)
    return at.switch_page(PAGE).run()


def test_no_runs_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "empty-home"))
    at = results_page()
    assert not at.exception
    assert [t.value for t in at.title] == ["Results"]
    assert "Train page" in at.info[0].value and "python -m" not in at.info[0].value
    assert not at.selectbox


@pytest.mark.slow
def test_finished_run_shows_metrics_table_heatmap_and_the_faces_of_a_cell(tiny_run):
    at = results_page(tiny_run)
    assert not at.exception
    metrics = R.read_metrics(tiny_run)
    assert at.selectbox(key="results_run").value == str(tiny_run)
    assert at.session_state[common.RUN] == str(tiny_run)
    # Metric cards, each with its sentence.
    assert [m.label for m in at.metric] == list(results.METRICS.values())
    assert at.metric[0].value == f"{metrics['accuracy']:.1%}"
    captions = [c.value for c in at.caption]
    for sentence in results.sentences(metrics).values():
        assert sentence in captions
    # The per-class table.
    table = at.dataframe[0].value  # the per-class table comes first
    assert table["label"].tolist() == metrics["labels"]
    assert table["support"].sum() == metrics["n"]
    # The confusion matrix heatmap: counts, true labels as rows.
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heatmaps = [trace for chart in charts for trace in chart["data"] if trace["type"] == "heatmap"]
    assert len(heatmaps) == 1
    assert np.asarray(heatmaps[0]["z"]).tolist() == metrics["confusion_matrix"]
    # Choosing a cell with the pickers shows its faces: the fullest cell, so it is never empty.
    cm = np.asarray(metrics["confusion_matrix"])
    true, predicted = np.unravel_index(int(cm.argmax()), cm.shape)
    labels = metrics["labels"]
    at.selectbox(key="results_true").select(labels[true])
    at.selectbox(key="results_predicted").select(labels[predicted]).run()
    assert not at.exception
    count = int(cm[true, predicted])
    assert any(m.value.startswith(f"**{count}** {labels[true]} test face") for m in at.markdown)
    images = at.image
    assert len(images) == 1
    assert len(images[0].value) == min(count, 40)
    assert all(f"{labels[predicted]}" in caption for caption in images[0].captions)
    # The share toggle switches the heatmap to row shares.
    at.toggle(key="results_shares").set_value(True).run()
    heatmap = next(
        t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"] if t["type"] == "heatmap"
    )
    assert np.asarray(heatmap["z"]).sum(axis=1) == pytest.approx(np.ones(len(labels)))
    # The run's model to take elsewhere, beside the report.
    downloads = {button.label: button for button in at.download_button}
    assert {"Report (HTML)", "Model (ONNX)", "Model (TFLite)"} <= set(downloads)
    assert not downloads["Model (ONNX)"].disabled and not downloads["Model (TFLite)"].disabled


def test_failed_run_shows_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    run = R.new_run_dir(paths.runs_dir(), "broken")
    R.write_json(run / "config.json", {"train": {**TrainConfig().__dict__, "datasets": ["/data/gone"]}})
    R.set_status(run, "failed", error="DatasetError: dataset not found: /data/gone does not exist")
    at = results_page(run)
    assert not at.exception
    # The server's path is shortened to its last part: the page is for people outside the server.
    assert "This run failed: DatasetError: dataset not found: gone does not exist" in at.error[0].value
    assert "/data" not in at.error[0].value
    assert not at.metric


def test_running_run_shows_its_progress_and_curves_so_far(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    run = R.new_run_dir(paths.runs_dir(), "live")
    R.write_json(run / "config.json", {"train": {**TrainConfig(epochs=5).__dict__}})
    R.write_csv(
        run / "history.csv",
        pd.DataFrame(
            {
                "epoch": [1, 2],
                "loss": [1.9, 1.6],
                "accuracy": [0.2, 0.3],
                "val_loss": [1.8, 1.7],
                "val_accuracy": [0.25, 0.28],
            }
        ),  # fmt: skip
    )
    R.set_status(run, "running", epoch=2, epochs=5)  # this process's pid: alive, so still running
    at = results_page(run)
    assert not at.exception
    assert "training, epoch 2 of 5" in at.info[0].value
    assert "Time left" in at.info[0].value and "by itself" in at.info[0].value
    assert not [b for b in at.button if b.label == "Refresh"]  # it follows the run without a click
    assert not at.metric
    assert "Training curves" in [s.value for s in at.subheader]
    curves = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert any(trace.get("name") == "validation" for chart in curves for trace in chart["data"])


def test_run_whose_dataset_moved_lists_the_faces_without_images(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    run = known_run(R.new_run_dir(paths.runs_dir(), "moved"))
    at = results_page(run)
    assert not at.exception
    # The largest mistake is chosen first: 3 sad faces called by the label with markup in its name.
    assert at.selectbox(key="results_true").value == "sad"
    assert at.selectbox(key="results_predicted").value == EVIL
    assert "cannot be shown" in at.warning[0].value and "moved-dataset" in at.warning[0].value
    assert not at.image
    assert at.dataframe[1].value["photo"].tolist() == ["img/17.jpg", "img/18.jpg", "img/19.jpg"]
