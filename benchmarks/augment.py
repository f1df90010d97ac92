"""Where augmentation is fast: in the input pipeline (fer.augment) or inside the model (Keras'
random-transform layers, as keras-io does it). Same model, same faces, same run.

Trains `--arch` for a fixed number of batches four ways: without augmentation, with fer.augment in
the input pipeline (its warps by OpenCV, as in use, and by its NumPy fallback), and with RandomFlip /
RandomTranslation / RandomRotation / RandomZoom / RandomContrast layers at the model's input. The
four are run in turn `--rounds` times and each one's fastest round is kept, so a change in the
machine's load does not fall on one of them alone. Prints training images per second and the ratio
to the un-augmented run.

    .venv/bin/python benchmarks/augment.py [--batches 40] [--arch vgg] [--backend tensorflow|jax]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--arch", default="vgg")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import numpy as np
    from keras import layers

    from fer import augment, train
    from fer.config import ModelConfig, TrainConfig
    from fer.faces import Split
    from fer.models import build

    n = args.batches * args.batch_size
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    split = Split(images=faces, faces=None, y=rng.integers(0, 7, n))

    def with_layers(net):
        inputs = keras.Input((48, 48, 1))
        x = layers.RandomFlip("horizontal")(inputs)
        x = layers.RandomTranslation(0.1, 0.1)(x)
        x = layers.RandomRotation(10 / 360)(x)
        x = layers.RandomZoom(0.1)(x)
        x = layers.RandomContrast(0.2)(x)
        return keras.Model(inputs, net(x))

    def run(augment_in_pipeline: bool, augment_in_model: bool, numpy_warp: bool = False) -> float:
        keras.utils.set_random_seed(0)
        augment._warp = augment._warp_numpy if numpy_warp else opencv_warp
        net = build(ModelConfig(arch=args.arch, image_size=48, num_classes=7))
        if augment_in_model:
            net = with_layers(net)
        net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        config = TrainConfig(batch_size=args.batch_size, augment=augment_in_pipeline)
        data = train.Batches(split, config, training=True, num_classes=7)
        net.fit(data, epochs=1, steps_per_epoch=3, verbose=0)  # compile first
        start = time.perf_counter()
        net.fit(data, epochs=1, verbose=0)
        return n / (time.perf_counter() - start)

    opencv_warp = augment._warp
    ways = {
        "none": (False, False),
        "fer.augment in the pipeline (OpenCV)": (True, False),
        "fer.augment in the pipeline (NumPy)": (True, False, True),
        "Keras layers in the model": (False, True),
    }
    rates = {name: 0.0 for name in ways}
    for _ in range(args.rounds):
        for name, way in ways.items():
            rates[name] = max(rates[name], run(*way))
    plain = rates["none"]
    print(f"{args.arch}, backend {keras.backend.backend()}, {n:,} faces of 48x48, {os.cpu_count()} cores")
    print(f"{'augmentation':<40}{'images/s':>10}{'vs none':>9}")
    for name, rate in rates.items():
        print(f"{name:<40}{rate:>10,.0f}{rate / plain:>8.2f}x")


if __name__ == "__main__":
    main()
