"""Training throughput: the project's input pipeline against the report's, same model, same run.

Both train the report's CNN ("seed") on FER2013's train split at 48x48 for the same number of
faces, batch 64, no augmentation:
- baseline: the report's way, a Keras generator that reads and decodes the image files from disk
  for every batch of every epoch (`keras.utils.load_img`, grayscale);
- fer: the project's pipeline, faces prepared once into the uint8 cache and fed from memory by
  `fer.train.Batches` (the model scales them itself).

    .venv/bin/python benchmarks/train_throughput.py [FER2013 folder] [--faces N]

The FER2013 folder (image folders, `train/<label>/*.jpg`) defaults to data/fer2013.

`--faces` trains on that many faces instead of the whole split (28,709), to keep the run short.

`--settings` measures training settings instead, on `vgg` unless `--arch` (and `--width`) say
otherwise: float32, bfloat16 (fer.config.PRECISIONS), each with XLA (`jit_compile`) and each with
its batch norms on TensorFlow's fused kernel (fer.train.fuse_batch_norms, which fer.train uses),
one model per setting, stepped batch by batch in turn (`train_on_batch` on the same augmented
FER2013 batches), so a change in the machine's load hits every setting alike; it prints faces/s
and the ratio to float32. `--threads INTRA,INTER` sets TensorFlow's op thread pools first (run it
once per setting to compare them). Then, unless `--no-accuracy`, it trains float32 and bfloat16
runs through fer.train (batch norms fused, unless `--keras-bn`) for `--epochs` on `--faces` training
faces with seeds 0 and 1 (`--seeds`) and compares their best validation accuracy:

    .venv/bin/python benchmarks/train_throughput.py data/fer2013 --settings --width 16 --faces 4000

Several architectures (`--arch vgg,vgg-lite`) are compared setting by setting against the first one's
float32, and the accuracy check then trains the first in float32 against the others in bfloat16:

    .venv/bin/python benchmarks/train_throughput.py data/fer2013 --settings --arch vgg,vgg-lite --no-xla

`--compare vgg:bfloat16,vgg-lite:float32` names the accuracy check's runs instead.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from fer import datasets, train
from fer.config import PRECISIONS, ModelConfig, TrainConfig
from fer.faces import load_splits
from fer.models import build

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "fer2013"


class FilesFromDisk(keras.utils.PyDataset):
    """The report's feeding: every batch opens and decodes its image files (0-255; the model scales)."""

    def __init__(self, paths: list[Path], y: np.ndarray, batch_size: int, size: int):
        super().__init__()
        self.paths, self.y, self.batch_size, self.size = paths, y, batch_size, size

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, i: int):
        train.restore_malloc()  # the same fix for TensorFlow's malloc patch as fer.train.Batches gets
        rows = range(i * self.batch_size, min((i + 1) * self.batch_size, len(self.paths)))
        x = np.stack(
            [
                keras.utils.img_to_array(
                    keras.utils.load_img(
                        self.paths[r], color_mode="grayscale", target_size=(self.size, self.size)
                    )
                )
                for r in rows
            ]
        )
        return x, self.y[list(rows)]


def model():
    """The seed CNN; it scales its 0-255 input to [0, 1] itself, as the report's code did before it."""
    net = build(ModelConfig(arch="seed", image_size=48, num_classes=7))
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return net


def epoch_seconds(net, data) -> float:
    net.fit(data, epochs=1, verbose=0, steps_per_epoch=2)  # build and compile the graph first
    start = time.perf_counter()
    net.fit(data, epochs=1, verbose=0)
    return time.perf_counter() - start


# Settings -----------------------------------------------------------------------------------------

SETTINGS = {  # name: (precision, jit_compile, fused batch norm); fer.train fuses (the last two)
    "float32": ("float32", False, False),
    "float32 + XLA": ("float32", True, False),
    "bfloat16": ("bfloat16", False, False),
    "bfloat16 + XLA": ("bfloat16", True, False),
    "float32, fused BN": ("float32", False, True),
    "bfloat16, fused BN": ("bfloat16", False, True),
}


def settings_model(config: TrainConfig, precision: str, jit: bool, fused: bool):
    keras.utils.set_random_seed(0)
    net = build(config.model_config(num_classes=7), precision)
    if fused:
        train.fuse_batch_norms(net)
    net.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit,
    )
    return net


def measure_settings(args) -> None:
    archs = args.arch.split(",")
    config = TrainConfig(datasets=(args.dataset,), arch=archs[0], width=args.width, max_faces=args.faces)
    labels, splits = load_splits(config)
    batches = train.Batches(splits["train"], config, training=True, num_classes=len(labels))
    names = [name for name in SETTINGS if args.xla or "XLA" not in name]
    nets = {
        (arch, name): settings_model(replace(config, arch=arch), *SETTINGS[name])
        for arch in archs
        for name in names
    }
    first = batches[0]
    for key, net in nets.items():  # trace (and compile) each before timing
        start = time.perf_counter()
        for _ in range(2):
            net.train_on_batch(*first)
        print(f"{' '.join(key)}: first two batches (tracing) {time.perf_counter() - start:.1f} s", flush=True)
    seconds = dict.fromkeys(nets, 0.0)
    faces = 0
    for i in range(args.batches):
        x, y = batches[i % len(batches)]
        faces += len(y)
        for key, net in nets.items():
            start = time.perf_counter()
            net.train_on_batch(x, y)
            seconds[key] += time.perf_counter() - start
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{args.batches} batches", flush=True)
    print(
        f"\n{args.arch} width {args.width}, batch {config.batch_size}, {faces:,} faces per setting, "
        f"{os.cpu_count()} cores, threads {args.threads or 'default'}, interleaved batch by batch"
    )
    baseline = seconds[(archs[0], "float32")]
    print(f"{'model':<11}{'setting':<20}{'faces/s':>9}{'vs ' + archs[0] + ' float32':>20}")
    for (arch, name), spent in seconds.items():
        print(f"{arch:<11}{name:<20}{faces / spent:>9,.0f}{baseline / spent:>19.2f}x")


def timed_run(
    dataset: str, run_dir: Path, *, faces: int | None, epochs: int, patience: int | None = None, **settings
) -> tuple[dict, float]:
    """Train one run through fer.train on `faces` faces of `dataset` for `epochs` (stopping early after
    `patience` epochs without a gain; default never), with any other TrainConfig `settings`: its
    state.json and the seconds it took."""
    config = TrainConfig(
        datasets=(dataset,), max_faces=faces, epochs=epochs, patience=patience or epochs, **settings
    )
    start = time.perf_counter()
    train.train(config, run_dir)
    seconds = time.perf_counter() - start
    return json.loads((run_dir / "state.json").read_text()), seconds


def accuracy_check(args) -> None:
    """Train each compared model through fer.train with each seed (`--seeds`) and print its best validation
    accuracy: one architecture in float32 and bfloat16; several, the first in float32 (the baseline)
    against each of the others in bfloat16; or the runs `--compare` names."""
    import tempfile

    archs = args.arch.split(",")
    if args.compare:
        compared = args.compare
    elif len(archs) == 1:
        compared = [(archs[0], "float32"), (archs[0], "bfloat16")]
    else:
        compared = [(archs[0], "float32")] + [(arch, "bfloat16") for arch in archs[1:]]
    rows = []
    if args.keras_bn:  # how runs trained before fer.train fused their batch norms
        train.fuse_batch_norms = lambda model: 0
    with tempfile.TemporaryDirectory(prefix="fer-precision-") as folder:
        for seed in (int(seed) for seed in args.seeds.split(",")):
            for arch, precision in compared:
                state, seconds = timed_run(
                    args.dataset,
                    Path(folder) / f"{arch}-{precision}-{seed}",
                    faces=args.faces,
                    epochs=args.epochs,
                    patience=args.patience,
                    arch=arch,
                    width=args.width,
                    seed=seed,
                    precision=precision,
                )
                rows.append(
                    (
                        seed,
                        arch,
                        precision,
                        state["best_val_accuracy"],
                        state["best_epoch"],
                        state["epoch"],
                        seconds,
                    )
                )
                print(
                    f"seed {seed} {arch} {precision}: best val accuracy {rows[-1][3]:.4f} "
                    f"(epoch {rows[-1][4]} of {rows[-1][5]}), {seconds:.0f} s",
                    flush=True,
                )
    faces = f"{args.faces:,}" if args.faces else "all"
    patience = f", stopping after {args.patience} without a gain" if args.patience else ""
    print(
        f"\nwidth {args.width}, {faces} FER2013 train faces, {args.epochs} epochs{patience}, "
        "val accuracy (FER2013 val)"
    )
    print(
        f"{'seed':<6}{'model':<11}{'precision':<11}{'val acc':>9}{'best epoch':>12}{'epochs':>8}{'seconds':>9}"
    )
    for seed, arch, precision, accuracy, best, epochs, seconds in rows:
        print(f"{seed:<6}{arch:<11}{precision:<11}{accuracy:>9.4f}{best:>12}{epochs:>8}{seconds:>9.0f}")


def compared_runs(text: str) -> list[tuple[str, str]]:
    """`--compare`'s ARCH:PRECISION,... as (arch, precision) pairs, each precision float32 or bfloat16."""
    runs = [tuple(run.split(":")) for run in text.split(",")]
    trained_in = [name for name in PRECISIONS if name != "auto"]
    if not all(len(run) == 2 and run[1] in trained_in for run in runs):
        raise argparse.ArgumentTypeError(
            f"takes ARCH:PRECISION,... with {' or '.join(trained_in)}, got {text!r}"
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(DEFAULT))
    parser.add_argument("--faces", type=int, default=None, help="faces per epoch (default: all of train)")
    parser.add_argument("--settings", action="store_true", help="compare precisions and XLA instead")
    parser.add_argument(
        "--arch", default="vgg", help="--settings: architecture, or several comma-separated (default vgg)"
    )
    parser.add_argument("--width", type=int, default=16, help="--settings: width (default 16)")
    parser.add_argument("--batches", type=int, default=40, help="--settings: batches per setting")
    parser.add_argument("--no-xla", dest="xla", action="store_false", help="--settings: leave XLA out")
    parser.add_argument("--threads", default="", help="--settings: INTRA,INTER op threads")
    parser.add_argument("--epochs", type=int, default=3, help="--settings: epochs of the accuracy check")
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="--settings: the accuracy check stops a run after this many epochs without a better val "
        "accuracy (default: --epochs, never; fer train's own default is "
        f"{TrainConfig.patience})",
    )
    parser.add_argument(
        "--seeds", default="0,1", help="--settings: seeds of the accuracy check (default 0,1)"
    )
    parser.add_argument(
        "--keras-bn",
        action="store_true",
        help="--settings: the accuracy check trains with Keras' own batch norm, not the fused kernel",
    )
    parser.add_argument(
        "--compare",
        type=compared_runs,
        default=[],
        help="--settings: the accuracy check's runs, as ARCH:PRECISION,... (for example "
        "vgg:bfloat16 to add a run to an earlier table)",
    )
    parser.add_argument(
        "--no-accuracy", dest="accuracy", action="store_false", help="skip the accuracy check"
    )
    args = parser.parse_args()
    if args.settings:
        if args.threads:
            import tensorflow as tf

            intra, inter = (int(n) for n in args.threads.split(","))
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        measure_settings(args)
        if args.accuracy:
            accuracy_check(args)
        return

    config = TrainConfig(datasets=(args.dataset,), arch="seed", augment=False, max_faces=args.faces)
    labels, splits = load_splits(config)
    faces = splits["train"]
    dataset = datasets.load(args.dataset)
    paths = [dataset.photo_path(p) for p in faces.faces["photo"]]
    n = len(faces.y)
    print(f"seed CNN, {n:,} FER2013 train faces, batch {config.batch_size}, {os.cpu_count()} cores")

    keras.utils.set_random_seed(0)
    t_base = epoch_seconds(model(), FilesFromDisk(paths, faces.y, config.batch_size, 48))
    keras.utils.set_random_seed(0)
    t_fer = epoch_seconds(model(), train.Batches(faces, config, training=True, num_classes=len(labels)))
    print(f"{'pipeline':<46}{'seconds':>9}{'images/s':>10}")
    print(f"{'baseline: image files read by a generator':<46}{t_base:>9.1f}{n / t_base:>10,.0f}")
    print(f"{'fer: cached uint8 faces, fer.train.Batches':<46}{t_fer:>9.1f}{n / t_fer:>10,.0f}")
    print(f"ratio: {t_base / t_fer:.2f}x")


if __name__ == "__main__":
    main()
