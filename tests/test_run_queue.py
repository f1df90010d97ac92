"""One process writes a run folder at a time, and a server trains a capped number of runs at once:
the rest wait in line, in the order they were started, and a waiting run can be cancelled.

The trainings are real `python -m fer train` processes on 42 tiny faces with the report's CNN. Runs
that must stay running are long by construction (hundreds of epochs of one face a batch, patience as
long) and are cancelled at the end. No test depends on timing: each polls for the state it needs,
with a generous limit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import expw_faces, open_train_page, wait_for, wait_until_ended
from streamlit.testing.v1 import AppTest

from fer import launch, paths
from fer import runs as R
from fer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 300.0  # seconds for one tiny training process, with the machine loaded

# 28 train, 7 val, 7 test faces; batch size 7: 4 steps an epoch.
QUICK = ["--arch", "seed", "--image-size", "48", "--batch-size", "7", "--no-augment"]
# Runs for many minutes unless cancelled: 14 faces a batch of one, 500 epochs, never stopping early.
LONG_ARGS = [*QUICK, "--batch-size", "1", "--epochs", "500", "--patience", "500", "--max-faces", "14"]
LONG = {
    "arch": "seed",
    "image_size": 48,
    "batch_size": 1,
    "augment": False,
    "epochs": 500,
    "patience": 500,
    "max_faces": 14,
}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return expw_faces(tmp_path_factory.mktemp("queue-data") / "expw", 42)


def trained_a_batch(run_dir: Path) -> bool:
    return bool((R.read_json(run_dir / R.PROGRESS, {}) or {}).get("batch"))


def fer_train(*args: str) -> subprocess.Popen:
    """`python -m fer train ARGS` as a person types it (not queued: no dashboard started it)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(R.QUEUE_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-m", "fer", "train", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop(*run_dirs: Path) -> None:
    """Kill what a failed test left running (only processes these tests started)."""
    for run_dir in run_dirs:
        status = R.read_status(run_dir)
        pid = launch._process(run_dir, status) if status["state"] in launch.ACTIVE else None
        if pid:
            os.killpg(pid, signal.SIGKILL)


# One writer per run folder ----------------------------------------------------------------------------


def test_two_trainings_on_one_new_run_dir_one_succeeds_the_other_is_refused(tmp_path, tiny_dataset):
    run_dir = tmp_path / "run"
    seeds = {4: None, 5: None}
    for seed in seeds:
        seeds[seed] = fer_train(
            str(tiny_dataset), "--run-dir", str(run_dir), *QUICK, "--epochs", "6", "--seed", str(seed)
        )
    ended = {seed: (process, *process.communicate(timeout=TIMEOUT)) for seed, process in seeds.items()}
    winners = [seed for seed, (process, _, _) in ended.items() if process.returncode == 0]
    assert len(winners) == 1, {seed: (p.returncode, err[-2000:]) for seed, (p, _, err) in ended.items()}
    (winner,) = winners
    (loser,) = set(seeds) - {winner}
    process, _, stderr = ended[loser]
    assert process.returncode != 0
    assert (
        f"run folder {run_dir} is being written by process {seeds[winner].pid} on {socket.gethostname()}"
        in stderr
    ), stderr
    assert "choose another --run-dir" in stderr
    # The folder holds the successful run's results, whole.
    status = R.read_status(run_dir)
    assert status["state"] == "done" and status["pid"] == seeds[winner].pid, status
    assert R.read_json(run_dir / R.CONFIG)["train"]["seed"] == winner
    assert R.read_metrics(run_dir)["n"] == 7
    assert len(R.read_history(run_dir)) == 6


def test_a_run_killed_by_kill_9_can_be_resumed_its_lock_file_left_behind_locks_nothing(
    tmp_path, tiny_dataset
):
    run_dir = tmp_path / "run"
    first = fer_train(str(tiny_dataset), "--run-dir", str(run_dir), *LONG_ARGS)
    resumed = None
    try:
        wait_for(lambda: R.read_status(run_dir)["state"] == "running", "the run to start", run_dir)
        # Held while it lives: another writer is refused, naming it.
        with pytest.raises(R.RunBusy, match=f"being written by process {first.pid} on "):
            R.lock_run(run_dir)
        first.send_signal(signal.SIGKILL)
        first.communicate()
        assert (run_dir / R.LOCK).is_file()  # what the kill left behind
        assert R.read_status(run_dir)["state"] == "interrupted"

        resumed = fer_train("--resume", "--run-dir", str(run_dir))
        wait_for(
            lambda: (s := R.read_status(run_dir))["state"] == "running" and s["pid"] == resumed.pid,
            "the resumed run to start",
            run_dir,
        )
        R.write_text(run_dir / R.CANCEL, "stop\n")
        _, stderr = resumed.communicate(timeout=TIMEOUT)
        assert resumed.returncode == 1 and "was cancelled" in stderr, stderr
        assert R.read_status(run_dir)["state"] == "cancelled"
    finally:
        for process in (first, resumed):
            if process and process.poll() is None:
                process.kill()
                process.communicate()


def test_a_lock_held_by_another_process_names_it_and_a_dead_ones_file_does_not(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / R.LOCK).write_text("999999 elsewhere\n")  # a killed writer's file: nobody holds it
    with R.lock_run(run_dir):
        assert (run_dir / R.LOCK).read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.seek(0); f.truncate(); f.write('4242 otherhost\\n'); f.flush(); print('held', flush=True); "
            "time.sleep(120)",
            str(run_dir / R.LOCK),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(R.RunBusy) as refused:
            R.lock_run(run_dir)
        assert str(refused.value) == (
            f"run folder {run_dir} is being written by process 4242 on otherhost; choose another --run-dir, "
            "or wait for it to end (or cancel it) and then use --resume"
        )
        assert (run_dir / R.LOCK).read_text() == "4242 otherhost\n", "the refused process changed the lock"
    finally:
        holder.kill()
        holder.communicate()
    with R.lock_run(run_dir):  # its process is gone: the lock went with it
        pass


# The cap and the line -----------------------------------------------------------------------------------


def test_the_cap_defaults_to_one_training_per_two_cores_and_a_bad_setting_is_refused(monkeypatch):
    monkeypatch.delenv("FER_MAX_TRAININGS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert R.max_trainings() == max(1, cores // 2)
    monkeypatch.setenv("FER_MAX_TRAININGS", "3")
    assert R.max_trainings() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("FER_MAX_TRAININGS", bad)
        with pytest.raises(
            ValueError, match=f"FER_MAX_TRAININGS must be a whole number of trainings above 0, got '{bad}'"
        ):
            R.max_trainings()
        before = R.list_runs(paths.runs_dir())
        with pytest.raises(ValueError, match="FER_MAX_TRAININGS"):
            launch.start(TrainConfig(epochs=1))
        assert R.list_runs(paths.runs_dir()) == before, "a run was left behind by a refused start"


def waiting_buttons(at: AppTest) -> list[str]:
    """The keys of the waiting runs' Cancel buttons, in the order shown."""
    return [b.key for b in at.button if b.key and b.key.startswith("cancel_queued_")]


GOING = ("training, epoch", "preparing faces", "starting", "scoring")  # a run under way, in the table's words


def states_listed(at: AppTest) -> dict[str, str]:
    """The state column of the page's list of runs, by run name."""
    table = at.dataframe[0].value
    return dict(zip(table["run"], table["state"], strict=True))


def test_with_a_cap_of_one_later_runs_wait_in_line_and_a_cancelled_one_never_trains(
    tmp_path, tiny_dataset, monkeypatch
):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))  # a run store of its own
    monkeypatch.setenv("FER_MAX_TRAININGS", "1")
    first, second, third = (
        launch.start(TrainConfig(datasets=(str(tiny_dataset),), seed=seed, **LONG)) for seed in (1, 2, 3)
    )
    try:
        wait_for(lambda: trained_a_batch(first), "the first run to train", first)
        # The others wait, in the order they were started, without preparing or training anything.
        assert launch.status(second)["state"] == "queued" and launch.status(second)["place"] == 1
        assert launch.status(third)["state"] == "queued" and launch.status(third)["place"] == 2
        assert launch.queue() == [second, third]
        assert launch.status(first)["state"] == "running" and "place" not in launch.status(first)

        # The Train page shows the line, each waiting run with its place and a Cancel button, and the
        # places in the list of runs.
        at = open_train_page(tiny_dataset)
        assert waiting_buttons(at) == [f"cancel_queued_{second.name}", f"cancel_queued_{third.name}"]
        shown = " ".join(str(e.value) for e in at.markdown)
        assert "Place 1:" in shown and "Place 2:" in shown
        assert "at most 1 at once" in " ".join(str(e.value) for e in at.caption)
        states = states_listed(at)
        assert states[second.name] == "waiting for a free training slot (place 1 in line)"
        assert states[third.name] == "waiting for a free training slot (place 2 in line)"
        assert states[first.name].startswith(GOING), states[first.name]
        at.button(key=f"cancel_queued_{third.name}").click().run()
        assert not at.exception, at.exception
        assert launch.queue() == [second]  # out of the line at once
        assert launch.status(third)["state"] == "cancelled"
        assert waiting_buttons(at) == [f"cancel_queued_{second.name}"]
        assert "Place 2:" not in " ".join(str(e.value) for e in at.markdown)
        assert states_listed(at)[third.name] == "cancelled"

        # The first stops: the second takes its slot and trains.
        launch.cancel(first)
        assert wait_until_ended(first)["state"] == "cancelled"
        wait_for(lambda: trained_a_batch(second), "the second run to train", second)
        assert launch.queue() == []
        at.run()
        assert not at.exception, at.exception
        assert waiting_buttons(at) == [] and states_listed(at)[second.name].startswith(GOING)

        # The cancelled one never trained, and never will.
        assert wait_until_ended(third)["state"] == "cancelled"
        assert not trained_a_batch(third)
        assert not any((third / name).exists() for name in (R.HISTORY, R.STATE, R.LAST, R.BEST))
        launch.cancel(second)
        assert wait_until_ended(second)["state"] == "cancelled"
    finally:
        stop(first, second, third)


def epochs_done(run_dir: Path) -> int:
    return len(R.read_history(run_dir))


def test_a_resumed_run_waits_at_the_back_of_the_line_and_carries_on_from_its_last_epoch(
    tmp_path, tiny_dataset, monkeypatch
):
    monkeypatch.setenv("FER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FER_MAX_TRAININGS", "1")
    first = launch.start(TrainConfig(datasets=(str(tiny_dataset),), seed=1, **LONG))
    second = third = None
    try:
        wait_for(lambda: epochs_done(first) >= 1, "the first run to finish an epoch", first)
        launch.cancel(first)
        assert wait_until_ended(first)["state"] == "cancelled"
        done = epochs_done(first)
        with pytest.raises(ValueError, match="must be a run folder"):
            launch.resume(tmp_path)
        second = launch.start(TrainConfig(datasets=(str(tiny_dataset),), seed=2, **LONG))
        wait_for(lambda: trained_a_batch(second), "the second run to train", second)
        third = launch.start(TrainConfig(datasets=(str(tiny_dataset),), seed=3, **LONG))
        wait_for(lambda: launch.status(third)["state"] == "queued", "the third run to wait", third)

        # Resumed after the third was started: behind it, though it was started first.
        assert launch.resume(first) == first
        assert launch.status(first)["state"] == "queued"
        assert launch.queue() == [third, first]
        with pytest.raises(ValueError, match="only a cancelled or interrupted run"):
            launch.resume(first)  # waiting already
        launch.cancel(third)
        assert wait_until_ended(third)["state"] == "cancelled"
        assert launch.status(first)["place"] == 1

        # The second stops: the first takes the slot and trains on from where it was cancelled.
        launch.cancel(second)
        assert wait_until_ended(second)["state"] == "cancelled"
        wait_for(lambda: epochs_done(first) > done, "the resumed run to finish another epoch", first)
        assert launch.status(first)["state"] == "running"
        assert R.read_history(first)["epoch"].tolist()[: done + 1] == list(range(1, done + 2))
        launch.cancel(first)
        assert wait_until_ended(first)["state"] == "cancelled"
    finally:
        stop(*(run for run in (first, second, third) if run))
