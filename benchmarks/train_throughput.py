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
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from fer import datasets, train
from fer.config import ModelConfig, TrainConfig
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(DEFAULT))
    parser.add_argument("--faces", type=int, default=None, help="faces per epoch (default: all of train)")
    args = parser.parse_args()

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
