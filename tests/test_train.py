"""Training (fer.train), its augmentation (fer.augment) and the run store (fer.runs), on tiny datasets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import RUN_FILES, expw_faces, suite_home

import fer.faces
from fer import augment as augment_module
from fer import cli
from fer import runs as R
from fer import train as T
from fer.augment import AugmentSettings, augment
from fer.config import ModelConfig, TrainConfig
from fer.evaluate import export_model
from fer.faces import Split
from fer.labels import LABELS
from fer.modelfile import load_model, predict_probabilities, read_metadata

ROOT = Path(__file__).resolve().parents[1]

# Small enough for a loaded two-core machine: a few seconds per epoch including graph tracing.
TINY = {"arch": "vgg-small", "width": 4, "image_size": 48, "batch_size": 8}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The FER_HOME of conftest's autouse fixture, for module-scoped fixtures that run before it."""
    return suite_home(tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """ExpW, 42 photos of one face each, labels cycling through all seven: 28 train, 7 val, 7 test."""
    return expw_faces(tmp_path_factory.mktemp("train-data") / "expw", 42)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dataset, home):
    """One finished two-epoch run (with class weighting), shared by the run-folder tests."""
    config = TrainConfig(datasets=(str(tiny_dataset),), epochs=2, class_weight=True, seed=3, **TINY)
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_HOME", str(home))
        metrics = T.train(config, run_dir)
    return config, run_dir, metrics


# A finished run -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_folder_holds_every_file(finished_run):
    config, run_dir, metrics = finished_run
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name], "temporary files were left behind"
    status = R.read_status(run_dir)
    assert status["state"] == "done"
    assert status.get("error") is None
    assert R.read_json(run_dir / "labels.json") == list(LABELS)
    saved = R.read_json(run_dir / "config.json")
    assert TrainConfig.from_dict(saved["train"]) == config
    assert ModelConfig.from_dict(saved["model"]) == config.model_config(num_classes=7)
    assert R.read_json(run_dir / "state.json")["epoch"] == 2


@pytest.mark.slow
def test_history_has_one_row_per_epoch(finished_run):
    _, run_dir, _ = finished_run
    history = R.read_history(run_dir)
    assert history["epoch"].tolist() == [1, 2]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"):
        assert history[column].notna().all(), column


@pytest.mark.slow
def test_metrics_and_predictions(finished_run):
    _, run_dir, metrics = finished_run
    saved = R.read_json(run_dir / "metrics.json")
    for field in (
        "n",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "macro_f1",
        "labels",
        "confusion_matrix",
        "per_class",
    ):
        assert field in saved, field
    assert saved["n"] == metrics["n"] == 7  # one test photo per label
    assert saved["labels"] == list(LABELS)
    assert np.array(saved["confusion_matrix"]).sum() == saved["n"]
    assert set(saved["per_class"]) == set(LABELS)
    assert 0 <= saved["accuracy"] <= 1
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert len(predictions) == saved["n"]
    probabilities = predictions[[f"p_{label}" for label in LABELS]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert (predictions["predicted"] == [LABELS[i] for i in probabilities.argmax(axis=1)]).all()
    accuracy = float((predictions["predicted"] == predictions["label"]).mean())
    assert accuracy == pytest.approx(saved["accuracy"])


@pytest.mark.slow
def test_saved_model_carries_its_config(finished_run):
    config, run_dir, metrics = finished_run
    metadata = read_metadata(run_dir / "best.keras")
    assert metadata["labels"] == list(LABELS)
    assert metadata["image_size"] == config.image_size
    assert ModelConfig.from_dict(metadata["model"]) == config.model_config(num_classes=7)
    assert metadata["model"] == asdict(config.model_config(num_classes=7))
    assert TrainConfig.from_dict(metadata["train"]) == config
    assert metadata["test_metrics"]["accuracy"] == metrics["accuracy"]
    model, loaded = load_model(run_dir / "best.keras")
    assert loaded == metadata
    assert model.output_shape == (None, len(metadata["labels"]))
    assert model.input_shape == (None, config.image_size, config.image_size, 1)
    assert read_metadata(run_dir / "last.keras")["labels"] == list(LABELS)


@pytest.mark.slow
def test_a_run_can_start_from_a_saved_model_grown_wider(finished_run, tiny_dataset, tmp_path):
    from dataclasses import replace

    from fer.models import build

    config, run_dir, _ = finished_run
    source, _ = load_model(run_dir / "best.keras")
    wider = replace(config, width=config.width * 2, epochs=1, init_from=str(run_dir / "best.keras"))
    model = build(wider.model_config(num_classes=7))
    T._start_from(model, run_dir / "best.keras", list(LABELS))
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(faces)), np.asarray(source(faces)), atol=1e-5)

    with pytest.raises(ValueError, match="labels .* are not this run's"):
        T._start_from(model, run_dir / "best.keras", list(reversed(LABELS)))
    with pytest.raises(ValueError, match="reads 48 px faces, this run 64 px; use --image-size 48"):
        T._start_from(
            build(replace(wider, image_size=64).model_config(num_classes=7)),
            run_dir / "best.keras",
            list(LABELS),
        )
    with pytest.raises(ValueError, match="no such model file"):
        T._start_from(model, tmp_path / "missing.keras", list(LABELS))

    metrics = T.train(wider, tmp_path / "grown")
    assert metrics["n"] == 7
    saved = R.read_json(tmp_path / "grown" / "config.json")
    assert saved["train"]["init_from"] == str(run_dir / "best.keras")
    assert read_metadata(tmp_path / "grown" / "best.keras")["model"]["width"] == config.width * 2


@pytest.mark.slow
def test_a_model_is_fine_tuned_on_data_with_only_some_of_its_labels(finished_run, tmp_path):
    from dataclasses import replace

    from helpers import folders

    config, run_dir, _ = finished_run
    two = folders(tmp_path / "two", {"happy": 20, "sad": 20})
    tuned = replace(
        config, datasets=(str(two),), epochs=1, class_weight=False, init_from=str(run_dir / "best.keras")
    )
    metrics = T.train(tuned, tmp_path / "tuned")
    assert read_metadata(tmp_path / "tuned" / "best.keras")["labels"] == list(LABELS)  # the model's seven
    predictions = pd.read_csv(tmp_path / "tuned" / "predictions.csv")
    assert set(predictions["label"]) <= {"happy", "sad"} and len(predictions) == metrics["n"]
    assert metrics["per_class"]["happy"]["support"] + metrics["per_class"]["sad"]["support"] == metrics["n"]
    from sklearn.metrics import f1_score  # macro F1 over the labels present, as scikit-learn's default

    assert metrics["macro_f1"] == pytest.approx(
        f1_score(predictions["label"], predictions["predicted"], average="macro")
    )

    odd = folders(tmp_path / "odd", {"happy": 20, "bored": 20})
    with pytest.raises(ValueError, match="the data also has bored; train a new model"):
        T.train(replace(tuned, datasets=(str(odd),)), tmp_path / "odd-run")


def test_read_metadata_refuses_a_file_that_is_not_a_model(tmp_path):
    bogus = tmp_path / "model.keras"
    bogus.write_text("not a zip")
    with pytest.raises(ValueError, match="not a model saved by fer train"):
        read_metadata(bogus)


@pytest.mark.slow
def test_label_smoothing_and_class_weight_run(tmp_path, tiny_dataset):
    import keras

    config = TrainConfig(
        datasets=(str(tiny_dataset),),
        epochs=1,
        label_smoothing=0.1,
        class_weight=True,
        augment=False,
        **TINY,
    )
    metrics = T.train(config, tmp_path / "run")
    assert metrics["n"] == 7
    assert R.read_status(tmp_path / "run")["state"] == "done"
    model = keras.saving.load_model(tmp_path / "run" / "last.keras")  # compiled, as training left it
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)


@pytest.mark.slow
def test_a_cancel_file_stops_the_run(tmp_path, tiny_dataset, monkeypatch):
    run_dir = tmp_path / "run"
    load_splits = fer.faces.load_splits

    def load_then_cancel(*args, **kwargs):  # train() removes a stale cancel file first; ask after that
        result = load_splits(*args, **kwargs)
        (run_dir / "cancel").touch()
        return result

    monkeypatch.setattr(fer.faces, "load_splits", load_then_cancel)
    config = TrainConfig(datasets=(str(tiny_dataset),), epochs=3, **TINY)
    assert T.train(config, run_dir) == {}
    assert R.read_status(run_dir)["state"] == "cancelled"
    assert not (run_dir / "metrics.json").exists()
    progress = R.read_json(run_dir / "progress.json")
    assert (progress["epoch"], progress["batches"]) == (1, 4)
    assert progress["batch"] < progress["batches"], "the run finished its epoch before stopping"
    # The cut epoch is not recorded as finished (Keras still validates and ends it): a resume
    # trains it again from its first batch.
    assert len(R.read_history(run_dir)) == 0
    assert not (run_dir / "last.keras").exists() and not (run_dir / "best.keras").exists()
    (run_dir / "cancel").unlink(missing_ok=True)
    monkeypatch.setattr(fer.faces, "load_splits", load_splits)
    T.train(config, run_dir, resume=True)
    assert R.read_history(run_dir)["epoch"].tolist() == [1, 2, 3]
    assert R.read_status(run_dir)["state"] == "done"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("arch", "resnet"),
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("label_smoothing", 1.0),
        ("strategy", "horovod"),
        ("max_faces", 0),
        ("datasets", ()),
        ("precision", "float16"),
        ("distill", 0.0),
    ],
)
def test_train_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_train_config_round_trips_through_json():
    config = TrainConfig(datasets=("a", "b"), arch="seed", epochs=2, max_faces=10, min_confidence=0.5)
    assert TrainConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config


# Precision ----------------------------------------------------------------------------------------


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: x\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\n")
    monkeypatch.setattr(T, "CPUINFO", cpuinfo)
    assert {"avx512f", "avx512_bf16", "amx_tile"} <= T.cpu_flags()
    assert T.bfloat16_cpu()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert not T.bfloat16_cpu()
    monkeypatch.setattr(T, "CPUINFO", tmp_path / "missing")  # not Linux: no bfloat16, no error
    assert T.cpu_flags() == set()
    assert not T.bfloat16_cpu()


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"amx_bf16"}])
def test_auto_precision_is_bfloat16_on_a_cpu_with_bfloat16_instructions(monkeypatch, flags):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("auto is float32 on other backends")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("auto is float32 where there is a GPU")
    monkeypatch.setattr(T, "cpu_flags", lambda: {"fpu", "avx512f", *flags})
    assert T.precision("auto") == "bfloat16"


def test_auto_precision_falls_back_to_float32_without_bfloat16_instructions(monkeypatch):
    monkeypatch.setattr(T, "cpu_flags", lambda: {"fpu", "sse", "avx2", "avx512f"})
    assert T.precision("auto") == "float32"
    assert T.precision("bfloat16") == "bfloat16"  # asked for by name: given, whatever the CPU
    monkeypatch.setattr(T, "cpu_flags", lambda: {"avx512_bf16"})
    assert T.precision("float32") == "float32"


@pytest.mark.slow
def test_a_bfloat16_run_saves_a_float32_best_model(tmp_path, tiny_dataset):
    import keras

    from fer.models import is_mixed

    config = TrainConfig(datasets=(str(tiny_dataset),), epochs=1, precision="bfloat16", **TINY)
    metrics = T.train(config, tmp_path / "run")
    assert R.read_status(tmp_path / "run")["state"] == "done"
    best, metadata = load_model(tmp_path / "run" / "best.keras")
    assert metadata["trained_in"] == "bfloat16"
    assert metadata["train"]["precision"] == "bfloat16"
    assert not is_mixed(best)
    assert all(layer.compute_dtype == "float32" for layer in best.layers)
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    probabilities = predict_probabilities(best, faces, 4)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert metrics["n"] == 7
    # last.keras keeps training's precision, so a resume carries on in it.
    assert is_mixed(keras.saving.load_model(tmp_path / "run" / "last.keras"))
    assert read_metadata(tmp_path / "run" / "last.keras")["trained_in"] == "bfloat16"


@pytest.mark.slow
def test_a_float32_run_records_it(tmp_path, tiny_dataset):
    config = TrainConfig(datasets=(str(tiny_dataset),), epochs=1, precision="float32", **TINY)
    T.train(config, tmp_path / "run")
    assert read_metadata(tmp_path / "run" / "best.keras")["trained_in"] == "float32"
    assert read_metadata(tmp_path / "run" / "last.keras")["trained_in"] == "float32"


# Fused batch norm ---------------------------------------------------------------------------------


def _twins(precision: str):
    """A vgg-lite and a copy with the same weights whose batch norms are fused."""
    import keras

    from fer.models import build

    keras.utils.set_random_seed(0)
    plain = build(ModelConfig(arch="vgg-lite", num_classes=4, width=4, dropout=0.0), precision)
    fused = keras.models.clone_model(plain)
    fused.set_weights(plain.get_weights())
    assert T.fuse_batch_norms(fused) == 7  # six after convolutions, one after the Dense layer
    return plain, fused


def _step(model, x, y):
    """One training-mode forward and backward pass: the probabilities and the gradients."""
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        probabilities = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
    return np.asarray(probabilities), [np.asarray(g) for g in tape.gradient(loss, model.trainable_variables)]


def _one_step_each(precision: str):
    """The twins, a batch, and each twin's training step on it."""
    plain, fused = _twins(precision)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (6, 48, 48, 1)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    return plain, fused, x, _step(plain, x, y), _step(fused, x, y)


def _moving(model):
    return [np.asarray(w) for layer in model.layers if type(layer).__name__ == "BatchNormalization" for w in
            (layer.moving_mean, layer.moving_variance)]  # fmt: skip


def test_fused_batch_norms_train_as_keras_does():
    """The fused kernel computes Keras' batch norm: the same probabilities in training, the same
    gradients and the same moving statistics after a step, then the same answers at inference."""
    plain, fused, x, (p1, g1), (p2, g2) = _one_step_each("float32")
    np.testing.assert_allclose(p2, p1, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4 * max(1.0, float(np.abs(a).max())))
    for a, b in zip(_moving(plain), _moving(fused), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(_moving(plain)[0], 0.0)  # the step moved them, so their equality says something
    np.testing.assert_allclose(
        np.asarray(fused(x, training=False)), np.asarray(plain(x, training=False)), atol=1e-5
    )


def test_fused_batch_norms_train_as_keras_does_in_bfloat16():
    """In bfloat16 the convolutions round, so the two agree closely rather than exactly; the kernel
    normalises in float32, as Keras' layer does."""
    _, _, _, (p1, g1), (p2, g2) = _one_step_each("bfloat16")
    np.testing.assert_allclose(p2, p1, atol=2e-2)
    cosines = [
        float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())) for a, b in zip(g1, g2, strict=True)
    ]
    assert min(cosines) > 0.99, cosines


def test_fused_batch_norms_keep_keras_moving_statistics_in_bfloat16():
    """In bfloat16 the kernel normalises in float32 as Keras does, and keeps the moving variance
    without Bessel's correction (a batch of 2 faces of 2x2 pixels: n = 8, a correction of 8/7)."""
    import keras

    x = np.random.default_rng(2).normal(2, 3, (2, 2, 2, 3)).astype(np.float32)
    plain, fused = (keras.layers.BatchNormalization(momentum=0.5, dtype="mixed_bfloat16") for _ in range(2))
    assert T.fuse_batch_norms(keras.Sequential([keras.Input((2, 2, 3)), fused])) == 1
    plain.build(x.shape)
    out1, out2 = (np.asarray(layer(x, training=True), dtype=np.float32) for layer in (plain, fused))
    np.testing.assert_allclose(out2, out1, atol=1e-2)
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-4)


def test_a_fused_model_saves_and_loads_as_plain_keras(tmp_path):
    import keras

    _, fused = _twins("float32")
    keras.saving.save_model(fused, tmp_path / "fused.keras")
    loaded = keras.saving.load_model(tmp_path / "fused.keras")
    norms = [layer for layer in loaded.layers if "Normalization" in type(layer).__name__]
    assert len(norms) == 7 and all(type(layer) is keras.layers.BatchNormalization for layer in norms)
    assert not any("call" in vars(layer) for layer in norms)  # Keras' own layer, as saved
    x = np.random.default_rng(3).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(fused(x)), atol=1e-6)


@pytest.mark.slow
def test_training_fuses_its_batch_norms(tmp_path, tiny_dataset, monkeypatch):
    fused = []
    real = T.fuse_batch_norms
    monkeypatch.setattr(T, "fuse_batch_norms", lambda model: fused.append(real(model)) or fused[-1])
    T.train(TrainConfig(datasets=(str(tiny_dataset),), epochs=1, **TINY), tmp_path / "run")
    assert fused == [4]  # vgg-small's four convolution blocks
    T.train(TrainConfig(datasets=(str(tiny_dataset),), epochs=2, **TINY), tmp_path / "run", resume=True)
    assert fused == [4, 4]  # a resumed run's model, loaded from last.keras, is fused too


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        T.train(TrainConfig(), tmp_path / "empty", resume=True)


# Batches ------------------------------------------------------------------------------------------


def _split(n: int = 20, size: int = 48) -> Split:
    images = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)
    y = np.arange(n) % 3
    return Split(images, pd.DataFrame({"label": y}), y)


def test_validation_batches_are_the_faces_in_order():
    split = _split()
    config = TrainConfig(batch_size=8)
    data = T.Batches(split, config, training=False, num_classes=3)
    assert len(data) == 3
    xs, ys = zip(*(data[i] for i in range(len(data))))
    assert [len(y) for y in ys] == [8, 8, 4]
    x = np.concatenate(xs)
    assert x.shape == (20, 48, 48, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], split.images)
    np.testing.assert_array_equal(np.concatenate(ys), split.y)


def test_training_batches_shuffle_augment_and_smooth():
    split = _split()
    config = TrainConfig(batch_size=8, label_smoothing=0.1)
    data = T.Batches(split, config, training=True, num_classes=3)
    xs, ys = zip(*(data[i] for i in range(len(data))))
    y = np.concatenate(ys)
    assert y.shape == (20, 3)  # one-hot for the categorical loss
    np.testing.assert_array_equal(np.sort(y.argmax(axis=1)), np.sort(split.y))
    assert np.concatenate(xs).shape == (20, 48, 48, 1)
    assert not np.array_equal(xs[0][..., 0], split.images[:8].astype(np.float32))  # augmented
    first_epoch = data.order.copy()
    data.on_epoch_end()
    assert sorted(data.order) == list(range(20))
    assert not np.array_equal(first_epoch, data.order)  # a new order every epoch


def test_training_batches_mix_the_teachers_answers_into_the_targets():
    split = _split()
    config = TrainConfig(batch_size=8, teachers="a.keras", distill=0.25)
    answers = np.array([0.5, 0.3, 0.2], dtype=np.float32)
    seen = []

    def teacher(faces):
        seen.append(faces.shape)
        return np.tile(answers, (len(faces), 1))

    x, y = T.Batches(split, config, training=True, num_classes=3, teacher=teacher)[0]
    assert seen == [(8, 48, 48)]  # the teacher reads the augmented faces the model is taught
    truth = np.eye(3, dtype=np.float32)[y.argmax(axis=1)]
    np.testing.assert_allclose(y, 0.75 * truth + 0.25 * answers, rtol=1e-6)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    _, val_y = T.Batches(split, config, training=False, num_classes=3, teacher=teacher)[0]
    np.testing.assert_array_equal(val_y, np.eye(3, dtype=np.float32)[split.y[:8]])  # val: the labels alone
    assert len(seen) == 1


def test_a_teacher_answers_in_the_runs_label_order_and_face_size(finished_run):
    config, run_dir, _ = finished_run
    labels = read_metadata(run_dir / "best.keras")["labels"]
    taught = replace(config, teachers=f"{run_dir / 'best.keras'},{run_dir / 'best.keras'}")
    read = T.teacher(taught, labels)
    faces = np.random.default_rng(0).uniform(0, 255, (5, 48, 48)).astype(np.float32)
    model, metadata = load_model(run_dir / "best.keras")
    np.testing.assert_allclose(
        read(faces), predict_probabilities(model, faces, metadata=metadata), rtol=1e-5, atol=1e-6
    )
    # Matched by name: a run whose labels come in another order gets the answers in its order.
    np.testing.assert_allclose(read(faces)[:, ::-1], T.teacher(taught, labels[::-1])(faces), rtol=1e-6)
    with pytest.raises(ValueError, match="knows the expressions .*, not this run's"):
        T.teacher(taught, labels[:-1])
    with pytest.raises(ValueError, match="reads 48 px faces, not this run's 64 px"):
        T.teacher(replace(taught, image_size=64), labels)
    with pytest.raises(ValueError, match="--teachers .*nothing.keras: no such model file"):
        T.teacher(replace(taught, teachers=str(run_dir / "nothing.keras")), labels)
    assert T.teacher(config, labels) is None


def test_a_run_with_teachers_trains_and_records_them(finished_run, tiny_dataset, tmp_path):
    _, run_dir, _ = finished_run
    config = TrainConfig(
        datasets=(str(tiny_dataset),), epochs=1, teachers=str(run_dir / "best.keras"), distill=0.7, **TINY
    )
    T.train(config, tmp_path / "taught")
    train = read_metadata(tmp_path / "taught" / "best.keras")["train"]
    assert (train["teachers"], train["distill"]) == (str(run_dir / "best.keras"), 0.7)
    args = cli.train_args(config, tmp_path / "again")
    parsed = cli.train_config(cli.build_parser().parse_args(["train", *args]))
    assert parsed == replace(config, datasets=parsed.datasets)


def _epochs_through_keras(data, epochs: int = 2) -> list[np.ndarray]:
    """What Keras' fit feeds the model, epoch by epoch, through its threaded enqueuer."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(data, shuffle=False)
    seen = []
    for _ in range(epochs):
        adapter.on_epoch_begin()
        seen.append(np.concatenate([np.asarray(x) for x, _ in adapter.get_numpy_iterator()]))
        adapter.on_epoch_end()
    return seen


def test_loader_threads_make_the_same_batches_as_one(monkeypatch):
    split = _split(n=40)
    config = TrainConfig(batch_size=4)
    runs = {}
    for threads in (1, 3):
        monkeypatch.setenv("FER_LOADER_THREADS", str(threads))
        data = T.Batches(split, config, training=True, num_classes=3)
        assert data.workers == threads
        runs[threads] = _epochs_through_keras(data)
    for one, three in zip(runs[1], runs[3]):
        np.testing.assert_array_equal(one, three)
    assert not np.array_equal(runs[1][0], runs[1][1])  # each epoch its own order and augmentation


@pytest.mark.parametrize("value", ["0", "many", "100"])
def test_a_wrong_loader_thread_count_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("FER_LOADER_THREADS", value)
    with pytest.raises(ValueError, match="FER_LOADER_THREADS"):
        T.Batches(_split(), TrainConfig(), training=True, num_classes=3)


# Augmentation -------------------------------------------------------------------------------------

NONE = AugmentSettings(flip=False, max_shift=0, max_rotation=0, max_zoom=0, max_contrast=0, max_brightness=0)


def _faces(n: int = 12, size: int = 40) -> np.ndarray:
    """Faces with structure (a gradient) and noise, so any transform shows."""
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 200, size)[None, None, :] + np.linspace(0, 50, size)[None, :, None]
    return np.clip(ramp + rng.integers(0, 50, (n, size, size)), 0, 255).astype(np.uint8)


def test_augment_shape_dtype_and_range():
    faces = _faces()
    out = augment(faces, np.random.default_rng(0))
    assert out.shape == faces.shape
    assert out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    extreme = augment(np.full((4, 40, 40), 250, np.uint8), np.random.default_rng(0))
    assert extreme.max() <= 255  # brightness and contrast are clipped


def test_augment_with_nothing_enabled_gives_the_faces_back():
    faces = _faces()
    np.testing.assert_allclose(augment(faces, np.random.default_rng(0), NONE), faces, atol=1e-3)


def test_flip_only_gives_the_face_or_its_mirror():
    faces = _faces(n=24)
    out = augment(faces, np.random.default_rng(0), AugmentSettings(**{**asdict(NONE), "flip": True}))
    flipped = 0
    for face, result in zip(faces, out):
        if np.allclose(result, face[:, ::-1], atol=1e-3):
            flipped += 1
        else:
            np.testing.assert_allclose(result, face, atol=1e-3)
    assert 0 < flipped < len(faces)


def test_augment_is_deterministic_for_a_seed():
    faces = _faces()
    first = augment(faces, np.random.default_rng(7))
    np.testing.assert_array_equal(first, augment(faces, np.random.default_rng(7)))
    assert not np.array_equal(first, augment(faces, np.random.default_rng(8)))


def test_default_augmentation_changes_every_face():
    faces = _faces()
    out = augment(faces, np.random.default_rng(0))
    change = np.abs(out - faces).mean(axis=(1, 2))
    assert (change > 1.0).all(), change


def test_opencv_and_numpy_warps_sample_the_same_points():
    """OpenCV places its sampling points to 1/32 of a pixel; NumPy exactly. Same transforms, so the
    faces differ by a fraction of a grey level on average, and a few levels at most on sharp edges."""
    faces = _faces(n=32).astype(np.float32)
    rng = np.random.default_rng(2)
    angle = rng.uniform(-0.3, 0.3, 32)
    zoom = rng.uniform(0.8, 1.2, (32, 1))
    matrices = (
        np.stack(
            [
                np.stack([np.cos(angle), np.sin(angle), rng.uniform(-6, 6, 32)], axis=1),
                np.stack([-np.sin(angle), np.cos(angle), rng.uniform(-6, 6, 32)], axis=1),
            ],
            axis=1,
        )
        / zoom[:, :, None]
    )
    fast, exact = augment_module._warp(faces, matrices), augment_module._warp_numpy(faces, matrices)
    difference = np.abs(fast - exact)
    assert difference.mean() < 0.5 and difference.max() < 12, (difference.mean(), difference.max())
    assert np.abs(fast - faces).mean() > 5  # the transforms did move the faces


def test_augment_works_without_opencv(monkeypatch):
    faces = _faces()
    with_opencv = augment(faces, np.random.default_rng(4))
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    without = augment(faces, np.random.default_rng(4))
    assert np.abs(with_opencv - without).mean() < 0.5


def test_erasing_covers_one_rectangle_of_some_faces_and_leaves_the_others():
    faces = _faces(n=64)
    settings = AugmentSettings(**{**asdict(NONE), "erase": 0.5})
    out = augment(faces, np.random.default_rng(3), settings)
    changed = np.abs(out - faces) > 1e-3
    erased = changed.any(axis=(1, 2))
    assert 10 < erased.sum() < 54  # about half
    for mask in changed[erased]:
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert mask.sum() >= 0.8 * box  # one solid rectangle (noise may match a pixel or two)
        assert box <= 0.25 * mask.size + 2 * max(mask.shape)  # at most a quarter, give or take rounding
    np.testing.assert_allclose(out[~erased], faces[~erased], atol=1e-3)


def test_erase_and_weight_decay_are_checked_and_reach_the_command_line():
    with pytest.raises(ValueError, match="erase"):
        TrainConfig(erase=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(weight_decay=-0.1)
    args = cli.build_parser().parse_args(
        ["train", "demo", "--run-dir", "r", "--erase", "0.5", "--weight-decay", "0.05"]
    )
    config = cli.train_config(args)
    assert (config.erase, config.weight_decay) == (0.5, 0.05)


# The run store ------------------------------------------------------------------------------------


def test_write_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "status.json"
    R.write_json(target, {"state": "running"})

    def broken(path: Path) -> None:
        path.write_text('{"state": "do')  # half written, then the writer dies
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        R.write_atomic(target, broken)
    assert R.read_json(target) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary file left
    R.write_json(target, {"state": "done"})
    assert R.read_json(target) == {"state": "done"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_read_status_turns_a_dead_running_process_into_interrupted(tmp_path):
    R.set_status(tmp_path, "running", epoch=1)
    assert R.read_status(tmp_path)["state"] == "running"  # this process: alive

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # reaped: the pid is gone
    status = R.read_json(tmp_path / "status.json")
    R.write_json(tmp_path / "status.json", {**status, "pid": finished.pid})
    read = R.read_status(tmp_path)
    assert read["state"] == "interrupted"
    assert read["epoch"] == 1
    assert "killed or crashed" in read["error"]

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        if not Path(f"/proc/{zombie.pid}").exists():
            pytest.skip("no /proc: cannot tell a zombie from a live process here")
        deadline = time.monotonic() + 30
        while Path(f"/proc/{zombie.pid}/stat").read_text().split()[2] != "Z":  # exited, not reaped
            assert time.monotonic() < deadline
            time.sleep(0.05)
        R.write_json(tmp_path / "status.json", {**status, "pid": zombie.pid})
        assert R.read_status(tmp_path)["state"] == "interrupted"
    finally:
        zombie.wait()

    R.set_status(tmp_path, "done")
    R.write_json(tmp_path / "status.json", {**R.read_json(tmp_path / "status.json"), "pid": finished.pid})
    assert R.read_status(tmp_path)["state"] == "done"  # only running / queued runs can be interrupted
    assert R.read_status(tmp_path / "nothing")["state"] == "interrupted"


def test_new_run_dir_is_unique(tmp_path):
    first = R.new_run_dir(tmp_path, "trial")
    second = R.new_run_dir(tmp_path, "trial")
    unnamed = [R.new_run_dir(tmp_path) for _ in range(3)]  # same second: still distinct
    folders = [first, second, *unnamed]
    assert len(set(folders)) == 5
    assert all(folder.is_dir() and folder.parent == tmp_path for folder in folders)
    assert first.name == "trial"


def test_new_run_dir_defaults_to_fer_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path))
    assert R.new_run_dir().parent == tmp_path / "runs"


def test_list_runs_newest_first(tmp_path):
    now = time.time()
    for age, name in ((30, "old"), (10, "new"), (20, "middle")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        os.utime(folder / "config.json", (now - age, now - age))
    (tmp_path / "not-a-run").mkdir()  # no config.json
    (tmp_path / "file.txt").write_text("x")
    assert [p.name for p in R.list_runs(tmp_path)] == ["new", "middle", "old"]
    assert R.list_runs(tmp_path / "missing") == []


# Kill and resume ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_run_reads_interrupted_and_resumes_to_the_end(tmp_path):
    import keras

    # 196 photos (below the size that starts worker processes); batch size 1 makes an epoch last a few
    # seconds, so a kill right after epoch 1 lands inside epoch 2 (or, on a machine slow to notice the
    # first epoch, inside the third: either way before the run's end).
    dataset = expw_faces(tmp_path / "expw", 196)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "fer", "train", str(dataset), "--run-dir", str(run_dir)]
    command += ["--epochs", "3", "--arch", "vgg-small", "--width", "4", "--batch-size", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}  # FER_HOME: conftest's, the same as this process's
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while (R.read_json(run_dir / "state.json", {}) or {}).get("epoch", 0) < 1:
            if process.poll() is not None:
                pytest.fail(f"training ended before its first epoch did:\n{process.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()

    killed_after = R.read_json(run_dir / "state.json")["epoch"]
    assert 1 <= killed_after < 3, "the kill came after the last epoch had finished"
    status = R.read_status(run_dir)
    assert status["state"] == "interrupted"
    assert status["pid"] == process.pid
    history = R.read_history(run_dir)
    assert history["epoch"].tolist() == list(range(1, killed_after + 1))
    assert not (run_dir / "metrics.json").exists()
    assert keras.saving.load_model(run_dir / "last.keras").output_shape == (None, 7)

    metrics = T.train(TrainConfig(), run_dir, resume=True)  # the saved config, not these defaults
    assert R.read_status(run_dir)["state"] == "done"
    resumed = R.read_history(run_dir)
    assert resumed["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(resumed.iloc[:killed_after], history)  # kept, not retrained
    assert R.read_json(run_dir / "state.json")["epoch"] == 3
    assert metrics["n"] == R.read_json(run_dir / "metrics.json")["n"] > 0
    assert read_metadata(run_dir / "best.keras")["train"]["batch_size"] == 1


@pytest.mark.slow
def test_export_records_held_out_scores_and_predicts_the_same(finished_run, tiny_dataset, tmp_path, home):
    from fer.evaluate import evaluate

    _, run_dir, _ = finished_run
    out = tmp_path / "shipped.keras"
    metadata = export_model(run_dir, out, score_on=(str(tiny_dataset),))
    model, saved = load_model(out)
    assert saved["labels"] == metadata["labels"] and saved["exported_from"].endswith("best.keras")
    [(name, score)] = saved["test_metrics"].items()
    assert name == tiny_dataset.name
    evaluated, _ = evaluate(str(tiny_dataset), out, split="test")
    assert score["accuracy"] == pytest.approx(evaluated["accuracy"]) and score["n"] == evaluated["n"]
    faces = np.zeros((2, saved["image_size"], saved["image_size"]), np.uint8)
    np.testing.assert_allclose(
        predict_probabilities(model, faces),
        predict_probabilities(load_model(run_dir / "best.keras")[0], faces),
        atol=1e-6,
    )


def test_export_of_a_run_without_a_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no best.keras"):
        export_model(tmp_path, tmp_path / "out.keras")
