"""Datasets or packs -> the pooled train / val / test arrays that training and scoring read.

Each dataset's faces are prepared through the cache (fer.preprocess) and split by photo
(fer.splits); a pack (fer.pack) brings faces prepared and split elsewhere. The parts are pooled
into one array per split, with labels matched by name and indexed in their canonical order, so
every run sees the same faces in the same order for the same config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fer import datasets, pack, preprocess, splits
from fer.config import TrainConfig
from fer.labels import ordered


@dataclass
class Split:
    """Faces of one split, pooled over datasets: images[i] is faces.iloc[i]; y indexes `labels`."""

    images: np.ndarray
    faces: pd.DataFrame
    y: np.ndarray


def load_splits(
    config: TrainConfig, progress=None, loaded: dict[str, datasets.Dataset] | None = None
) -> tuple[list[str], dict[str, Split]]:
    """Prepared faces of every dataset, split and pooled, with the label list they share. `loaded`, if
    given, receives each dataset read (by its name in config.datasets) for callers that need more of it."""
    settings = preprocess.PrepSettings(size=config.image_size, margin=config.margin)
    split_settings = splits.SplitSettings(
        val_share=config.val_share, test_share=config.test_share, seed=config.seed
    )
    parts = []
    for name in config.datasets:
        if pack.is_pack(name):  # faces prepared and split elsewhere (`python -m fer pack`)
            images, faces, _ = pack.read(name, settings, split_settings, config.min_confidence)
            parts.append((images, faces))
            continue
        dataset = datasets.load(name)
        if loaded is not None:
            loaded[str(name)] = dataset
        prepared = preprocess.prepare(
            dataset, settings, min_confidence=config.min_confidence, progress=progress
        )
        faces = prepared.faces.assign(dataset=str(name), split=splits.assign(prepared.faces, split_settings))
        parts.append((prepared.images, faces))
    faces = pd.concat([f for _, f in parts], ignore_index=True)
    labels = ordered(faces["label"].unique())
    if len(labels) < 2:
        # A classifier learns to tell labels apart: with one label (or none left) there is nothing to learn.
        threshold = "" if config.min_confidence is None else f" at min_confidence {config.min_confidence:g}"
        held = f"only {len(faces):,} faces labelled {labels[0]}" if labels else "no face"
        raise datasets.DatasetError(
            f"training needs faces of at least two labels; the data{threshold} holds {held}"
            + ("; add faces of another label" if labels else "")
            + (f"{' or' if labels else ';'} lower the confidence threshold" if threshold else "")
        )
    index = {label: i for i, label in enumerate(labels)}
    offsets = np.cumsum([0] + [len(f) for _, f in parts])
    result = {}
    for split in splits.SPLITS:
        chosen = np.flatnonzero((faces["split"] == split).to_numpy())
        if split == "train" and config.max_faces and len(chosen) > config.max_faces:
            chosen = np.sort(
                np.random.default_rng(config.seed).choice(chosen, config.max_faces, replace=False)
            )
        images = np.empty((len(chosen), config.image_size, config.image_size), dtype=np.uint8)
        for k, (part_images, _) in enumerate(parts):
            inside = (chosen >= offsets[k]) & (chosen < offsets[k + 1])
            images[inside] = part_images[chosen[inside] - offsets[k]]
        split_faces = faces.iloc[chosen].reset_index(drop=True)
        result[split] = Split(images, split_faces, split_faces["label"].map(index).to_numpy(dtype=np.int64))
    if not len(result["train"].y) or not len(result["val"].y):
        raise datasets.DatasetError(
            f"training needs faces in train and val; got {len(result['train'].y)} and {len(result['val'].y)}"
        )
    return labels, result


def dataset_root(name: str) -> str:
    """How a dataset argument is recorded: "demo", or its absolute path."""
    return name if name == "demo" else str(Path(name).expanduser().resolve())


def dataset_roots(names: tuple[str, ...]) -> list[str]:
    """The datasets a model learnt from: a pack stands for the datasets it was made from, so a
    model trained on one elsewhere is scored on their test parts here."""
    roots: list[str] = []
    for name in names:
        for root in pack.read_meta(name)["dataset_roots"] if pack.is_pack(name) else [dataset_root(name)]:
            if root not in roots:  # a dataset's train and val parts may come in two packs
                roots.append(root)
    return roots
