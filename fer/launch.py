"""Runs started from the dashboard: each one is `python -m fer train ...` in a process of its own.

A separate process, not a thread, so that a run survives a browser reload and the Streamlit
session that started it, two runs never share memory, and a run can be stopped. Everything the
dashboard learns about a run it reads from the run folder (see fer.runs), never from the process,
so any browser tab, and a server restarted meanwhile, sees the same run.

The process is started in a session of its own (a Ctrl-C on the server does not reach it) with its
output in `train.log` (fer.runs.LOG) in the run folder. A thread in the starting process waits for it, which
reaps it (no zombie) and covers the one thing the run cannot record itself: dying before or
outside `fer.train.train` (a bad argument, an import error) leaves "queued" or "running" behind,
so the thread records "failed" with the end of the log as the error.

Trainings started here wait in line (fer.runs.wait_for_slot): at most fer.runs.max_trainings() of
one runs folder train at once (FER_MAX_TRAININGS, default one per two cores); the others read
"queued", with their place in line, and start in the order they were started. A waiting run can be
cancelled like any other and then never trains. `fer train` typed by a person does not queue: it
is the machine owner's own command, and starts at once.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from fer import cli, paths, runs
from fer.config import TrainConfig

ACTIVE = ("queued", "running")
RESUMABLE = ("cancelled", "interrupted")  # what `resume` carries on: a failed run would fail again
# Threads of this process waiting for the runs it started, by run folder: between a process's death
# and its thread recording how it ended, the run would read as "interrupted", so status() waits for them.
_watchers: dict[Path, threading.Thread] = {}


# Starting ------------------------------------------------------------------------------------------


def command(config: TrainConfig, run_dir: Path) -> list[str]:
    """The `python -m fer train` arguments (after `train`) that rebuild `config` (see fer.cli.train_args,
    beside the parser that reads them back)."""
    return cli.train_args(config, run_dir)


def start(config: TrainConfig, run_dir: Path | None = None) -> Path:
    """Start training `config` in a new process; returns the run folder at once, its status "queued".

    `run_dir` defaults to a fresh folder under fer.paths.runs_dir(); a given one must be new or empty.
    """
    runs.max_trainings()  # a bad FER_MAX_TRAININGS is the server's: say so here, not in a failed run
    if run_dir is None:
        run_dir = runs.new_run_dir(paths.runs_dir())  # spelled as the run store lists it, for the pages
    else:
        run_dir = Path(run_dir)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise ValueError(f"run_dir must be a new or empty folder, got {run_dir}")
        run_dir.mkdir(parents=True, exist_ok=True)
    args = command(config, run_dir)
    line = "python -m fer train " + shlex.join(args)
    # config.json now, not when training begins: the run store lists only folders that have one, and the
    # page must see the run while its faces are being prepared. train() rewrites it with the labels.
    runs.write_json(run_dir / runs.CONFIG, {"train": asdict(config), "command": line})
    runs.set_status(run_dir, "queued", epoch=0, epochs=config.epochs, command=line, error=None)

    _spawn(args, run_dir)
    return run_dir


def resume(run_dir: Path) -> Path:
    """Carry on a cancelled or interrupted run from its last finished epoch (`fer train --resume`) in
    a new process, which waits in line like a new run, at the back of the line. Returns the run folder
    at once, its status "queued". Refuses any other run, naming its state."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).is_file():
        raise ValueError(f"run_dir must be a run folder (with a config.json), got {run_dir}")
    current = status(run_dir)
    if current["state"] not in RESUMABLE:
        raise ValueError(
            f"run {run_dir.name} is {runs.STATE_WORDS.get(current['state'], current['state'])}: "
            "only a cancelled or interrupted run can be resumed"
        )
    runs.max_trainings()  # a bad FER_MAX_TRAININGS is the server's: say so here, not in a failed run
    (run_dir / runs.CANCEL).unlink(missing_ok=True)  # else the new process would stop at once
    kept = runs.read_json(run_dir / runs.STATUS, {}) or {}
    for key in ("finished", "exit_code", "error"):  # how it ended last time
        kept.pop(key, None)
    runs.write_json(run_dir / runs.STATUS, kept)
    runs.set_status(run_dir, "queued", queued_since=time.time())  # its place in line: from now
    _spawn(["--resume", "--run-dir", str(run_dir)], run_dir)
    return run_dir


def _spawn(args: list[str], run_dir: Path) -> None:
    """Start `python -m fer train ARGS` for `run_dir` (status "queued" already written by this process),
    its output appended to the run's log, and a thread that waits for it."""
    env = dict(os.environ)  # FER_HOME, FER_DATA_ROOTS and KERAS_BACKEND pass through
    env[runs.QUEUE_ENV] = "1"  # wait for a training slot before preparing the faces
    env["PYTHONUNBUFFERED"] = "1"  # the log shows where the run is, not where its buffer was
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's info lines would bury the error at the end
    try:
        with open(run_dir / runs.LOG, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "fer", "train", *args],
                cwd=paths.PROJECT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlives the server's session and its Ctrl-C
            )
    except OSError as error:
        runs.set_status(run_dir, "failed", error=f"the training process could not be started: {error}")
        raise
    # The queued status was written by this process; it must name the one that will do the work, or a
    # run whose process died at once would read as queued for as long as the server lives. The child
    # takes seconds to import before it writes "running", so this does not overwrite it in practice.
    status = runs.read_json(run_dir / runs.STATUS, {}) or {}
    if status.get("state") == "queued":
        runs.write_json(run_dir / runs.STATUS, {**status, "pid": process.pid})
    watcher = threading.Thread(
        target=_watch, args=(process, run_dir), name=f"watch {run_dir.name}", daemon=True
    )
    _watchers[run_dir.resolve()] = watcher
    watcher.start()


def _watch(process: subprocess.Popen, run_dir: Path) -> None:
    """Wait for the run's process (which reaps it) and record how it ended if it could not."""
    code = process.wait()
    try:
        _record_end(run_dir, code, process.pid)
    finally:
        _watchers.pop(run_dir.resolve(), None)


def _record_end(run_dir: Path, code: int, process_pid: int) -> None:
    if not run_dir.is_dir():
        return
    status = runs.read_json(run_dir / runs.STATUS, {}) or {}
    if status.get("state") not in ACTIVE:
        return  # it recorded its own end: done, failed, cancelled
    if status.get("pid") not in (process_pid, os.getpid()):
        return  # another process writes this folder (this one was refused its lock): its status stands
    if (run_dir / runs.CANCEL).exists():
        runs.set_status(run_dir, "cancelled", error=None, exit_code=code)
    elif code > 0:
        tail = log_tail(run_dir, lines=5)
        error = f"the training process exited with code {code}" + (f": {tail}" if tail else "")
        runs.set_status(run_dir, "failed", error=error, exit_code=code)
    # Killed by a signal (kill -9, out of memory): left as is, fer.runs reads it as "interrupted",
    # which is what it is: its last epoch's checkpoint is whole and it can be resumed.


# Watching -----------------------------------------------------------------------------------------


def status(run_dir: Path) -> dict:
    """fer.runs.read_status, plus: a run stopped on request reads "cancelled" even when its process had to
    be killed, a run that failed or was interrupted carries the end of its log as `log`, and a queued
    run its place in line as `place` (1: the next to start; None once it has left the line)."""
    run_dir = Path(run_dir)
    result = runs.read_status(run_dir)
    watcher = _watchers.get(run_dir.resolve()) if result["state"] == "interrupted" else None
    if watcher:  # its process has just ended: let the watcher record how before answering
        watcher.join(timeout=10)
        result = runs.read_status(run_dir)
    if result["state"] == "interrupted" and (run_dir / runs.CANCEL).exists():
        result.update(state="cancelled", error=None)
    if result["state"] in ("failed", "interrupted"):
        result["log"] = log_tail(run_dir)
    if result["state"] == "queued":
        result["place"] = runs.place_in_line(run_dir)
    return result


def log_tail(run_dir: Path, lines: int = 20, max_chars: int = 4000) -> str:
    """The last non-blank lines of the run's train.log ("" when it has none)."""
    try:
        with open(Path(run_dir) / runs.LOG, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            stream.seek(max(0, stream.tell() - 64 * 1024))
            text = stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(kept[-lines:])[-max_chars:]


def active_runs(runs_dir: Path | None = None) -> list[Path]:
    """Runs whose status is queued or running (with a live process), newest first."""
    return [
        run
        for run in runs.list_runs(runs_dir or paths.runs_dir())
        if runs.read_status(run)["state"] in ACTIVE
    ]


def queue(runs_dir: Path | None = None) -> list[Path]:
    """Runs waiting for a training slot, first in line first (fer.runs.queue)."""
    return runs.queue(runs_dir or paths.runs_dir())


# Stopping and deleting ----------------------------------------------------------------------------


def cancel(run_dir: Path, wait: bool = True) -> None:
    """Ask a run to stop. Training stops after its current batch (the recorder sees the `cancel` file).
    A run still starting or preparing its faces has no batch yet, which can take minutes on a large
    dataset, so its process group (preparation workers included) is terminated instead, and, with
    `wait`, recorded as cancelled once it is gone. Without `wait` this returns at once (a page's Cancel
    button): the run reads "cancelled" as soon as its process has ended all the same (see status)."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.STATUS).is_file():
        raise ValueError(f"run_dir must be a run folder (with a status.json), got {run_dir}")
    current = status(run_dir)
    if current["state"] not in ACTIVE:
        return
    runs.write_text(run_dir / runs.CANCEL, f"requested at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    progress = runs.read_json(run_dir / runs.PROGRESS, {}) or {}
    training = current["state"] == "running" and "batch" in progress
    pid = _process(run_dir, current)
    if training or pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    if not wait:
        return
    for _ in range(50):  # it has no handler for SIGTERM: gone within moments
        if not runs._alive(pid):
            break
        time.sleep(0.1)
    if status(run_dir)["state"] in ("cancelled", "interrupted"):
        runs.set_status(run_dir, "cancelled", error=None)


def _process(run_dir: Path, current: dict) -> int | None:
    """The pid of the run's own process group leader, or None: a recorded pid is only trusted when that
    process is, on the same host, the training command of this very folder (pids get reused)."""
    pid = int(current.get("pid") or 0)
    if pid <= 0:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        leader = os.getpgid(pid) == pid
    except (OSError, ProcessLookupError):
        return None
    return pid if leader and str(run_dir.resolve()).encode() in cmdline and b"fer" in cmdline else None


def delete(run_dir: Path) -> None:
    """Delete a finished run's folder. Refuses a run still going, and any path that is not a run folder
    directly inside the runs folder (a symlink to elsewhere included)."""
    root = paths.runs_dir().resolve()
    given = Path(run_dir)
    target = given.resolve()
    if given.is_symlink() or target.parent != root or not target.is_dir():
        raise ValueError(f"run_dir must be a run folder directly inside {root}, got {run_dir}")
    if not ((target / runs.STATUS).is_file() or (target / runs.CONFIG).is_file()):
        raise ValueError(f"run_dir must be a run folder (with a status.json or config.json), got {run_dir}")
    state = status(target)["state"]
    if state in ACTIVE:
        raise ValueError(
            f"run {target.name} is {state}; cancel it and wait for it to stop before deleting it"
        )
    shutil.rmtree(target)
