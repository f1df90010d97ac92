"""Prepared faces packed into one file, to train where the datasets are not.

A GPU machine used for a few minutes may get a copy of the code and only a few tens of MB of
data: not FER2013's 35,887 photo files, and no time to prepare faces there. Faces are prepared
here, exactly as training would (crop, resize, grayscale; the same splits: fer.faces.load_splits),
and `write` keeps the splits asked for (by default train and val: the test part stays here, to be
scored once) in one .npz file; `fer train` accepts that file wherever it accepts a dataset. This
module only writes and reads the file: fer.faces reads packs, so the faces come to `write`
already loaded (see `python -m fer pack` in fer.cli).

Each face is stored as a JPEG. Where the photo file is a JPEG that decodes to exactly the face
(every FER2013 photo is its own 48 px face) its bytes are kept as they are: lossless, and at 1.8 kB
a face smaller than any re-encoding (the raw pixels, 2.3 kB, barely compress). Other faces are
encoded at `quality` (95: about 2.2 kB a face, a grey level or less off). Everything else (labels,
splits, photo names, the datasets it came from, how it was prepared) is kept beside them, so a model trained on a pack records the
original datasets and `evaluate` / `export --score` find their test parts here.

The file holds only arrays of numbers and strings (no pickled objects), so opening one runs no code.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer import runs
from fer.config import TrainConfig
from fer.datasets import Dataset, DatasetError
from fer.preprocess import CACHE_VERSION, PrepSettings
from fer.splits import SPLITS, SplitSettings

FORMAT = "fer-faces-pack"
VERSION = 1
SUFFIX = ".npz"
COLUMNS = ("dataset", "photo", "face", "label", "split")  # kept per face, when the dataset has them


def is_pack(name: str | os.PathLike) -> bool:
    """Whether a dataset argument names a pack file (by its suffix; `read` checks the content)."""
    return str(name).lower().endswith(SUFFIX)


def check(
    datasets: list[str] | tuple[str, ...],
    *,
    splits: tuple[str, ...] = ("train", "val"),
    quality: int = 95,
    part: tuple[int, int] = (1, 1),
) -> None:
    """ValueError, naming the argument, for a pack that `write` would refuse: checked before the
    datasets are read, which can take minutes."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ValueError(f"splits must be some of {', '.join(SPLITS)}, got {', '.join(splits) or 'none'}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    k, n = part
    if not 1 <= k <= n:
        raise ValueError(f"part must be K/N with 1 <= K <= N, got {k}/{n}")
    if any(is_pack(name) for name in datasets):
        raise ValueError("a pack is made from datasets, not from another pack")


def write(
    out: str | os.PathLike,
    config: TrainConfig,
    labels: list[str],
    prepared: dict,
    *,
    loaded: dict[str, Dataset],
    roots: list[str],
    splits: tuple[str, ...] = ("train", "val"),
    quality: int = 95,
    part: tuple[int, int] = (1, 1),
    reencode: bool = False,
) -> dict:
    """Write the faces of `splits` to `out`; return a summary. `labels` and `prepared` (split name ->
    fer.faces.Split) are what fer.faces.load_splits made of `config`; `loaded` holds the datasets it
    read (by name, for their photo files' own bytes) and `roots` the datasets as a model records
    them (fer.faces.dataset_root). `part` (k, n) keeps every n-th face from the k-th on: n packs, one
    per k, hold the faces one pack would, each a fraction of the size (for a size limit on what can
    be copied to the machine that trains). `reencode` encodes every face at `quality`, also those
    whose photo file could be kept as it is: smaller at a lower quality, at a small loss."""
    check(config.datasets, splits=splits, quality=quality, part=part)
    k, n = part
    image_size = config.image_size
    chosen = [prepared[s] for s in splits if len(prepared[s].y)]
    faces = pd.concat([split.faces for split in chosen], ignore_index=True)
    images = (
        np.concatenate([split.images for split in chosen])
        if chosen
        else np.zeros((0, image_size, image_size))
    )
    if n > 1:
        keep = np.arange(k - 1, len(faces), n)
        faces, images = faces.iloc[keep].reset_index(drop=True), images[keep]
    sources = {name: dataset for name, dataset in loaded.items() if name != "demo"}
    blobs, kept = [], 0
    for face, row in zip(images, faces.itertuples(index=False)):
        original = None if reencode else _source_bytes(sources.get(row.dataset), row.photo, face)
        kept += original is not None
        blobs.append(original if original is not None else _encode(face, quality))
    offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "image_size": image_size,
        "margin": config.margin,
        "min_confidence": config.min_confidence,
        "split_settings": {
            "val_share": config.val_share,
            "test_share": config.test_share,
            "seed": config.seed,
        },
        "splits": list(splits),
        "labels": labels,
        "dataset_roots": list(roots),
        "quality": quality,
        "reencoded": reencode,
        "part": [k, n],
        "counts": {s: int((faces["split"] == s).sum()) for s in splits},
        "source_bytes_kept": kept,
        "cache_version": CACHE_VERSION,
    }
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "jpeg": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": offsets,
    }
    for column in COLUMNS:
        if column in faces.columns:
            values = faces[column]
            arrays[column] = (
                values.to_numpy(dtype=np.int64)
                if column == "face"
                else values.astype(str).to_numpy(dtype=str)
            )
    destination = Path(out)

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            np.savez(stream, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a pack is data to share

    runs.write_atomic(destination, save)
    return {**meta, "faces": len(faces), "bytes": destination.stat().st_size}


def _source_bytes(dataset: Dataset | None, photo: str, face: np.ndarray) -> bytes | None:
    """The photo file's own bytes, when the photo is a JPEG that decodes to exactly this face (a
    FER2013 photo is its 48 px face): kept as they are, smaller than any re-encoding and lossless."""
    if dataset is None or dataset.pixels is not None or not photo.lower().endswith((".jpg", ".jpeg")):
        return None
    try:
        path = dataset.photo_path(photo)
        if path.stat().st_size > 4 * face.size:  # a whole photo, not a face: not worth decoding
            return None
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            same = image.format == "JPEG" and np.array_equal(_gray(image), face)
    except Exception:  # noqa: BLE001 - unreadable now: the face itself is stored instead
        return None
    return data if same else None


def _gray(image: Image.Image) -> np.ndarray:
    """A JPEG's pixels as the preprocessing cache decodes them: a colour JPEG's luma channel as
    stored (draft), not its colours converted back to grey."""
    image.draft("L", image.size)
    return np.asarray(image.convert("L"))


def _encode(face: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(face, dtype=np.uint8), mode="L").save(
        buffer, format="JPEG", quality=quality
    )
    return buffer.getvalue()


def read_meta(path: str | os.PathLike) -> dict:
    """The pack's description; DatasetError if `path` is not a pack this version reads."""
    with _open(path) as arrays:
        return _meta(arrays, path)


def _open(path: str | os.PathLike):
    where = Path(path)
    if not where.is_file():
        raise DatasetError(f"pack not found: {where} does not exist; make one with `python -m fer pack`")
    try:
        return np.load(where, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DatasetError(
            f"{where.name} is not a readable pack ({type(error).__name__}: {error}); make it again with "
            "`python -m fer pack`"
        ) from error


def _meta(arrays, path) -> dict:
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError, TypeError) as error:
        raise DatasetError(
            f"{Path(path).name} is a .npz file but not a pack of faces (no readable 'meta'); make one with "
            "`python -m fer pack`"
        ) from error
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DatasetError(
            f"{Path(path).name} is not a version {VERSION} pack of faces (format {meta.get('format')!r}, "
            f"version {meta.get('version')!r}); make it again with this version's `python -m fer pack`"
        )
    return meta


def read(
    path: str | os.PathLike,
    settings: PrepSettings,
    split_settings: SplitSettings,
    min_confidence: float | None = None,
) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """The pack's faces as (n, size, size) uint8, their table (label, split, dataset, photo), and its
    description. The pack must have been made with the settings training asks for: DatasetError
    otherwise, naming the setting. A face whose JPEG cannot be decoded is left out, not the pack."""
    with _open(path) as arrays:
        meta = _meta(arrays, path)
        name = Path(path).name
        made = (meta["image_size"], meta["margin"])
        if made != (settings.size, settings.margin):
            raise DatasetError(
                f"{name} holds faces of {meta['image_size']} px with margin {meta['margin']:g}; train with "
                f"--image-size {meta['image_size']} --margin {meta['margin']:g}, or pack again with "
                f"--image-size {settings.size} --margin {settings.margin:g}"
            )
        if meta.get("min_confidence") != min_confidence:
            raise DatasetError(
                f"{name} was packed with min_confidence {meta.get('min_confidence')}; train with the same "
                f"--min-confidence, or pack again with {min_confidence}"
            )
        wanted = {"val_share": split_settings.val_share, "test_share": split_settings.test_share,
                  "seed": split_settings.seed}  # fmt: skip
        if meta["split_settings"] != wanted:
            got = meta["split_settings"]
            raise DatasetError(
                f"{name} was split with seed {got['seed']}, val share {got['val_share']:g} and test share "
                f"{got['test_share']:g}; train with --seed {got['seed']} --val-share {got['val_share']:g} "
                f"--test-share {got['test_share']:g}, or pack again with the settings you want"
            )
        jpeg, offsets = arrays["jpeg"], arrays["offsets"]
        table = {c: arrays[c] for c in COLUMNS if c in arrays.files}
    count = len(offsets) - 1
    images = np.zeros((count, settings.size, settings.size), dtype=np.uint8)
    good = np.ones(count, dtype=bool)
    for i in range(count):
        try:
            with Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())) as face:
                pixels = _gray(face)
            if pixels.shape != images.shape[1:]:
                raise ValueError(f"a {pixels.shape} face in a pack of {images.shape[1:]} faces")
            images[i] = pixels
        except Exception:  # noqa: BLE001 - one damaged face is skipped, not the pack
            good[i] = False
    faces = pd.DataFrame(table).iloc[np.flatnonzero(good)].reset_index(drop=True)
    meta["skipped"] = int((~good).sum())
    return images[good], faces, meta
