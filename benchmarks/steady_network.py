"""Steadier networks: do answers hold when a face is framed a little differently?

Trains each network (`--arch`, default vgg-lite and vgg-steady) through fer.train on `--faces`
FER2013 training faces for `--epochs` with each seed (`--seeds`), then runs benchmarks/stability.py
on its best model over FER2013's val faces (each face cropped as given, moved left or up by 8%, and
scaled by 0.9 and 1.15; read once, not mirrored), and prints, per run, the val accuracy, the share of
moved or scaled crops that agree with the face's own crop, and the share of faces that keep one
answer over all five:

    .venv/bin/python benchmarks/steady_network.py data/fer2013 --seeds 0,1,2

Settings are chosen on val; the test faces are left for the model that is chosen.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train_throughput import timed_run  # benchmarks/, on the path when run as a script

ROOT = Path(__file__).resolve().parents[1]


def stability(dataset: str, model: Path) -> dict[str, float]:
    """benchmarks/stability.py's figures for `model` on the dataset's val faces."""
    command = [sys.executable, str(ROOT / "benchmarks" / "stability.py"), "--dataset", dataset]
    command += ["--model", str(model), "--split", "val", "--no-webcam", "--no-flip"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return {
        "accuracy": float(re.search(r"labelled box\s+([\d.]+)", out).group(1)),
        "agree": float(re.search(r"mean of the four\s+([\d.]+)", out).group(1)),
        "one label": float(re.search(r"one label over all five crops: ([\d.]+)", out).group(1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(ROOT / "data" / "fer2013"))
    parser.add_argument("--arch", default="vgg-lite,vgg-steady")
    parser.add_argument("--faces", type=int, default=15000, help="training faces (default 15,000)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="fer-steady-") as folder:
        for seed in (int(seed) for seed in args.seeds.split(",")):
            for arch in args.arch.split(","):
                run_dir = Path(folder) / f"{arch}-{seed}"
                state, seconds = timed_run(
                    args.dataset, run_dir, faces=args.faces, epochs=args.epochs, arch=arch, seed=seed
                )
                figures = stability(args.dataset, run_dir / "best.keras")
                rows.append((arch, seed, figures))
                print(
                    f"{arch} seed {seed}: val accuracy {figures['accuracy']:.3f}, a moved crop agrees "
                    f"{figures['agree']:.3f}, one answer over five crops {figures['one label']:.3f} "
                    f"(best epoch {state['best_epoch']}, {seconds:.0f} s)",
                    flush=True,
                )
    print(f"\n{args.faces:,} FER2013 training faces, {args.epochs} epochs; FER2013 val faces")
    print(f"{'network':<12}{'seed':>5}{'val accuracy':>14}{'moved crop agrees':>19}{'one answer':>12}")
    for arch, seed, figures in rows:
        print(
            f"{arch:<12}{seed:>5}{figures['accuracy']:>14.3f}{figures['agree']:>19.3f}{figures['one label']:>12.3f}"
        )
    for arch in args.arch.split(","):
        mine = [figures for name, _, figures in rows if name == arch]
        means = {key: sum(f[key] for f in mine) / len(mine) for key in mine[0]}
        print(
            f"{arch + ' mean':<17}{means['accuracy']:>14.3f}{means['agree']:>19.3f}{means['one label']:>12.3f}"
        )


if __name__ == "__main__":
    main()
