"""The not-a-face check on pictures given as one face (Classify's "already cropped", `predict --whole`):
the share refused among real faces and among pictures with no face, at the threshold in use and
at a few others, all in one run.

- real faces: every FER2013 face of one split (48x48 gray crops; default test; choose on val);
- the demo dataset's cartoon faces, each cut out at its labelled box (fer.demo, built in a
  temporary folder);
- no face: scikit-image's and scikit-learn's sample photos that hold no face (each looked at;
  the portrait, the cameraman, the cat and the GIF are left out), whole and as seeded random
  square cuts of 10-100% of the shorter side; plus uniform noise and flat grey pictures.

    .venv/bin/python benchmarks/facecheck.py [FER2013_FOLDER] [--split test] [--cuts 40] [--seed 0]

FER2013_FOLDER is the image-folder download (default data/fer2013).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from fer import demo, facecheck

DEFAULT = Path(__file__).resolve().parents[1] / "data" / "fer2013"
# scikit-image's sample photos that show no face (astronaut, camera, chelsea and the GIF do).
SKIMAGE_NO_FACE = (
    "brick cell chessboard_GRAY clock_motion coffee coins color grass gravel horse hubble_deep_field "
    "ihc logo microaneurysms moon motorcycle_left page phantom retina rocket text"
).split()
SKLEARN_NO_FACE = ("china.jpg", "flower.jpg")
THRESHOLDS = (0.01, 0.02, 0.025, 0.05, 0.1)


def no_face_photos() -> dict[str, np.ndarray]:
    import skimage.data
    import sklearn.datasets

    skimage_dir = Path(skimage.data.__file__).parent
    sklearn_dir = Path(sklearn.datasets.__file__).parent / "images"
    paths = [next(skimage_dir.glob(f"{name}.*")) for name in SKIMAGE_NO_FACE]
    paths += [sklearn_dir / name for name in SKLEARN_NO_FACE]
    return {path.name: np.asarray(Image.open(path).convert("RGB")) for path in paths}


def cuts(photo: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    height, width = photo.shape[:2]
    out = []
    for _ in range(count):
        side = max(24, int(rng.uniform(0.1, 1.0) * min(height, width)))
        y, x = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        out.append(photo[y : y + side, x : x + side])
    return out


def demo_faces() -> tuple[list[np.ndarray], np.ndarray]:
    """The demo dataset's faces cut at their boxes, and which were drawn with a difficulty."""
    with tempfile.TemporaryDirectory() as temp:
        folder = demo.generate(Path(temp) / "demo")
        faces, hard = [], []
        for face in demo.plan():
            with Image.open(folder / "image" / face.image) as photo:
                faces.append(np.asarray(photo.convert("RGB"))[face.top : face.bottom, face.left : face.right])
            hard.append(bool(face.difficulty))
        return faces, np.array(hard)


def line(name: str, scores: np.ndarray) -> str:
    refused = "".join(f"{(scores < t).mean():>9.1%}" for t in THRESHOLDS)
    return f"{name:<34}{len(scores):>7,}{refused}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fer2013", nargs="?", default=str(DEFAULT))
    parser.add_argument("--split", default="test")
    parser.add_argument("--cuts", type=int, default=40, help="random cuts of each photo without a face")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    scorer = facecheck.FaceScorer()
    fer = [
        np.asarray(Image.open(p).convert("L")) for p in sorted(Path(args.fer2013, args.split).glob("*/*.*"))
    ]
    if not fer:
        raise SystemExit(f"no FER2013 faces under {Path(args.fer2013, args.split)}")
    photos = no_face_photos()
    cut = [c for photo in photos.values() for c in cuts(photo, args.cuts, rng)]
    noise = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(50)]
    flat = [np.full((96, 96, 3), v, np.uint8) for v in range(0, 256, 5)]
    cartoons, hard = demo_faces()
    cartoon_scores = scorer.score_pictures(cartoons)

    start = time.perf_counter()
    fer_scores = scorer.score_pictures(fer)
    per_face = (time.perf_counter() - start) / len(fer)
    rows = [
        (f"FER2013 {args.split} (real faces)", fer_scores),
        ("demo cartoon faces", cartoon_scores),
        ("  drawn without a difficulty", cartoon_scores[~hard]),
        ("  blurred, small, turned or covered", cartoon_scores[hard]),
        (f"no-face photos, whole ({len(photos)})", scorer.score_pictures(list(photos.values()))),
        (f"no-face photos, {args.cuts} cuts each", scorer.score_pictures(cut)),
        ("uniform noise 96x96", scorer.score_pictures(noise)),
        ("flat grey 96x96", scorer.score_pictures(flat)),
    ]
    print(f"{os.cpu_count()} cores; threshold in use: {facecheck.WHOLE_MIN_SCORE}")
    print(f"{'refused at face score under':<34}{'n':>7}" + "".join(f"{t:>9}" for t in THRESHOLDS))
    for name, scores in rows:
        print(line(name, scores))
    print(f"{1000 * per_face:.2f} ms per picture (batches of {facecheck.BATCH})")


if __name__ == "__main__":
    main()
