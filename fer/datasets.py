"""Read every supported dataset format into one manifest.

A manifest is a pandas DataFrame with one row per face (one labelled box):

    photo       the photo's path relative to the dataset root ("fer2013.csv#17" for a CSV row)
    face        the face's index within its photo
    top, left, bottom, right
                the box in the photo's pixels (NaN: the whole photo is the face)
    confidence  the detector's confidence (NaN where the format has none)
    label       canonical label name (see fer.labels)
    split       "train", "val", "test", or "" where the dataset defines none

Reading never decodes pixels, so counting and filtering stay instant on large datasets.
Faces that cannot be used (a malformed line, a missing photo, a box of zero area, a NaN
confidence, an unknown label) are left out of the manifest and listed in `Dataset.skipped`
with their reason; pixel-level problems (a corrupt photo) are found by preprocessing.

Every dataset is capped before it is parsed (see `count_faces`): an index lists a face in a few bytes,
the manifest holds it in a few hundred, so an uncapped upload of a few megabytes could hold gigabytes
of the server's memory for minutes. Index files are counted by streaming their bytes, and one big
dataset is parsed at a time per process, so one visitor's dataset cannot starve the others.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fer import labels
from fer.config import server_setting

COLUMNS = ["photo", "face", "top", "left", "bottom", "right", "confidence", "label", "split"]
SKIPPED_COLUMNS = ["photo", "face", "reason"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
EXPW_IMAGE_DIRS = ("image", "origin", "Images")
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}
FER_USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}

# What one dataset may hold. The default admits every real dataset (ExpW 91,793 faces, FER2013
# 35,887, AffectNet about 450,000); a server's owner may raise it, or lower it on a small machine.
MAX_FACES_VARIABLE = "FER_MAX_FACES"
MAX_FACES = 1_000_000  # faces: label.lst lines, image files, CSV rows (about 0.9 GB to read at the cap)
# An index file's bytes: FER2013's CSV (the biggest real one) is 290 MB, and reading a CSV takes about
# four times its size in memory, so a 2 GB upload of pixel text would otherwise hold 8 GB.
MAX_INDEX_MB_VARIABLE = "FER_MAX_INDEX_MB"
MAX_INDEX_MB = 384  # FER2013's CSV fits with room; reading one this big peaks near 1.6 GB
MAX_PIXEL_VALUES = 128 * 128  # numbers in one pixels cell of a FER2013-style CSV (FER2013's: 48 x 48)
MAX_LINE_BYTES = 4 * MAX_PIXEL_VALUES + 1024  # one line of an index file: such a cell and its row
BIG_DATASET = 100_000  # faces from which a dataset is parsed only while no other big one is
_PARSING = threading.Semaphore(1)  # one big parse at a time in this process: a server's visitors share it
_BLOCK = 1 << 20

# Column names a generic CSV may use for each field, in order of preference.
CSV_GUESSES = {
    "image": ["image", "image_path", "path", "file", "filename", "file_name", "photo", "img"],
    "label": ["label", "emotion", "expression", "class", "category"],
    "confidence": ["confidence", "score", "conf", "detector_confidence", "face_confidence"],
    "face": ["face", "face_id", "face_index"],
    "split": ["split", "usage", "subset"],
    "x": ["x", "box_x"],
    "y": ["y", "box_y"],
    "w": ["w", "width", "box_w", "box_width"],
    "h": ["h", "height", "box_h", "box_height"],
    "top": ["top"],
    "left": ["left"],
    "right": ["right"],
    "bottom": ["bottom"],
}


class DatasetError(ValueError):
    """The path is not a dataset, or the dataset has no usable face."""


@dataclass
class Dataset:
    root: Path  # the folder, or the CSV file
    format: str  # "expw", "folders", "fer2013-csv" or "csv"
    faces: pd.DataFrame  # the manifest (see the module docstring)
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))
    name: str = ""
    # FER2013's CSV holds its pixels as text; kept apart from the manifest so it stays light.
    pixels: pd.Series | None = None
    # Files whose content defines the manifest (label.lst, the CSV), for the cache key.
    index_files: tuple[Path, ...] = ()

    @property
    def base(self) -> Path:
        """Folder that photo paths are relative to."""
        return self.root if self.root.is_dir() else self.root.parent

    def photo_path(self, photo: str) -> Path:
        return self.base / photo

    @property
    def labels(self) -> list[str]:
        return labels.ordered(self.faces["label"].unique())

    def fingerprint(self) -> str:
        """A digest of everything on disk the faces come from: index files' bytes, photos' names, sizes, times."""
        digest = hashlib.sha256(f"{self.format}\n".encode())
        for path in self.index_files:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        if self.format != "fer2013-csv":
            base = str(self.base)  # once: the property asks the file system
            for photo in sorted(self.faces["photo"].unique()):
                try:
                    st = os.stat(os.path.join(base, photo))
                    digest.update(f"{photo}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                except OSError:
                    digest.update(f"{photo}\0missing\n".encode())
        return digest.hexdigest()[:24]


def load(path: str | os.PathLike, columns: dict[str, str] | None = None) -> Dataset:
    """Read the dataset at `path`, detecting its format. `columns` maps fields to a generic CSV's columns."""
    if str(path) == "demo":
        from fer import demo

        dataset = _read_expw(demo.ensure())
        dataset.name = demo.DESCRIPTION
        return dataset
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset not found: {root} does not exist")
    if root.is_file():
        if root.suffix.lower() == ".npz":
            raise DatasetError(
                f"{root.name} is a pack of prepared faces (`python -m fer pack`): `python -m fer train` takes "
                "it; everything else needs the datasets it was made from"
            )
        if root.suffix.lower() != ".csv":
            raise DatasetError(
                f"{root} is not a dataset: expected a folder (ExpW with label.lst, or image folders "
                f"per label) or a .csv file, got a {root.suffix or 'suffix-less'} file"
            )
        faces = count_faces(root)  # before anything parses it, the header included
        header = _csv_header(root)
        with _parse_slot(faces):
            dataset = _read_fer_csv(root) if "pixels" in header else _read_generic_csv(root, header, columns)
    elif (root / "label.lst").is_file():
        with _parse_slot(count_faces(root / "label.lst")):
            dataset = _read_expw(root)
    elif (root / "fer2013.csv").is_file():
        with _parse_slot(count_faces(root / "fer2013.csv")):
            dataset = _read_fer_csv(root / "fer2013.csv")
    else:
        with _parse_slot(BIG_DATASET):  # image folders are counted while they are read
            dataset = _read_folders(root)
    if dataset.faces.empty:
        reasons = dataset.skipped["reason"].value_counts().head(3)
        why = "; ".join(f"{n} x {r}" for r, n in reasons.items()) if len(reasons) else "no faces listed"
        raise DatasetError(f"dataset {root} has no usable face ({why})")
    dataset.name = dataset.name or root.name
    return dataset


# Limits ---------------------------------------------------------------------------------------------


def max_faces() -> int:
    """The most faces one dataset may hold on this server: $FER_MAX_FACES, else MAX_FACES."""
    try:
        return server_setting(MAX_FACES_VARIABLE, MAX_FACES, "faces")
    except ValueError as error:
        raise DatasetError(str(error)) from None


def max_index_bytes() -> int:
    """The most bytes one index file (label.lst, a CSV) may hold: $FER_MAX_INDEX_MB megabytes, else MAX_INDEX_MB."""
    text = os.environ.get(MAX_INDEX_MB_VARIABLE, "").strip()
    try:
        value = float(text) if text else MAX_INDEX_MB
    except ValueError:
        value = 0
    if not value > 0 or math.isinf(value):
        raise DatasetError(f"{MAX_INDEX_MB_VARIABLE} must be a number of megabytes above 0, got {text!r}")
    return int(value * 1024**2)


def too_many_faces(name: str, found: int, what: str = "faces") -> DatasetError:
    limit = max_faces()
    return DatasetError(
        f"{name} holds {found:,} {what}, more than the {limit:,} one dataset may hold on this server; "
        f"split the dataset, or have the server's owner raise {MAX_FACES_VARIABLE}"
    )


def count_faces(path: Path) -> int:
    """The faces an index file lists (label.lst: its lines; a CSV: its lines after the header), counted
    from its bytes in bounded memory. DatasetError when the file is bigger than `max_index_bytes()`, they
    are more than `max_faces()`, or a line is longer than MAX_LINE_BYTES (a line never needs that much:
    it would only make the parse slow and big)."""
    header = path.suffix.lower() == ".csv"
    try:
        size, limit = path.stat().st_size, max_index_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror}") from error
    if size > limit:
        raise DatasetError(
            f"{path.name} is {size / 1024**2:,.1f} MB ({size:,} bytes), more than the {limit / 1024**2:g} MB "
            "one dataset's index (label.lst or CSV) may be on this server; split the dataset, or have the "
            f"server's owner raise {MAX_INDEX_MB_VARIABLE}"
        )
    lines = run = 0  # run: bytes of the line in progress
    long_line = 0  # the number of the first line that is too long
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                pieces = block.split(b"\n")
                run += len(pieces[0])
                if max(run, max(map(len, pieces[1:]), default=0)) > MAX_LINE_BYTES:
                    lengths = [run, *map(len, pieces[1:])]  # stop now, however long the file is
                    long_line = lines + 1 + next(i for i, n in enumerate(lengths) if n > MAX_LINE_BYTES)
                    break
                lines += len(pieces) - 1
                run = len(pieces[-1]) if len(pieces) > 1 else run
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror}") from error
    if long_line:
        cell = (
            f"; a pixels cell may hold {MAX_PIXEL_VALUES:,} numbers ({math.isqrt(MAX_PIXEL_VALUES)} x "
            f"{math.isqrt(MAX_PIXEL_VALUES)}; FER2013's hold 48 x 48 = 2,304)"
            if header
            else ""
        )
        raise DatasetError(
            f"line {long_line:,} of {path.name} is longer than the {MAX_LINE_BYTES:,} bytes a line of a "
            f"dataset's index may hold{cell}; fix that line, or shrink the faces it holds"
        )
    faces = lines + (run > 0) - header
    if faces > max_faces():
        raise too_many_faces(path.name, faces)
    return max(faces, 0)


@contextlib.contextmanager
def _parse_slot(faces: int) -> Iterator[None]:
    """Inside, a big dataset (`faces` >= BIG_DATASET) holds the process's one slot for parsing one:
    two visitors' big datasets are parsed one after the other, never both at once in memory."""
    if faces < BIG_DATASET:
        yield
        return
    with _PARSING:
        yield


def _frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    if columns is COLUMNS:
        frame = frame.astype(
            {"photo": object, "face": "int64", "label": object, "split": object}
            | {c: "float64" for c in ("top", "left", "bottom", "right", "confidence")}
        )
    return frame


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value


def _box_problem(top: float, left: float, bottom: float, right: float) -> str | None:
    if any(math.isnan(v) or math.isinf(v) for v in (top, left, bottom, right)):
        return "box has a coordinate that is not a number"
    if bottom <= top or right <= left:
        return (
            f"box has zero or negative area (top={top:g}, left={left:g}, bottom={bottom:g}, right={right:g}); "
            "a box needs top < bottom and left < right"
        )
    return None


def _confidence_problem(value: float | None, text: object) -> str | None:
    if value is None or math.isnan(value):
        return f"confidence is not a number (got {text!r})"
    if value < 0:
        return f"confidence is negative (got {value:g})"
    return None


# ExpW ---------------------------------------------------------------------------------------------


def _read_expw(root: Path) -> Dataset:
    image_dir = next((d for d in EXPW_IMAGE_DIRS if (root / d).is_dir()), None)
    if image_dir is None:
        raise DatasetError(
            f"{root} has label.lst but no image folder: expected one of {', '.join(EXPW_IMAGE_DIRS)}/"
        )
    present = {e.name for e in os.scandir(root / image_dir) if e.is_file()}
    rows, skipped, seen = [], [], set()
    with open(root / "label.lst", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            photo = f"{image_dir}/{fields[0]}"
            if len(fields) != 8:
                skipped.append(
                    (
                        photo,
                        -1,
                        f"malformed line {number}: expected 8 fields (image face top left right "
                        f"bottom confidence label), got {len(fields)}",
                    )
                )
                continue
            face_id, top, left, right, bottom = (_number(v) for v in fields[1:6])
            if None in (face_id, top, left, right, bottom) or not float(face_id).is_integer():
                skipped.append((photo, -1, f"malformed line {number}: face id and box must be numbers"))
                continue
            face = int(face_id)
            confidence = _number(fields[6])
            label = labels.from_index(fields[7])
            problem = (
                _box_problem(top, left, bottom, right)
                or _confidence_problem(confidence, fields[6])
                or (
                    None
                    if label
                    else f"unknown label {fields[7]!r} (expected 0-6: {', '.join(labels.LABELS)})"
                )
                or (None if fields[0] in present else f"photo not found: {photo}")
                or (f"duplicate face {face} of this photo (line {number})" if (photo, face) in seen else None)
            )
            if problem:
                skipped.append((photo, face, problem))
                continue
            seen.add((photo, face))
            rows.append((photo, face, top, left, bottom, right, confidence, label, ""))
    return Dataset(
        root=root,
        format="expw",
        faces=_frame(rows, COLUMNS),
        skipped=_frame(skipped, SKIPPED_COLUMNS),
        index_files=(root / "label.lst",),
    )


# Image folders ------------------------------------------------------------------------------------


def _read_folders(root: Path) -> Dataset:
    subdirs = [e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
    split_dirs = [(e, SPLIT_DIRS[e.name.lower()]) for e in subdirs if e.name.lower() in SPLIT_DIRS]
    groups = (
        [(label_dir, split) for split_dir, split in split_dirs for label_dir in os.scandir(split_dir.path)]
        if split_dirs
        else [(e, "") for e in subdirs]
    )
    rows, skipped = [], []
    found, limit = 0, max_faces()
    for label_dir, split in groups:
        if not label_dir.is_dir() or label_dir.name.startswith("."):
            continue
        label = labels.canonical(label_dir.name)
        for entry in os.scandir(label_dir.path):
            if not entry.is_file() or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            found += 1
            if found > limit:  # keep counting, to say how many, but hold no more
                continue
            photo = os.path.relpath(entry.path, root)
            if entry.stat().st_size == 0:
                skipped.append((photo, 0, "photo is an empty file (0 bytes)"))
                continue
            rows.append((photo, 0, math.nan, math.nan, math.nan, math.nan, math.nan, label, split))
    if found > limit:
        raise too_many_faces(root.name, found, "photos in its label folders")
    if not rows and not skipped:
        raise DatasetError(
            f"{root} is not a dataset: expected label.lst (ExpW), fer2013.csv, or image folders named "
            "after labels (optionally under train/, val/, test/)"
        )
    faces = _frame(rows, COLUMNS).sort_values("photo", kind="stable", ignore_index=True)
    return Dataset(root=root, format="folders", faces=faces, skipped=_frame(skipped, SKIPPED_COLUMNS))


# CSV formats --------------------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            header = next(csv.reader(handle), [])
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror}") from error
    return [h.strip().lower() for h in header]


def _read_fer_csv(path: Path) -> Dataset:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip().lower() for c in table.columns]
    missing = {"emotion", "pixels"} - set(table.columns)
    if missing:
        raise DatasetError(
            f"{path} looks like FER2013's CSV but has no {' or '.join(sorted(missing))} column"
        )
    photos = [f"{path.name}#{i}" for i in range(len(table))]
    face_labels = [labels.from_index(v) for v in table["emotion"]]
    usage = table["usage"] if "usage" in table.columns else pd.Series([""] * len(table))
    splits = [FER_USAGE.get(u.strip().lower(), "") for u in usage]
    # Counted, not split: splitting FER2013's 35,887 cells makes 82 million strings (gigabytes).
    counts = table["pixels"].str.count(r"\S+").fillna(0).astype(int).to_numpy()
    rows, skipped = [], []
    for i, photo in enumerate(photos):
        side = math.isqrt(counts[i])
        if counts[i] == 0 or side * side != counts[i]:
            skipped.append((photo, 0, f"pixels must be a square number of values, got {counts[i]}"))
        elif face_labels[i] is None:
            skipped.append((photo, 0, f"unknown label {table['emotion'][i]!r} (expected 0-6)"))
        else:
            rows.append(
                (photo, 0, math.nan, math.nan, math.nan, math.nan, math.nan, face_labels[i], splits[i])
            )
    pixels = pd.Series(table["pixels"].to_numpy(), index=photos)
    return Dataset(
        root=path,
        format="fer2013-csv",
        faces=_frame(rows, COLUMNS),
        skipped=_frame(skipped, SKIPPED_COLUMNS),
        pixels=pixels,
        index_files=(path,),
    )


def _pick(header: list[str], field_name: str, columns: dict[str, str]) -> str | None:
    if field_name in columns:
        name = columns[field_name].strip().lower()
        if name not in header:
            raise DatasetError(
                f"column mapping {field_name}={columns[field_name]} names no column of the CSV "
                f"(its columns: {', '.join(header)})"
            )
        return name
    return next((c for c in CSV_GUESSES[field_name] if c in header), None)


def _read_generic_csv(path: Path, header: list[str], columns: dict[str, str] | None) -> Dataset:
    columns = columns or {}
    unknown = set(columns) - set(CSV_GUESSES)
    if unknown:
        raise DatasetError(
            f"unknown field(s) in the column mapping: {', '.join(sorted(unknown))}; "
            f"known fields: {', '.join(CSV_GUESSES)}"
        )
    chosen = {f: _pick(header, f, columns) for f in CSV_GUESSES}
    if chosen["image"] is None or chosen["label"] is None:
        need = [f for f in ("image", "label") if chosen[f] is None]
        raise DatasetError(
            f"{path}: cannot tell which column holds the {' and the '.join(need)}; its columns are "
            f"{', '.join(header) or '(none)'}. Name them, e.g. --columns image=COLUMN,label=COLUMN "
            f"(fields: {', '.join(CSV_GUESSES)})"
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table.columns = [c.strip().lower() for c in table.columns]
    has_xywh = all(chosen[f] for f in ("x", "y", "w", "h"))
    has_tlrb = all(chosen[f] for f in ("top", "left", "right", "bottom"))

    def value(row: dict, field_name: str) -> str:
        return row[chosen[field_name]].strip() if chosen[field_name] else ""

    base = path.parent
    rows, skipped = [], []
    counters: dict[str, int] = {}
    for number, row in enumerate(table.to_dict("records"), start=2):
        photo = value(row, "image")
        face_number = _number(value(row, "face"))
        face = (
            int(face_number)
            if face_number is not None and math.isfinite(face_number)
            else counters.get(photo, 0)
        )
        counters[photo] = face + 1
        if not photo:
            skipped.append((f"line {number}", face, "no image path"))
            continue
        if has_xywh:
            x, y, w, h = (_number(value(row, f)) for f in ("x", "y", "w", "h"))
            box = None if None in (x, y, w, h) else (y, x, y + h, x + w)
        elif has_tlrb:
            top, left, right, bottom = (_number(value(row, f)) for f in ("top", "left", "right", "bottom"))
            box = None if None in (top, left, right, bottom) else (top, left, bottom, right)
        else:
            box = (math.nan,) * 4
        raw_label = value(row, "label")
        label = (
            labels.from_index(raw_label)
            if _number(raw_label) is not None
            else (raw_label and labels.canonical(raw_label))
        )
        conf_text = value(row, "confidence")
        confidence = _number(conf_text) if chosen["confidence"] else math.nan
        problem = (
            ("box coordinates must be numbers" if box is None else None)
            or (_box_problem(*box) if box is not None and (has_xywh or has_tlrb) else None)
            or (_confidence_problem(confidence, conf_text) if chosen["confidence"] else None)
            or (None if label else f"unknown label {raw_label!r}")
            or (None if (base / photo).is_file() else f"photo not found: {photo}")
        )
        if problem:
            skipped.append((photo, face, problem))
            continue
        split = SPLIT_DIRS.get(value(row, "split").lower(), FER_USAGE.get(value(row, "split").lower(), ""))
        rows.append((photo, face, *box, confidence, label, split))
    return Dataset(
        root=path,
        format="csv",
        faces=_frame(rows, COLUMNS),
        skipped=_frame(skipped, SKIPPED_COLUMNS),
        index_files=(path,),
    )


def parse_columns(text: str | None) -> dict[str, str]:
    """Parse a command-line column mapping such as "image=file,label=emotion"."""
    if not text:
        return {}
    mapping = {}
    for part in text.split(","):
        key, sep, name = part.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise DatasetError(f"column mapping must look like field=column[,field=column...], got {text!r}")
        mapping[key.strip().lower()] = name.strip()
    return mapping
