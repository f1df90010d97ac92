"""Uploaded dataset zips: good ones extract and load, bad ones are refused and leave nothing behind."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest
from helpers import expw, expw_faces, folders, write_csv
from helpers import zip_of as zip_members

from fer import datasets as D
from fer import paths
from fer import uploads as U


@pytest.fixture(autouse=True)
def _own_uploads(tmp_path, monkeypatch):
    """An uploads folder per test, so "nothing left behind" sees this test's files alone."""
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))


def zip_tree(folder: Path, zip_path: Path, arc_prefix: str = "") -> Path:
    """Zip every file under `folder`, named relative to its parent (a zip of the folder itself)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, arc_prefix + path.relative_to(folder.parent).as_posix())
    return zip_path


def good_expw_zip(tmp_path: Path) -> Path:
    return zip_tree(expw_faces(tmp_path / "src" / "expw", photos=5), tmp_path / "expw.zip")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# Good zips ----------------------------------------------------------------------------------------


def test_an_expw_zip_extracts_under_uploads_and_loads(tmp_path):
    root = U.save_upload(good_expw_zip(tmp_path), "my ExpW/../set.zip")
    uploads = paths.uploads_dir()
    assert root.parent.parent == uploads
    assert root.name == "expw"  # the zip's single top folder, where label.lst is
    folder = root.parent.name
    assert folder.startswith("set-") and len(folder) == len("set-") + 12  # safe name + short hash
    dataset = D.load(root)
    assert dataset.format == "expw" and len(dataset.faces) == 5
    assert (root / "image" / "p0000.png").is_file()
    assert not [p for p in uploads.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_the_same_zip_uploaded_again_reuses_its_folder(tmp_path):
    zip_path = good_expw_zip(tmp_path)
    first = U.save_upload(zip_path, "expw.zip")
    marker = first / "marker"
    marker.write_text("kept")
    again = U.save_upload(io.BytesIO(zip_path.read_bytes()), "expw.zip")  # a file object, as Streamlit gives
    assert again == first and marker.is_file()  # not extracted a second time


def test_zips_of_other_formats_find_their_dataset_root(tmp_path):
    folder_zip = zip_tree(
        folders(tmp_path / "fer" / "fer2013", {"train/happy": 2, "test/sad": 1}), tmp_path / "f.zip"
    )
    root = U.extract_zip(folder_zip, tmp_path / "out1")
    assert root == tmp_path / "out1" / "fer2013"
    assert D.load(root).faces["split"].tolist() == ["test", "train", "train"]

    csv = write_csv(
        tmp_path / "c" / "faces.csv", ["emotion", "pixels", "Usage"], [(3, "0 " * 2304, "Training")]
    )
    csv_root = U.extract_zip(
        zip_members(tmp_path / "c.zip", {"faces.csv": csv.read_bytes()}), tmp_path / "out2"
    )
    assert csv_root == tmp_path / "out2" / "faces.csv"
    assert D.load(csv_root).format == "fer2013-csv"


def test_a_zip_with_no_dataset_is_refused_and_leaves_nothing(tmp_path):
    bad = zip_members(tmp_path / "notes.zip", {"notes/readme.txt": b"hello"})
    with pytest.raises(U.UploadError, match="holds no dataset"):
        U.save_upload(bad, "notes.zip")
    assert leftovers(paths.uploads_dir()) == []


# Bad zips -----------------------------------------------------------------------------------------


def symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("expw/label.lst", "a.png 0 1 1 20 20 50 3\n")
        link = zipfile.ZipInfo("expw/image/a.png")
        link.create_system = 3  # Unix, so the mode bits below are read
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return path


def device_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("expw/dev")
        info.create_system = 3
        info.external_attr = (stat.S_IFCHR | 0o666) << 16
        archive.writestr(info, "")
    return path


def zeros_zip(path: Path, megabytes: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/faces.csv", b"\0" * (megabytes * 1024**2))
    return path


BAD = {
    "parent path": (
        lambda p: zip_members(p, {"expw/label.lst": b"x", "../evil.txt": b"x"}),
        {},
        r"climbs out of the folder with '\.\.' \(\.\./evil\.txt\)",
    ),
    "nested parent path": (
        lambda p: zip_members(p, {"expw/../../evil.txt": b"x"}),
        {},
        "climbs out of the folder",
    ),
    "backslash parent path": (
        lambda p: zip_members(p, {"expw\\..\\..\\evil.txt": b"x"}),
        {},
        "climbs out of the folder",
    ),
    "absolute path": (
        lambda p: zip_members(p, {"/tmp/evil.txt": b"x"}),
        {},
        r"absolute path \(/tmp/evil\.txt\)",
    ),
    "drive path": (lambda p: zip_members(p, {"C:/evil.txt": b"x"}), {}, "absolute path"),
    "symlink": (symlink_zip, {}, r"symbolic link \(expw/image/a\.png\)"),
    "device": (device_zip, {}, "device, pipe or socket"),
    "too many files": (
        lambda p: zip_members(p, {f"expw/image/{i}.png": b"x" for i in range(6)}),
        {"max_files": 5},
        "holds 6 members, more than the 5 allowed",
    ),
    "expands past the cap": (
        lambda p: zeros_zip(p, 3),
        {"max_total_bytes": 2 * 1024**2},
        "expands to 3,145,728 bytes, more than the 2,097,152 allowed",
    ),
    "zip bomb ratio": (lambda p: zeros_zip(p, 3), {}, "looks like a zip bomb"),
    "not a zip": (
        lambda p: p.write_bytes(b"PK\3\4 this is not really a zip") and p,
        {},
        "not a readable zip",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_zip_is_refused_with_a_message_and_nothing_is_written(tmp_path, case):
    make, limits, message = BAD[case]
    zip_path = make(tmp_path / "upload.zip")
    uploads = tmp_path / "uploads"
    with pytest.raises(U.UploadError, match=message):
        U.save_upload(zip_path, "upload.zip", uploads, **limits)
    assert leftovers(uploads) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_an_upload_error_is_a_value_error():
    assert issubclass(U.UploadError, ValueError)


def test_a_header_that_understates_a_size_is_caught_while_extracting(tmp_path, monkeypatch):
    """A header that lies is hard to write with zipfile, so the checked size is shrunk after the check."""
    zip_path = zip_members(tmp_path / "liar.zip", {"expw/label.lst": b"a.png 0 1 1 20 20 50 3\n" * 1000})
    real = U._check_members

    def lying(infos, *args):
        members = real(infos, *args)
        for info, _ in members:
            info.file_size = 100  # what a crafted header would claim
        return members

    monkeypatch.setattr(U, "_check_members", lying)
    # zipfile itself stops at the declared size and then finds the CRC wrong; either way it is refused.
    with pytest.raises(U.UploadError, match=r"expw/label\.lst (cannot be read|expands beyond)"):
        U.extract_zip(zip_path, tmp_path / "uploads" / "liar")
    assert leftovers(tmp_path / "uploads") == []


def test_bytes_are_counted_against_the_cap_while_extracting(tmp_path, monkeypatch):
    """Even if the header check were fooled into passing, the bytes that come out are counted."""
    zip_path = zeros_zip(tmp_path / "big.zip", 3)
    real = U._check_members
    monkeypatch.setattr(U, "_check_members", lambda infos, *args: real(infos, 10, 10 * 1024**3, 1e9))
    with pytest.raises(U.UploadError, match="the 2,097,152 allowed in all"):
        U.extract_zip(zip_path, tmp_path / "uploads" / "big", max_total_bytes=2 * 1024**2)
    assert leftovers(tmp_path / "uploads") == []


def test_extract_refuses_an_existing_destination(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(U.UploadError, match="already exists"):
        U.extract_zip(good_expw_zip(tmp_path), tmp_path / "taken")


@pytest.mark.parametrize(
    "filename, stem",
    [("../../etc/passwd", "passwd"), ("C:\\data\\my set.v2.zip", "my_set.v2"), ("...", "upload")],
)
def test_safe_stem_keeps_no_path_characters(filename, stem):
    assert U.safe_stem(filename) == stem


# Generic CSVs -------------------------------------------------------------------------------------


def test_remap_csv_writes_a_copy_that_loads_without_a_mapping(tmp_path):
    expw(tmp_path / "set", [], ["a.png", "b.png"])
    source = write_csv(
        tmp_path / "set" / "faces.csv",
        ["picture", "mood", "label", "bx", "by", "bw", "bh"],
        [("image/a.png", "happy", "ignored", 1, 1, 20, 20), ("image/b.png", "sad", "ignored", 2, 2, 20, 20)],
    )
    with pytest.raises(D.DatasetError, match="cannot tell which column holds the image"):
        D.load(source)
    columns = D.parse_columns("image=picture,label=mood,x=bx,y=by,w=bw,h=bh")
    copy = U.remap_csv(source, columns, tmp_path / "mapped")
    mapped, direct = D.load(copy), D.load(source, columns)
    assert mapped.faces["label"].tolist() == direct.faces["label"].tolist() == ["happy", "sad"]
    assert mapped.faces[["top", "left", "bottom", "right"]].equals(
        direct.faces[["top", "left", "bottom", "right"]]
    )
    assert mapped.photo_path(mapped.faces["photo"][0]) == tmp_path / "set" / "image" / "a.png"
    with pytest.raises(D.DatasetError, match="names no column"):
        U.remap_csv(source, {"image": "nope", "label": "mood"}, tmp_path / "mapped2")


def test_photos_outside_finds_csv_photos_beyond_the_roots(tmp_path):
    inside, outside = tmp_path / "root", tmp_path / "elsewhere"
    expw(inside, [], ["a.png"])
    expw(outside, [], ["b.png"])
    csv = write_csv(
        inside / "faces.csv",
        ["image", "label"],
        [
            ("image/a.png", "happy"),
            (str(outside / "image" / "b.png"), "sad"),
            ("../elsewhere/image/b.png", "sad"),
        ],
    )
    dataset = D.load(csv)
    assert sorted(U.photos_outside(dataset, [inside.resolve()])) == [
        "../elsewhere/image/b.png",
        str(outside / "image" / "b.png"),
    ]
    assert U.photos_outside(dataset, [tmp_path.resolve()]) == []
    os.symlink(outside / "image" / "b.png", inside / "image" / "link.png")
    linked = D.load(write_csv(inside / "l.csv", ["image", "label"], [("image/link.png", "sad")]))
    assert U.photos_outside(linked, [inside.resolve()]) == ["image/link.png"]
