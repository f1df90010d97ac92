"""Faces from photos, as the report made them: filter, crop the box, resize, grayscale, scale to [0, 1].

Crops are computed once per dataset and setting and cached on disk as one uint8 array, so a
second run (or another confidence threshold) reads them back instead of decoding photos again.
The confidence threshold is applied to the cached faces, not baked into the cache: moving the
threshold never recomputes anything.

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
import re
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer import datasets as D
from fer.config import MAX_SIZE, MIN_SIZE

# Bump when the pixels a setting produces change, so old caches are not reused.
# 2: reduced-scale JPEG decodes map boxes by the exact DCT scale; 3: EXIF-upright faces;
# 4: see-through pixels laid on white, as prediction does (they were read as their colour alone)
CACHE_VERSION = 4
# Photos above this many pixels are refused rather than decoded (a decompression-bomb guard).
MAX_PHOTO_PIXELS = 64_000_000
# EXIF orientation -> the transpose that turns what the camera stored upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

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


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 faces as float32 in [0, 1], the report's normalisation."""
    return np.multiply(images, np.float32(1 / 255), dtype=np.float32)


def default_cache_dir() -> Path:
    from fer.paths import data_dir

    return data_dir() / "cache"


def cache_key(dataset: D.Dataset, settings: PrepSettings) -> str:
    """Everything that changes the pixels: the dataset's files, the settings, and this code's version."""
    text = json.dumps(
        {"dataset": dataset.fingerprint(), "settings": asdict(settings), "version": CACHE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# Cropping -----------------------------------------------------------------------------------------


class FaceError(Exception):
    """This face cannot be processed; the message says why."""


def crop_box(
    box: tuple[float, float, float, float], width: int, height: int, margin: float
) -> tuple[int, ...]:
    """The (left, top, right, bottom) pixel region to crop: box plus margin, clipped to the photo.

    `box` is (top, left, bottom, right); NaN means the whole photo.
    """
    top, left, bottom, right = box
    if math.isnan(top):
        return (0, 0, width, height)
    pad_x, pad_y = (right - left) * margin, (bottom - top) * margin
    region = (
        max(0, math.floor(left - pad_x)),
        max(0, math.floor(top - pad_y)),
        min(width, math.ceil(right + pad_x)),
        min(height, math.ceil(bottom + pad_y)),
    )
    if region[2] <= region[0] or region[3] <= region[1]:
        raise FaceError(
            f"box lies outside the photo (box top={top:g} left={left:g} bottom={bottom:g} right={right:g}; "
            f"photo is {width}x{height})"
        )
    return region


def _open_gray(path: Path, boxes: list[tuple], settings: PrepSettings) -> tuple[Image.Image, int, int, float]:
    """Decode a photo as grayscale, at the smallest JPEG scale that keeps every face at least `size`.

    Returns the image, the photo's full width and height, and the image's pixels per photo pixel
    (below 1 where the JPEG was decoded at a reduced scale). The image is the photo as stored, since
    boxes refer to the stored pixels; `image.info["upright"]` is the transpose (or None) that its
    EXIF orientation asks for, which process_photo applies to each face it crops.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(path)
    width, height = image.size
    if width * height > MAX_PHOTO_PIXELS:
        raise FaceError(
            f"photo is too large to decode safely ({width}x{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {MAX_PHOTO_PIXELS / 1e6:.0f})"
        )
    scale = 1.0
    if image.format == "JPEG":
        regions = []
        for box in boxes:
            try:
                regions.append(crop_box(box, width, height, settings.margin))
            except FaceError:
                continue  # reported for that face alone by process_photo; the photo's other faces go on
        smallest = min((min(r[2] - r[0], r[3] - r[1]) for r in regions), default=min(width, height))
        factor = max(1.0, smallest / settings.size)
        drafted = image.draft("L", (math.ceil(width / factor), math.ceil(height / factor)))
        if drafted is not None:
            # The decoder shrinks by an integer factor s and rounds the size up (ceil(width / s)):
            # map photo pixels by 1 / s, the box draft returns, not by the ratio of the sizes.
            scale = drafted[1][2] / width
    image.load()
    upright = orientation_of(image)
    if image.mode != "L":
        image = flatten_alpha(to_8bit(image)).convert("L")
    image.info["upright"] = upright
    return image, width, height, scale


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and integer / float images scaled into 0-255 ("L"); convert("L") would clip at 255."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image
    array = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if array.max() > 255 else 255.0
    return Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8))


def flatten_alpha(image: Image.Image) -> Image.Image:
    """An image with transparency laid on white, as a viewer shows it; others unchanged.

    Training faces and photos to classify both go through this, so a see-through PNG gives the
    model the same pixels in a dataset as on the Classify page.
    """
    if image.mode not in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def upright_box(box: tuple, width: int, height: int, upright: Image.Transpose | None) -> tuple:
    """A (top, left, bottom, right) box in a photo's stored pixels (`width` x `height`), moved to
    where it lies once the photo is turned by `upright` (one of `_UPRIGHT`'s transposes, or None)."""
    top, left, bottom, right = box
    W, H = width, height
    T = Image.Transpose
    moved = {
        None: (top, left, bottom, right),
        T.FLIP_LEFT_RIGHT: (top, W - right, bottom, W - left),
        T.FLIP_TOP_BOTTOM: (H - bottom, left, H - top, right),
        T.ROTATE_180: (H - bottom, W - right, H - top, W - left),
        T.ROTATE_90: (W - right, top, W - left, bottom),  # counter-clockwise: (x, y) -> (y, W - x)
        T.ROTATE_270: (left, H - bottom, right, H - top),  # clockwise: (x, y) -> (H - y, x)
        T.TRANSPOSE: (left, top, right, bottom),  # (x, y) -> (y, x)
        T.TRANSVERSE: (W - right, H - bottom, W - left, H - top),  # (x, y) -> (H - y, W - x)
    }
    return moved[upright]


def orientation_of(image: Image.Image) -> Image.Transpose | None:
    """The transpose a photo's EXIF orientation asks for (None: already upright, or unreadable)."""
    try:
        return _UPRIGHT.get(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to lose the photo
        return None


def image_from_pixels(text: str) -> Image.Image:
    """A square grayscale image from FER2013-CSV pixel text ("70 80 82 ...")."""
    values = np.array(text.split(), dtype=np.float64)
    side = math.isqrt(values.size)
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8).reshape(side, side))


def _crop_resize(
    image: Image.Image, region: tuple[int, ...], size: int, upright: Image.Transpose | None = None
) -> np.ndarray:
    face = image.resize((size, size), Image.Resampling.BILINEAR, box=region, reducing_gap=3.0)
    return np.asarray(face if upright is None else face.transpose(upright))


def crop_faces(gray: Image.Image, boxes: list[tuple], settings: PrepSettings) -> np.ndarray:
    """(n, size, size) uint8 faces at (top, left, bottom, right) boxes of a grayscale image, cropped
    and resized exactly as the cache's faces are: what evaluation and prediction on photos use."""
    width, height = gray.size
    faces = [
        _crop_resize(gray, crop_box(box, width, height, settings.margin), settings.size) for box in boxes
    ]
    return np.stack(faces) if faces else np.zeros((0, settings.size, settings.size), np.uint8)


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
            image = image_from_pixels(source)
            width, height, scale = *image.size, 1.0
        else:
            image, width, height, scale = _open_gray(source, boxes, settings)
    except FaceError as error:
        return [str(error)] * len(boxes)
    except FileNotFoundError:
        return ["photo not found"] * len(boxes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow warns above 89 MP (made an error in _open_gray) and refuses above 179 MP.
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
            left, top, right, bottom = crop_box(box, width, height, settings.margin)
        except FaceError as error:
            results.append(str(error))
            continue
        region = (left * scale, top * scale, right * scale, bottom * scale)
        results.append(_crop_resize(image, region, settings.size, image.info.get("upright")))
    return results


def _process_chunk(base: str, array_path: str, tasks: list[tuple], settings: PrepSettings) -> list[tuple]:
    """Worker entry point: process photos and write their faces straight into the cache's array file.

    Tasks are (face rows, photo path or "\\0" + pixel text, boxes). Returns (row, hash or None, reason or
    None) per face: pixels never travel back through a pipe.
    """
    images = np.load(array_path, mmap_mode="r+")
    out = []
    for rows, source, boxes in tasks:
        photo = source[1:] if source.startswith("\0") else Path(base) / source
        for row, outcome in zip(rows, process_photo(photo, boxes, settings)):
            if isinstance(outcome, str):
                out.append((row, None, outcome))
            else:
                images[row] = outcome
                out.append((row, hashlib.blake2b(outcome.tobytes(), digest_size=8).hexdigest(), None))
    images.flush()
    return out


# Preparing a dataset ------------------------------------------------------------------------------


def prepare(
    dataset: D.Dataset,
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


def _tasks(dataset: D.Dataset) -> list[tuple[list[int], str, list[tuple]]]:
    faces = dataset.faces
    boxes = list(zip(faces["top"], faces["left"], faces["bottom"], faces["right"]))
    tasks = []
    for photo, rows in faces.groupby("photo", sort=False).indices.items():
        source = "\0" + dataset.pixels[photo] if dataset.pixels is not None else photo
        tasks.append((rows.tolist(), source, [boxes[r] for r in rows]))
    return tasks


def _compute(
    dataset: D.Dataset, settings: PrepSettings, target: Path, workers: int | None, progress: Progress | None
) -> Prepared:
    faces = dataset.faces.reset_index(drop=True)
    total = len(faces)
    tasks = _tasks(dataset)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    staging.mkdir(parents=True, exist_ok=True)
    try:
        images = np.lib.format.open_memmap(
            staging / "images.npy", mode="w+", dtype=np.uint8, shape=(total, settings.size, settings.size)
        )
        del images  # workers write into the file; this process only keeps the books
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
            raise D.DatasetError(
                f"no face of {dataset.root} could be processed ({len(reasons)} skipped; first reason: "
                f"{next(iter(reasons.values()), 'none')})"
            )
        if len(kept) < total:
            # Compact: the cache holds only faces that were made, in manifest order.
            images = np.load(staging / "images.npy", mmap_mode="r")
            compact = np.lib.format.open_memmap(
                staging / "kept.npy",
                mode="w+",
                dtype=np.uint8,
                shape=(len(kept), settings.size, settings.size),
            )
            for start in range(0, len(kept), 4096):
                compact[start : start + 4096] = images[kept[start : start + 4096]]
            compact.flush()
            del images, compact
            os.replace(staging / "kept.npy", staging / "images.npy")
        kept_faces = faces.iloc[kept].reset_index(drop=True)
        kept_faces["hash"] = [hashes[row] for row in kept]
        decode_skips = pd.DataFrame(
            [(faces.at[r, "photo"], faces.at[r, "face"], reason) for r, reason in sorted(reasons.items())],
            columns=D.SKIPPED_COLUMNS,
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


def _read_cache(target: Path, settings: PrepSettings, dataset: D.Dataset) -> Prepared | None:
    if not (target / "meta.json").is_file():
        return None
    images = np.load(target / "images.npy", mmap_mode="r")
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
        images=images, faces=faces, skipped=skipped, settings=settings, from_cache=True, cache_dir=target
    )


# Export -------------------------------------------------------------------------------------------


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


def export(prepared: Prepared, out_dir: Path, progress: Progress | None = None) -> list[Path]:
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


def sample_faces(
    dataset: D.Dataset,
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
    settings = PrepSettings(size=size)
    faces = dataset.faces.reset_index(drop=True)
    kept = keep_mask(faces, min_confidence)
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
                for row, outcome in zip(group.itertuples(), process_photo(source, boxes, settings)):
                    if isinstance(outcome, np.ndarray) and len(found) < per_label:
                        # Short enough to sit under a small face: the score, else the photo's name.
                        name = Path(str(row.photo).replace("#", "_")).stem[:16]
                        caption = name if math.isnan(row.confidence) else f"{row.confidence:.3g}"
                        found.append((outcome, caption))
            if len(found) >= per_label:
                break
        samples[label] = found
    return samples


def export_zip(prepared: Prepared, zip_path: Path, progress: Progress | None = None) -> Path:
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
            archive.writestr("faces.csv", table.to_csv(index=False), compress_type=zipfile.ZIP_DEFLATED)
            for path, name in zip(written, names):
                archive.write(path, name)
        os.replace(partial, zip_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return zip_path
