"""What a training run and a model are asked to be: two frozen dataclasses and the limits they obey.

Every other module reads these, from the dashboard's pages to the fit loop, so this one imports
nothing heavy (no Keras, no TensorFlow, no pandas) and nothing else of `fer`: reading or checking a
config costs nothing, and it can sit at the top of the import order. The configs check themselves
when made, naming the field, the rule and what was received, so a bad value stops a run before any
face is prepared. A TrainConfig is saved in the run folder and in the model file, and rebuilt from
there with `from_dict`; a ModelConfig rebuilds the architecture (see fer.models.build).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

# Face sides, in pixels, that preprocessing makes and models take: FER2013 is natively 48; the report
# used 224.
MIN_SIZE, MAX_SIZE = 48, 224
ARCHITECTURES = ("seed", "vgg", "vgg-lite", "vgg-steady", "vgg-smooth", "vgg-small")
STRATEGIES = ("none", "mirrored", "multiworker")
# What the layers compute in: "auto" is bfloat16 (float32 weights, bfloat16 arithmetic) on a CPU with
# bfloat16 instructions under TensorFlow and no GPU, where vgg trained 1.1-1.6 times as fast (about 2
# points lower after 10 epochs, docs/benchmarks.md), else float32. See fer.train.precision.
PRECISIONS = ("auto", "float32", "bfloat16")


def server_setting(variable: str, default: int, unit: str) -> int:
    """A whole-number limit an operator sets in the environment (FER_MAX_FACES and the like), or its
    default when unset; "1_000_000" and "1,000,000" read as numbers. Anything else, or a number below 1,
    is refused, naming the setting, what it holds and the default."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"{variable} must be a whole number of {unit} above 0, got {text!r}; "
            f"unset it for the default ({default:,})"
        )
    return value


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "vgg"  # "seed" is the report's CNN; "vgg" measured best (see README)
    image_size: int = 48  # faces are image_size x image_size grayscale
    num_classes: int = 7
    dropout: float = 0.5  # before the classifier; the report's value
    width: int = 16  # filters in the first block (vgg family); later blocks double it. 16 trains at
    # ~170 faces/s on 2 CPU cores; use 32 or more on a GPU

    def __post_init__(self) -> None:
        _need(
            self.arch in ARCHITECTURES, f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}"
        )
        _need(
            MIN_SIZE <= self.image_size <= MAX_SIZE,  # the range preprocessing makes
            f"image_size must be between {MIN_SIZE} and {MAX_SIZE}, got {self.image_size}",
        )
        _need(self.num_classes >= 2, f"num_classes must be at least 2, got {self.num_classes}")
        _need(0 <= self.dropout < 1, f"dropout must be at least 0 and below 1, got {self.dropout}")
        _need(4 <= self.width <= 256, f"width must be between 4 and 256, got {self.width}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    datasets: tuple[str, ...] = ("demo",)  # pooled; labels matched by name
    # vgg-steady: vgg-lite with smoothed pooling, steadier answers at the same accuracy, about 1.4 times as fast
    # as vgg on a CPU; vgg scored about 1 point higher in full runs (docs/benchmarks.md)
    arch: str = "vgg-steady"  # see ARCHITECTURES
    width: int = 16  # filters in the first block (vgg family)
    image_size: int = 48  # faces are resized to image_size x image_size
    margin: float = 0.0  # share of the box added on each side before cropping
    min_confidence: float | None = None  # drop faces under this detector confidence
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3  # Adam's starting rate; halved when val accuracy stalls
    dropout: float = 0.5
    label_smoothing: float = 0.0
    erase: float = 0.0  # share of training faces with one random rectangle erased (with augment)
    weight_decay: float = 0.0  # decoupled weight decay (AdamW) when above 0
    class_weight: bool = False  # weight the loss by inverse label frequency
    augment: bool = True  # flips, shifts, rotations, zoom, contrast (training only)
    val_share: float = 0.1  # for datasets without their own split
    test_share: float = 0.1
    seed: int = 0  # split, initial weights, batch order, augmentation
    patience: int = 8  # epochs without a better val accuracy before stopping
    lr_patience: int = 3  # epochs without a better val accuracy before halving the rate
    strategy: str = "none"  # "mirrored" (several GPUs) or "multiworker" (TF_CONFIG): TensorFlow only
    max_faces: int | None = None  # use at most this many training faces (quick trials)
    init_from: str | None = None  # a saved model (.keras) to start from; may be narrower (see models.grow)
    precision: str = "auto"  # see PRECISIONS; the saved best model is float32 whichever it trains in
    teachers: str | None = None  # model files (comma-separated) whose averaged answers the model also learns
    distill: float = 0.5  # with teachers: the share of each training face's target that is theirs

    def __post_init__(self) -> None:
        _need(len(self.datasets) > 0, "datasets must name at least one dataset")
        _need(
            self.arch in ARCHITECTURES, f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}"
        )
        _need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        _need(1 <= self.batch_size <= 4096, f"batch_size must be between 1 and 4096, got {self.batch_size}")
        _need(
            0 < self.learning_rate <= 1,
            f"learning_rate must be above 0 and at most 1, got {self.learning_rate}",
        )
        _need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _need(0 <= self.erase <= 1, f"erase must be between 0 and 1, got {self.erase}")
        _need(
            0 <= self.weight_decay < 1,
            f"weight_decay must be at least 0 and below 1, got {self.weight_decay}",
        )
        _need(self.patience >= 1, f"patience must be at least 1, got {self.patience}")
        _need(
            self.lr_patience >= 1,
            "lr_patience must be at least 1 (epochs without a better validation accuracy before the "
            f"learning rate is halved), got {self.lr_patience}",
        )
        _need(
            self.strategy in STRATEGIES,
            f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}",
        )
        _need(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )
        _need(0 < self.distill <= 1, f"distill must be above 0 and at most 1, got {self.distill}")
        _need(
            self.max_faces is None or self.max_faces >= 1,
            f"max_faces must be at least 1, got {self.max_faces}",
        )
        # The rules of fer.preprocess.PrepSettings and fer.splits.SplitSettings, under this config's names.
        _need(
            MIN_SIZE <= self.image_size <= MAX_SIZE,
            f"image_size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {self.image_size}",
        )
        _need(
            0 <= self.margin <= 1, f"margin must be between 0 and 1 (a share of the box), got {self.margin}"
        )
        for name in ("val_share", "test_share"):
            value = getattr(self, name)
            _need(0 <= value < 1, f"{name} must be at least 0 and below 1, got {value}")
        _need(
            self.val_share + self.test_share < 1,
            f"val_share + test_share must leave faces to train on, got {self.val_share} + {self.test_share}",
        )
        self.model_config(num_classes=2)  # dropout and width

    def model_config(self, num_classes: int) -> ModelConfig:
        return ModelConfig(
            arch=self.arch,
            image_size=self.image_size,
            num_classes=num_classes,
            dropout=self.dropout,
            width=self.width,
        )

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values["datasets"] = tuple(values.get("datasets", ()))
        return cls(**values)
