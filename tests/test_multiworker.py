"""Multi-worker training: two `fer train --strategy multiworker` processes on this machine, joined by
TF_CONFIG, train one model together, and only the chief (worker 0) writes the run folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.parametrize(
    ("tf_config", "chief"),
    [
        (None, True),  # a process alone is its own chief
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}, True),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}, False),
    ],
)
def test_the_chief_is_the_chief_task_else_worker_0(monkeypatch, tf_config, chief):
    from fer.train import is_chief

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert is_chief() is chief


def test_a_multiworker_run_resumes_on_one_machine_only(monkeypatch, tmp_path):
    from fer import runs
    from fer.config import TrainConfig
    from fer.train import train

    runs.write_json(tmp_path / "config.json", {"train": {"strategy": "multiworker"}})
    cluster = {"worker": ["a:1", "b:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match="unset TF_CONFIG and resume it on the chief's machine alone"):
        train(TrainConfig(), tmp_path, resume=True)
    assert not (tmp_path / runs.LOCK).exists()  # refused before anything was written


@pytest.mark.slow
def test_two_workers_train_one_run_that_the_chief_writes(tmp_path):
    from fer import runs
    from fer.modelfile import load_model

    run_dir = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    command = [
        sys.executable, "-m", "fer", "train", "demo", "--run-dir", str(run_dir),
        "--strategy", "multiworker", "--epochs", "1", "--max-faces", "300",
        "--arch", "seed", "--batch-size", "16",
    ]  # fmt: skip
    workers, scratch = [], []
    try:
        for index in range(2):
            scratch.append(tmp_path / f"tmp{index}")  # each worker's temporary folders, to look into
            scratch[-1].mkdir()
            env = {
                **os.environ,
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "TMPDIR": str(scratch[-1]),
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            }
            env.pop("FER_TRAINING_QUEUE", None)  # not waiting for a dashboard training slot
            workers.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
        outputs = [worker.communicate(timeout=600) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    for index, (worker, (_out, err)) in enumerate(zip(workers, outputs)):
        assert worker.returncode == 0, f"worker {index} exit {worker.returncode}:\n{err[-4000:]}"
    chief = workers[0]
    assert "worker 1: not the chief, so it writes nothing to" in outputs[1][1]
    assert "not the chief" not in outputs[0][1]
    assert "accuracy" in outputs[1][0]  # it trained to the end, with the chief

    names = {path.name for path in run_dir.iterdir()}
    assert {"config.json", "labels.json", "status.json", "history.csv", "best.keras", "metrics.json",
            "predictions.csv"} <= names  # fmt: skip
    status = runs.read_json(run_dir / "status.json")
    assert status["state"] == "done"
    assert status["pid"] == chief.pid  # the chief wrote the run, and held its lock
    assert (run_dir / runs.LOCK).read_text().split()[0] == str(chief.pid)
    assert runs.read_history(run_dir)["epoch"].tolist() == [1]
    _, metadata = load_model(run_dir / "best.keras")
    assert metadata["train"]["strategy"] == "multiworker"
    metrics = runs.read_json(run_dir / "metrics.json")
    predictions = (run_dir / "predictions.csv").read_text().strip().splitlines()
    assert len(predictions) - 1 == metrics["n"] > 0
    # The other worker trained in a temporary folder of its own, and removed it.
    assert not list(scratch[1].iterdir())
