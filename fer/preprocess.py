"""Faces from photos, as the report made them: filter, crop the box, resize, grayscale, scale to [0, 1].

Crops are computed once per dataset and setting and cached on disk as one uint8 array, so a
second run (or another confidence threshold) reads them back instead of decoding photos again.
The confidence threshold is applied to the cached faces, not baked into the cache: moving the
threshold never recomputes anything. Photos are opened and cropped by fer.images, under the rules
prediction follows (upright by EXIF, 8-bit, alpha on white, one pixel limit), so a face in the cache
is the face prediction would crop from the same photo.

Speed comes from three places, measured in benchmarks/preprocess.py: each photo is decoded once
however many faces it holds; JPEGs are decoded straight to grayscale (the luma plane, skipping
colour conversion) and, when the box is much larger than the output, at a reduced DCT scale; and
photos are spread over every core.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer import datasets, images
from fer.config import MAX_SIZE, MIN_SIZE

# Bump when the pixels a setting produces change, so old caches are not reused.
# 2: reduced-scale JPEG decodes map boxes by the exact DCT scale; 3: EXIF-upright faces;
# 4: see-through pixels laid on white, as prediction does (they were read as their colour alone);
# 5: photos over fer.images.MAX_PHOTO_PIXELS (40 MP, prediction's limit; it was 64 here) are skipped
CACHE_VERSION = 5
Progress = Callable[[int, int], None]  # (faces done, faces in all)


@dataclass(frozen=True)
class PrepSettings:
    size: int = 48  # output side in pixels: FER2013 is natively 48; the report used 224
    margin: float = 0.0  # share of the box's width / height added on each side before cropping

    def __post_init__(self) -> None:
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {self.size}")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"margin must be between 0 and 1 (a share of the box), got {self.margin}")


@dataclass
class Prepared:
    """Processed faces: `images[i]` is the face described by row i of `faces`."""

    images: np.ndarray  # (n, size, size) uint8, 0 = black
    faces: pd.DataFrame  # manifest rows of the faces that were processed, plus their pixel "hash"
    skipped: pd.DataFrame  # every face left out, from reading and from decoding, with its reason
    settings: PrepSettings
    from_cache: bool = False
    cache_dir: Path | None = None

    def select(self, mask: np.ndarray | pd.Series) -> Prepared:
        mask = np.asarray(mask, dtype=bool)
        if mask.all():
            return self  # keeps the images memory-mapped: nothing is read until used
        return Prepared(
            images=self.images[mask],
            faces=self.faces[mask].reset_index(drop=True),
            skipped=self.skipped,
            settings=self.settings,
            from_cache=self.from_cache,
            cache_dir=self.cache_dir,
        )


def check_threshold(min_confidence: float | None) -> None:
    if min_confidence is not None and (math.isnan(min_confidence) or min_confidence < 0):
        raise ValueError(f"min_confidence must be a number of at least 0, got {min_confidence}")


def keep_mask(faces: pd.DataFrame, min_confidence: float | None) -> np.ndarray:
    """Faces at or above the threshold. Faces with no confidence (a format without one) are kept."""
    check_threshold(min_confidence)
    if min_confidence is None:
        return np.ones(len(faces), dtype=bool)
    confidence = faces["confidence"].to_numpy(dtype=float)
    return np.isnan(confidence) | (confidence >= min_confidence)


def to_unit(faces: np.ndarray) -> np.ndarray:
    """uint8 faces as float32 in [0, 1], the report's normalisation."""
    return np.multiply(faces, np.float32(1 / 255), dtype=np.float32)


def default_cache_dir() -> Path:
    from fer.paths import data_dir

    return data_dir() / "cache"


def cache_key(dataset: datasets.Dataset, settings: PrepSettings) -> str:
    """Everything that changes the pixels: the dataset's files, the settings, and this code's version."""
    text = json.dumps(
        {"dataset": dataset.fingerprint(), "settings": asdict(settings), "version": CACHE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# One photo ----------------------------------------------------------------------------------------


def settings_of(metadata: dict) -> PrepSettings:
    """The preprocessing a saved model was trained with, from its metadata."""
    return PrepSettings(size=int(metadata["image_size"]), margin=float(metadata.get("margin", 0.0)))


def process_photo(source: Path | str, boxes: list[tuple], settings: PrepSettings) -> list[np.ndarray | str]:
    """Every face of one photo: a (size, size) uint8 array, or the reason it could not be made.

    `source` is a photo's path, or FER2013-CSV pixel text. Boxes are in the photo's stored pixels;
    a face cropped from a photo that EXIF says to turn is turned upright, as prediction sees faces.
    """
    try:
        if isinstance(source, str):
            image = images.image_from_pixels(source)
            width, height, scale = *image.size, 1.0
        else:
            image, width, height, scale = images.open_gray(source, boxes, settings)
    except images.PhotoError as error:
        return [str(error)] * len(boxes)
    except FileNotFoundError:
        return ["photo not found"] * len(boxes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow warns above 89 MP (made an error in fer.images.open_gray) and refuses above 179 MP.
        return [f"photo is too large to decode safely ({error})"] * len(boxes)
    except Exception as error:  # noqa: BLE001 - any decoder failure skips this photo only
        # The decoder's message may hold the photo's full path: say its name instead (the reason is
        # shown beside the photo), and never read "truncated" off a folder's name.
        detail = str(error).replace(str(source), Path(source).name)
        kind = (
            "truncated" if "truncated" in str(error).replace(str(source), "") else "corrupt or not an image"
        )
        return [f"photo is {kind} ({type(error).__name__}: {detail})"] * len(boxes)
    results: list[np.ndarray | str] = []
    for box in boxes:
        try:
            left, top, right, bottom = images.crop_box(box, width, height, settings.margin)
        except images.FaceError as error:
            results.append(str(error))
            continue
        region = (left * scale, top * scale, right * scale, bottom * scale)
        results.append(images.crop_resize(image, region, settings.size, image.info.get("upright")))
    return results


def _process_chunk(base: str, array_path: str, tasks: list[tuple], settings: PrepSettings) -> list[tuple]:
    """Worker entry point: process photos and write their faces straight into the cache's array file.

    Tasks are (face rows, photo path or "\\0" + pixel text, boxes). Returns (row, hash or None, reason or
    None) per face: pixels never travel back through a pipe.
    """
    stack = np.load(array_path, mmap_mode="r+")
    out = []
    for rows, source, boxes in tasks:
        photo = source[1:] if source.startswith("\0") else Path(base) / source
        for row, outcome in zip(rows, process_photo(photo, boxes, settings)):
            if isinstance(outcome, str):
                out.append((row, None, outcome))
            else:
                stack[row] = outcome
                out.append((row, hashlib.blake2b(outcome.tobytes(), digest_size=8).hexdigest(), None))
    stack.flush()
    return out


# Preparing a dataset ------------------------------------------------------------------------------


def prepare(
    dataset: datasets.Dataset,
    settings: PrepSettings = PrepSettings(),
    *,
    min_confidence: float | None = None,
    cache_dir: Path | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Prepared:
    """Processed faces of `dataset` at or above `min_confidence`, from the cache when it has them."""
    check_threshold(min_confidence)  # before any work: a bad threshold must not cost a full pass
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"faces-{cache_key(dataset, settings)}"
    prepared = _read_cache(target, settings, dataset)
    if prepared is None:
        prepared = _compute(dataset, settings, target, workers, progress)
    elif progress:
        progress(len(prepared.faces), len(prepared.faces))
    return prepared.select(keep_mask(prepared.faces, min_confidence))


def _tasks(dataset: datasets.Dataset) -> list[tuple[list[int], str, list[tuple]]]:
    faces = dataset.faces
    boxes = list(zip(faces["top"], faces["left"], faces["bottom"], faces["right"]))
    tasks = []
    for photo, rows in faces.groupby("photo", sort=False).indices.items():
        source = "\0" + dataset.pixels[photo] if dataset.pixels is not None else photo
        tasks.append((rows.tolist(), source, [boxes[r] for r in rows]))
    return tasks


def _compute(
    dataset: datasets.Dataset,
    settings: PrepSettings,
    target: Path,
    workers: int | None,
    progress: Progress | None,
) -> Prepared:
    faces = dataset.faces.reset_index(drop=True)
    total = len(faces)
    tasks = _tasks(dataset)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    staging.mkdir(parents=True, exist_ok=True)
    try:
        stack = np.lib.format.open_memmap(
            staging / "images.npy", mode="w+", dtype=np.uint8, shape=(total, settings.size, settings.size)
        )
        del stack  # workers write into the file; this process only keeps the books
        hashes: dict[int, str] = {}
        reasons: dict[int, str] = {}

        def collect(results: list[tuple]) -> None:
            for row, digest, reason in results:
                if reason is None:
                    hashes[row] = digest
                else:
                    reasons[row] = reason
            if progress:
                progress(len(hashes) + len(reasons), total)

        workers = workers or os.cpu_count() or 1
        chunks = _chunks(tasks, workers)
        args = (str(dataset.base), str(staging / "images.npy"))
        if workers == 1 or total < 200:
            for chunk in chunks:
                collect(_process_chunk(*args, chunk, settings))
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool, _main_not_rerun():
                jobs = [pool.submit(_process_chunk, *args, chunk, settings) for chunk in chunks]
                for job in jobs:
                    collect(job.result())
        kept = np.array(sorted(hashes), dtype=np.int64)
        if not len(kept):
            # Raised before the cache is stored, so a second run says the same instead of reading no faces.
            raise datasets.DatasetError(
                f"no face of {dataset.root} could be processed ({len(reasons)} skipped; first reason: "
                f"{next(iter(reasons.values()), 'none')})"
            )
        if len(kept) < total:
            # Compact: the cache holds only faces that were made, in manifest order.
            stack = np.load(staging / "images.npy", mmap_mode="r")
            compact = np.lib.format.open_memmap(
                staging / "kept.npy",
                mode="w+",
                dtype=np.uint8,
                shape=(len(kept), settings.size, settings.size),
            )
            for start in range(0, len(kept), 4096):
                compact[start : start + 4096] = stack[kept[start : start + 4096]]
            compact.flush()
            del stack, compact
            os.replace(staging / "kept.npy", staging / "images.npy")
        kept_faces = faces.iloc[kept].reset_index(drop=True)
        kept_faces["hash"] = [hashes[row] for row in kept]
        decode_skips = pd.DataFrame(
            [(faces.at[r, "photo"], faces.at[r, "face"], reason) for r, reason in sorted(reasons.items())],
            columns=datasets.SKIPPED_COLUMNS,
        )
        kept_faces.to_csv(staging / "faces.csv", index=False)
        decode_skips.to_csv(staging / "skipped.csv", index=False)
        meta = {
            "settings": asdict(settings),
            "dataset": str(dataset.root),
            "format": dataset.format,
            "faces": len(kept),
            "version": CACHE_VERSION,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # lost a race to another process only if its copy is there
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prepared = _read_cache(target, settings, dataset)
    assert prepared is not None
    prepared.from_cache = False
    return prepared


@contextlib.contextmanager
def _main_not_rerun():
    """Spawned workers re-run the parent's main script before they start (to find functions defined
    there). The workers need only this module, and a main script may be an app: under Streamlit it
    is the dashboard, which would import TensorFlow and render pages in every worker. So while the
    workers start, the main module shows no file to re-run."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _chunks(tasks: list, workers: int) -> list[list]:
    """Chunks small enough to show progress and balance cores, large enough to keep overhead low."""
    size = max(8, min(256, len(tasks) // (workers * 8) or 1))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def _read_cache(target: Path, settings: PrepSettings, dataset: datasets.Dataset) -> Prepared | None:
    if not (target / "meta.json").is_file():
        return None
    stack = np.load(target / "images.npy", mmap_mode="r")
    faces = pd.read_csv(
        target / "faces.csv",
        dtype={"photo": object, "label": object, "split": object, "hash": object},
        keep_default_na=False,
        na_values={c: [""] for c in ("top", "left", "bottom", "right", "confidence")},
    )
    decode_skips = pd.read_csv(target / "skipped.csv", dtype={"photo": object, "reason": object})
    skipped = (
        pd.concat([dataset.skipped, decode_skips], ignore_index=True)
        if len(decode_skips)
        else dataset.skipped
    )
    return Prepared(
        images=stack, faces=faces, skipped=skipped, settings=settings, from_cache=True, cache_dir=target
    )
