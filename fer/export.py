"""Processed faces out of the cache, for people: image files, one zip, and a few samples per label.

`python -m fer prepare --out DIR` saves every processed face as a grayscale PNG named after its
source photo and face index, as the report did; the Data page offers the same faces as one zip
(with faces.csv saying where each came from) and shows a few faces per label beside the counts.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer import datasets, preprocess, runs
from fer.config import MAX_SIZE, MIN_SIZE

CAPTION_CHARS = 11  # what fits on one line under a 96-pixel sample face
REPORT_SIZE = 224  # the report's face side, for faces whose own size is unknown
SIZE_SAMPLE = 200  # faces looked at to tell a dataset's face size
SIZE_STEP = 8  # offered sizes are multiples of this (the Data page's step)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "face"


def export_names(faces: pd.DataFrame) -> list[str]:
    """File names `<label>/<photo name>_<face index>.png`, unique even when photo names repeat."""
    stems = [
        Path(p.split("#")[0]).stem + (f"_row{p.split('#')[1]}" if "#" in p else "") for p in faces["photo"]
    ]
    names = [
        f"{_safe_name(label)}/{_safe_name(stem)}_{face}.png"
        for label, stem, face in zip(faces["label"], stems, faces["face"])
    ]
    if len(set(names)) < len(names):
        names = [
            f"{_safe_name(label)}/{_safe_name(str(Path(p).with_suffix('')))}_{face}.png"
            for label, p, face in zip(faces["label"], faces["photo"], faces["face"])
        ]
    if len(set(names)) < len(names):
        # Still repeated (a.jpg beside a.png, or one face listed twice): number the later copies,
        # or each would overwrite the one before.
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                names[i] = f"{name[: -len('.png')]}-{seen[name]}.png"
    return names


def export(
    prepared: preprocess.Prepared, out_dir: Path, progress: preprocess.Progress | None = None
) -> list[Path]:
    """Write each processed face as a grayscale PNG under `out_dir/<label>/` (the report's "save" step)."""
    out_dir = Path(out_dir)
    names = export_names(prepared.faces)
    for folder in {n.split("/")[0] for n in names}:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    paths = [out_dir / n for n in names]

    def write(i: int) -> None:
        partial = paths[i].with_name(paths[i].name + ".part")
        Image.fromarray(np.asarray(prepared.images[i])).save(partial, format="PNG", compress_level=1)
        os.replace(partial, paths[i])

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, _ in enumerate(pool.map(write, range(len(paths))), start=1):
            if progress and (done % 200 == 0 or done == len(paths)):
                progress(done, len(paths))
    return paths


# Samples and zipped export for the dashboard ------------------------------------------------------


def prepared_folder(
    dataset: datasets.Dataset, settings: preprocess.PrepSettings, cache_dir: Path | None = None
) -> Path:
    """Where `preprocess.prepare` keeps `dataset`'s faces processed with `settings`; they are there, and
    quick to read, when the folder holds meta.json. Computing the name stats every photo (cache it)."""
    root = Path(cache_dir) if cache_dir else preprocess.default_cache_dir()
    return root / f"faces-{preprocess.cache_key(dataset, settings)}"


def short_name(photo: str, limit: int = CAPTION_CHARS) -> str:
    """A photo's name short enough for one line under a sample face: a CSV row as "row N", a file as
    its stem, its middle cut out (an ellipsis) when it is too long, since names differ at their ends."""
    base, _, row = str(photo).rpartition("#")
    if base and row.isdigit():
        return f"row {row}"
    stem = Path(str(photo)).stem
    if len(stem) <= limit:
        return stem
    head = (limit - 1) // 3
    return stem[:head] + "…" + stem[len(stem) - (limit - 1 - head) :]


def face_size(dataset: datasets.Dataset, sample: int = SIZE_SAMPLE) -> int | None:
    """The side, in pixels, of the dataset's faces as they are stored: the median longer side of up to
    `sample` faces (FER2013's pixels and whole-photo faces measured, boxed faces from their boxes);
    None when none of them can be measured. Reads a few photos' headers, never their pixels."""
    faces = dataset.faces
    if len(faces) > sample:
        faces = faces.sample(sample, random_state=0)
    sides = []
    for row in faces.itertuples():
        if not math.isnan(row.top):
            sides.append(max(row.bottom - row.top, row.right - row.left))
        elif dataset.pixels is not None:
            sides.append(math.isqrt(len(str(dataset.pixels[row.photo]).split())))
        else:
            try:
                with Image.open(dataset.photo_path(row.photo)) as image:
                    sides.append(max(image.size))
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
    return int(round(float(np.median(sides)))) if sides else None


def default_size(dataset: datasets.Dataset) -> int:
    """The processed-face side to offer for a dataset: its faces' own size (FER2013's 48; the median box
    of photos with boxes), to a multiple of SIZE_STEP and clamped to the sizes preprocessing makes,
    since enlarging a face adds pixels but no detail; the report's 224 when the size cannot be told."""
    side = face_size(dataset)
    if side is None:
        return REPORT_SIZE
    return min(max(SIZE_STEP * round(side / SIZE_STEP), MIN_SIZE), MAX_SIZE)


def sample_faces(
    dataset: datasets.Dataset,
    per_label: int = 6,
    *,
    size: int = 96,
    min_confidence: float | None = None,
    seed: int = 0,
) -> dict[str, list[tuple[np.ndarray, str]]]:
    """A few processed faces per label, (image, caption) pairs, from the faces the threshold keeps;
    the caption is the face's confidence, or its photo's name where the dataset has none.

    Each label's faces are walked in one seeded order whatever the threshold, so raising it only
    replaces the samples it drops. A face that cannot be processed is passed over for the next.
    """
    if per_label < 1:
        raise ValueError(f"per_label must be at least 1, got {per_label}")
    settings = preprocess.PrepSettings(size=size)
    faces = dataset.faces.reset_index(drop=True)
    kept = preprocess.keep_mask(faces, min_confidence)
    samples: dict[str, list[tuple[np.ndarray, str]]] = {}
    for number, label in enumerate(dataset.labels):
        rows = np.flatnonzero((faces["label"] == label).to_numpy())
        rows = rows[np.random.default_rng([seed, number]).permutation(len(rows))]
        rows = rows[kept[rows]]
        found: list[tuple[np.ndarray, str]] = []
        # Candidates in small batches, so a dataset of broken photos cannot make this decode them all.
        for start in range(0, min(len(rows), per_label * 4), per_label):
            batch = faces.iloc[rows[start : start + per_label]]
            for photo, group in batch.groupby("photo", sort=False):
                source = dataset.pixels[photo] if dataset.pixels is not None else dataset.photo_path(photo)
                boxes = list(zip(group["top"], group["left"], group["bottom"], group["right"]))
                for row, outcome in zip(
                    group.itertuples(), preprocess.process_photo(source, boxes, settings)
                ):
                    if isinstance(outcome, np.ndarray) and len(found) < per_label:
                        # Short enough to sit under a small face: the score, else the photo's name.
                        caption = (
                            short_name(row.photo) if math.isnan(row.confidence) else f"{row.confidence:.3g}"
                        )
                        found.append((outcome, caption))
            if len(found) >= per_label:
                break
        samples[label] = found
    return samples


def export_zip(
    prepared: preprocess.Prepared, zip_path: Path, progress: preprocess.Progress | None = None
) -> Path:
    """The processed faces as grayscale PNGs in one zip, named as `export` names them, with
    faces.csv saying where each came from (photo, face index, label, confidence, split)."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    partial = zip_path.with_name(f".{zip_path.name}.part-{os.getpid()}-{time.monotonic_ns()}")
    staging = Path(tempfile.mkdtemp(prefix=f".{zip_path.stem}.tmp-", dir=zip_path.parent))
    try:
        written = export(prepared, staging, progress)
        names = [p.relative_to(staging).as_posix() for p in written]
        table = prepared.faces[["photo", "face", "label", "confidence", "split"]].copy()
        table.insert(0, "file", names)
        # PNGs are compressed already: storing them is as small and much faster than deflating again.
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("faces.csv", runs.csv_text(table), compress_type=zipfile.ZIP_DEFLATED)
            for path, name in zip(written, names):
                archive.write(path, name)
        os.replace(partial, zip_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return zip_path
