"""The run store: one folder per training, every file in it written atomically.

A run folder holds:

    config.json       the full configuration (training, model, preprocessing, datasets)
    labels.json       the label list, in the model's output order
    status.json       state (queued / running / done / failed / cancelled), pid, times, error
    history.csv       one row per finished epoch (loss, accuracy, val_loss, val_accuracy, lr, seconds)
    progress.json     where the current epoch is (batch of batches, running loss and accuracy)
    best.keras        the model with the best validation accuracy so far
    last.keras        the latest epoch's model with its optimizer state, to resume from
    state.json        epoch, best validation accuracy and the like, to resume from
    metrics.json      final test metrics (the fields of `python -m fer evaluate --json`)
    name.json         the name and note people gave the run (absent: a name made from its settings)
    predictions.csv   one row per test face: photo, face, label, predicted, probability (of that answer), p_<label> each
    lock              locked (fcntl.flock) by the process writing the run, for as long as it lives

A run whose status says running but whose process is gone (killed, even by kill -9, or the machine
restarted) reads as "interrupted"; its last checkpoint is whole, because nothing is ever written
in place: files are written beside their target and renamed over it. A kill can leave such a
hidden temporary file behind (".best.3fa2c1d9_4242_k2j4x9.tmp.keras": host, pid, random); no reader
looks at hidden files, the next write of the same file removes those whose writer is gone, and a
resumed run sweeps them.

One process writes a run folder at a time: `lock_run` takes the folder's `lock` file, and a second
process (a second `train` on the same --run-dir, a resume of a run still going) is refused, naming the
process that holds it. The kernel drops the lock when its process ends, however it ends, so the file a
kill -9 leaves behind locks nothing and the run can be resumed.

Runs started from the dashboard queue for a training slot (`wait_for_slot`): at most
`max_trainings()` of a runs folder train at once (FER_MAX_TRAININGS), the others wait as "queued", in
the order they were started, and a cancelled one leaves the line without ever training. A slot is a
locked file in the runs folder's `.slots/`, so it too is free again the moment its process dies.

The CSV files people download (predictions.csv among them) are safe to open in a spreadsheet: see
`csv_text`, whose rule `read_csv` undoes.

`load_run` reads a folder whole into a `Run`, the one reader behind the Results page, the HTML
report and run comparison.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pandas as pd

from fer.config import server_setting

# The run folder's files, one constant each (what they hold: see above).
CONFIG = "config.json"
LABELS = "labels.json"
STATUS = "status.json"
HISTORY = "history.csv"
PROGRESS = "progress.json"
BEST = "best.keras"
LAST = "last.keras"
STATE = "state.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
NAME = "name.json"  # {"name": ..., "note": ...}, written by the dashboard when someone names the run
LOG = "train.log"  # the training process's output, when the dashboard started it
CANCEL = "cancel"  # present: the run is asked to stop after its current batch
# predictions.csv's column for the model's probability of its answer ("confidence" in files written
# before it was renamed, which read_predictions still reads; a detector's score is something else).
PROBABILITY = "probability"
LOCK = "lock"  # flock'ed by the process writing the run; holds its pid and host, for the refusal message
SLOTS = ".slots"  # in a runs folder: the lock files of its training slots, 0 .. max_trainings() - 1
# Set (to "1") in the environment of the trainings the dashboard starts: wait in line for a slot.
QUEUE_ENV = "FER_TRAINING_QUEUE"
MAX_TRAININGS_ENV = "FER_MAX_TRAININGS"
# The entry inside a saved model (best.keras, last.keras) holding its metadata: labels, preprocessing,
# dataset roots, split counts. fer.modelfile writes it under this name; reading a run needs neither
# that module nor Keras.
MODEL_METADATA = "fer.json"

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
# Each state in words for people, as it reads after "This run is" and in a table's state column.
STATE_WORDS = {
    "queued": "waiting to start",
    "running": "still training",
    "done": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
    "interrupted": "interrupted (its process stopped without finishing)",
}
FINISHED = ("done", "failed", "cancelled")
MAX_NAME = 80  # characters of a run's name (one line)
MAX_NOTE = 2000  # characters of a run's note
# A running run refreshes its status at least this often; older than this and no live process: gone.
HEARTBEAT_SECONDS = 30.0


def default_runs_dir() -> Path:
    from fer.paths import runs_dir

    return runs_dir()


# Atomic writes ------------------------------------------------------------------------------------


def _host_tag() -> str:
    """This host in a temporary file's name: a pid means something only on the host that gave it."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


# A temporary file's name: ".<stem>.<host>_<pid>_<random>.tmp<suffix>" (see write_atomic).
TEMPORARY_NAME = re.compile(r"\..*\.(?P<host>[0-9a-f]{8})_(?P<pid>[1-9][0-9]*)_\w+\.tmp(\..*)?", re.DOTALL)


def _writer_pid(name: str) -> int | None:
    """The pid of the process on this host that is writing, or was writing, the temporary file `name`;
    None for any other name, another host's temporary files included."""
    match = TEMPORARY_NAME.fullmatch(name)
    return int(match["pid"]) if match and match["host"] == _host_tag() else None


def _sweep_dead_writers(path: Path) -> None:
    """Remove the temporary files of `path` left by writers on this host that no longer run (killed
    while writing it). A live writer's file, this process's own included, is its write in progress."""
    prefix, suffix = f".{path.stem}.{_host_tag()}_", f".tmp{path.suffix}"
    try:
        names = [
            e.name for e in os.scandir(path.parent) if e.name.startswith(prefix) and e.name.endswith(suffix)
        ]
    except OSError:
        return
    for name in names:
        pid = _writer_pid(name)
        if pid is not None and not _alive(pid):
            (path.parent / name).unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary path)` then rename it over `path`: readers see the old file or the new one.

    The temporary file is hidden beside the target, named after it, this host and this process
    (".<stem>.<host>_<pid>_<random>.tmp<suffix>", see `is_temporary`); a process killed while writing
    leaves it behind, never a half-written target, and the next write of the same target on this host
    removes it once its writer is gone (never while it runs). An OSError names the target, not the
    temporary file: "[Errno 28] No space left on device: '.../best.keras'" (Keras' own save names no
    file at all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_dead_writers(path)
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem}.{_host_tag()}_{os.getpid()}_", suffix=f".tmp{path.suffix}"
        )
    except OSError as error:  # a read-only or full disk: name the file that was to be written
        raise OSError(error.errno, error.strerror, str(path)) from error
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        unnamed = isinstance(error, OSError) and error.filename in (None, temporary, Path(temporary))
        if unnamed and error.errno:
            raise OSError(error.errno, error.strerror or os.strerror(error.errno), str(path)) from error
        raise


def is_temporary(name: str) -> bool:
    """Whether a file name is one of write_atomic's temporary files (hidden; never a run file)."""
    return name.startswith(".") and ".tmp" in name


def sweep_temporary(folder: Path) -> list[str]:
    """Remove the temporary files killed writers left in `folder`; returns their names. Only for a
    folder no other process is writing; even so, a file whose writer still runs on this host is kept."""
    removed = []
    for path in Path(folder).iterdir():
        if path.is_file() and is_temporary(path.name):
            pid = _writer_pid(path.name)
            if pid is not None and _alive(pid):
                continue
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def write_json(path: Path, value: object) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(value, indent=2, default=str)))


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda p: p.write_text(text))


# CSV files people open ------------------------------------------------------------------------------

# The CSV files the product writes for people (a run's predictions.csv, `fer evaluate --predictions`,
# the Classify and Results downloads, the faces.csv of the Data page's zip) get opened in spreadsheets,
# and their text comes from uploads: a photo named =HYPERLINK(...) or a label +cmd|... would be taken
# for a formula there. The rule, here only: a text cell that starts with one of FORMULA_STARTS, or with
# TEXT_MARK itself, is written with one TEXT_MARK in front (a spreadsheet then takes it as text);
# reading takes exactly one TEXT_MARK off the front of a text cell that has one, so what was written
# reads back as it was, apostrophes of its own included. Numbers, negative ones too, stay numbers.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
TEXT_MARK = "'"


def _marked(value: object) -> object:
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, TEXT_MARK)):
        return TEXT_MARK + value
    return value


def _unmarked(value: object) -> object:
    return value[1:] if isinstance(value, str) and value.startswith(TEXT_MARK) else value


def csv_text(frame: pd.DataFrame) -> str:
    """`frame` as CSV text (no index) that is safe to open in a spreadsheet: see FORMULA_STARTS."""
    safe = frame.rename(columns=_marked)
    for column in range(safe.shape[1]):
        if not pd.api.types.is_numeric_dtype(safe.dtypes.iloc[column]):
            safe.isetitem(column, safe.iloc[:, column].map(_marked))
    return safe.to_csv(index=False, lineterminator="\r\n")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write `csv_text(frame)` atomically."""
    text = csv_text(frame)
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8", newline=""))


def read_csv(path: Path, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV that `csv_text` or `write_csv` wrote, every text cell as it was before writing. The
    `text_columns` stay text whatever they hold (a photo called "nan", a label "NA" or "007" is not a
    missing value or a number); in the others an empty cell is a missing value."""
    frame = pd.read_csv(
        path,
        dtype={column: str for column in text_columns},
        keep_default_na=False,
        na_values=[""],
    )
    frame = frame.rename(columns=_unmarked)
    for column in range(frame.shape[1]):
        values = frame.iloc[:, column]
        if frame.columns[column] in text_columns:
            values = values.fillna("")  # only an empty cell reads as missing; in a text column it is ""
        if not pd.api.types.is_numeric_dtype(values.dtype):
            values = values.map(_unmarked)
        frame.isetitem(column, values)
    return frame


def read_json(path: Path, default: object = None) -> object:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


# Status -------------------------------------------------------------------------------------------


def set_status(run_dir: Path, state: str, **extra) -> dict:
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    status = dict(read_json(Path(run_dir) / STATUS, {}) or {})
    now = time.time()
    status.update(extra)
    status.update(state=state, updated=now, pid=os.getpid(), host=socket.gethostname())
    status.setdefault("created", now)
    if state == "running":
        status.setdefault("started", now)
        status.pop("error", None)
    if state in FINISHED:
        status["finished"] = now
    write_json(Path(run_dir) / STATUS, status)
    return status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def read_status(run_dir: Path) -> dict:
    """The run's status, with "running" or "queued" turned into "interrupted" when its process is gone."""
    status = dict(read_json(Path(run_dir) / STATUS, {}) or {})
    if not status:
        return {"state": "interrupted", "error": "no status file: the run never started properly"}
    if status.get("state") in ("running", "queued"):
        same_host = status.get("host") == socket.gethostname()
        gone = not _alive(int(status.get("pid", 0))) if same_host else False
        stale = time.time() - float(status.get("updated", 0)) > HEARTBEAT_SECONDS * 4
        if gone or (not same_host and stale):
            status["state"] = "interrupted"
            status.setdefault("error", "the training process stopped without finishing (killed or crashed)")
    return status


# One writer per run, a capped number of trainings per runs folder ----------------------------------


class RunBusy(ValueError):
    """The run folder is being written by another live process."""


def _try_lock(path: Path) -> IO[str] | None:
    """`path` opened and locked (exclusive, without waiting), or None when another process holds it.
    Opened to append, so a refused opener never empties the holder's file."""
    stream = open(path, "a+")  # held open, and so locked, until the caller closes it
    try:
        fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        stream.close()
        return None
    except BaseException:
        stream.close()
        raise
    return stream


def _sign(stream: IO[str], text: str) -> None:
    stream.seek(0)
    stream.truncate()
    stream.write(text)
    stream.flush()


def lock_run(run_dir: Path) -> IO[str]:
    """Lock `run_dir` for this process: returns the open lock file, which holds the lock until it is
    closed or the process ends. RunBusy (a ValueError) names the live process that holds it."""
    run_dir = Path(run_dir)
    stream = _try_lock(run_dir / LOCK)
    if stream is None:
        try:
            holder = (run_dir / LOCK).read_text().split()
        except OSError:
            holder = []
        who = f"process {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
        raise RunBusy(
            f"run folder {run_dir} is being written by {who}; choose another --run-dir, or wait for it "
            "to end (or cancel it) and then use --resume"
        )
    _sign(stream, f"{os.getpid()} {socket.gethostname()}\n")
    return stream


def max_trainings() -> int:
    """How many trainings of one runs folder may run at once: FER_MAX_TRAININGS, else one per two
    cores (at least 1). Each training uses every core it is given, so more only slows each one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    default = max(1, cores // 2)
    return server_setting(MAX_TRAININGS_ENV, default, "trainings")


def queue(runs_dir: Path) -> list[Path]:
    """The runs of `runs_dir` waiting for a training slot, first in line first: queued, their process
    alive, not asked to stop; in the order they were started (a resumed run: when it was resumed)."""
    waiting = []
    for run in list_runs(runs_dir):
        status = read_status(run)
        if status["state"] == "queued" and not (run / CANCEL).exists():
            since = status.get("queued_since") or status.get("created") or 0
            waiting.append((float(since), run.name, run))
    return [run for *_, run in sorted(waiting)]


def place_in_line(run_dir: Path) -> int | None:
    """1 for the next run to start, 2 for the one after it...; None for a run not waiting."""
    run_dir = Path(run_dir)
    line = [run.resolve() for run in queue(run_dir.parent)]
    return line.index(run_dir.resolve()) + 1 if run_dir.resolve() in line else None


def slots_taken(runs_dir: Path) -> int:
    """How many training slots of `runs_dir` a live process holds, read from what each holder wrote
    into its slot file (its pid and host; see wait_for_slot), without touching the locks."""
    taken = 0
    for slot in (Path(runs_dir) / SLOTS).glob("*"):
        try:
            pid, host = slot.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
            taken += 1
    return taken


def wait_for_slot(run_dir: Path, poll_seconds: float = 0.5) -> IO[str] | None:
    """Wait until `run_dir` is first in its runs folder's line and a slot is free, then take the slot:
    returns its open lock file (held until closed or the process ends). None: the run was cancelled
    while it waited. Meanwhile the run reads "queued", with this process's pid."""
    run_dir = Path(run_dir)
    slots = run_dir.parent / SLOTS
    slots.mkdir(exist_ok=True)
    limit = max_trainings()
    set_status(run_dir, "queued")  # this process's pid: a waiting run whose process died is out of line
    beat = time.monotonic()
    while not (run_dir / CANCEL).exists():
        place = place_in_line(run_dir) or 1
        if place == 1:
            for slot in range(limit):
                stream = _try_lock(slots / str(slot))
                if stream is not None:
                    _sign(stream, f"{os.getpid()} {socket.gethostname()} {run_dir.resolve()}\n")
                    return stream
        if time.monotonic() - beat > HEARTBEAT_SECONDS:
            set_status(run_dir, "queued")
            beat = time.monotonic()
        time.sleep(poll_seconds * min(place, 10))  # far down a long line, look less often
    return None


def list_runs(runs_dir: Path | None = None) -> list[Path]:
    """Run folders, newest first."""
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG).is_file()]
    return sorted(found, key=lambda p: (p / CONFIG).stat().st_mtime, reverse=True)


def new_run_dir(runs_dir: Path | None = None, name: str | None = None) -> Path:
    """A fresh, uniquely named run folder (created)."""
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    stem = name or time.strftime("run-%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = root / (stem if attempt == 0 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as error:  # a read-only or full disk: say so, not just "[Errno 30]"
            reason = (error.strerror or str(error)).lower()
            raise OSError(
                f"cannot create a run folder under {root} ({reason}): the runs folder must be writable, "
                "with free space"
            ) from error
    raise RuntimeError(f"could not create a run folder under {root}")


def read_history(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / HISTORY
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def read_metrics(run_dir: Path) -> dict | None:
    """The run's final test metrics (metrics.json), or None before it has any."""
    metrics = read_json(Path(run_dir) / METRICS)
    return metrics if isinstance(metrics, dict) else None


def read_predictions(run_dir: Path) -> pd.DataFrame:
    """The run's per-face test predictions (predictions.csv, through `read_csv`: labels and photo names
    as they were, whatever they start with); empty before it has any. Names stay text: a photo called
    "nan" or a label "NA" is not a missing value."""
    path = Path(run_dir) / PREDICTIONS
    try:
        frame = read_csv(path, ("dataset", "photo", "split", "label", "predicted"))
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return pd.DataFrame()
    if "confidence" in frame.columns and PROBABILITY not in frame.columns:  # written before the rename
        frame = frame.rename(columns={"confidence": PROBABILITY})
    return frame


# Reading a run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a run folder holds that the Results page and the report show (the model itself aside)."""

    path: Path
    config: dict
    labels: list[str]
    status: dict
    history: pd.DataFrame
    metrics: dict | None
    predictions: pd.DataFrame
    naming: dict = field(default_factory=dict)  # name.json as read: {"name", "note"}

    @property
    def name(self) -> str:
        """The run folder's name (a timestamp unless given): what commands and file names use."""
        return self.path.name

    @property
    def title(self) -> str:
        """The name people gave the run, else one made from its datasets and network."""
        return self.naming.get("name") or default_title(self.config)

    @property
    def note(self) -> str:
        return self.naming.get("note", "")

    @property
    def state(self) -> str:
        return str(self.status.get("state", "interrupted"))

    @property
    def train(self) -> dict:
        return dict(self.config.get("train", {}))

    @property
    def finished(self) -> bool:
        """Done, with the metrics and predictions a finished run writes."""
        return self.state == "done" and self.metrics is not None


def load_run(run_dir: Path | str) -> Run:
    """The run in `run_dir`; ValueError if the folder is not a run (no readable config.json)."""
    path = Path(run_dir)
    config = read_json(path / CONFIG)
    if not isinstance(config, dict):
        raise ValueError(
            f"run_dir must be a run folder holding {CONFIG} (as `python -m fer train` writes), got {path}"
        )
    metrics = read_metrics(path)
    labels = read_json(path / LABELS) or config.get("labels") or (metrics or {}).get("labels") or []
    return Run(
        path=path,
        config=config,
        labels=list(labels),
        status=read_status(path),
        history=read_history(path),
        metrics=metrics,
        predictions=read_predictions(path),
        naming=read_naming(path),
    )


def model_metadata(run_dir: Path | str) -> dict:
    """The metadata saved inside the run's best.keras (dataset roots, split counts); {} if none."""
    try:
        with zipfile.ZipFile(Path(run_dir) / BEST) as archive:
            return dict(json.loads(archive.read(MODEL_METADATA)))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


# Names and notes ----------------------------------------------------------------------------------

# Well-known datasets as people spell them, for the start of a folder's name ("expw-sample": ExpW-sample).
DATASET_SPELLINGS = {"fer2013": "FER2013", "expw": "ExpW", "ckplus": "CK+", "affectnet": "AffectNet"}


def dataset_short_name(dataset: str) -> str:
    """A dataset as a few words: "Demo" for the built-in one, else its folder's (or file's) name."""
    if dataset == "demo":
        return "Demo"
    path = Path(str(dataset))
    stem = path.stem if path.suffix.lower() == ".csv" else path.name
    for known, spelling in DATASET_SPELLINGS.items():
        if stem.lower().startswith(known):
            return spelling + stem[len(known) :]
    return stem or str(dataset)


def default_title(config: dict) -> str:
    """The name of a run nobody named: its datasets and network, e.g. "FER2013 · vgg"."""
    train = dict((config or {}).get("train") or {})
    names = " + ".join(dataset_short_name(d) for d in train.get("datasets") or []) or "unknown data"
    return f"{names} · {train.get('arch') or 'unknown network'}"


def clean_name(name: object) -> str:
    """A run name as stored: one line, spaces collapsed; ValueError if empty or too long."""
    text = " ".join(str(name or "").split())
    if not text:
        raise ValueError("name must not be empty; type a few words that say what the run is")
    if len(text) > MAX_NAME:
        raise ValueError(f"name must be at most {MAX_NAME} characters, got {len(text)}; shorten it")
    return text


def clean_note(note: object) -> str:
    """A run note as stored: line breaks kept, ends trimmed; ValueError if too long."""
    text = str(note or "").replace("\r\n", "\n").strip()
    if len(text) > MAX_NOTE:
        raise ValueError(f"note must be at most {MAX_NOTE} characters, got {len(text)}; shorten it")
    return text


def read_naming(run_dir: Path | str) -> dict:
    """The run's name.json as {"name", "note"} (only the fields present and valid); {} if none."""
    raw = read_json(Path(run_dir) / NAME)
    if not isinstance(raw, dict):
        return {}
    # Cut, not refused, where a hand edit went beyond the limits.
    name = " ".join(str(raw.get("name") or "").split())[:MAX_NAME]
    note = str(raw.get("note") or "").strip()[:MAX_NOTE]
    return {key: value for key, value in (("name", name), ("note", note)) if value}


def write_naming(run_dir: Path | str, name: object, note: object = "") -> dict:
    """Give the run a name and a note (name.json, written atomically); ValueError naming the field
    that is empty or too long. Returns what was written."""
    path = Path(run_dir)
    if not (path / CONFIG).is_file():
        raise ValueError(f"run_dir must be a run folder holding {CONFIG}, got {path}")
    value = {"name": clean_name(name), "note": clean_note(note)}
    write_json(path / NAME, value)
    return value


def run_title(run_dir: Path | str) -> str:
    """The run's name (see Run.title) without reading more of its folder than the two files it needs."""
    path = Path(run_dir)
    return read_naming(path).get("name") or default_title(read_json(path / CONFIG, {}) or {})
