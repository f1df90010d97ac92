"""Datasets visitors bring to the server: uploaded zips, and CSVs whose columns they name.

A zip is a list of claims written by whoever made it: member names, sizes, file types. Each claim
is checked before a single byte is written, because extraction that fails half-way would leave a
mess, and extraction that trusts the claims lets a visitor write outside the uploads folder
(`../` or absolute names), plant links to other files (symlink members), or fill the disk (a
zip bomb: a few kilobytes that expand to gigabytes). Sizes are counted again while extracting,
since a header can lie about them.

Extraction goes into a fresh hidden folder beside the destination and is renamed into place only
when everything came out, so a failure leaves nothing behind and a half-extracted dataset is
never visible. The destination is named after the upload's file name and a hash of its bytes, so
uploading the same zip again reuses the folder instead of filling the disk with copies.

A generic CSV's photos are paths the CSV names, so an uploaded CSV could point at any image on
the server, and any file of a dataset folder on the server may be a symbolic link to somewhere
else; `photos_outside` finds such files so the dashboard can refuse them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from fer import datasets

MAX_FILES = 300_000  # members in one zip; ExpW (91,793 photos) fits with room to spare
MAX_TOTAL_BYTES = 2 * 1024**3  # once extracted; uploads stop at 200 MB and datasets barely compress
MAX_RATIO = 100.0  # extracted / compressed; photos barely compress, FER2013's CSV about 3x
# Ratios are only judged above this many extracted bytes: a tiny text file can compress 50x
# honestly, and a small file cannot fill a disk however well it compresses.
RATIO_FLOOR = 1024**2
_CHUNK = 1 << 20
_JUNK = ("__MACOSX",)  # folders macOS's archiver adds beside the real content
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_ALLOWED_KINDS = {0, stat.S_IFREG, stat.S_IFDIR}  # 0: made on a system that records no file type
# What to do about a dataset zip that is too big, and why its ratio is suspicious.
DATASET_ADVICE = "upload a smaller dataset, or put it on the server and type its path"
DATASET_NOTE = "Photos and CSVs never compress that well"

Source = str | os.PathLike | BinaryIO


class UploadError(ValueError):
    """An upload the server will not use; the message names the problem and what to do."""


def safe_stem(filename: str) -> str:
    """The file name without folders or suffix, cut to letters, digits, `.`, `_` and `-`."""
    stem = Path(str(filename).replace("\\", "/").split("/")[-1]).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:60] or "upload"


def content_hash(source: Source) -> str:
    """SHA-256 of a file's bytes (a path, or a seekable file object, which is left at its start)."""
    digest = hashlib.sha256()
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
    else:
        source.seek(0)
        for block in iter(lambda: source.read(_CHUNK), b""):
            digest.update(block)
        source.seek(0)
    return digest.hexdigest()


def upload_folder_name(filename: str, digest: str) -> str:
    return f"{safe_stem(filename)}-{digest[:12]}"


def save_upload(
    source: Source,
    filename: str,
    uploads: Path | None = None,
    *,
    max_files: int = MAX_FILES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
) -> Path:
    """Extract an uploaded zip into `uploads`/<name>-<hash>/ (default fer.paths.uploads_dir()) and
    return the dataset root inside it. The same bytes uploaded again reuse the earlier folder."""
    if uploads is None:
        from fer.paths import uploads_dir

        uploads = uploads_dir()
    dest = Path(uploads) / upload_folder_name(filename, content_hash(source))
    if dest.is_dir():
        return find_root(dest)
    try:
        return extract_zip(
            source, dest, max_files=max_files, max_total_bytes=max_total_bytes, max_ratio=max_ratio
        )
    except UploadError:
        if dest.is_dir():  # another visitor uploaded the same zip at the same moment, and won
            return find_root(dest)
        raise


def extract_zip(
    source: Source,
    dest_dir: str | os.PathLike,
    *,
    max_files: int = MAX_FILES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
) -> Path:
    """Extract the zip `source` into `dest_dir` (which must not exist yet) and return the dataset
    root inside it: the folder holding label.lst, the CSV, or the folder of label folders.

    Raises UploadError, having written nothing, for members with absolute or `..` paths, links,
    device files, encryption, more than `max_files` members, more than `max_total_bytes` once
    extracted, or an extracted / compressed ratio above `max_ratio`; and, having removed what it
    wrote, when the bytes that come out exceed what the headers declared or the zip is corrupt.
    """
    dest = Path(dest_dir)
    if dest.exists():
        raise UploadError(f"{dest} already exists; extract into a new folder, or remove that one first")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise UploadError(
            f"the upload is not a readable zip file ({error}); upload a .zip archive of the dataset folder"
        ) from error
    with archive:
        members = _check_members(archive.infolist(), max_files, max_total_bytes, max_ratio)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.part-", dir=dest.parent))
        try:
            _extract(archive, members, staging, max_total_bytes)
            root = find_root(staging)
            try:
                os.rename(staging, dest)
            except OSError as error:
                raise UploadError(f"cannot move the extracted files to {dest}: {error.strerror}") from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest / root.relative_to(staging)


def _member_parts(name: str) -> list[str]:
    """The path parts of a member name; UploadError if the name could land outside the folder."""
    if "\0" in name:
        raise UploadError(
            f"the zip holds a member whose name contains a NUL character ({name!r}); re-create the zip"
        )
    text = name.replace("\\", "/")  # Windows archivers may write either separator
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise UploadError(
            f"the zip holds a member with an absolute path ({name}); zip the dataset folder with relative "
            "paths (e.g. `cd parent && zip -r dataset.zip dataset`)"
        )
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UploadError(
            f"the zip holds a member whose path climbs out of the folder with '..' ({name}); "
            "re-create the zip from inside the dataset's parent folder"
        )
    return parts


def _check_members(
    infos: list[zipfile.ZipInfo],
    max_files: int,
    max_total_bytes: int,
    max_ratio: float,
    *,
    advice: str = DATASET_ADVICE,
    note: str = DATASET_NOTE,
) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Check every claim of a zip's headers; return its (member, path parts) to extract.

    UploadError names the first bad member: an unsafe name, a link or device file, encryption, an
    unknown compression method, a name listed twice, too many members, too many bytes once
    extracted, or a zip-bomb ratio. `advice` says what to do about a zip that is too big, `note`
    why its ratio gives it away: `fer.predict` checks uploaded model files (zips too) with its own.
    """
    if len(infos) > max_files:
        raise UploadError(
            f"the zip holds {len(infos):,} members, more than the {max_files:,} allowed; {advice}"
        )
    members, seen, bombs = [], set(), []
    total = compressed = 0
    for info in infos:
        parts = _member_parts(info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise UploadError(
                f"the zip holds a symbolic link ({info.filename}); links are refused because they can "
                "point at other files on the server. Zip the files themselves (zip without --symlinks)"
            )
        if kind not in _ALLOWED_KINDS:
            raise UploadError(
                f"the zip holds a device, pipe or socket ({info.filename}, file type {oct(kind)}); "
                "only regular files and folders are allowed"
            )
        if info.flag_bits & 0x1:
            raise UploadError(
                f"the zip holds an encrypted member ({info.filename}); upload it without a password"
            )
        if info.compress_type not in _METHODS:
            raise UploadError(
                f"the zip member {info.filename} uses compression method {info.compress_type}, which cannot be "
                "read here; re-create the zip with ordinary (deflate) compression"
            )
        key = "/".join(parts)
        if key in seen and not info.is_dir():
            raise UploadError(f"the zip lists {info.filename} twice; re-create the zip")
        seen.add(key)
        total += info.file_size
        compressed += info.compress_size
        if info.file_size > RATIO_FLOOR and info.file_size > max_ratio * max(info.compress_size, 1):
            bombs.append(info)
        if parts:
            members.append((info, parts))
    if total > max_total_bytes:
        raise UploadError(
            f"the zip expands to {total:,} bytes, more than the {max_total_bytes:,} allowed; {advice}"
        )
    for info in bombs[:1]:
        raise UploadError(
            f"the zip member {info.filename} expands {info.file_size / max(info.compress_size, 1):,.0f} "
            f"times ({info.compress_size:,} -> {info.file_size:,} bytes), more than the {max_ratio:g} "
            f"allowed: it looks like a zip bomb. {note}"
        )
    if total > RATIO_FLOOR and total > max_ratio * max(compressed, 1):
        raise UploadError(
            f"the zip expands {total / max(compressed, 1):,.0f} times ({compressed:,} -> {total:,} bytes), "
            f"more than the {max_ratio:g} allowed: it looks like a zip bomb"
        )
    return members


def _extract(
    archive: zipfile.ZipFile,
    members: list[tuple[zipfile.ZipInfo, list[str]]],
    into: Path,
    max_total_bytes: int,
) -> None:
    written = 0
    for info, parts in members:
        target = into.joinpath(*parts)
        try:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            # Our own open(): no permission bits, owners or links come from the zip.
            with archive.open(info) as member, open(target, "xb") as out:
                for block in iter(lambda: member.read(_CHUNK), b""):
                    size += len(block)
                    written += len(block)
                    if size > info.file_size or written > max_total_bytes:
                        raise UploadError(
                            f"the zip member {info.filename} expands beyond the size its header declares "
                            f"({info.file_size:,} bytes) or the {max_total_bytes:,} allowed in all: the zip "
                            "is corrupt or crafted; re-create it"
                        )
                    out.write(block)
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as error:
            raise UploadError(
                f"the zip member {info.filename} cannot be read ({error}); re-create the zip"
            ) from error
        except OSError as error:
            raise UploadError(
                f"cannot extract {info.filename}: {error.strerror or error}; check the zip's file names"
            ) from error


# Finding the dataset in an extracted tree ---------------------------------------------------------


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in _JUNK)


def find_root(folder: str | os.PathLike, depth: int = 6) -> Path:
    """The dataset inside an extracted tree: the first folder, going down through single wrapper
    folders, that holds label.lst or fer2013.csv, a single CSV file (returned itself), or label
    folders of images that fer.datasets reads. UploadError when there is none."""
    current = Path(folder)
    for _ in range(depth):
        entries = _visible(current)
        names = {p.name for p in entries}
        if "label.lst" in names or "fer2013.csv" in names:
            return current
        csvs = [p for p in entries if p.is_file() and p.suffix.lower() == ".csv"]
        if len(csvs) == 1:
            return csvs[0]
        if len(csvs) > 1:
            raise UploadError(
                f"the zip holds several CSV files in {current.name or 'its top folder'} "
                f"({', '.join(p.name for p in csvs[:5])}); zip one dataset at a time"
            )
        folders = [p for p in entries if p.is_dir()]
        images = [p for p in entries if p.is_file() and p.suffix.lower() in datasets.IMAGE_SUFFIXES]
        if len(folders) == 1 and not images:
            current = folders[0]  # a wrapper folder (the zip of a folder), perhaps beside a README
            continue
        break
    try:
        datasets.load(current)
    except datasets.DatasetError as error:
        raise UploadError(
            "the zip holds no dataset: expected an ExpW folder (label.lst and image/), image folders named "
            "after labels (optionally under train/, val/, test/), FER2013's CSV, or one CSV of image paths "
            f"and labels ({error})"
        ) from error
    return current


# Generic CSVs -------------------------------------------------------------------------------------


def remap_csv(csv_path: str | os.PathLike, columns: dict[str, str], out_dir: Path | None = None) -> Path:
    """A copy of a generic CSV whose columns fer.datasets guesses, given the mapping the visitor typed.

    The dashboard passes datasets around as a path alone (the Train page starts `python -m fer
    train PATH`), so a mapping must live in a file: mapped columns are copied under the field's own
    name (the first name fer.datasets guesses), and image paths are made absolute so the copy can
    live apart from the photos. The copy goes to `out_dir` (default <data dir>/mapped/<name>-<hash>/)
    and is reused when the CSV and the mapping are unchanged.
    """
    source = Path(csv_path).resolve()
    datasets.load(source, columns)  # the same refusal, with its message, if the mapping does not work
    mapping = {field: name.strip().lower() for field, name in columns.items()}
    if out_dir is None:
        from fer.paths import data_dir

        key = hashlib.sha256(content_hash(source).encode() + json.dumps(mapping, sort_keys=True).encode())
        out_dir = data_dir() / "mapped" / f"{safe_stem(source.name)}-{key.hexdigest()[:12]}"
    target = Path(out_dir) / f"{safe_stem(source.name)}.csv"
    if target.is_file():
        return target
    table = pd.read_csv(source, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table.columns = [c.strip().lower() for c in table.columns]
    out = table.copy()
    for field in mapping:
        if field in out.columns and mapping[field] != field:
            out = out.rename(columns={field: f"{field}_original"})  # or it would shadow the mapped column
    for field, name in mapping.items():
        out[field] = table[name]
    image = (
        "image" if "image" in mapping else next(c for c in datasets.CSV_GUESSES["image"] if c in out.columns)
    )
    out[image] = [os.path.join(source.parent, p) if p.strip() else p for p in out[image]]
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    out.to_csv(buffer, index=False)
    partial = target.with_name(target.name + f".part-{os.getpid()}")
    partial.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(partial, target)
    return target


def photos_outside(dataset: datasets.Dataset, roots: list[Path]) -> list[str]:
    """Files of a dataset that resolve (links and `..` included) outside every one of `roots`: its
    index file (label.lst, the CSV) first, then its photos in manifest order.

    A generic CSV names its photos freely; in the other formats any file or folder of the dataset
    (a photo, a label folder, the image folder) may be a symbolic link to somewhere else on the
    server. Each folder is resolved once and each photo checked for being a link itself, so a
    dataset of a million photos costs a million lstat calls, not a million full resolutions.
    """

    def inside(path: str) -> bool:
        resolved = Path(os.path.realpath(path))
        return any(resolved == root or resolved.is_relative_to(root) for root in roots)

    base = str(dataset.base)
    outside = [os.path.relpath(p, base) for p in dataset.index_files if not inside(str(p))]
    if dataset.format == "fer2013-csv":
        return outside  # its photos are rows of the CSV
    folders: dict[str, bool] = {}
    for photo in dataset.faces["photo"].unique():
        path = os.path.join(base, photo)
        folder, name = os.path.split(path)
        if folder not in folders:
            folders[folder] = inside(folder)
        if (not folders[folder] or name in ("", ".", "..") or os.path.islink(path)) and not inside(path):
            outside.append(photo)
    return outside
