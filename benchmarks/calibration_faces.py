"""How many held-out faces a temperature needs: fitted on n of a model's val faces, how far off are the
percentages on the others?

A run fits its temperature on its own val faces (fer.train), and a run fine-tuned on a few of a
user's faces has only a handful of them. For each n, this draws n val faces (--draws times, seeded),
fits a temperature on them with fer.calibration, and takes the calibration error of the remaining
val faces at that temperature; beside it, the error of the network's own percentages and at the
temperature fitted on all the val faces. Below some n a fitted temperature is worse than none: that
n is fer.calibration.MIN_FIT_FACES's reason.

    .venv/bin/python benchmarks/calibration_faces.py [--dataset data/fer2013] [--model MODEL]

Test faces are never read.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from calibration_weights import probabilities_of

from fer import calibration
from fer.paths import BUNDLED_MODEL

ROOT = Path(__file__).resolve().parents[1]
SIZES = (7, 14, 25, 50, 100, 200)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--dataset", default=str(ROOT / "data" / "fer2013"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.monotonic()
    probabilities, y = probabilities_of(args.model, args.dataset)  # as the model reads (its "flip")
    print(
        f"{len(y):,} val faces of {args.dataset}, {os.cpu_count()} CPU cores, read in {time.monotonic() - started:.0f} s"
    )
    everything = calibration.fit_temperature(probabilities, y)
    print(
        f"the network's own percentages: calibration error {calibration.ece(probabilities, y):.3f}; "
        f"at the temperature fitted on all of them ({everything:.2f}): "
        f"{calibration.ece(calibration.scale(probabilities, everything), y):.3f}"
    )
    rng = np.random.default_rng(args.seed)
    print(
        "| val faces fitted on | temperature: 5% / median / 95% | error on the other val faces: median | 95% | draws worse than none |"
    )
    print("|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        temperatures, errors, worse = [], [], 0
        for _ in range(args.draws):
            chosen = rng.choice(len(y), n, replace=False)
            rest = np.setdiff1d(np.arange(len(y)), chosen)
            t = calibration.fit_temperature(probabilities[chosen], y[chosen])
            error = calibration.ece(calibration.scale(probabilities[rest], t), y[rest])
            temperatures.append(t)
            errors.append(error)
            worse += error > calibration.ece(probabilities[rest], y[rest])
        low, mid, high = np.percentile(temperatures, [5, 50, 95])
        print(
            f"| {n} | {low:.2f} / {mid:.2f} / {high:.2f} | {np.median(errors):.3f} | "
            f"{np.percentile(errors, 95):.3f} | {worse / args.draws:.0%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
