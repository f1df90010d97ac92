"""The bundled model, models/default.keras: it loads, its metadata says what it does, and its
recorded held-out scores are what `evaluate` measures on the real datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fer import cli
from fer.labels import LABELS
from fer.modelfile import load_model, predict_probabilities
from fer.paths import BUNDLED_MODEL

# The bundled model scores 0.7094 on FER2013 test (README); a bundled model must reach at least 0.68
# (the report's own CNN trained here scores 0.5734, the previous CPU-trained bundled model 0.6634).
FLOOR = 0.68


@pytest.fixture(scope="module")
def bundled():
    assert BUNDLED_MODEL.is_file(), f"{BUNDLED_MODEL} is missing: scripts/train_bundled.sh rebuilds it"
    return load_model(BUNDLED_MODEL)


def test_bundled_model_is_small_and_its_metadata_matches_the_network(bundled):
    model, metadata = bundled
    assert BUNDLED_MODEL.stat().st_size < 12_000_000  # vgg width 48: 2.8 million float32 weights
    assert metadata["labels"] == list(LABELS)
    size = metadata["image_size"]
    assert tuple(model.input_shape[1:3]) == (size, size)
    assert model.output_shape[-1] == len(metadata["labels"])
    assert "python -m fer train" in metadata["command"]
    assert {"fer2013", "expw-sample", "expw-sample [blazeface]"} <= set(metadata["test_metrics"])
    assert metadata["flip"] is True  # each face read with its mirror image, as calibrated
    # FER2013 and expw-sample, pooled
    assert sorted(Path(root).name for root in metadata["dataset_roots"]) == ["expw-sample", "fer2013"]
    faces = np.random.default_rng(0).integers(0, 256, (3, size, size), dtype=np.uint8)
    probabilities = predict_probabilities(model, faces)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_bundled_model_carries_a_calibration_that_lowers_its_calibration_error(bundled):
    _, metadata = bundled
    entry = metadata["calibration"]
    assert entry["method"] == "temperature" and entry["temperature"] > 1  # it was over-confident
    assert entry["faces"] == 3589 + 283  # FER2013 val and expw-sample val
    assert entry["ece_after"] < entry["ece_before"]


@pytest.mark.realdata
@pytest.mark.slow
def test_bundled_model_scores_what_it_records_on_fer2013_test(bundled, fer2013, capsys):
    _, metadata = bundled
    assert cli.main(["evaluate", str(fer2013), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    recorded = metadata["test_metrics"]["fer2013"]
    assert result["n"] == recorded["n"] == 3589
    assert result["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert result["accuracy"] > FLOOR
