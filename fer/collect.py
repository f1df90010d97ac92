"""Your own faces: labelled faces collected from webcam snapshots and photos, and a model fine-tuned on them.

A collection is a folder `<data folder>/own-faces/<name>` holding `label.lst` and `image/`: the ExpW
format fer.datasets reads, so every page and command takes a collection as a dataset. Each photo is
stored once, upright (EXIF applied) and at most STORE_SIDE pixels long, named after a digest of its
pixels; each face is one line of label.lst with the box and the score the detector gave it. Changes to
label.lst hold a lock on the collection and replace the file atomically, so two browser tabs adding
faces at once lose none.

Fine-tuning is an ordinary `fer train --init-from` run started through fer.launch. The run's own test
split is the held-back faces: HOLD_BACK of each expression's photos (at least one from three faces
on), drawn by the run's seed, never trained on. `compare` scores the starting model on those same
faces, so the before and after figures are on one set of faces.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fer import datasets, images, labels, modelfile, paths, predict, preprocess, runs
from fer.config import TrainConfig
from fer.labels import LABELS

FOLDER = "own-faces"  # under the data folder: one subfolder per collection
INDEX = "label.lst"
IMAGES = "image"
LOCK = ".lock"
STORE_SIDE = predict.DETECT_SIDE  # longer side of a stored photo: what the detector sees anyway
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
MAX_FACES = 2000  # faces in one collection: far more than fine-tuning needs, and a bound on its disk use

# Fine-tuning on a few faces per expression, a few minutes on a CPU.
HOLD_BACK = 0.2  # share of each expression's photos held back to compare before and after (the test split)
VALIDATION = 0.2  # share checked after each epoch to keep the best epoch (the val split)
MIN_FACES = 3  # faces of an expression from which one is held back (round(3 * 0.2) = 1)
MIN_EXPRESSIONS = 2  # a classifier learns to tell expressions apart
EPOCHS = 15
BATCH_SIZE = 16
LEARNING_RATE = 1e-4  # low: keep what the model knows, adapt it to these faces


class CollectionError(ValueError):
    """A collection name, face or request that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class SavedFace:
    photo: str  # the file name under image/
    face: int  # its face number within the photo
    box: tuple[float, float, float, float]  # (top, left, bottom, right) in the stored photo's pixels
    score: float  # the detector's score
    label: str


# Collections ---------------------------------------------------------------------------------------


def collections_dir() -> Path:
    return paths.data_dir() / FOLDER


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RULE.fullmatch(name):
        raise CollectionError(
            f"a collection name must be 1 to 40 letters, digits, '-' or '_', starting with a letter or "
            f"digit, got {name!r}; try a name like my-faces"
        )
    return name


def collection_dir(name: str) -> Path:
    """The folder of the collection called `name` (not created)."""
    return collections_dir() / check_name(name)


def list_collections() -> list[str]:
    """Names of the collections that hold a label.lst, alphabetically."""
    root = collections_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / INDEX).is_file())


@contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_faces(folder: Path) -> list[SavedFace]:
    """The collection's faces in the order they were saved; an absent collection has none. Lines this
    module did not write (edited by hand) are read as fer.datasets reads them, or left out."""
    try:
        text = (Path(folder) / INDEX).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        fields = line.split()
        try:
            photo, face, top, left, right, bottom, score, code = fields
            box = (float(top), float(left), float(bottom), float(right))
            saved = SavedFace(photo, int(face), box, float(score), labels.from_index(code) or "")
        except ValueError:
            continue
        if saved.label:
            found.append(saved)
    return found


def _write_faces(folder: Path, faces: list[SavedFace]) -> None:
    lines = [
        f"{f.photo} {f.face} {f.box[0]:.1f} {f.box[1]:.1f} {f.box[3]:.1f} {f.box[2]:.1f} {f.score:.4f} "
        f"{LABELS.index(f.label)}\n"
        for f in faces
    ]
    runs.write_text(Path(folder) / INDEX, "".join(lines))


def counts(folder: Path) -> dict[str, int]:
    """Faces per expression, every canonical expression listed (0 where there is none)."""
    found = dict.fromkeys(LABELS, 0)
    for face in read_faces(folder):
        found[face.label] += 1
    return found


# Photos and faces -----------------------------------------------------------------------------------


def open_photo(data: bytes) -> Image.Image:
    """An upright RGB photo from a snapshot's or an upload's bytes, at most STORE_SIDE pixels long: what
    is detected, shown and stored. images.PhotoError when it is not a readable photo."""
    photo = images.open_photo(data)
    scale = STORE_SIDE / max(photo.size)
    if scale < 1:
        size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
        photo = photo.resize(size, Image.Resampling.LANCZOS)
    return photo


def find_faces(photo: Image.Image, detector) -> list[tuple[tuple[float, float, float, float], float]]:
    """(box, score) of every face the detector finds, left to right (the order they are numbered in)."""
    boxes, scores = predict.detect_faces(detector, photo)
    found = [(tuple(round(float(v), 1) for v in box), float(score)) for box, score in zip(boxes, scores)]
    return sorted(found, key=lambda item: (item[0][1], item[0][0]))


def draw_faces(photo: Image.Image, boxes: list[tuple[float, ...]], chosen: int | None = None) -> Image.Image:
    """A copy of the photo with each box drawn and numbered from 1; the `chosen` index stands out."""
    from PIL import ImageDraw, ImageFont

    image = photo.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 250))
    font = ImageFont.load_default(size=max(14, round(max(image.size) / 30)))
    for index, (top, left, bottom, right) in enumerate(boxes):
        colour = "#2ca02c" if index == chosen else "#1f77b4"
        draw.rectangle((left, top, right, bottom), outline=colour, width=line * (2 if index == chosen else 1))
        text = str(index + 1)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        y = top - (y1 - y0) - 2 * line if top - (y1 - y0) - 2 * line >= 0 else bottom
        draw.rectangle((left, y, left + x1 - x0 + 2 * line, y + y1 - y0 + 2 * line), fill=colour)
        draw.text((left + line, y + line - y0), text, fill="white", font=font)
    return image


def photo_name(photo: Image.Image) -> str:
    """The stored file name of a photo: a digest of its pixels, so the same picture is stored once."""
    digest = hashlib.sha256(f"{photo.mode} {photo.size}".encode() + photo.tobytes()).hexdigest()
    return f"{digest[:20]}.jpg"


def add_face(
    folder: Path, photo: Image.Image, box: tuple[float, float, float, float], score: float, label: str
) -> SavedFace:
    """Save one labelled face of `photo` (as open_photo returned it) to the collection in `folder`,
    creating the collection if needed. Refuses an unknown expression, a box outside the photo and a face
    already saved."""
    if label not in LABELS:
        raise CollectionError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    top, left, bottom, right = (float(v) for v in box)
    if not (0 <= top < bottom <= photo.height + 1 and 0 <= left < right <= photo.width + 1):
        raise CollectionError(
            f"the face box (top={top:g}, left={left:g}, bottom={bottom:g}, right={right:g}) is not inside the "
            f"{photo.width}x{photo.height} photo; choose a face the detector found"
        )
    box = (top, left, min(bottom, photo.height), min(right, photo.width))
    folder = Path(folder)
    name = photo_name(photo)
    with _locked(folder):
        faces = read_faces(folder)
        if len(faces) >= MAX_FACES:
            raise CollectionError(
                f"the collection {folder.name} holds {len(faces):,} faces, the most one may hold ({MAX_FACES:,}); "
                "start another collection, or delete faces first"
            )
        same = [f for f in faces if f.photo == name]
        for saved in same:
            if _overlap(saved.box, box) > 0.7:
                raise CollectionError(
                    f"this face is already saved, as {saved.label}; delete it first to change it"
                )
        (folder / IMAGES).mkdir(exist_ok=True)
        target = folder / IMAGES / name
        if not target.is_file():
            buffer = io.BytesIO()
            photo.convert("RGB").save(buffer, format="JPEG", quality=95)
            runs.write_atomic(target, lambda p: p.write_bytes(buffer.getvalue()))
        saved = SavedFace(name, max((f.face for f in same), default=-1) + 1, box, float(score), label)
        _write_faces(folder, faces + [saved])
    return saved


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    from fer import detect

    return detect.iou(a, b)


def delete_face(folder: Path, photo: str, face: int) -> None:
    """Remove one saved face (and its photo once no face of it is left); a face already gone is no error."""
    folder = Path(folder)
    with _locked(folder):
        faces = read_faces(folder)
        kept = [f for f in faces if (f.photo, f.face) != (photo, face)]
        if len(kept) == len(faces):
            return
        _write_faces(folder, kept)
        if not any(f.photo == photo for f in kept) and "/" not in photo and not photo.startswith("."):
            (folder / IMAGES / photo).unlink(missing_ok=True)


def face_image(folder: Path, saved: SavedFace, side: int = 96) -> Image.Image:
    """The saved face cut from its photo (RGB, at most `side` pixels long), for showing."""
    with Image.open(Path(folder) / IMAGES / saved.photo) as stored:
        photo = stored.convert("RGB")
    region = images.crop_box(saved.box, photo.width, photo.height, 0.0)
    crop = photo.crop(region)
    crop.thumbnail((side, side))
    return crop


# Fine-tuning ---------------------------------------------------------------------------------------


def readiness(found: dict[str, int]) -> str | None:
    """Why the faces cannot be fine-tuned on yet (None: they can)."""
    enough = [label for label, n in found.items() if n >= MIN_FACES]
    if len(enough) >= MIN_EXPRESSIONS:
        return None
    return (
        f"fine-tuning needs at least {MIN_FACES} faces of each of at least {MIN_EXPRESSIONS} expressions "
        f"(one of each is held back to compare before and after); there are "
        + (", ".join(f"{n} {label}" for label, n in found.items() if n) or "no faces yet")
        + ". Add faces; 5 to 10 per expression work well"
    )


def finetune_config(
    folder: Path,
    start_model: Path,
    *,
    epochs: int = EPOCHS,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
) -> TrainConfig:
    """The `fer train --init-from` run that fine-tunes `start_model` on the collection: the network,
    width, image size and margin are the model's own; HOLD_BACK of the faces are its test split."""
    model = modelfile.read_metadata(Path(start_model))
    shape = model.get("model") or {}
    return TrainConfig(
        datasets=(str(Path(folder).resolve()),),
        arch=str(shape.get("arch", TrainConfig.arch)),
        width=int(shape.get("width", TrainConfig.width)),
        image_size=int(model.get("image_size", shape.get("image_size", TrainConfig.image_size))),
        margin=float(model.get("margin", 0.0)),
        init_from=str(Path(start_model).resolve()),
        epochs=epochs,
        batch_size=BATCH_SIZE,
        learning_rate=learning_rate,
        val_share=VALIDATION,
        test_share=HOLD_BACK,
        patience=epochs,  # a handful of validation faces is too few to stop early on
        lr_patience=max(1, epochs // 3),
        seed=seed,
    )


def start_finetune(folder: Path, start_model: Path, **options) -> Path:
    """Start fine-tuning in the background (fer.launch); returns the run folder, named after the collection."""
    from fer import launch

    found = counts(folder)
    problem = readiness(found)
    if problem:
        raise CollectionError(problem)
    config = finetune_config(folder, start_model, **options)
    run_dir = runs.new_run_dir(paths.runs_dir(), name=time.strftime(f"{Path(folder).name}-%Y%m%d-%H%M%S"))
    return launch.start(config, run_dir)


def finetune_runs(folder: Path) -> list[Path]:
    """Runs that fine-tuned a model on this collection alone, newest first."""
    target = str(Path(folder).resolve())
    found = []
    for run in runs.list_runs(paths.runs_dir()):
        train = (runs.read_json(run / runs.CONFIG, {}) or {}).get("train") or {}
        if list(train.get("datasets") or []) == [target] and train.get("init_from"):
            found.append(run)
    return found


@dataclass
class Comparison:
    start_model: str  # the model fine-tuned from
    faces: pd.DataFrame  # one row per held-back face: photo, face, label, before, after
    images: np.ndarray  # (n, size, size) uint8: each face as the models saw it

    @property
    def before(self) -> float:
        return (
            float((self.faces["before"] == self.faces["label"]).mean()) if len(self.faces) else float("nan")
        )

    @property
    def after(self) -> float:
        return float((self.faces["after"] == self.faces["label"]).mean()) if len(self.faces) else float("nan")


def compare(run_dir: Path, classify: Callable[[np.ndarray], np.ndarray] | None = None) -> Comparison:
    """The held-back faces of a finished fine-tuning run, each with the starting model's answer (before)
    and the run's own (after, from its predictions.csv).

    `classify` gives the starting model's probabilities for (n, size, size) uint8 faces (a caller that
    has the model loaded passes it); by default the model is loaded here. CollectionError when the run
    has not finished or its starting model is gone."""
    run_dir = Path(run_dir)
    state = runs.read_status(run_dir).get("state")
    if state != "done" or not (run_dir / runs.PREDICTIONS).is_file():
        raise CollectionError(
            f"run {run_dir.name} has not finished (it is {state}); compare it once it is done"
        )
    train = (runs.read_json(run_dir / runs.CONFIG, {}) or {}).get("train") or {}
    start = Path(train.get("init_from") or "")
    if not start.is_file():
        raise CollectionError(
            f"the model run {run_dir.name} started from ({start}) is gone, so its answers before fine-tuning "
            "cannot be shown"
        )
    text = ("photo", "label", "predicted", "split", "dataset")
    after = runs.read_csv(run_dir / runs.PREDICTIONS, text_columns=text)
    dataset = datasets.load(train["datasets"][0])
    settings = preprocess.PrepSettings(size=int(train["image_size"]), margin=float(train.get("margin", 0.0)))
    prepared = preprocess.prepare(dataset, settings)
    where = {(p, int(f)): i for i, (p, f) in enumerate(zip(prepared.faces["photo"], prepared.faces["face"]))}
    rows = [(where.get((p, int(f))), i) for i, (p, f) in enumerate(zip(after["photo"], after["face"]))]
    rows = [(a, b) for a, b in rows if a is not None]  # a face deleted since the run is left out
    chosen = np.array([a for a, _ in rows], dtype=np.int64)
    faces_seen = (
        prepared.images[chosen] if len(chosen) else np.zeros((0, settings.size, settings.size), np.uint8)
    )
    if classify is None:
        model, metadata = modelfile.load_model(start)
        model_labels = list(metadata["labels"])
        probabilities = modelfile.predict_probabilities(model, faces_seen, metadata=metadata)
    else:
        model_labels = list(modelfile.read_metadata(start)["labels"])
        probabilities = classify(faces_seen)
    kept = after.iloc[[b for _, b in rows]].reset_index(drop=True)
    table = pd.DataFrame(
        {
            "photo": kept["photo"],
            "face": kept["face"].astype(int),
            "label": kept["label"],
            "before": [model_labels[i] for i in probabilities.argmax(axis=1)] if len(chosen) else [],
            "after": kept["predicted"],
        }
    )
    return Comparison(start_model=str(start), faces=table, images=faces_seen)
