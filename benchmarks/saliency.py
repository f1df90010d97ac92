"""Do the maps of where the model looked mean anything? Three checks of fer.saliency (Grad-CAM).

1. Deletion: for each face, the k% of its pixels the map ranks highest are set to the face's mean
   gray, and the fall of the network's probability for its own answer is compared with deleting as
   many pixels at random, and as many pixels in random 8x8 patches (contiguous, like a map's blobs,
   so the stronger baseline), at k = 5, 10, 20, 30%. Printed: the mean fall of each and the ratio
   map ÷ random (above 1: the map found pixels that matter more than chance).
2. Model randomisation (Adebayo et al., 2018): maps of the same faces from a freshly initialised
   model of the same architecture. If a map only traced edges of the face, the two would agree;
   printed is the Spearman rank correlation of the trained model's map with the random model's, per
   face, and for reference the trained model's map of one face against its map of another face.
3. Cost: one face's map against one face's classification (the model called once on a batch of one,
   as the Classify page does), median of `--runs` after warm-up; and the same for 64 faces at once.

Faces: a seeded random sample of `--faces` FER2013 test faces (the model's answer and probabilities
are the network's own, uncalibrated; calibration keeps the answer).

    .venv/bin/python benchmarks/saliency.py [--test ../shared/datasets/fer2013/test] [--model models/default.keras] [--faces 350]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from fer import modelfile, models, saliency
from fer.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT.parent / "shared" / "datasets" / "fer2013" / "test"
SHARES = (0.05, 0.10, 0.20, 0.30)
PATCH = 8


def load_faces(folder: Path, count: int, seed: int) -> np.ndarray:
    files = sorted(folder.glob("*/*.jpg")) + sorted(folder.glob("*/*.png"))
    if not files:
        raise SystemExit(f"{folder}: no <label>/*.jpg faces there; give FER2013's test folder with --test")
    chosen = np.random.default_rng(seed).choice(len(files), size=min(count, len(files)), replace=False)
    return np.stack([np.asarray(Image.open(files[i]).convert("L").resize((48, 48))) for i in sorted(chosen)])


def probabilities(model, faces: np.ndarray) -> np.ndarray:
    return modelfile.predict_probabilities(model, faces, batch_size=128)


def delete(faces: np.ndarray, orders: np.ndarray, count: int) -> np.ndarray:
    """Each face with the first `count` pixels of its order (flat indices) set to its mean gray."""
    out = faces.reshape(len(faces), -1).copy()
    means = faces.reshape(len(faces), -1).mean(axis=1).round().astype(np.uint8)
    rows = np.repeat(np.arange(len(faces)), count)
    out[rows, orders[:, :count].ravel()] = np.repeat(means, count)
    return out.reshape(faces.shape)


def patch_order(rng: np.random.Generator, size: int) -> np.ndarray:
    """Flat pixel indices, PATCH x PATCH blocks in random order (pixels within a block in random order)."""
    blocks = []
    for top in range(0, size, PATCH):
        for left in range(0, size, PATCH):
            ys, xs = np.mgrid[top : min(top + PATCH, size), left : min(left + PATCH, size)]
            blocks.append(rng.permutation((ys * size + xs).ravel()))
    return np.concatenate([blocks[k] for k in rng.permutation(len(blocks))])


def deletion(model, grad_cam, faces, classes, maps, repeats: int, seed: int) -> None:
    n, size = len(faces), faces.shape[1]
    before = probabilities(model, faces)[np.arange(n), classes]
    rng = np.random.default_rng(seed)
    # Ties (a map's flat zero region) are broken at random, not by position.
    jitter = rng.uniform(0, 1e-6, maps.shape)
    salient = np.argsort(-(maps + jitter).reshape(n, -1), axis=1)
    print("\n1. Deletion: mean fall of the probability of the model's answer")
    print(
        f"{'deleted':>8} {'map':>8} {'random pixels':>14} {'random patches':>15} {'map/pixels':>11} {'map/patches':>12}"
    )
    for share in SHARES:
        count = round(share * size * size)

        def fall(orders: np.ndarray, count: int = count) -> float:
            after = probabilities(model, delete(faces, orders, count))[np.arange(n), classes]
            return float((before - after).mean())

        mapped = fall(salient)
        pixels = np.mean(
            [fall(np.stack([rng.permutation(size * size) for _ in range(n)])) for _ in range(repeats)]
        )
        patches = np.mean(
            [fall(np.stack([patch_order(rng, size) for _ in range(n)])) for _ in range(repeats)]
        )
        print(
            f"{share:>8.0%} {mapped:>8.4f} {pixels:>14.4f} {patches:>15.4f} "
            f"{mapped / pixels:>10.2f}x {mapped / patches:>11.2f}x"
        )


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None  # a flat map has no ranking
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def randomisation(metadata: dict, faces, classes, maps) -> None:
    random_model = models.build(ModelConfig.from_dict(metadata["model"]))
    random_maps = saliency.GradCam(random_model).maps(faces, classes)
    pairs = [spearman(a, b) for a, b in zip(maps, random_maps)]
    kept = [p for p in pairs if p is not None]
    shifted = [spearman(a, b) for a, b in zip(maps, np.roll(maps, 1, axis=0))]
    shifted = [p for p in shifted if p is not None]
    print("\n2. Model randomisation: Spearman rank correlation of maps, per face")
    print(
        f"trained vs randomly initialised model, same face: mean {np.mean(kept):.3f}, median "
        f"{np.median(kept):.3f} ({len(kept)} of {len(pairs)} faces; the rest had a flat map)"
    )
    print(
        f"trained model, one face vs another face (reference): mean {np.mean(shifted):.3f}, median {np.median(shifted):.3f}"
    )


def median_ms(function, runs: int) -> float:
    for _ in range(3):
        function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def cost(model, grad_cam, faces, runs: int) -> None:
    print(f"\n3. Cost (median of {runs} after warm-up)")
    for count in (1, 64):
        batch = faces[:count]
        classify = median_ms(lambda batch=batch: modelfile.predict_probabilities(model, batch), runs)
        mapped = median_ms(lambda batch=batch: grad_cam.maps(batch), runs)
        print(
            f"{count:>3} face(s): classify {classify:.1f} ms, map {mapped:.1f} ms, map / classify {mapped / classify:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=Path, default=TEST, help="FER2013's test folder (<label>/*.jpg)")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default.keras")
    parser.add_argument("--faces", type=int, default=350)
    parser.add_argument("--repeats", type=int, default=3, help="random deletions averaged per k")
    parser.add_argument("--runs", type=int, default=30, help="timed calls for the cost")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model, metadata = modelfile.load_model(args.model)
    faces = load_faces(args.test, args.faces, args.seed)
    import keras

    grad_cam = saliency.GradCam(model)
    print(
        f"{args.model.name} ({metadata['model']['arch']}), map from layer {grad_cam.layer.name!r}, "
        f"{len(faces)} faces from {args.test}, backend {keras.backend.backend()}, {os.cpu_count()} cores"
    )
    started = time.perf_counter()
    classes = np.argmax(probabilities(model, faces), axis=1)
    maps = grad_cam.maps(faces, classes)
    deletion(model, grad_cam, faces, classes, maps, args.repeats, args.seed)
    randomisation(metadata, faces, classes, maps)
    cost(model, grad_cam, faces, args.runs)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
