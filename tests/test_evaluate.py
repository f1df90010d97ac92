"""Scoring (fer.evaluate): the report's metrics as scikit-learn computes them, and a saved model scored
on another dataset whose labels are spelled differently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import folders
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from fer import cli
from fer import datasets as D
from fer import runs as R
from fer.evaluate import evaluate, metrics, predictions_table
from fer.labels import LABELS

FIELDS = ("n", "accuracy", "precision", "recall", "f1", "macro_f1", "labels", "confusion_matrix", "per_class")


# Metrics ------------------------------------------------------------------------------------------


def test_metrics_match_scikit_learn():
    labels = ["angry", "happy", "sad", "surprise", "neutral"]
    rng = np.random.default_rng(0)
    y_true = rng.choice([0, 1, 2, 4], 60)  # "surprise" has no face
    y_pred = np.where(rng.random(60) < 0.6, y_true, rng.choice([0, 1, 3, 4], 60))  # "sad" never predicted
    result = metrics(y_true, y_pred, labels)
    order = list(range(len(labels)))

    assert set(FIELDS) <= set(result)
    assert result["n"] == 60
    assert result["labels"] == labels
    assert result["accuracy"] == accuracy_score(y_true, y_pred)
    for average, keys in (("weighted", ("precision", "recall", "f1")), ("macro", (None, None, "macro_f1"))):
        expected = precision_recall_fscore_support(
            y_true, y_pred, labels=order, average=average, zero_division=0
        )
        for key, value in zip(keys, expected):
            if key:
                assert result[key] == value, key
    assert result["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=order).tolist()
    per_p, per_r, per_f, support = precision_recall_fscore_support(
        y_true, y_pred, labels=order, average=None, zero_division=0
    )
    assert list(result["per_class"]) == labels
    for i, label in enumerate(labels):
        row = result["per_class"][label]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == (
            per_p[i],
            per_r[i],
            per_f[i],
            support[i],
        )
    assert sum(row["support"] for row in result["per_class"].values()) == result["n"]
    assert result["per_class"]["surprise"]["support"] == 0
    json.dumps(result)  # plain Python types only: it is printed as JSON


def test_metrics_on_a_confusion_worked_by_hand():
    # true angry x3: 2 right, 1 called happy; true happy x3: all right
    result = metrics([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1], ["angry", "happy"])
    assert result["confusion_matrix"] == [[2, 1], [0, 3]]
    assert result["accuracy"] == pytest.approx(5 / 6)
    angry = result["per_class"]["angry"]
    assert (angry["precision"], angry["support"]) == (1.0, 3)
    assert (angry["recall"], angry["f1"]) == (pytest.approx(2 / 3), pytest.approx(0.8))
    assert result["per_class"]["happy"]["precision"] == pytest.approx(3 / 4)
    assert result["recall"] == pytest.approx(5 / 6)  # weighted recall is accuracy
    assert result["precision"] == pytest.approx((1.0 + 0.75) / 2)
    assert result["macro_f1"] == pytest.approx((0.8 + 2 * 0.75 / 1.75) / 2)


def test_macro_f1_counts_the_labels_present_and_not_a_missed_face():
    # Three labels known, two present; face 4 was not found by the detector (-1: wrong, but no label).
    result = metrics([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, -1], ["angry", "happy", "sad"])
    angry_f1, happy_f1 = 2 * 2 / (2 + 3), 2 * (2 / 3) * (2 / 3) / (4 / 3)
    assert result["per_class"]["angry"]["f1"] == pytest.approx(angry_f1)
    assert result["per_class"]["happy"]["f1"] == pytest.approx(happy_f1)
    assert result["macro_f1"] == pytest.approx((angry_f1 + happy_f1) / 2)  # not over sad, nor over -1
    assert result["accuracy"] == pytest.approx(4 / 6)


def test_metrics_refuse_no_faces():
    with pytest.raises(ValueError, match="no faces"):
        metrics([], [], ["angry", "happy"])


def test_predictions_table_has_a_probability_per_label():
    faces = pd.DataFrame(
        {"photo": ["a.jpg", "b.jpg"], "face": [0, 1], "label": ["happy", "sad"], "top": [1, 2]}
    )
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)
    table = predictions_table(faces, ["happy", "sad", "neutral"], probabilities)
    assert list(table.columns) == [
        "photo", "face", "label", "predicted", "probability", "p_happy", "p_sad", "p_neutral",
    ]  # fmt: skip
    assert table["predicted"].tolist() == ["happy", "neutral"]
    np.testing.assert_allclose(table["probability"], [0.7, 0.6])


# A trained model on other data --------------------------------------------------------------------


@pytest.fixture
def trained(tiny_run):
    """conftest's tiny run (one epoch on the demo dataset, all seven labels): its dataset, config and
    folder."""
    config = R.read_json(tiny_run / "config.json")["train"]
    return config["datasets"][0], config, tiny_run


@pytest.fixture
def other_spelling(tmp_path) -> Path:
    """Image folders with labels spelled another way, and one label the model never saw."""
    return folders(tmp_path / "faces", {"Happiness": 3, "surprised": 3, "contempt": 2})


@pytest.mark.slow
def test_evaluate_matches_labels_by_name(trained, other_spelling):
    _, _, run_dir = trained
    result, predictions = evaluate(str(other_spelling), run_dir / "best.keras", split="all")
    assert set(FIELDS) <= set(result)
    assert result["labels"] == list(LABELS)  # the model's labels, in its output order
    assert result["n"] == 6
    assert result["unscored"] == 2  # contempt: a label the model does not know
    supports = {label: row["support"] for label, row in result["per_class"].items()}
    assert supports == {label: {"happy": 3, "surprise": 3}.get(label, 0) for label in LABELS}
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum(axis=1).tolist() == [supports[label] for label in LABELS]
    assert result["split"] == "all"
    assert len(predictions) == 6
    assert sorted(predictions["label"]) == ["happy"] * 3 + ["surprise"] * 3
    assert [f"p_{label}" for label in LABELS] == [c for c in predictions.columns if c.startswith("p_")]
    right = int((predictions["predicted"] == predictions["label"]).sum())
    assert right == int(np.trace(matrix))


@pytest.mark.slow
def test_evaluate_on_the_training_dataset_scores_the_runs_test_faces(trained):
    dataset, config, run_dir = trained
    result, _ = evaluate(dataset, run_dir / "best.keras", batch_size=config["batch_size"])
    saved = R.read_json(run_dir / "metrics.json")
    assert result["unscored"] == 0
    for field in ("n", "accuracy", "f1", "confusion_matrix"):
        assert result[field] == saved[field], field
    every, _ = evaluate(dataset, run_dir / "best.keras", split="all")
    assert every["n"] == len(D.load(dataset).faces)


@pytest.mark.slow
def test_evaluate_refuses_data_without_a_known_label(trained, tmp_path):
    from fer.datasets import DatasetError

    _, _, run_dir = trained
    only_unknown = folders(tmp_path / "faces", {"contempt": 2})
    with pytest.raises(DatasetError, match="labels the model knows"):
        evaluate(str(only_unknown), run_dir / "best.keras", split="all")
    with pytest.raises(ValueError, match="split"):
        evaluate(str(only_unknown), run_dir / "best.keras", split="train")


@pytest.mark.slow
def test_cli_evaluate_prints_json(trained, other_spelling, tmp_path, capsys):
    _, _, run_dir = trained
    predictions = tmp_path / "predictions.csv"
    argv = ["evaluate", str(other_spelling), "--model", str(run_dir / "best.keras"), "--split", "all"]
    code = cli.main([*argv, "--json", "--predictions", str(predictions)])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert set(FIELDS) <= set(result)
    assert (result["n"], result["unscored"]) == (6, 2)
    assert result["labels"] == list(LABELS)
    assert sum(row["support"] for row in result["per_class"].values()) == 6
    assert len(pd.read_csv(predictions)) == 6

    assert cli.main(argv) == 0  # the table form
    table = capsys.readouterr().out
    assert "6 faces: accuracy" in table and "confusion matrix" in table


def test_cli_evaluate_reports_a_bad_model_on_stderr(tmp_path, other_spelling, capsys):
    bogus = tmp_path / "model.keras"
    bogus.write_text("not a model")
    code = cli.main(["evaluate", str(other_spelling), "--model", str(bogus), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "not a model saved by fer train" in captured.err
