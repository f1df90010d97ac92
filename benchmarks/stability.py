"""Label stability: the same face cropped a little differently, and a photo as a webcam frame holds it.

1. Moved and scaled boxes: every labelled face of the dataset's test part is cropped five ways: its
   labelled box, the box moved left by 8% of its width, moved up by 8% of its height, and scaled by
   0.9 and by 1.15 about its centre (`fer.images.shifted_box`). Photos with boxes (ExpW) are cropped
   exactly as the cache crops them (`fer.preprocess.process_photo`, one box at a time: clipped to
   the photo). Faces that are a whole image (FER2013, image folders) are first padded on every side
   by repeating their edge pixels, and the moved box is cropped from that (`fer.images.crop_faces`),
   so the variant keeps the face's scale and the uncovered strip is the image's own edge, not a
   stretch.
   Printed: the share of faces whose label is the same for all five crops, the agreement of each
   moved or scaled crop's label with the labelled box's, and the accuracy of each.
2. The webcam case (datasets with boxes): each test photo letterboxed into a 640x480 frame (scaled to
   fit, centred on grey) against the photo itself, both through `Predictor.predict` (detector, crop,
   model): for every labelled face matched by a detection (IoU >= 0.3) in both, do the labels agree?

Labels come from the model's own preprocessing (size, margin) and calibration. "test" is the part
the model never saw: its own split settings where it was trained on this dataset, as `fer evaluate`
chooses it.

    .venv/bin/python benchmarks/stability.py [--dataset DATASET] [--model MODEL] [--limit N] [--no-webcam]

DATASET defaults to data/expw-sample; MODEL to models/default.keras. Give a dataset's own folder
(data/fer2013, not data/fer2013/test): its test part is chosen from it. `--limit` takes the first N
test faces (in photo order) instead of all of them; `--no-webcam` skips the detector part. `--steady`
reads every crop the way `predict --steady` does (the crop and its slightly moved copies, averaged);
`--flip` / `--no-flip` averages every crop with its mirror image or not (default: as the model file
says, as `predict` does); `--split val` uses the
val part (to choose settings on) instead of the test part.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from PIL import Image

from fer import datasets, detect, images, preprocess, splits
from fer.faces import dataset_root
from fer.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT / "data" / "expw-sample"
DEFAULT_MODEL = ROOT / "models" / "default.keras"

# (name, dx, dy, scale): moves are shares of the box's width / height; left and up are negative.
VARIANTS = [
    ("labelled box", 0.0, 0.0, 1.0),
    ("moved left 8%", -0.08, 0.0, 1.0),
    ("moved up 8%", 0.0, -0.08, 1.0),
    ("scaled 0.9", 0.0, 0.0, 0.9),
    ("scaled 1.15", 0.0, 0.0, 1.15),
]
FRAME = (640, 480)  # a webcam frame: width, height
GREY = (128, 128, 128)
PAD = 0.25  # share of a whole-image face's side padded on each side; covers an 8% move and a 1.15 scale


def variant_boxes(box: tuple, steady: bool = False) -> list[tuple]:
    """The five (top, left, bottom, right) boxes of one labelled box, in VARIANTS order; with
    `steady`, each followed by the moved copies a steady answer reads (fer.images.steady_boxes)."""
    five = [images.shifted_box(box, dx, dy, scale) for _, dx, dy, scale in VARIANTS]
    return [b for v in five for b in images.steady_boxes(v)] if steady else five


def whole_image_variants(
    gray: Image.Image, settings: images.CropSettings, steady: bool = False
) -> np.ndarray:
    """(5, size, size) crops of a face that is the whole image: edge-padded, then the moved boxes
    (5 x the steady copies with `steady`)."""
    width, height = gray.size
    pad_x, pad_y = math.ceil(width * PAD), math.ceil(height * PAD)
    padded = Image.fromarray(np.pad(np.asarray(gray), ((pad_y, pad_y), (pad_x, pad_x)), mode="edge"))
    box = (pad_y, pad_x, pad_y + height, pad_x + width)
    return images.crop_faces(padded, variant_boxes(box, steady), settings)


def letterbox(photo: Image.Image, frame: tuple[int, int] = FRAME) -> tuple[Image.Image, float, int, int]:
    """The photo scaled to fit `frame` (width, height) and centred on grey; its scale and offsets."""
    scale = min(frame[0] / photo.width, frame[1] / photo.height)
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    x, y = (frame[0] - size[0]) // 2, (frame[1] - size[1]) // 2
    canvas = Image.new("RGB", frame, GREY)
    canvas.paste(photo.resize(size, Image.Resampling.BILINEAR), (x, y))
    return canvas, scale, x, y


def test_faces(
    dataset: datasets.Dataset, metadata: dict, settings: preprocess.PrepSettings, split: str = "test"
) -> pd.DataFrame:
    """The dataset's test (or val) faces whose label the model knows, as `fer evaluate` chooses them."""
    faces = preprocess.prepare(dataset, settings).faces
    train = metadata.get("train", {})
    trained_on = metadata.get("dataset_roots") or [dataset_root(d) for d in train.get("datasets", [])]
    split_settings = (
        splits.SplitSettings(train.get("val_share", 0.1), train.get("test_share", 0.1), train.get("seed", 0))
        if dataset_root(str(dataset.root)) in trained_on
        else splits.SplitSettings()
    )
    faces = faces.assign(split=splits.assign(faces, split_settings))
    return faces[(faces["split"] == split) & faces["label"].isin(metadata["labels"])]


def moved_boxes(
    predictor: Predictor,
    dataset: datasets.Dataset,
    faces: pd.DataFrame,
    steady: bool,
    flip: bool | None = None,
) -> None:
    settings = predictor.settings
    crops, kept = [], []
    for i, (_, face) in enumerate(faces.iterrows()):
        path = dataset.photo_path(face["photo"])
        box = (face["top"], face["left"], face["bottom"], face["right"])
        if math.isnan(box[0]):
            gray = images.open_photo(path).convert("L")
            crops.append(whole_image_variants(gray, settings, steady))
        else:
            # One box a call: a photo's JPEG decode scale follows its smallest box, so cropping the
            # five together would change the labelled box's own pixels.
            made = [preprocess.process_photo(path, [b], settings)[0] for b in variant_boxes(box, steady)]
            if any(isinstance(m, str) for m in made):
                continue  # a moved box fell outside the photo: the face is left out, and counted
            crops.append(np.stack(made))
        kept.append(i)
    if not crops:
        print("no face could be cropped five ways")
        return
    stack = np.concatenate(crops)
    copies = len(images.STEADY_MOVES) if steady else 1
    probabilities = (
        predictor.classify(stack, flip=flip).reshape(len(crops), len(VARIANTS), copies, -1).mean(axis=2)
    )
    predicted = probabilities.argmax(axis=2)  # (faces, variants)
    truth = faces["label"].iloc[kept].map({label: i for i, label in enumerate(predictor.labels)}).to_numpy()
    same = (predicted == predicted[:, :1]).all(axis=1)
    left_out = len(faces) - len(kept)
    print(f"\nMoved and scaled boxes: {len(kept):,} faces" + (f" ({left_out} left out)" if left_out else ""))
    print(f"{'crop':<16}{'agrees with labelled box':>26}{'accuracy':>10}")
    agreements = []
    for v, (name, *_) in enumerate(VARIANTS):
        accuracy = (predicted[:, v] == truth).mean()
        if v == 0:
            print(f"{name:<16}{'':>26}{accuracy:>10.3f}")
            continue
        agreement = (predicted[:, v] == predicted[:, 0]).mean()
        agreements.append(agreement)
        print(f"{name:<16}{agreement:>26.3f}{accuracy:>10.3f}")
    print(f"{'mean of the four':<16}{np.mean(agreements):>26.3f}")
    print(f"faces with one label over all five crops: {same.mean():.3f} ({same.sum():,} of {len(kept):,})")


def webcam(
    predictor: Predictor,
    dataset: datasets.Dataset,
    faces: pd.DataFrame,
    steady: bool,
    flip: bool | None = None,
) -> None:
    photos = faces.groupby("photo", sort=True)
    matched, agree, right_upload, right_frame, labelled = 0, 0, 0, 0, 0
    start = time.perf_counter()
    for photo_name, group in photos:
        path = dataset.photo_path(photo_name)
        with Image.open(path) as stored:
            turn, stored_size = images.orientation_of(stored), stored.size
        photo = images.open_photo(path)
        boxes = [
            images.upright_box(tuple(r), *stored_size, turn)
            for r in group[["top", "left", "bottom", "right"]].to_numpy()
        ]
        frame, scale, x, y = letterbox(photo)
        in_frame = [(t * scale + y, lt * scale + x, b * scale + y, r * scale + x) for t, lt, b, r in boxes]
        upload = predictor.predict(photo, steady=steady, flip=flip).faces
        webcam_faces = predictor.predict(frame, steady=steady, flip=flip).faces
        on_upload = detect.match(boxes, [f.box for f in upload])
        on_frame = detect.match(in_frame, [f.box for f in webcam_faces])
        labelled += len(boxes)
        for label, a, b in zip(group["label"], on_upload, on_frame):
            if a is None or b is None:
                continue
            matched += 1
            agree += upload[a].label == webcam_faces[b].label
            right_upload += upload[a].label == label
            right_frame += webcam_faces[b].label == label
    seconds = time.perf_counter() - start
    print(
        f"\nWebcam frame ({FRAME[0]}x{FRAME[1]}, letterboxed on grey) vs the photo as uploaded, detector on both:"
    )
    print(f"labelled faces {labelled:,}; matched (IoU >= 0.3) in both {matched:,}")
    if matched:
        print(f"labels agree: {agree / matched:.3f} ({agree:,} of {matched:,})")
        print(
            f"accuracy on those faces: uploaded {right_upload / matched:.3f}, frame {right_frame / matched:.3f}"
        )
    print(f"{seconds / max(1, len(photos)):.2f} s a photo (both passes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--limit", type=int, default=None, help="the first N test faces only")
    parser.add_argument("--no-webcam", action="store_true", help="skip the detector part")
    parser.add_argument(
        "--steady", action="store_true", help="steady answers: each crop averaged with moved copies of it"
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each crop averaged with its mirror image (--no-flip: never); default: as the model file says",
    )
    parser.add_argument("--split", choices=("test", "val"), default="test", help="the faces to use")
    args = parser.parse_args()

    predictor = Predictor(args.model)
    dataset = datasets.load(args.dataset)
    faces = test_faces(dataset, predictor.metadata, predictor.settings, args.split)
    if args.limit:
        faces = faces.iloc[: args.limit]
    calibrated = "calibrated" if predictor.calibration else "uncalibrated"
    print(
        f"{dataset.name} {args.split}: {len(faces):,} faces in {faces['photo'].nunique():,} photos; model {args.model} "
        f"(size {predictor.settings.size}, margin {predictor.settings.margin:g}, {calibrated}); "
        f"{os.cpu_count()} cores"
    )
    print("steady answers (each crop averaged with its moved copies)" if args.steady else "one crop a face")
    mirrored = predictor.metadata.get("flip") is True if args.flip is None else args.flip
    print("each crop averaged with its mirror image" if mirrored else "each crop read once, not mirrored")
    moved_boxes(predictor, dataset, faces, args.steady, args.flip)
    if not args.no_webcam and faces["top"].notna().any():
        webcam(predictor, dataset, faces[faces["top"].notna()], args.steady, args.flip)


if __name__ == "__main__":
    main()
