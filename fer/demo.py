"""The built-in demo dataset: drawn cartoon faces in ExpW format, generated on the spot.

Why generate instead of shipping files: a newcomer should be able to try every page (label
counts, the confidence filter, preprocessing, training, evaluation) without a multi-gigabyte
download, and a generated dataset costs nothing in the repository. Generation is seeded and
byte-for-byte reproducible, so two machines that both say "demo" mean the same faces.

Why ExpW format: it is the richest format the toolkit reads (several faces per photo, a face
box, a detector confidence), so the demo exercises the cropping and confidence-threshold paths
that a folder of 48x48 crops would skip.

Why some faces are made hard: the confidence threshold only means something if low-confidence
faces really are worse. Blurred, tiny, occluded and turned faces get lower confidences (a
detector is less sure of them), so raising the threshold visibly trades faces for cleaner data,
as it does on ExpW. Hard faces keep their correct label; they are harder, not mislabelled.

The data is SYNTHETIC: drawn faces, not photos of people. It is good for trying the tool, not for
judging a model meant for real faces.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from fer.labels import LABELS

NAME = "demo"
DESCRIPTION = "Built-in demo dataset (synthetic drawn faces)"

# Bump whenever the drawing, the layout or the file format changes: ensure() regenerates any
# demo folder whose stamp carries another version, so nobody keeps stale demo data by accident.
VERSION = 1

DEFAULT_FACES = 1500
DEFAULT_SEED = 0

STAMP = "demo.json"
_JPEG_QUALITY = 90  # fixed so that the same seed gives the same bytes
_STALE_TEMP_S = 3600  # leftovers of a crashed generation older than this are swept away

# How often each difficulty strikes. Independent, so about half the faces are easy and a few
# carry two or three difficulties at once, as in photos taken in the wild.
_DIFFICULTY_RATE = {"blur": 0.18, "small": 0.15, "occlusion": 0.15, "turn": 0.18}

# Confidence lost to each difficulty, at its mildest and extra at its worst (severity 0..1).
# The sizes echo ExpW, where the detector's scores run from ~0.3 to ~125 with a median near 54.
_PENALTY = {"blur": (14.0, 18.0), "small": (16.0, 16.0), "occlusion": (10.0, 18.0), "turn": (10.0, 16.0)}

_SKIN = np.array(
    [(255, 226, 200), (245, 205, 160), (232, 185, 135), (210, 160, 110), (180, 125, 80), (140, 95, 62)],
    dtype=float,
)
_HAIR = [(25, 20, 18), (60, 40, 25), (110, 75, 40), (200, 165, 95), (150, 60, 30), (140, 140, 140)]


@dataclass(frozen=True)
class DemoFace:
    """One face as label.lst records it, plus the difficulties it was drawn with (not in the file)."""

    image: str
    face_id: int
    top: int
    left: int
    right: int
    bottom: int
    confidence: float
    label: int
    difficulty: frozenset[str] = frozenset()

    def line(self) -> str:
        return (
            f"{self.image} {self.face_id} {self.top} {self.left} {self.right} {self.bottom} "
            f"{self.confidence:.4f} {self.label}"
        )


@dataclass
class _FaceSpec:
    record: DemoFace
    head: tuple[int, int, int, int]  # x0, y0, width, height of the head ellipse in the photo
    severity: dict[str, float]
    side: int  # which way a turned head looks, where a side occluder sits: -1 or +1
    seed: int


@dataclass
class _Photo:
    name: str
    width: int
    height: int
    seed: int
    faces: list[_FaceSpec] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Planning: every layout decision, label, difficulty and confidence, without drawing a pixel.
# Kept separate from drawing so that tests (and anyone curious) can see the difficulty of each
# face, which label.lst cannot carry, and so it is certain to match what generate() writes.


def plan(faces: int = DEFAULT_FACES, seed: int = DEFAULT_SEED) -> list[DemoFace]:
    """The faces generate(faces=, seed=) writes, in label.lst order, with their difficulties."""
    return [spec.record for photo in _plan(faces, seed) for spec in photo.faces]


def _plan(faces: int, seed: int) -> list[_Photo]:
    if faces < 1:
        raise ValueError(f"faces must be at least 1, got {faces}")
    rng = np.random.default_rng(seed)
    # Exactly balanced, then shuffled: every label shows up even in a tiny test dataset.
    labels = rng.permutation(np.arange(faces) % len(LABELS))
    photos: list[_Photo] = []
    done = 0
    while done < faces:
        r = rng.random()
        want = min(1 if r < 0.25 else 2 if r < 0.65 else 3, faces - done)
        photo = _Photo(
            name=f"demo_{len(photos):05d}.jpg",
            width=int(rng.integers(320, 481)),
            height=int(rng.integers(240, 361)),
            seed=int(rng.integers(2**63)),
        )
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(want):
            spec = _place_face(rng, photo, boxes, int(labels[done]))
            if spec is None:
                break  # no room left: the remaining faces go to the next photo
            photo.faces.append(spec)
            done += 1
        if photo.faces:
            photos.append(photo)
    return photos


def _place_face(
    rng: np.random.Generator, photo: _Photo, boxes: list[tuple[int, int, int, int]], label: int
) -> _FaceSpec | None:
    difficulty = {name for name, rate in _DIFFICULTY_RATE.items() if rng.random() < rate}
    severity = {name: float(rng.random()) for name in sorted(difficulty)}
    side = 1 if rng.random() < 0.5 else -1
    w_photo, h_photo = photo.width, photo.height
    if "small" in difficulty:
        height = 40 - severity["small"] * 20
    else:
        height = rng.uniform(60, min(190, 0.8 * h_photo))
    aspect = rng.uniform(0.72, 0.84)
    if "turn" in difficulty:
        aspect *= 1 - 0.2 * (0.4 + 0.6 * severity["turn"])  # a turned head shows a narrower face
    # All the random draws for 40 tries at once: one call instead of six per try.
    tries = rng.random((40, 6)).tolist()
    for attempt, (px, py, *slack) in enumerate(tries):
        if attempt and attempt % 10 == 0 and "small" not in difficulty:
            height *= 0.8  # crowded photo: try a smaller face before giving up
            if height < 50:
                return None
        hh = int(round(height))
        hw = max(8, int(round(hh * aspect)))
        if hw + 4 > w_photo or hh + 4 > h_photo:
            continue
        x0 = 2 + int(px * (w_photo - hw - 3))
        y0 = 2 + int(py * (h_photo - hh - 3))
        # The detector's box: the head's bounding box with some slack, mostly outward.
        sl, st, sr, sb = ((-0.03 + 0.13 * v) * hh for v in slack)
        left = max(0, int(round(x0 - sl)))
        top = max(0, int(round(y0 - st)))
        right = min(w_photo, int(round(x0 + hw + sr)))
        bottom = min(h_photo, int(round(y0 + hh + sb)))
        gap = 2 + int(0.08 * hh)  # ears, hair and occluders reach a little past the head
        if any(
            left < r + gap and x < right + gap and top < b + gap and t < bottom + gap
            for (t, x, r, b) in boxes
        ):
            continue
        boxes.append((top, left, right, bottom))
        record = DemoFace(
            image=photo.name,
            face_id=len(photo.faces),
            top=top,
            left=left,
            right=right,
            bottom=bottom,
            confidence=_confidence(rng, severity),
            label=label,
            difficulty=frozenset(difficulty),
        )
        return _FaceSpec(record, (x0, y0, hw, hh), severity, side, int(rng.integers(2**63)))
    return None


def _confidence(rng: np.random.Generator, severity: dict[str, float]) -> float:
    score = rng.normal(85, 8) + rng.normal(0, 4)
    for name, s in severity.items():
        base, extra = _PENALTY[name]
        score -= base + extra * s
    return round(min(120.0, max(0.5, float(score))), 4)


# ----------------------------------------------------------------------------------------------
# Drawing.


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    # Varied enough from photo to photo that a model cannot learn "face = this colour" or
    # "face = the smooth part". Built at half size and scaled up: resampling a full-size photo
    # is the slowest step of all on a small machine, and the background needs no fine detail.
    half = (max(1, width // 2), max(1, height // 2))
    corners = rng.integers(0, 256, size=(2, int(rng.integers(2, 4)), 3), dtype=np.uint8)
    image = Image.fromarray(corners, "RGB").resize(half, Image.Resampling.BILINEAR)
    if rng.random() < 0.8:
        # Clutter: rectangles and ellipses, like furniture, windows and other things in a photo.
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 12))):
            x0, x1 = sorted(int(v) for v in rng.integers(-20, half[0] + 20, size=2))
            y0, y1 = sorted(int(v) for v in rng.integers(-20, half[1] + 20, size=2))
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            shape = draw.rectangle if rng.random() < 0.6 else draw.ellipse
            shape((x0, y0, x1 + 1, y1 + 1), fill=colour)
    if rng.random() < 0.15:  # out of focus
        image = image.filter(ImageFilter.BoxBlur(float(rng.uniform(1, 3))))
    return image.resize((width, height), Image.Resampling.NEAREST)


def _add_noise(rng: np.random.Generator, image: Image.Image, spread: int) -> Image.Image:
    # Luminance-only, uniform noise: numpy's normal sampler and per-channel noise both cost more
    # than the rest of the photo, and the eye (or a CNN on grayscale) cannot tell the difference.
    noise = rng.integers(128 - spread, 129 + spread, size=(image.height, image.width), dtype=np.uint8)
    grain = Image.fromarray(noise, "L")
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def _colour(rgb, jitter: float = 0.0, rng: np.random.Generator | None = None) -> tuple[int, int, int]:
    if rng is not None and jitter:
        rgb = [c + d for c, d in zip(rgb, rng.normal(0, jitter, size=3).tolist(), strict=True)]
    r, g, b = (min(255, max(0, int(c))) for c in rgb)
    return (r, g, b)


class _Pen:
    """Draws in head units: u runs -1..1 across the head, v -1..1 down it.

    Expressions are written once in these units; a turned head only changes the mapping
    (features squeezed and shifted to the side it looks to), not the expression code.
    """

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, cy: float, a: float, b: float):
        self.draw, self.cx, self.cy, self.a, self.b = draw, cx, cy, a, b
        self.shift, self.squeeze = 0.0, 1.0

    def xy(self, u: float, v: float) -> tuple[float, float]:
        return (self.cx + (self.shift + u * self.squeeze) * self.a, self.cy + v * self.b)

    def box(self, u: float, v: float, ru: float, rv: float) -> tuple[float, float, float, float]:
        """Bounding box of an ellipse centred at (u, v) with radii ru (head widths), rv (heights)."""
        x, y = self.xy(u, v)
        rx, ry = ru * self.squeeze * self.a, rv * self.b
        return (x - rx, y - ry, x + rx, y + ry)

    def curve(self, points, width: float, fill, bend: float = 0.0) -> None:
        """A line through two points, bowed by `bend` head heights (negative bows upward)."""
        (u0, v0), (u1, v1) = points
        if bend == 0:
            self.draw.line([self.xy(u0, v0), self.xy(u1, v1)], fill=fill, width=max(1, int(round(width))))
            return
        steps = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
        xy = [self.xy(u0 + (u1 - u0) * t, v0 + (v1 - v0) * t + bend * 4 * t * (1 - t)) for t in steps]
        self.draw.line(xy, fill=fill, width=max(1, int(round(width))), joint="curve")

    def polygon(self, points, fill, outline=None, width: float = 1) -> None:
        xy = [self.xy(u, v) for u, v in points]
        self.draw.polygon(xy, fill=fill, outline=outline, width=max(1, int(round(width))))


def _draw_face(image: Image.Image, spec: _FaceSpec) -> None:
    rng = np.random.default_rng(spec.seed)
    label = LABELS[spec.record.label]
    x0, y0, hw, hh = spec.head
    margin = max(2, int(round(0.15 * hh)))  # room for hair, ears, occluders and blur to spread
    region = (x0 - margin, y0 - margin, x0 + hw + margin, y0 + hh + margin)
    blurred = "blur" in spec.severity
    # Draw oversized and shrink: Pillow does not anti-alias, and a 25 px face drawn directly
    # would be a few jagged pixels. A working height of 100+ px also keeps line widths sane.
    # A blurred face hides its jagged edges anyway, so it is drawn at size: blur is the slow part.
    k = 1 if blurred and hh >= 40 else max(2, int(math.ceil(100 / hh)))
    size = ((hw + 2 * margin) * k, (hh + 2 * margin) * k)
    skin_pos = rng.uniform(0, len(_SKIN) - 1)
    i = int(skin_pos)
    skin = _SKIN[i] + (_SKIN[min(i + 1, len(_SKIN) - 1)] - _SKIN[i]) * (skin_pos - i)
    skin_rgb = _colour(skin, 6, rng)
    if blurred:
        # Drawn apart with a mask, so that the blur softens the face but not the scenery around it.
        # RGB plus mask rather than RGBA: shrinking RGBA is several times slower in Pillow. The
        # canvas is skin-coloured outside the mask, so a blurred edge fades to skin, not to black.
        canvas = Image.new("RGB", size, skin_rgb)
        mask: Image.Image | None = Image.new("L", size, 0)
    else:
        # Drawn straight onto the enlarged photo: shrinking gives back every untouched background
        # pixel exactly, so there is no mask to draw, shrink and paste.
        canvas = image.crop(region).resize(size, Image.Resampling.NEAREST)
        mask = None
    draw = ImageDraw.Draw(canvas)
    silhouette = ImageDraw.Draw(mask) if mask is not None else None
    a, b = hw * k / 2, hh * k / 2
    pen = _Pen(draw, margin * k + a, margin * k + b, a, b)
    lw = b * 0.07 * rng.uniform(0.8, 1.25)  # feature line width, in canvas pixels
    ink = _colour((35, 25, 20), 10, rng)
    shade = _colour(skin * 0.62, 0, None)
    head = (pen.cx - a, pen.cy - b, pen.cx + a, pen.cy + b)

    if rng.random() < 0.6:  # ears, drawn first so the head covers their inner half
        for s in (-1, 1):
            x, y = pen.cx + s * a * 0.98, pen.cy + b * 0.02
            ear = (x - a * 0.13, y - b * 0.15, x + a * 0.13, y + b * 0.15)
            draw.ellipse(ear, fill=skin_rgb, outline=shade)
            if silhouette is not None:
                silhouette.ellipse(ear, fill=255)
    draw.ellipse(head, fill=skin_rgb, outline=shade, width=max(1, int(lw * 0.5)))
    if silhouette is not None:
        silhouette.ellipse(head, fill=255)
    if rng.random() < 0.75:  # hair: a cap over the top that stays clear of the highest brows
        hair = _colour(_HAIR[int(rng.integers(len(_HAIR)))], 10, rng)
        grow = rng.uniform(1.02, 1.08)
        # Whole degrees: Pillow 13 fills a chord with fractional angles across the whole ellipse.
        start = int(rng.integers(225, 236))
        cap = (pen.cx - a * grow, pen.cy - b * grow, pen.cx + a * grow, pen.cy + b * grow)
        draw.chord(cap, start, 540 - start, fill=hair)
        if silhouette is not None:
            silhouette.chord(cap, start, 540 - start, fill=255)

    turn = spec.severity.get("turn")
    if turn is not None:
        t = 0.4 + 0.6 * turn
        pen.shift, pen.squeeze = spec.side * 0.3 * t, 1 - 0.35 * t

    def j(scale: float = 0.02) -> float:  # natural variation: no two faces exactly alike
        return float(rng.normal(0, scale))

    _draw_expression(pen, rng, label, lw, ink, skin, j)

    if "occlusion" in spec.severity:
        _draw_occluder(pen, silhouette, rng, spec)
    patch = canvas.reduce(k) if k > 1 else canvas
    if mask is None:
        image.paste(patch, region[:2])
        return
    blur = ImageFilter.GaussianBlur(max(0.7, (0.015 + 0.025 * spec.severity["blur"]) * hh))
    image.paste(patch.filter(blur), region[:2], (mask.reduce(k) if k > 1 else mask).filter(blur))


def _draw_expression(pen: _Pen, rng: np.random.Generator, label: str, lw: float, ink, skin, j) -> None:
    # How strongly the expression shows. Never so faint that it could pass for neutral: hard faces
    # come from the photo (blur, size, occlusion, pose), never from an ambiguous expression.
    ie = rng.uniform(0.65, 1.0)
    eye_u, eye_v = 0.34 + j(0.025), -0.1 + j(0.02)
    mouth_v, mouth_w = 0.45 + j(0.025), rng.uniform(0.85, 1.15)
    brow_w = lw * rng.uniform(1.1, 1.5)
    nose_ink = _colour(skin * 0.55, 0, None)
    white = _colour((245, 245, 240), 5, rng)
    lip = _colour((150, 60, 60), 12, rng)
    dark_mouth = _colour((70, 15, 25), 8, rng)
    a_over_b = pen.a / pen.b

    # Brows: (baseline v, inner u, inner drop, outer drop, arch) per side. Positive drop = lower.
    def brows(left, right) -> None:
        for s, (vb, ui, d_in, d_out, arch) in ((-1, left), (1, right)):
            pen.curve(
                [(s * ui, vb + d_in + j(0.01)), (s * (0.56 + j(0.03)), vb + d_out + j(0.01))],
                brow_w,
                ink,
                bend=-arch,
            )

    def eyes(ru: float, rv: float, pupil: float, lids: str = "") -> None:
        for s in (-1, 1):
            u = s * eye_u
            pen.draw.ellipse(pen.box(u, eye_v, ru, rv), fill=white, outline=ink, width=max(1, int(lw * 0.45)))
            r = pupil * min(ru * pen.squeeze * pen.a, rv * pen.b)
            x, y = pen.xy(u, eye_v)
            pen.draw.ellipse((x - r, y - min(r, rv * pen.b), x + r, y + min(r, rv * pen.b)), fill=ink)
            if lids == "angry":  # heavy upper lids slanting down toward the nose
                pen.curve(
                    [(s * (eye_u - ru), eye_v - rv * 0.2), (s * (eye_u + ru), eye_v - rv * 1.6)], lw, ink
                )
            elif lids == "sad":  # upper lids drooping at the outer corners
                pen.curve(
                    [(s * (eye_u - ru), eye_v - rv * 1.3), (s * (eye_u + ru), eye_v - rv * 0.2)],
                    lw * 0.8,
                    ink,
                )

    def smile_eyes() -> None:  # closed, upturned arcs: the eyes of a big laugh
        for s in (-1, 1):
            pen.curve(
                [(s * eye_u - 0.14, eye_v + 0.03), (s * eye_u + 0.14, eye_v + 0.03)], lw, ink, bend=-0.08
            )

    def nose(wrinkles: bool = False) -> None:
        pen.curve([(0.0 + j(0.01), -0.02), (0.03, 0.17)], lw * 0.7, nose_ink)
        pen.curve([(-0.07, 0.19), (0.07, 0.19)], lw * 0.7, nose_ink, bend=0.03)
        if wrinkles:  # disgust wrinkles the bridge of the nose
            for v in (-0.02, 0.04, 0.1):
                pen.curve([(-0.12, v + 0.02), (0.12, v + 0.02)], lw * 0.6, ink, bend=-0.025)

    if label == "angry":
        brows((-0.3, 0.08, 0.11 * ie, -0.08 * ie, 0), (-0.3, 0.08, 0.11 * ie, -0.08 * ie, 0))
        if rng.random() < 0.6:  # frown creases between the brows
            for s in (-1, 1):
                pen.curve([(s * 0.035, -0.3), (s * 0.045, -0.2)], lw * 0.5, nose_ink)
        eyes(0.14, 0.04, 0.8, lids="angry")
        nose()
        w = 0.2 * mouth_w
        if rng.random() < 0.5:  # tight lips, corners pulled down
            pen.curve([(-w, mouth_v + 0.04), (w, mouth_v + 0.04)], lw * 1.2, ink, bend=-0.06 * ie)
        else:  # clenched teeth
            pen.draw.rectangle(
                (*pen.xy(-w, mouth_v - 0.04), *pen.xy(w, mouth_v + 0.05)),
                fill=white,
                outline=ink,
                width=max(1, int(lw * 0.6)),
            )
            pen.curve([(-w, mouth_v + 0.005), (w, mouth_v + 0.005)], lw * 0.5, ink)
    elif label == "disgust":
        s = 1 if rng.random() < 0.5 else -1  # the side of the lowered brow and the raised lip
        low = (-0.3, 0.1, 0.1 * ie, 0.0, 0.0)
        high = (-0.4, 0.12, -0.02, 0.0, 0.03)
        brows(low if s < 0 else high, low if s > 0 else high)
        eyes(0.14, 0.05, 0.8)
        nose(wrinkles=True)
        w = 0.24 * mouth_w
        us = np.linspace(-w, w, 9)
        upper = [(float(u), mouth_v + 0.02 - 0.14 * ie * max(0.0, s * u / w) ** 0.8) for u in us]
        lower = [(float(u), mouth_v + 0.05 + 0.02 * (1 - (u / w) ** 2)) for u in us[::-1]]
        pen.polygon(upper + lower, fill=dark_mouth, outline=ink, width=lw * 0.7)
        pen.curve([(s * 0.2, 0.22), (s * (w + 0.04), mouth_v - 0.06)], lw * 0.5, nose_ink)  # sneer line
    elif label == "fear":
        brows((-0.46, 0.07, -0.09 * ie, 0.05 * ie, 0.02), (-0.46, 0.07, -0.09 * ie, 0.05 * ie, 0.02))
        eyes(0.16, 0.12, 0.35)
        nose()
        w = 0.27 * mouth_w
        pen.draw.ellipse(
            pen.box(0, mouth_v, w, 0.06), fill=dark_mouth, outline=ink, width=max(1, int(lw * 0.6))
        )
        if rng.random() < 0.5:  # bared lower teeth
            pen.curve([(-w * 0.7, mouth_v + 0.03), (w * 0.7, mouth_v + 0.03)], lw * 0.7, white)
    elif label == "happy":
        brows((-0.4, 0.12, 0.0, 0.02, 0.05), (-0.4, 0.12, 0.0, 0.02, 0.05))
        if rng.random() < 0.4:
            smile_eyes()
        else:
            eyes(0.14, 0.065, 0.75)
        nose()
        if rng.random() < 0.5:  # rosy cheeks
            cheek = _colour(np.asarray(skin) * 0.5 + np.array([230, 110, 110]) * 0.5, 0, None)
            for s in (-1, 1):
                pen.draw.ellipse(pen.box(s * 0.52, 0.22, 0.12, 0.07), fill=cheek)
        w = 0.32 * mouth_w
        if rng.random() < 0.5:  # open smile with teeth
            # The lower half of an ellipse: flat upper lip, round lower one.
            x0, top = pen.xy(-w, mouth_v - 0.08)
            x1, bottom = pen.xy(w, mouth_v + 0.12 + 0.06 * ie)
            pen.draw.chord(
                (x0, 2 * top - bottom, x1, bottom),
                0,
                180,
                fill=dark_mouth,
                outline=ink,
                width=max(1, int(lw * 0.6)),
            )
            pen.curve([(-w * 0.75, mouth_v - 0.05), (w * 0.75, mouth_v - 0.05)], lw * 1.1, white, bend=0.02)
        else:  # closed smile
            pen.curve([(-w, mouth_v - 0.06), (w, mouth_v - 0.06)], lw * 1.1, ink, bend=0.14 * ie + 0.04)
    elif label == "sad":
        brows((-0.36, 0.11, -0.12 * ie, 0.05 * ie, 0), (-0.36, 0.11, -0.12 * ie, 0.05 * ie, 0))
        eyes(0.14, 0.07, 0.7, lids="sad")
        nose()
        w = 0.25 * mouth_w
        pen.curve([(-w, mouth_v + 0.12), (w, mouth_v + 0.12)], lw * 1.1, ink, bend=-(0.12 * ie + 0.03))
        if rng.random() < 0.25:  # a tear
            x, y = pen.xy(-eye_u * 1.05, eye_v + 0.2)
            r = 0.045 * pen.b
            pen.draw.ellipse((x - r, y - r * 1.3, x + r, y + r * 1.3), fill=(120, 170, 230))
    elif label == "surprise":
        vb = -0.5 - 0.04 * ie
        brows((vb, 0.12, 0.03, 0.05, 0.1 * ie), (vb, 0.12, 0.03, 0.05, 0.1 * ie))
        # Round eyes: the same radius in pixels both ways.
        eyes(0.13 / a_over_b, 0.13, 0.45)
        nose()
        pen.draw.ellipse(
            pen.box(0, mouth_v + 0.04, 0.13 * mouth_w, 0.15 + 0.04 * ie),
            fill=dark_mouth,
            outline=ink,
            width=max(1, int(lw * 0.7)),
        )
    else:  # neutral
        brows((-0.36, 0.12, j(0.01), j(0.01), 0.01), (-0.36, 0.12, j(0.01), j(0.01), 0.01))
        eyes(0.14, 0.075, 0.75)
        nose()
        w = 0.22 * mouth_w
        pen.curve(
            [(-w, mouth_v + j(0.01)), (w, mouth_v + j(0.01))], lw * 1.1, lip if rng.random() < 0.5 else ink
        )


def _draw_occluder(
    pen: _Pen, silhouette: ImageDraw.ImageDraw | None, rng: np.random.Generator, spec: _FaceSpec
) -> None:
    # Hands, microphones, hats, other heads: something opaque in front of part of the face.
    # Never all of it: the occluded face keeps enough cues to carry its label.
    frac = 0.25 + 0.2 * spec.severity["occlusion"]
    colour = _colour(rng.integers(0, 256, size=3), 0, None)
    draw, cx, cy, a, b = pen.draw, pen.cx, pen.cy, pen.a, pen.b
    r = rng.random()
    kind = "side" if r < 0.45 else "band" if r < 0.7 else "blob"
    if kind == "blob":
        r = math.sqrt(frac * a * b)
        x = cx + rng.uniform(-0.5, 0.5) * a
        y = cy + rng.uniform(-0.1, 0.6) * b
        blob = (x - r * rng.uniform(0.8, 1.2), y - r, x + r * rng.uniform(0.8, 1.2), y + r)
        draw.ellipse(blob, fill=colour)
        if silhouette is not None:
            silhouette.ellipse(blob, fill=255)
        return
    if kind == "side":  # a bar covering one side: one eye, one brow and a corner of the mouth
        half = frac * a
        centre = (cx + spec.side * (a + 0.1 * a - half), cy)
        length, thick = 2.4 * b, half
    else:  # a band across the eyes or across the mouth
        half = frac * b * 0.55
        centre = (cx, cy + (-0.12 if rng.random() < 0.5 else 0.48) * b)
        length, thick = 2.4 * a, half
    angle = math.radians(rng.uniform(-20, 20)) + (0 if kind == "band" else math.pi / 2)
    dx, dy = math.cos(angle), math.sin(angle)
    corners = [
        (
            centre[0] + sx * dx * length / 2 - sy * dy * thick,
            centre[1] + sx * dy * length / 2 + sy * dx * thick,
        )
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    draw.polygon(corners, fill=colour)
    if silhouette is not None:
        silhouette.polygon(corners, fill=255)


def _render_photo(photo: _Photo) -> bytes:
    rng = np.random.default_rng(photo.seed)
    image = _background(rng, photo.width, photo.height)
    for spec in photo.faces:
        _draw_face(image, spec)
    if rng.random() < 0.35:  # sensor noise over everything, faces included
        image = _add_noise(rng, image, int(rng.integers(4, 16)))
    buffer = io.BytesIO()
    # Fixed quality and no metadata: the same seed must give the same bytes.
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Files.

_README = """\
SYNTHETIC DEMO DATASET - drawn cartoon faces, NOT photographs of real people.

Made by fer.demo (generator version {version}, seed {seed}) so the toolkit can be tried without
downloading anything. It uses the ExpW layout:

  label.lst   one line per face: image_name face_id top left right bottom confidence label
              the face is image[top:bottom, left:right]; confidence is 0-120 like
              ExpW's detector scores; label 0-6 is {labels}
  image/      the photos, each holding one to three faces

{faces} faces in {photos} photos, about equally many per label. Some faces are deliberately hard
(blurred, small, partly covered, turned away) and carry a lower confidence, so a confidence
threshold behaves as it does on real detector output.

Good for trying every page of the dashboard; says nothing about how a model does on real faces.
Delete this folder at will: fer.demo.ensure() regenerates it, identically, when needed.
"""


def generate(out_dir: Path, *, faces: int = DEFAULT_FACES, seed: int = DEFAULT_SEED) -> Path:
    """Write the demo dataset (ExpW layout) to out_dir and return it; the same seed gives the same bytes.

    The folder appears complete or not at all: it is built in a temporary sibling and renamed into
    place. An existing demo folder there is replaced; any other non-empty folder is left alone
    (FileExistsError), so a mistyped path cannot wipe someone's data.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not _is_demo(out_dir) and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not a demo dataset; not overwriting it")
    temp = _build(out_dir, faces, seed)
    _install(temp, out_dir, keep_current=False)
    return out_dir


def ensure(root: Path | None = None) -> Path:
    """The demo folder under root (default: $FER_HOME, else <repo>/data), generated only if needed.

    Safe to call from several processes at once: each builds in its own temporary folder and the
    first rename wins; the others drop their copy and use the winner's.
    """
    if root is None:
        from fer.paths import data_dir

        root = data_dir()
    target = Path(root) / NAME
    if _is_current(target):
        return target
    if target.exists() and not _is_demo(target) and any(target.iterdir()):
        # Replacing it would delete someone's files: a stamp is the only proof the folder is ours.
        raise FileExistsError(f"{target} exists and is not a demo dataset; move it or set FER_HOME")
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep(target)
    temp = _build(target, DEFAULT_FACES, DEFAULT_SEED)
    _install(temp, target, keep_current=True)
    return target


def _build(out_dir: Path, faces: int, seed: int) -> Path:
    photos = _plan(faces, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (temp / "image").mkdir()
        for photo in photos:
            (temp / "image" / photo.name).write_bytes(_render_photo(photo))
        lines = [spec.record.line() for photo in photos for spec in photo.faces]
        (temp / "label.lst").write_text("\n".join(lines) + "\n", encoding="utf-8")
        readme = _README.format(
            version=VERSION, seed=seed, faces=len(lines), photos=len(photos), labels=", ".join(LABELS)
        )
        (temp / "README.txt").write_text(readme, encoding="utf-8")
        stamp = {"name": NAME, "version": VERSION, "seed": seed, "faces": len(lines), "synthetic": True}
        # Written last: a folder with a stamp is a finished folder.
        (temp / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.chmod(temp, 0o755)  # mkdtemp makes it owner-only; the dataset is meant to be shared
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return temp


def _install(temp: Path, target: Path, *, keep_current: bool) -> None:
    """Rename temp to target; an existing target is moved aside first, or kept if keep_current and current."""
    error: OSError | None = None
    try:
        for _ in range(5):
            try:
                os.rename(temp, target)
                return
            except OSError as failure:
                error = failure
                if not target.exists():
                    continue  # someone moved it away between our rename and our look: try again
                if keep_current and _is_current(target):
                    return  # another process won the race with an equally good dataset: use theirs
            aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
        raise OSError(f"could not move the demo dataset into {target}") from error
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def _read_stamp(folder: Path) -> dict | None:
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _is_demo(folder: Path) -> bool:
    stamp = _read_stamp(folder)
    return stamp is not None and stamp.get("name") == NAME


def _is_current(folder: Path) -> bool:
    stamp = _read_stamp(folder)
    return (
        stamp is not None
        and stamp.get("version") == VERSION
        and (folder / "label.lst").is_file()
        and (folder / "image").is_dir()
    )


def _sweep(target: Path) -> None:
    # A crash mid-generation leaves a hidden temporary sibling; clear old ones, never fresh ones
    # (they may belong to a process that is generating right now).
    cutoff = time.time() - _STALE_TEMP_S
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)
