"""Train / val / test splits: the dataset's own where it has one, otherwise seeded, stratified, by photo.

Faces of one photo share lighting, background and often the person, so a split that put one
face of a photo in train and another in test would flatter the model: splits are drawn over
photos, not faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSettings:
    val_share: float = 0.1  # share of photos held out for choosing settings
    test_share: float = 0.1  # share of photos held out for the final score
    seed: int = 0  # same seed, same split

    def __post_init__(self) -> None:
        for name in ("val_share", "test_share"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be at least 0 and below 1, got {value}")
        if self.val_share + self.test_share >= 1:
            raise ValueError(
                f"val_share + test_share must leave faces to train on, got {self.val_share} + {self.test_share}"
            )


def assign(faces: pd.DataFrame, settings: SplitSettings = SplitSettings()) -> pd.Series:
    """Split name of every face (a Series aligned with `faces`).

    Faces keep the split their dataset gives them. Where the dataset has no val (or no test) part,
    that part is drawn from the faces without a split, or failing that from train, grouped by photo
    and stratified by label.
    """
    split = faces["split"].fillna("").astype(object).copy()
    present = set(split[split != ""])
    pool = split == "" if (split == "").any() else split == "train"
    wanted = {"val": settings.val_share, "test": settings.test_share}
    wanted = {name: share for name, share in wanted.items() if name not in present}
    if wanted and pool.any():
        drawn = _draw(faces[pool], wanted, settings.seed)
        split.loc[drawn.index] = drawn
    split[split == ""] = "train"
    return split


def _draw(faces: pd.DataFrame, shares: dict[str, float], seed: int) -> pd.Series:
    """Give each photo in `faces` a split, stratified by the label of its first face."""
    photos = faces.groupby("photo", sort=True)["label"].first()
    rng = np.random.default_rng(seed)
    chosen: dict[str, str] = {}
    for _, group in photos.groupby(photos, sort=True):
        names = group.index.to_numpy()[rng.permutation(len(group))]
        start = 0
        for split_name, share in shares.items():
            count = int(round(len(names) * share))
            chosen.update(dict.fromkeys(names[start : start + count], split_name))
            start += count
    return faces["photo"].map(lambda p: chosen.get(p, "train"))


def cross_split_duplicates(faces: pd.DataFrame, split: pd.Series, hashes: pd.Series) -> pd.DataFrame:
    """Groups of faces with identical processed pixels that sit in more than one split.

    Returns one row per face involved: group (an id shared by the copies), photo, face, label, split.
    """
    table = pd.DataFrame(
        {
            "photo": faces["photo"],
            "face": faces["face"],
            "label": faces["label"],
            "split": split,
            "hash": hashes,
        }
    )
    spread = table.groupby("hash")["split"].nunique()
    crossing = table[table["hash"].isin(spread[spread > 1].index)].copy()
    crossing["group"] = crossing.groupby("hash", sort=True).ngroup()
    return crossing.sort_values(["group", "split", "photo"])[
        ["group", "photo", "face", "label", "split"]
    ].reset_index(drop=True)
