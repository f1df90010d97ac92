"""Runs started as separate processes (fer.launch): finishing, cancelling, being killed, failing, deletion.

The runs train for real, so they are started together, once per module, and each test waits for its
own: on two cores the TensorFlow start-ups overlap instead of adding up. Those tests are marked slow
(about a minute together); the ones with a stand-in for the training process take a second.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from helpers import expw_faces, home_beside, wait_for, wait_until_ended

from fer import cli, launch, paths
from fer import runs as R
from fer.config import TrainConfig

# The report's CNN on 48-pixel faces: the quickest real training there is.
QUICK = {"arch": "seed", "image_size": 48, "batch_size": 8, "augment": False}


def wait_for_a_batch(run_dir: Path) -> dict:
    return wait_for(
        lambda: (R.read_json(run_dir / "progress.json", {}) or {}).get("batch"), "a training batch", run_dir
    )


def finished_epochs(run_dir: Path) -> int:
    return int((R.read_json(run_dir / "state.json", {}) or {}).get("epoch", 0))


def stop(run_dir: Path) -> None:
    """Kill what a failed test left running (only processes these tests started)."""
    status = R.read_status(run_dir)
    if status["state"] in launch.ACTIVE:
        pid = launch._process(run_dir, status)
        if pid:
            os.killpg(pid, signal.SIGKILL)


def long_run(dataset: Path) -> TrainConfig:
    """A run that is still training whenever a test acts on it, however slow the machine: 28 batches
    an epoch for 200 epochs, and never stopped early (its patience is all its epochs), so it ends only
    when a test stops it."""
    epochs = 200
    return TrainConfig(
        datasets=(str(dataset),),
        epochs=epochs,
        patience=epochs,
        lr_patience=epochs,
        **{**QUICK, "batch_size": 1},
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """This file's own FER_HOME: its runs are never among another file's runs, nor theirs among its."""
    return home_beside(tmp_path_factory, "launch-home")


@pytest.fixture(autouse=True)
def _own_home(home, monkeypatch):
    monkeypatch.setenv("FER_HOME", str(home))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """42 faces, one per photo, labels cycling through all seven: 28 train, 7 val, 7 test."""
    return expw_faces(tmp_path_factory.mktemp("launch-data") / "expw", 42)


@pytest.fixture(scope="module")
def runs(home, tiny_dataset, tmp_path_factory):
    """Four runs started at once: one to finish, two long ones (to cancel, to kill), one bad dataset.
    The tests that stop the long ones come first, so the one that finishes does not share the
    processor with them for long."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_HOME", str(home))
        started = {
            "done": launch.start(TrainConfig(datasets=(str(tiny_dataset),), epochs=1, **QUICK)),
            **{name: launch.start(long_run(tiny_dataset)) for name in ("cancel", "kill")},
            "bad": launch.start(
                TrainConfig(datasets=(str(tmp_path_factory.mktemp("empty") / "missing"),), epochs=1, **QUICK)
            ),
        }
        yield started
        for run_dir in started.values():
            stop(run_dir)


def test_command_rebuilds_the_config_through_the_command_line(tmp_path):
    config = TrainConfig(
        datasets=("demo", str(tmp_path)),
        arch="vgg-small",
        epochs=3,
        learning_rate=3e-4,
        dropout=0.25,
        augment=False,
        class_weight=True,
        min_confidence=0.5,
        max_faces=200,
        seed=7,
        val_share=0.2,
    )
    args = cli.build_parser().parse_args(["train", *launch.command(config, tmp_path / "run")])
    assert args.run_dir == tmp_path / "run"
    rebuilt = TrainConfig.from_dict({**vars(args), "datasets": args.datasets})
    assert rebuilt == config


@pytest.mark.slow
def test_started_runs_are_listed_at_once_under_the_runs_folder(runs):
    for run_dir in runs.values():
        assert run_dir.parent == paths.runs_dir()
        assert (run_dir / "config.json").is_file()  # so the run store lists it before training begins
    assert set(runs.values()) <= set(R.list_runs())


@pytest.mark.slow
def test_a_cancelled_run_stops_after_its_current_batch(runs):
    run_dir = runs["cancel"]
    wait_for_a_batch(run_dir)
    assert run_dir in launch.active_runs()
    with pytest.raises(ValueError, match="cancel it"):
        launch.delete(run_dir)  # still running: refused
    launch.cancel(run_dir)
    status = wait_until_ended(run_dir)
    assert status["state"] == "cancelled", status
    assert finished_epochs(run_dir) < R.read_json(run_dir / "config.json")["train"]["epochs"]
    launch.delete(run_dir)  # once it has stopped it can go
    assert not run_dir.exists()


@pytest.mark.slow
def test_a_killed_run_reads_as_interrupted(runs):
    run_dir = runs["kill"]
    wait_for_a_batch(run_dir)
    pid = int(R.read_status(run_dir)["pid"])
    os.kill(pid, signal.SIGKILL)
    status = wait_until_ended(run_dir)
    assert status["state"] == "interrupted", status
    assert "killed" in status["error"]
    assert run_dir not in launch.active_runs()


@pytest.mark.slow
def test_a_run_finishes_with_its_model_and_metrics(runs):
    run_dir = runs["done"]
    status = wait_until_ended(run_dir)
    assert status["state"] == "done", status
    assert (run_dir / "best.keras").is_file()
    metrics = R.read_json(run_dir / "metrics.json")
    assert metrics["n"] == 7 and 0 <= metrics["accuracy"] <= 1
    assert len(R.read_history(run_dir)) == 1
    assert run_dir not in launch.active_runs()
    # the recorded command is the command line's own, and names the architecture chosen
    assert "--arch seed" in R.read_json(run_dir / "config.json")["command"]
    # the watcher thread reaped the process: no zombie is left behind
    pid = int(status["pid"])
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the finished process to be reaped", run_dir)


@pytest.mark.slow
def test_a_bad_dataset_ends_as_failed_with_a_readable_error(runs):
    status = wait_until_ended(runs["bad"])
    assert status["state"] == "failed", status
    assert "missing" in status["error"] and "does not exist" in status["error"]


def test_a_process_that_dies_before_training_reads_as_failed_with_its_log(tmp_path, monkeypatch):
    """Exiting non-zero before train() could record anything (a bad argument, a broken install)."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ImportError: cannot import name keras' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    run_dir = launch.start(TrainConfig(epochs=1))
    status = wait_until_ended(run_dir)
    assert status["state"] == "failed", status
    assert "code 3" in status["error"] and "ImportError: cannot import name keras" in status["error"]


def test_cancelling_a_run_before_it_trains_stops_its_process(tmp_path, monkeypatch):
    """A run still starting has no batch to stop after: its process is ended and the run reads cancelled."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nsleep 600\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    run_dir = launch.start(TrainConfig(epochs=1))
    # the fake never writes "running"; its command line names the run folder, as the real one does
    assert launch.status(run_dir)["state"] == "queued"
    launch.cancel(run_dir)
    status = wait_until_ended(run_dir)
    assert status["state"] == "cancelled", status


def test_delete_refuses_paths_outside_the_runs_folder(tmp_path):
    outside = tmp_path / "run"
    outside.mkdir()
    R.set_status(outside, "done")
    with pytest.raises(ValueError, match="directly inside"):
        launch.delete(outside)
    link = paths.runs_dir() / "link"
    paths.runs_dir().mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    with pytest.raises(ValueError, match="directly inside"):
        launch.delete(link)
    with pytest.raises(ValueError, match="directly inside"):
        launch.delete(paths.runs_dir() / ".." / "run")
    not_a_run = paths.runs_dir() / "notes"
    not_a_run.mkdir()
    with pytest.raises(ValueError, match="run folder"):
        launch.delete(not_a_run)
    assert outside.is_dir() and (outside / "status.json").is_file() and not_a_run.is_dir()
    link.unlink()


def test_start_refuses_a_folder_that_holds_something(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "status.json").write_text("{}")
    with pytest.raises(ValueError, match="new or empty"):
        launch.start(TrainConfig(), tmp_path / "old")
