"""What several test files share: builders for tiny datasets written inside a test's tmp_path (unit tests
never touch ../shared), a run folder written from a known confusion, model files a visitor might upload,
stand-ins for the Python interpreter, and a real `streamlit run` server for browser tests."""

from __future__ import annotations

import contextlib
import csv
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]


def suite_home(tmp_path_factory) -> Path:
    """The FER_HOME conftest gives every test: one per test run, under pytest's base temporary folder."""
    return tmp_path_factory.getbasetemp() / "fer-home"


def home_beside(tmp_path_factory, name: str) -> Path:
    """A FER_HOME of its own (its own runs and uploads) that shares the demo dataset and the face
    cache of the tests' FER_HOME, so neither is built twice. For tests whose runs must not meet
    another file's: the run store lists every run of a home, and pages show the runs going in it."""
    from fer import demo

    shared = suite_home(tmp_path_factory)
    home = tmp_path_factory.getbasetemp() / name
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_HOME", str(shared))
        dataset = demo.ensure()
    (shared / "cache").mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    for link, target in ((demo.NAME, dataset), ("cache", shared / "cache")):
        if not (home / link).exists():
            (home / link).symlink_to(target)
    return home


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


def held_python(folder: Path) -> tuple[Path, Path]:
    """A stand-in for the Python interpreter that waits until a file exists and then becomes the real
    one (exec, same process), and that file: a run started through it (monkeypatch sys.executable) stays
    queued, whatever the machine's speed, until the test creates the file."""
    go = folder / "go"
    fake = folder / "python"
    fake.write_text(
        f"#!/bin/sh\nwhile [ ! -e {shlex.quote(str(go))} ]; do sleep 0.1; done\n"
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    fake.chmod(0o755)
    return fake, go


# A run folder written by hand from a known confusion ----------------------------------------------

EVIL = "<script>alert('x')</script>"
KNOWN_LABELS = ["happy", "sad", EVIL]
# Rows: true label, columns: predicted. 25 faces, 16 right.
CONFUSION = np.array([[8, 1, 1], [2, 5, 3], [0, 2, 3]])


def known_run(run_dir: Path, *, dataset: str = "/nowhere/moved-dataset") -> Path:
    """A finished run folder with the files a training writes, for the CONFUSION above, whose third
    label is markup (EVIL); its dataset no longer exists, so it has no face images."""
    from fer import evaluate as E
    from fer import runs as R
    from fer.config import TrainConfig

    y_true = np.repeat(np.arange(3), CONFUSION.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(3), row) for row in CONFUSION])
    config = TrainConfig(datasets=(dataset,), arch="seed", epochs=3)
    model = config.model_config(num_classes=3)
    R.write_json(
        run_dir / "config.json",
        {
            "train": asdict(config),
            "model": asdict(model),
            "command": "python -m fer train",
            "labels": KNOWN_LABELS,
        },
    )
    R.write_json(run_dir / "labels.json", KNOWN_LABELS)
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.5, 1.1, 0.9],
            "accuracy": [0.4, 0.55, 0.62],
            "val_loss": [1.4, 1.2, 1.15],
            "val_accuracy": [0.45, 0.58, 0.6],
            "learning_rate": [1e-3] * 3,
            "seconds": [3.0] * 3,
        }
    )
    R.write_csv(run_dir / "history.csv", history)
    metrics = E.metrics(y_true, y_pred, KNOWN_LABELS)
    metrics.update(split="test", best_epoch=3)
    R.write_json(run_dir / "metrics.json", metrics)
    probabilities = np.full((len(y_true), 3), 0.1)
    probabilities[np.arange(len(y_true)), y_pred] = 0.8
    faces = pd.DataFrame(
        {
            "dataset": dataset,
            "photo": [f"img/{i}.jpg" for i in range(len(y_true))],
            "face": 0,
            "split": "test",
            "label": [KNOWN_LABELS[i] for i in y_true],
        }
    )
    R.write_csv(run_dir / "predictions.csv", E.predictions_table(faces, KNOWN_LABELS, probabilities))
    R.set_status(run_dir, "done", error=None, best_epoch=3)
    return run_dir


# Model files ---------------------------------------------------------------------------------------


def lambda_model(path: Path) -> Path:
    """A model file saved the way training saves one, but with a Lambda layer (Python code inside)."""
    import keras

    from fer.modelfile import save_model

    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    save_model(
        keras.Model(inputs, outputs), path, {"labels": ["happy", "sad"], "image_size": 48, "margin": 0.0}
    )
    return path


# A real server and a real browser ------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
LOAD_MS = 180_000  # first page view imports TensorFlow and may build the demo dataset


def require_browser() -> None:
    """Skip (or, where FER_REQUIRE_BROWSER is set, fail) without Chromium and Playwright."""
    missing = not CHROMIUM.is_file()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = True
    if missing:
        message = "Debian's chromium (/usr/bin/chromium) and the playwright package are needed"
        if os.environ.get("FER_REQUIRE_BROWSER"):
            pytest.fail(f"{message}, and FER_REQUIRE_BROWSER is set (CI must run browser tests)")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether the server at `url` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=30) as response:
            return response.read() == b"ok"
    except OSError:
        return False


def memory_kb(pid: int) -> dict[str, int]:
    """A process's resident memory now and at its peak (VmRSS, VmHWM), in kB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


@contextlib.contextmanager
def server(home: Path, env: dict[str, str] | None = None):
    """`streamlit run streamlit_app.py` on a free localhost port with FER_HOME=home (its output in
    home/server.log); yields (url, pid) once it answers its health check."""
    port = _free_port()
    env = {**(os.environ if env is None else env), "FER_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true"]  # fmt: skip
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300  # a loaded machine starts it slowly
            while not healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
            yield url, process.pid
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def serving(home: Path):
    """The server of `server`, for tests that need only its URL."""
    with server(home) as (url, _):
        yield url


def fake_camera(path: Path, photo: Image.Image) -> Path:
    """A Y4M video of one still photo, for Chromium's fake webcam."""
    width, height = 640, 480
    frame = Image.new("RGB", (width, height), "white")
    photo = photo.convert("RGB")
    photo.thumbnail((width, height))
    frame.paste(photo, ((width - photo.width) // 2, (height - photo.height) // 2))
    y, cb, cr = frame.convert("YCbCr").split()
    half = (width // 2, height // 2)
    planes = (
        np.asarray(y).tobytes()
        + np.asarray(cb.resize(half)).tobytes()
        + np.asarray(cr.resize(half)).tobytes()
    )
    with open(path, "wb") as stream:
        stream.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(10):
            stream.write(b"FRAME\n" + planes)
    return path


def face_crop(size: int | None = None, mode: str = "L") -> Image.Image:
    """A real face cut close (the astronaut portrait scikit-image ships), for anything that must look
    like a face: a picture handed in as one pre-cropped face is refused when it does not."""
    import skimage.data

    crop = Image.fromarray(skimage.data.astronaut()[40:190, 160:290]).convert(mode)
    return crop.resize((size, size)) if size else crop


def face_photo() -> Path | None:
    """A real photo of a face from the ExpW sample beside the project, where it is present."""
    photo = PROJECT.parent / "shared" / "datasets" / "expw-sample" / "image" / "afraid_man_208.jpg"
    return photo if photo.is_file() else None


# Waiting for a run started in its own process ------------------------------------------------------

RUN_TIMEOUT = 300.0  # seconds for a tiny training process to reach a state, with the machine loaded


def wait_for(predicate, what: str, run_dir: Path, timeout: float = RUN_TIMEOUT):
    """Poll `predicate` until it returns something true and return that; fail, with the run's status and
    the end of its log, if it has not within `timeout` seconds."""
    from fer import launch, runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(
        f"timed out waiting for {what}; status {runs.read_status(run_dir)}; log:\n{launch.log_tail(run_dir)}"
    )


def wait_until_ended(run_dir: Path) -> dict:
    """The run's status once it is no longer queued or running."""
    from fer import launch

    return wait_for(
        lambda: (s := launch.status(run_dir))["state"] not in launch.ACTIVE and s, "the run to end", run_dir
    )


def open_train_page(dataset: Path):
    """A new browser session (AppTest) on the Train page, with `dataset` chosen."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PROJECT / "streamlit_app.py"), default_timeout=180)
    at.session_state["dataset"] = str(dataset)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    return at


def settle(page) -> None:
    """Wait until Streamlit has finished running the page (the app's script state says it ran and is
    not running: with the minimal toolbar there is no 'Running...' indicator to watch), every
    element's code has loaded (no grey placeholder left), no spinner turns (a model loading) and every
    chart on it is drawn."""
    page.wait_for_function(
        "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
        " return app && app.getAttribute('data-test-script-state') === 'notRunning'"
        " && !document.querySelector('[data-testid=\"stStatusWidget\"]'); }",
        timeout=LOAD_MS,
    )
    page.wait_for_function(
        '() => !document.querySelector(\'[data-testid="stSkeleton"], [data-testid="stSpinner"]\')',
        timeout=LOAD_MS,
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
        ".every(chart => chart.offsetParent === null || chart.querySelector('.main-svg'))",
        timeout=LOAD_MS,
    )


def visit(page, address: str, ready: str) -> None:
    """Open `address` in the browser and wait until it shows `ready` and has settled (`settle`)."""
    page.goto(address)
    page.get_by_text(ready).first.wait_for()
    settle(page)


def open_page(name: str, **state):
    """The app opened headless on pages/`name`.py with `state` in its session state, run once, no
    exception raised."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PROJECT / "streamlit_app.py"), default_timeout=180)
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def two_runs_home(folder: Path, monkeypatch) -> Path:
    """A server home at `folder` (FER_HOME, no extra data roots) with two finished runs, `older` and
    `newer` (that order by time), and the suite's demo dataset linked in."""
    from fer import demo, paths

    demo_dir = demo.ensure(paths.data_dir())  # the suite's, built once
    folder.mkdir()
    (folder / demo.NAME).symlink_to(demo_dir)
    for age, name in ((200, "older"), (100, "newer")):
        run = known_run(folder / "runs" / name)
        stamp = run.stat().st_mtime - age
        os.utime(run / "config.json", (stamp, stamp))
    monkeypatch.setenv("FER_HOME", str(folder))
    monkeypatch.setenv(paths.ROOTS_VARIABLE, "")
    return folder


# Six expw-sample photos, each with one face the default detector finds.
GROUP_PHOTOS = ["afraid_man_208.jpg", "amazed_African_779.jpg", "amazed_actor_137.jpg",
                "amazed_boss_637.jpg", "amazed_chinese_51.jpg", "amazed_couple_145.jpg"]  # fmt: skip


def group_photo(expw_sample: Path) -> Image.Image:
    """One picture of several faces: the GROUP_PHOTOS side by side, three by two, 320 px each."""
    sheet = Image.new("RGB", (960, 640), "white")
    for index, name in enumerate(GROUP_PHOTOS):
        tile = Image.open(expw_sample / "image" / name).convert("RGB").resize((320, 320))
        sheet.paste(tile, ((index % 3) * 320, (index // 3) * 320))
    return sheet
