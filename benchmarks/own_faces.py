"""Fine-tuning on a few faces per expression: accuracy before and after, on faces it never trained on.

What the Your faces page does, with ExpW faces standing in for a user's: for each of `--draws` draws,
N faces of each expression (one per photo) are drawn from the dataset's test part (the part the
bundled model never saw), saved into a collection through fer.collect (the page's own code: photo
opened upright, labelled box and score), and the model is fine-tuned on them with the page's settings
(fer.collect.finetune_config, run by `fer train`). Two scores, before (the starting model) and after:

- held back: the collection's faces held back from the fine-tuning (its test split: one of five, two
  of ten per expression), as the page shows them (fer.collect.compare);
- other faces: every other face of the test part, none in the collection: whether what was learnt from
  a few faces carries to other people's.

ExpW's faces are of many people, so this measures adapting to a kind of photo, not to one person;
with one person's faces the held-back faces are of that person. Few faces make noisy figures: the
held-back score of one draw rests on 7 or 14 faces, so draws are pooled.

    .venv/bin/python benchmarks/own_faces.py [--dataset DATASET] [--model MODEL] [--faces 5 10]
        [--draws 3] [--epochs 15] [--learning-rate 1e-4] [--labels angry,happy,...] [--json]

DATASET defaults to data/expw-sample; MODEL to models/default.keras.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault(
    "FER_HOME", tempfile.mkdtemp(prefix="own-faces-bench-")
)  # its caches, not the project's

import numpy as np
import pandas as pd

from fer import cli, collect, datasets, modelfile, preprocess, splits
from fer.labels import LABELS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT / "data" / "expw-sample"
DEFAULT_MODEL = ROOT / "models" / "default.keras"


def test_part(dataset: datasets.Dataset, metadata: dict):
    """The dataset's test faces as `fer evaluate` chooses them for this model, one face per photo."""
    train = metadata.get("train", {})
    settings = splits.SplitSettings(
        train.get("val_share", 0.1), train.get("test_share", 0.1), train.get("seed", 0)
    )
    faces = dataset.faces.assign(split=splits.assign(dataset.faces, settings))
    return faces[faces["split"] == "test"].drop_duplicates("photo").reset_index(drop=True)


def draw_faces(pool, per_label: int, seed: int):
    """`per_label` faces of each expression of the pool, drawn at random (fewer where it has fewer)."""
    rng = np.random.default_rng(seed)
    parts = [group.iloc[rng.permutation(len(group))[:per_label]] for _, group in pool.groupby("label")]
    return pd.concat(parts, ignore_index=True)


def build_collection(folder: Path, dataset: datasets.Dataset, chosen) -> None:
    for row in chosen.itertuples():
        photo = collect.open_photo(dataset.photo_path(row.photo).read_bytes())
        scale = photo.width / _stored_width(dataset.photo_path(row.photo))
        box = tuple(v * scale for v in (row.top, row.left, row.bottom, row.right))
        score = 0.0 if np.isnan(row.confidence) else float(row.confidence)
        collect.add_face(folder, photo, box, score, row.label)


def _stored_width(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return image.width


def accuracy(model_path: Path, faces: np.ndarray, labels_true: list[str]) -> tuple[int, int]:
    model, metadata = modelfile.load_model(model_path)
    probabilities = modelfile.predict_probabilities(model, faces, metadata=metadata)
    predicted = [metadata["labels"][i] for i in probabilities.argmax(axis=1)]
    return sum(p == t for p, t in zip(predicted, labels_true)), len(labels_true)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--faces", type=int, nargs="+", default=[5, 10], help="faces per expression")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=collect.EPOCHS)
    parser.add_argument("--learning-rate", type=float, default=collect.LEARNING_RATE)
    parser.add_argument("--labels", default=",".join(LABELS), help="the expressions collected")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    wanted = [label.strip() for label in args.labels.split(",") if label.strip()]

    dataset = datasets.load(args.dataset)
    metadata = modelfile.read_metadata(args.model)
    pool = test_part(dataset, metadata)
    pool = pool[pool["label"].isin(wanted)].reset_index(drop=True)
    settings = preprocess.settings_of(metadata)
    prepared = preprocess.prepare(dataset, settings)
    where = {(p, f): i for i, (p, f) in enumerate(zip(prepared.faces["photo"], prepared.faces["face"]))}
    work = Path(tempfile.mkdtemp(prefix="own-faces-"))
    print(
        f"{len(pool)} test faces of {args.dataset} ({', '.join(wanted)}); model {args.model}; "
        f"{os.cpu_count()} CPU cores"
    )

    results = []
    for per_label in args.faces:
        for draw in range(args.draws):
            chosen = draw_faces(pool, per_label, seed=1000 * per_label + draw)
            folder = work / f"n{per_label}-draw{draw}"
            build_collection(folder, dataset, chosen)
            config = collect.finetune_config(
                folder, args.model, epochs=args.epochs, learning_rate=args.learning_rate, seed=draw
            )
            run = work / f"run-n{per_label}-draw{draw}"
            started = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # the run's own report: progress, not the result
                code = cli.main(["train", *cli.train_args(config, run)])
            if code != 0:
                print(f"fine-tuning failed; see {run}", file=sys.stderr)
                return 1
            seconds = time.perf_counter() - started
            held = collect.compare(run)
            others = pool[~pool["photo"].isin(chosen["photo"])]
            rows = [where[(p, f)] for p, f in zip(others["photo"], others["face"]) if (p, f) in where]
            truth = [prepared.faces["label"].iloc[i] for i in rows]
            other_before = accuracy(args.model, prepared.images[rows], truth)
            other_after = accuracy(run / "best.keras", prepared.images[rows], truth)
            results.append(
                {
                    "faces_per_expression": per_label,
                    "draw": draw,
                    "held_back": len(held.faces),
                    "held_before": int((held.faces["before"] == held.faces["label"]).sum()),
                    "held_after": int((held.faces["after"] == held.faces["label"]).sum()),
                    "others": other_before[1],
                    "others_before": other_before[0],
                    "others_after": other_after[0],
                    "seconds": round(seconds, 1),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)

    print(f"\n{'faces per expression':>20} {'held back':>9} {'before':>7} {'after':>7} "
          f"{'other faces':>11} {'before':>7} {'after':>7} {'fine-tune s':>11}")  # fmt: skip
    summary = []
    for per_label in args.faces:
        mine = [r for r in results if r["faces_per_expression"] == per_label]
        held = sum(r["held_back"] for r in mine)
        others = sum(r["others"] for r in mine)
        line = {
            "faces_per_expression": per_label,
            "draws": len(mine),
            "held_back": held,
            "held_before": sum(r["held_before"] for r in mine) / held,
            "held_after": sum(r["held_after"] for r in mine) / held,
            "others": others,
            "others_before": sum(r["others_before"] for r in mine) / others,
            "others_after": sum(r["others_after"] for r in mine) / others,
            "median_seconds": float(np.median([r["seconds"] for r in mine])),
        }
        summary.append(line)
        print(f"{per_label:>20} {held:>9} {line['held_before']:>7.3f} {line['held_after']:>7.3f} "
              f"{others:>11} {line['others_before']:>7.3f} {line['others_after']:>7.3f} "
              f"{line['median_seconds']:>11.0f}")  # fmt: skip
    if args.json:
        print(json.dumps({"summary": summary, "draws": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
