"""Builders for tiny datasets written inside a test's tmp_path (unit tests never touch ../shared), and a
dashboard server for browser tests."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]


def photo(path: Path, size: tuple[int, int] = (96, 80), seed: int = 0, value: int | None = None) -> Path:
    """Write a small RGB photo (width, height): random blocks from `seed`, or one flat grey `value`."""
    width, height = size
    if value is None:
        rng = np.random.default_rng(seed)
        blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
    else:
        pixels = np.full((height, width, 3), value, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(pixels).save(path, **options)
    return path


def expw(
    root: Path,
    lines: Iterable[str],
    photos: Iterable[str] = (),
    image_dir: str = "image",
    size: tuple[int, int] = (96, 80),
) -> Path:
    """An ExpW folder: `label.lst` holding `lines`, and a photo for each name in `photos`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / image_dir).mkdir(exist_ok=True)
    for seed, name in enumerate(photos):
        photo(root / image_dir / name, size, seed=seed)
    (root / "label.lst").write_text("".join(f"{line}\n" for line in lines))
    return root


def expw_faces(root: Path, photos: int, faces_per_photo: int = 1, size: tuple[int, int] = (64, 64)) -> Path:
    """An ExpW folder of `photos` photos with `faces_per_photo` faces each; labels cycle through 0-6,
    confidences through 0.1 .. 0.9 (face k of photo i: label (i + k) % 7, confidence ((i + k) % 9 + 1) / 10)."""
    lines, names = [], []
    for i in range(photos):
        name = f"p{i:04d}.png"
        names.append(name)
        for k in range(faces_per_photo):
            top, left = 2 + 4 * k, 2 + 6 * k
            lines.append(
                f"{name} {k} {top} {left} {left + 30} {top + 30} {((i + k) % 9 + 1) / 10} {(i + k) % 7}"
            )
    return expw(root, lines, names, size=size)


def folders(
    root: Path, layout: dict[str, int], size: tuple[int, int] = (64, 64), suffix: str = ".png"
) -> Path:
    """Image folders: `layout` maps a relative folder ("happy", "train/sad") to its number of photos."""
    seed = 0
    for folder, count in layout.items():
        for i in range(count):
            photo(root / folder / f"img{i}{suffix}", size, seed=seed)
            seed += 1
    return root


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def fer_pixels(seed: int, side: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)


def pixel_text(pixels: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in pixels.ravel())


# The files a finished run folder holds (fer.train writes them all, each atomically).
RUN_FILES = (
    "config.json",
    "labels.json",
    "status.json",
    "history.csv",
    "progress.json",
    "best.keras",
    "last.keras",
    "state.json",
    "metrics.json",
    "predictions.csv",
)


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    """A deflated zip at `path` holding `members` (name -> bytes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@contextlib.contextmanager
def streamlit_server(home: Path):
    """`streamlit run streamlit_app.py` on a free localhost port with FER_HOME=home (its output in
    home/server.log); yields the URL once the server answers its health check."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "FER_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true"]  # fmt: skip
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
