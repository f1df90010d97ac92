"""Runs under abuse: `kill -9` at random moments and in the middle of a checkpoint, a full disk and a
folder that cannot be written, two trainings started at once from two browser sessions, and deleting
a run only once it is confirmed.

The kills are real SIGKILLs of real training processes (`fer.cli.main(["train", ...])`). To land one
inside a checkpoint every time, not by luck, the training process wraps os.replace (test code only):
when the rename onto a chosen run file comes, it either cuts the temporary file to half its size and
kills itself (what a kill halfway through writing leaves on disk) or lets the rename happen and kills
itself at once (a kill between two files). The other kills land at times drawn from a seeded random
generator. After every kill the run must read as interrupted, every file in it must be whole, and
`--resume` must carry it on; at the end it must have trained exactly its epochs.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import RUN_FILES as FINISHED_RUN_FILES
from helpers import expw_faces, open_train_page
from streamlit.testing.v1 import AppTest

from fer import cli, launch
from fer import runs as R
from fer import train as T
from fer.config import TrainConfig
from fer.faces import load_splits
from fer.modelfile import load_model, predict_probabilities

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 300.0  # seconds for one tiny training process, with the machine loaded

# 42 photos: 28 train, 7 val, 7 test faces; batch size 7 gives 4 steps an epoch and one shape to trace.
QUICK = ["--arch", "seed", "--image-size", "48", "--batch-size", "7", "--no-augment", "--seed", "4"]
EPOCHS = 4
STEPS = 4
# What a run folder may hold (fer.runs lists them; train.log and cancel come from fer.launch; lock is
# the writing process's).
RUN_FILES = {*FINISHED_RUN_FILES, "train.log", "cancel", "lock"}
# fer.runs.write_atomic's temporary files: hidden, ".<stem>.<random>.tmp<suffix>".
TEMPORARY = re.compile(r"\.[\w-]+\.\w+\.tmp(\.\w+)?")

# Starts training processes on request and kills each at a chosen rename or after a given time (see
# the module docstring). They are forked from this one process, which imports TensorFlow once before
# any of it runs: each is a process of its own, as `python -m fer train` is, without paying
# TensorFlow's start-up seven times; and as their parent it kills them before reaping them, so a pid
# it signals is always its own child's. One JSON line each way: a request -> the exit code once the
# process has ended (negative: the signal that killed it).
LAUNCHER = r"""
import json, os, signal, sys, time

import keras  # noqa: F401
from fer.cli import main


def hook(target, when):
    real_replace = os.replace

    def replace(source, destination, *args, **kwargs):
        if os.fspath(destination) != target:
            return real_replace(source, destination, *args, **kwargs)
        if when == "during":  # what a kill halfway through writing it leaves
            with open(source, "r+b") as stream:
                stream.truncate(os.path.getsize(source) // 2)
        else:
            real_replace(source, destination, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        out = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(out, 1)
        os.dup2(out, 2)
        if request["kill_at"]:
            hook(request["kill_at"], request["when"])
        try:
            code = main(request["argv"])
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    deadline = time.monotonic() + (request["seconds"] if request["seconds"] is not None else 1e9)
    while not (ended := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)  # not reaped yet: still this child's pid
            ended = os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    print(json.dumps(os.waitstatus_to_exitcode(ended[1])), flush=True)
"""


class Launcher:
    """Runs `python -m fer <argv>` processes one at a time (see LAUNCHER)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}  # FER_HOME: conftest's, as this process's
        self.errors = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )

    def run(
        self, argv: list[str], kill_at: Path | None = None, when: str = "after", seconds: float | None = None
    ) -> int:
        """Run to its end, killed at the rename onto `kill_at` or after `seconds` if given; the exit code."""
        request = {"argv": argv, "kill_at": str(kill_at) if kill_at else None, "when": when}
        self.process.stdin.write(json.dumps({**request, "seconds": seconds, "log": str(self.log)}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            pytest.fail(
                f"no exit code from the training process in time; log:\n{self.log.read_text()[-3000:]}"
            )
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.errors.close()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """42 faces, one per photo, labels cycling through all seven: 28 train, 7 val, 7 test."""
    return expw_faces(tmp_path_factory.mktemp("robust-data") / "expw", 42)


def assert_whole(run_dir: Path) -> None:
    """Every file of the run is whole and readable; temporary files are hidden and never taken for
    run files; the run store lists the run."""
    names = sorted(p.name for p in run_dir.iterdir())
    visible = [n for n in names if not n.startswith(".")]
    assert set(visible) <= RUN_FILES, f"unexpected files in the run folder: {visible}"
    hidden = [n for n in names if n.startswith(".")]
    assert all(TEMPORARY.fullmatch(n) for n in hidden), hidden
    for name in visible:
        path = run_dir / name
        if name.endswith(".json"):
            json.loads(path.read_text())  # raises on a half-written file
        elif name.endswith(".csv"):
            table = pd.read_csv(path)
            assert len(table.columns) > 1, f"{name} lost its header"
        elif name.endswith(".keras"):
            model, metadata = load_model(path)
            assert model.output_shape == (None, 7) and metadata["labels"], name
    history = R.read_history(run_dir)
    if len(history):
        assert history["epoch"].tolist() == list(range(1, len(history) + 1)), history
        assert history.notna().all().all(), history
    assert R.list_runs(run_dir.parent) == [run_dir]
    if (run_dir / "config.json").is_file():
        assert R.read_json(run_dir / "config.json")["train"]["epochs"] == EPOCHS


def trained_steps(run_dir: Path) -> int:
    """Batches the optimizer saved in last.keras has taken: epochs trained twice would show here."""
    import keras

    model = keras.saving.load_model(run_dir / "last.keras")
    return int(np.asarray(model.optimizer.iterations))


# Kill -9 at chosen and at random moments ------------------------------------------------------------


@pytest.mark.slow
def test_a_run_killed_again_and_again_resumes_to_exactly_its_epochs(tmp_path, tiny_dataset):
    """A run is killed six times: right after its status is first written (nothing prepared, no
    epoch); halfway through writing best.keras; right after last.keras is renamed into place; halfway
    through or right after history.csv or state.json (drawn); twice at a random time. Each time it
    reads as interrupted, every file is whole, and it resumes."""
    rng = random.Random(6)
    run_dir = tmp_path / "runs" / "run"
    log = tmp_path / "train.log"
    fresh = ["train", str(tiny_dataset), "--run-dir", str(run_dir), "--epochs", str(EPOCHS), *QUICK]
    resume = ["train", "--resume", "--run-dir", str(run_dir)]
    kills = [
        ("status.json", "after"),
        ("best.keras", "during"),  # the first epoch's checkpoint
        ("last.keras", "after"),  # between two files of one epoch
        (rng.choice(["history.csv", "state.json"]), rng.choice(["during", "after"])),
        (round(rng.uniform(0.0, 4.0), 2), "seconds after it started"),
        (round(rng.uniform(0.0, 4.0), 2), "seconds after it started"),
    ]
    launcher = Launcher(log)
    try:
        for k, (point, when) in enumerate(kills):
            argv = fresh if k == 0 else resume
            if isinstance(point, str):
                code = launcher.run(argv, kill_at=run_dir / point, when=when)
                assert code == -signal.SIGKILL, (
                    f"kill {k + 1} ({when} {point}) never came: exit code {code}; is {point} written by "
                    f"renaming a temporary file?\n{log.read_text()[-3000:]}"
                )
                if when == "during":
                    halves = [p for p in run_dir.iterdir() if p.name.startswith(f".{Path(point).stem}.")]
                    assert halves, f"no half-written temporary {point} was left to mistake for the real one"
            else:
                code = launcher.run(argv, seconds=point)  # it may end first: then the run is done
            status = R.read_status(run_dir)
            if code == -signal.SIGKILL:
                assert status["state"] == "interrupted", (k, status)
                assert "killed" in status["error"]
            else:  # the random moment came after the end: the run is simply done
                assert code == 0 and status["state"] == "done", (k, code, status, log.read_text()[-3000:])
            assert_whole(run_dir)
            print(f"kill {k + 1}, {when} {point}: exit code {code}, history {R.read_history(run_dir).shape}")

        assert launcher.run(resume) == 0, log.read_text()[-3000:]
    finally:
        launcher.close()
    assert R.read_status(run_dir)["state"] == "done"
    assert_whole(run_dir)
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")], "stale temporary files stayed"
    history = R.read_history(run_dir)
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert R.read_json(run_dir / "state.json")["epoch"] == EPOCHS
    assert trained_steps(run_dir) == EPOCHS * STEPS, "an epoch was trained twice or skipped"

    # best.keras is the model of the best epoch: its validation accuracy is the one history recorded.
    metrics = R.read_metrics(run_dir)
    best_epoch = metrics["best_epoch"]
    assert history["val_accuracy"].idxmax() + 1 == best_epoch
    config = TrainConfig.from_dict(R.read_json(run_dir / "config.json")["train"])
    _, splits = load_splits(config)
    best, metadata = load_model(run_dir / "best.keras")
    predicted = predict_probabilities(best, splits["val"].images, config.batch_size).argmax(axis=1)
    assert float(np.mean(predicted == splits["val"].y)) == pytest.approx(
        history["val_accuracy"].iloc[best_epoch - 1], abs=1e-6
    )
    assert metadata["test_metrics"]["accuracy"] == metrics["accuracy"]


def test_resume_refuses_a_run_whose_process_is_still_going(tmp_path):
    """Two processes writing one run folder would mix their checkpoints."""
    run_dir = tmp_path / "run"
    R.write_json(run_dir / "config.json", {"train": {"datasets": ["demo"], "epochs": 1}})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        R.write_json(
            run_dir / "status.json",
            {**R.set_status(run_dir, "running"), "pid": other.pid},  # as its own process wrote it
        )
        with pytest.raises(ValueError, match=f"still running.*{other.pid}"):
            T.train(TrainConfig(), run_dir, resume=True)
        assert R.read_json(run_dir / "status.json")["pid"] == other.pid, "the live run's status was touched"
    finally:
        other.kill()
        other.wait()


# Killed in the middle of one write -------------------------------------------------------------------

# Writes one file over and over, each version whole and numbered, until it is killed.
WRITER = r"""
import sys
from pathlib import Path

kind, target = sys.argv[1], Path(sys.argv[2])
if kind == "json":
    from fer import runs as R

    pad = "x" * 4_000_000  # a write long enough for a kill to land inside it
    i = 0
    while True:
        i += 1
        R.write_text(target, '{"i": %d, "pad": "%s"}' % (i, pad))
else:
    from fer.config import ModelConfig
    from fer.modelfile import save_model
    from fer.models import build

    model = build(ModelConfig(arch="seed", image_size=48, num_classes=7))
    i = 0
    while True:
        i += 1
        save_model(model, target, {"labels": ["a"] * 7, "i": i})
"""


def _writer(kind: str, target: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, kind, str(target)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("kind", ["json", pytest.param("keras", marks=pytest.mark.slow)])
def test_a_file_being_rewritten_is_always_the_old_or_the_new_one_whole(tmp_path, kind):
    """fer.runs.write_atomic and fer.modelfile.save_model, frozen (SIGSTOP) at eight random moments and
    finally killed: what is on disk at each moment is what a kill -9 then would leave."""
    target = tmp_path / ("state.json" if kind == "json" else "best.keras")
    rng = random.Random(11)
    seen: list[int] = []

    def version() -> int:
        if kind == "json":
            value = json.loads(target.read_text())
            assert len(value["pad"]) == 4_000_000
            return value["i"]
        model, metadata = load_model(target)
        assert model.output_shape == (None, 7)
        return metadata["i"]

    process = _writer(kind, target)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not target.exists():  # the first version is in place
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.05)
        for _ in range(8):
            time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGSTOP)
            try:
                seen.append(version())
            finally:
                process.send_signal(signal.SIGCONT)
        while seen[-1] < 2:  # the kill must come after a rewrite, however slowly the writer goes
            assert process.poll() is None and time.monotonic() < deadline, "the writer never rewrote"
            time.sleep(0.1)
            process.send_signal(signal.SIGSTOP)
            try:
                seen.append(version())
            finally:
                process.send_signal(signal.SIGCONT)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    seen.append(version())
    assert seen == sorted(seen) and seen[-1] > 1, seen
    others = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(TEMPORARY.fullmatch(name) for name in others), others  # a killed write leaves only these


# A full disk and a folder that cannot be written -----------------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _other_run(folder: Path) -> Path:
    """A finished run beside the one that fails: it must come out byte for byte the same."""
    run = folder / "other"
    R.write_json(run / "config.json", {"train": {"datasets": ["demo"], "epochs": 1}})
    R.set_status(run, "done")
    R.write_csv(run / "history.csv", pd.DataFrame({"epoch": [1], "val_accuracy": [0.5]}))
    R.write_json(run / "metrics.json", {"accuracy": 0.5, "n": 7})
    (run / "best.keras").write_bytes(np.random.default_rng(0).bytes(100_000))
    return run


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB filesystem of its own (tmpfs): a model checkpoint does not fit. Needs root and mount."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem needs root and the mount command")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
def test_a_full_disk_fails_the_run_with_a_message_and_leaves_other_runs_alone(
    small_disk, tiny_dataset, capsys
):
    runs = small_disk / "runs"
    other = _other_run(runs)
    before = _snapshot(other)
    run_dir = runs / "full"
    argv = ["train", str(tiny_dataset), "--run-dir", str(run_dir), "--epochs", "2", *QUICK]
    assert cli.main(argv) != 0
    stderr = capsys.readouterr().err
    assert "no space left on device" in stderr.lower(), stderr
    assert "free some disk space" in stderr and "--resume" in stderr, stderr
    status = R.read_status(run_dir)
    assert status["state"] == "failed", status
    assert "no space left on device" in status["error"].lower(), status
    assert re.search(r"while writing (best|last)\.keras", status["error"]), status
    assert _snapshot(other) == before
    assert sorted(R.list_runs(runs)) == sorted([other, run_dir])
    leftovers = [str(p) for p in small_disk.rglob(".*")]
    assert not leftovers, f"the failed writes left temporary files filling the disk: {leftovers}"


def test_a_read_only_runs_folder_fails_the_run_with_a_message(small_disk, tiny_dataset, capsys, monkeypatch):
    runs = small_disk / "runs"
    other = _other_run(runs)
    before = _snapshot(other)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True)
    if remounted.returncode:
        pytest.skip(f"cannot make the small filesystem read-only here: {remounted.stderr.strip()}")
    argv = ["train", str(tiny_dataset), "--run-dir", str(runs / "new"), "--epochs", "1", *QUICK]
    assert cli.main(argv) != 0
    stderr = capsys.readouterr().err
    assert "not writable" in stderr and "read-only file system" in stderr.lower(), stderr
    assert str(runs / "new") in stderr
    monkeypatch.setenv("FER_HOME", str(small_disk))  # the dashboard's runs folder is that one
    with pytest.raises(OSError, match="cannot create a run folder under .*read-only file system"):
        launch.start(TrainConfig(datasets=(str(tiny_dataset),), epochs=1))
    assert _snapshot(other) == before
    assert R.list_runs(runs) == [other]


def test_a_run_folder_that_is_a_file_fails_with_a_message(tmp_path, tiny_dataset, capsys):
    """Without root: a file where the run folder should be."""
    other = _other_run(tmp_path / "runs")
    before = _snapshot(other)
    blocker = tmp_path / "runs" / "new"
    blocker.write_text("not a folder")
    argv = ["train", str(tiny_dataset), "--run-dir", str(blocker), "--epochs", "1", *QUICK]
    assert cli.main(argv) != 0
    stderr = capsys.readouterr().err
    assert f"cannot create the run folder {blocker}" in stderr and "not a folder" in stderr, stderr
    assert blocker.read_text() == "not a folder"
    assert _snapshot(other) == before


# Two browser sessions, each starting a training at once ----------------------------------------------


def _start(at: AppTest, seed: int, epochs: int) -> Path:
    before = set(R.list_runs())
    at.selectbox(key="arch").set_value("seed")
    at.number_input(key="epochs").set_value(epochs)
    at.select_slider(key="batch_size").set_value(8)
    at.checkbox(key="augment").set_value(False)
    at.number_input(key="seed").set_value(seed)
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    (run_dir,) = set(R.list_runs()) - before
    return run_dir


def _shown_run(at: AppTest) -> str:
    """The run the page's "Current run" section shows."""
    text = " ".join(
        str(e.value) for kind in (at.markdown, at.success, at.error, at.warning, at.info) for e in kind
    )
    names = set(re.findall(r"Run (run-[\w-]+)", text))
    assert len(names) == 1, text
    return names.pop()


@pytest.mark.slow
def test_two_sessions_start_trainings_at_once_and_each_sees_its_own(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))  # a run store of their own
    first, second = open_train_page(tiny_dataset), open_train_page(tiny_dataset)
    mine = {id(first): _start(first, seed=1, epochs=1), id(second): _start(second, seed=2, epochs=3)}
    assert mine[id(first)] != mine[id(second)]
    deadline = time.monotonic() + TIMEOUT
    while any(launch.status(run)["state"] in launch.ACTIVE for run in mine.values()):
        assert time.monotonic() < deadline, {str(r): launch.log_tail(r) for r in mine.values()}
        for at in (first, second):  # as the browsers poll: each keeps showing its own run
            at.run()
            assert not at.exception, at.exception
            assert _shown_run(at) == mine[id(at)].name
        time.sleep(0.5)

    # A third run still going (a process this test started, recorded as a run) must not pull either
    # session away from the run it started.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        third = R.new_run_dir(name="run-third")
        R.write_json(third / "config.json", {"train": {"datasets": ["demo"], "epochs": 1}})
        R.write_json(third / "status.json", {**R.set_status(third, "running"), "pid": sleeper.pid})
        for at in (first, second):
            at.run()
            assert not at.exception, at.exception
            run_dir = mine[id(at)]
            assert launch.status(run_dir)["state"] == "done", launch.log_tail(run_dir)
            assert _shown_run(at) == run_dir.name
            assert run_dir.name in at.success[0].value and "test accuracy" in at.success[0].value
            metrics = R.read_metrics(run_dir)
            assert f"{metrics['accuracy']:.1%}" in at.success[0].value
            assert at.session_state["run"] == str(run_dir)  # the Results page opens on its own run
        newcomer = open_train_page(tiny_dataset)  # a tab that started nothing follows the run still going
        assert _shown_run(newcomer) == third.name
    finally:
        sleeper.kill()
        sleeper.wait()
    seeds = [R.read_json(run / "config.json")["train"]["seed"] for run in mine.values()]
    assert seeds == [1, 2]


# Deleting a run asks for confirmation ----------------------------------------------------------------
# (tests/test_app_train.py checks that the Delete button stays disabled until the box is ticked, and
# that a confirmed delete removes the run.)


def test_a_confirmation_given_for_one_run_does_not_delete_another(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    runs = []
    for name in ("run-keep", "run-other"):
        run = R.new_run_dir(name=name)
        R.write_json(run / "config.json", {"train": {"datasets": ["demo"], "epochs": 1, "arch": "seed"}})
        R.set_status(run, "done")
        runs.append(run)
    at = open_train_page(tiny_dataset)
    at.selectbox(key="delete_run").set_value("run-keep").run()
    at.checkbox(key="delete_confirm").check().run()
    assert not at.button(key="delete").disabled
    at.selectbox(key="delete_run").set_value("run-other").run()  # changed their mind about which run
    assert not at.exception, at.exception
    assert at.checkbox(key="delete_confirm").value is False, "the confirmation carried over to another run"
    assert at.button(key="delete").disabled
    with pytest.raises(Exception, match="disabled"):
        at.button(key="delete").click()  # and a click is refused
    assert all(run.is_dir() for run in runs)
