"""Scoring a model: the report's metrics (accuracy; precision, recall and F1 weighted by support),
macro F1, per-class figures, the confusion matrix, and one row of probabilities per face; and
exporting a run's model for shipping with its held-out scores, which come from the same scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from fer import calibration, datasets, images, modelfile, portable, preprocess, runs, splits
from fer.faces import dataset_root


def metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """The JSON fields of `python -m fer evaluate`: n, accuracy, precision / recall / f1 (weighted),
    macro_f1, labels, confusion_matrix (rows: true label, columns: predicted), per_class."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    order = list(range(len(labels)))
    if not len(y_true):
        raise ValueError("no faces to score")
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=order, average="weighted", zero_division=0
    )
    # Over the labels the faces have or were given, as scikit-learn does by default: a model that knows
    # labels this data lacks (one fine-tuned on some of them) is not marked down for those. Not over
    # -1, "no face found" under --detect: it is no label.
    _, _, macro_f1, _ = precision_recall_fscore_support(
        y_true,
        y_pred,
        labels=sorted(set(order) & (set(y_true) | set(y_pred))),
        average="macro",
        zero_division=0,
    )
    per_p, per_r, per_f, support = precision_recall_fscore_support(
        y_true, y_pred, labels=order, average=None, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_f1": float(macro_f1),
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=order).tolist(),
        "per_class": {
            label: {
                "precision": float(per_p[i]),
                "recall": float(per_r[i]),
                "f1": float(per_f[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
    }


def predictions_table(faces: pd.DataFrame, labels: list[str], probabilities: np.ndarray) -> pd.DataFrame:
    """One row per face: where it came from, its label, the prediction and every probability."""
    keep = [c for c in ("dataset", "photo", "face", "split", "label") if c in faces.columns]
    table = faces[keep].reset_index(drop=True).copy()
    table["predicted"] = [labels[i] for i in probabilities.argmax(axis=1)]
    table[runs.PROBABILITY] = probabilities.max(axis=1)  # the model's probability of its answer
    for i, label in enumerate(labels):
        table[f"p_{label}"] = probabilities[:, i]
    return table


def evaluate(
    dataset_path: str,
    model_path: Path,
    *,
    split: str = "test",
    min_confidence: float | None = None,
    batch_size: int = 256,
    detector: str | None = None,
    calibrated: bool = True,
    flip: bool | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Score a saved model on a dataset's split ("test", or "val") or on every face ("all").

    The model's own preprocessing (size, margin) is applied. Labels are matched by name, so a model
    trained on one dataset scores another; faces whose label the model does not know are left out
    and counted in "unscored". Where the model was trained on this dataset, its split settings are
    reused so "test" means the faces it never saw.

    With `detector` (one of fer.detect.NAMES) faces are found by the detector instead of taken from the
    dataset's boxes: a labelled face is scored on the detection that overlaps it best (IoU >= 0.3),
    and one with no such detection counts as wrong (predicted "(no face)").

    Probabilities are the model's calibrated ones where its file carries a calibration (`calibrated`
    False: the network's own, which is what a calibration is fitted on); the result's "calibration"
    gives the calibration error of both on these faces. Each face is read with its mirror image too
    where the model file says so (fer.modelfile.reads_mirrored), or as `flip` says.
    """
    if split not in ("test", "val", "all"):
        raise ValueError(f"split must be 'test', 'val' or 'all', got {split!r}")
    model, metadata = portable.load_model(Path(model_path))  # .keras, .tflite or .onnx
    labels = list(metadata["labels"])
    dataset = datasets.load(dataset_path)
    settings = preprocess.settings_of(metadata)
    prepared = preprocess.prepare(dataset, settings, min_confidence=min_confidence)
    faces = prepared.faces
    train = metadata.get("train", {})
    trained_on = metadata.get("dataset_roots") or [dataset_root(d) for d in train.get("datasets", [])]
    split_settings = (
        splits.SplitSettings(train.get("val_share", 0.1), train.get("test_share", 0.1), train.get("seed", 0))
        if dataset_root(str(dataset_path)) in trained_on
        else splits.SplitSettings()
    )
    faces = faces.assign(split=splits.assign(faces, split_settings))
    chosen = np.ones(len(faces), bool) if split == "all" else (faces["split"] == split).to_numpy()
    index = {label: i for i, label in enumerate(labels)}
    known = faces["label"].isin(index).to_numpy()
    unscored = int((chosen & ~known).sum())
    chosen = chosen & known
    if not chosen.any():
        raise datasets.DatasetError(
            f"no face of {dataset_path} to score in split {split!r} with labels the model knows ({', '.join(labels)})"
        )
    rows = np.flatnonzero(chosen)
    mirrored = _mirrored(metadata, flip)
    if detector:
        crops, found = _detected_faces(dataset, faces.iloc[rows], settings, detector)
        raw = np.zeros((len(rows), len(labels)), dtype=np.float32)
        if found.any():
            raw[found] = modelfile.predict_probabilities(model, crops, batch_size, flip=mirrored)
    else:
        found = np.ones(len(rows), bool)
        raw = modelfile.predict_probabilities(model, prepared.images[rows], batch_size, flip=mirrored)
    probabilities = raw.copy()
    if calibrated and found.any():
        probabilities[found] = calibration.apply(raw[found], metadata)
    y_pred = np.where(found, probabilities.argmax(axis=1), -1)
    y_true = faces["label"].iloc[rows].map(index).to_numpy()
    result = metrics(y_true, y_pred, labels)
    result.update(split=split, unscored=unscored, model=str(model_path), dataset=str(dataset_path))
    if found.any():  # over the faces the model saw (a face the detector missed has no probability)
        result["calibration"] = calibration.summary(
            raw[found], calibration.apply(raw[found], metadata), y_true[found], metadata
        )
    table = predictions_table(faces.iloc[rows], labels, probabilities)
    if detector:
        missed = y_pred < 0
        table.loc[missed, "predicted"] = "(no face)"
        result["detector"] = detector
        result["undetected"] = int(missed.sum())
        result["undetected_per_class"] = {
            label: int((missed & (y_true == i)).sum()) for i, label in enumerate(labels)
        }
    return result, table


def _mirrored(metadata: dict, flip: bool | None) -> bool:
    """Whether faces are read with their mirror images: `flip`, or (None) as the model file says."""
    return modelfile.reads_mirrored(metadata) if flip is None else bool(flip)


def _detected_faces(
    dataset: datasets.Dataset, faces: pd.DataFrame, settings: preprocess.PrepSettings, detector_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of the detections matched to each labelled face, and which faces had one.

    Each photo is opened, turned upright and searched exactly as the Classify page and `fer predict`
    do (`fer.images.open_photo` and `fer.predict.detect_faces`); the labelled boxes, given in the stored
    pixels, are turned with it. A photo that cannot be opened (corrupt, too large) finds no face.
    """
    from PIL import Image

    from fer import detect, predict

    detector = detect.make(detector_name)
    found = np.zeros(len(faces), dtype=bool)
    crops: dict[int, np.ndarray] = {}  # by position in `faces`, so they line up with `found`
    for photo, where in faces.groupby("photo", sort=False).indices.items():
        upright = None
        if dataset.pixels is not None:
            image = images.image_from_pixels(dataset.pixels[photo]).convert("RGB")
            stored = image.size
        else:
            path = dataset.photo_path(photo)
            try:
                with Image.open(path) as header:
                    stored, upright = header.size, images.orientation_of(header)
                image = images.open_photo(path)
            except (OSError, ValueError, Image.DecompressionBombError):  # PhotoError is a ValueError
                continue
        width, height = stored
        group = faces.iloc[where]
        truth = [
            images.upright_box(
                (0.0, 0.0, float(height), float(width))
                if np.isnan(r.top)
                else (r.top, r.left, r.bottom, r.right),
                width,
                height,
                upright,
            )
            for r in group.itertuples()
        ]
        detections, _ = predict.detect_faces(detector, image)
        matched = [
            (int(where[k]), detections[m])
            for k, m in enumerate(detect.match(truth, detections))
            if m is not None
        ]
        if matched:
            cropped = images.crop_faces(image.convert("L"), [box for _, box in matched], settings)
            for (position, _), face in zip(matched, cropped):
                crops[position] = face
                found[position] = True
    ordered_crops = [crops[i] for i in sorted(crops)]
    stack = np.stack(ordered_crops) if crops else np.zeros((0, settings.size, settings.size), np.uint8)
    return stack, found


def export_model(
    source: Path,
    out: Path,
    *,
    score_on: tuple[str, ...] = (),
    detect_on: tuple[str, ...] = (),
    detectors: tuple[str, ...] = ("blazeface",),
    progress=None,
) -> dict:
    """Write a trained model for shipping: weights without optimizer state (a third of the size),
    its metadata, and its held-out scores on each dataset in `score_on` (labelled boxes) and
    `detect_on` (faces found by each of `detectors`), recorded under "test_metrics" -> "<dataset>" and
    "<dataset> [detector]".

    `source` is a run folder (its best.keras) or a .keras file saved by train. Returns the metadata.
    """
    source = Path(source)
    model_path = source / runs.BEST if source.is_dir() else source
    if not model_path.is_file():
        raise ValueError(f"cannot export {source}: no {runs.BEST} there (has the run finished an epoch?)")
    model, metadata = modelfile.load_model(model_path)
    scores = {}
    for name, detect in [(d, None) for d in score_on] + [(d, k) for d in detect_on for k in detectors]:
        if progress:
            progress(f"scoring on {name}" + (f" with the {detect} detector" if detect else ""))
        result, _ = evaluate(name, model_path, split="test", detector=detect)
        key = Path(dataset_root(name)).name + (f" [{detect}]" if detect else "")
        scores[key] = {k: result[k] for k in ("n", "accuracy", "precision", "recall", "f1", "macro_f1")}
        if detect:
            scores[key]["undetected"] = result["undetected"]
    metadata = {**metadata, "exported_from": str(model_path)}
    if scores:
        metadata["test_metrics"] = scores
    modelfile.save_model(model, Path(out), metadata)
    return metadata


def calibrate_model(
    source: Path,
    dataset_paths: tuple[str, ...],
    out: Path,
    *,
    weights: str | list[float] | None = None,
    flip: bool | None = None,
    progress=None,
) -> dict:
    """Fit a temperature on the val faces of `dataset_paths` (the model's own split of a dataset it
    was trained on) and write the model to `out` with it in its metadata, without optimizer state.
    `weights` sets each dataset's share of the fit (fer.calibration.shares: None or "faces", each
    face counts once; "equal"; or one number per dataset). `flip` True makes the model read each face
    with its mirror image too (its fer.json's "flip") and fits on those averaged answers; False, not;
    None keeps what the model file says. The network is unchanged: only the
    probabilities it shows are. Returns the metadata; its entry's "datasets" gives each dataset's
    faces, share and calibration error on them before and after."""
    if not dataset_paths:
        raise ValueError("calibrating a model needs at least one dataset to take val faces from")
    calibration.shares([1] * len(dataset_paths), weights)  # refused before any face is scored
    model_path = Path(source)
    model, metadata = modelfile.load_model(model_path)
    mirrored = _mirrored(metadata, flip)
    labels = list(metadata["labels"])
    probabilities, y, names = [], [], []
    for name in dataset_paths:
        if progress:
            progress(f"scoring the val faces of {name}")
        _, table = evaluate(name, model_path, split="val", calibrated=False, flip=mirrored)
        probabilities.append(table[[f"p_{label}" for label in labels]].to_numpy(dtype=np.float64))
        y.append(table["label"].map({label: i for i, label in enumerate(labels)}).to_numpy(dtype=int))
        names.append(Path(dataset_root(name)).name)
    sizes = [len(labels_of) for labels_of in y]
    dataset_shares = calibration.shares(sizes, weights)
    counts = [
        f"{name} ({n:,}" + (f", share {share:.3g})" if weights not in (None, "faces") else ")")
        for name, n, share in zip(names, sizes, dataset_shares)
    ]
    entry = calibration.fit(
        np.concatenate(probabilities),
        np.concatenate(y),
        "val faces of " + ", ".join(counts),
        calibration.face_weights(sizes, dataset_shares),
    )
    entry["datasets"] = [
        {
            "name": name,
            "faces": n,
            "share": round(share, 6),
            "ece_before": calibration.ece(p, labels_of),
            "ece_after": calibration.ece(calibration.scale(p, entry["temperature"]), labels_of),
        }
        for name, n, share, p, labels_of in zip(names, sizes, dataset_shares, probabilities, y)
    ]
    metadata = {**metadata, "calibration": entry, modelfile.MIRRORED: mirrored}
    modelfile.save_model(model, Path(out), metadata)
    return metadata
