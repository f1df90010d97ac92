"""`python -m fer ...`: the engine's command line. Results go to stdout, progress and errors to stderr."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from fer import datasets, detect, logs
from fer.config import ARCHITECTURES, MAX_SIZE, MIN_SIZE, PRECISIONS, STRATEGIES, TrainConfig

# The commands that load a model or train one, and so TensorFlow.
KERAS_COMMANDS = ("train", "evaluate", "predict", "export", "calibrate")
# --flip of predict and evaluate: the model file's own setting unless asked otherwise.
MIRROR_HELP = (
    "read each face with its mirror image too and average the two answers (--no-flip: never); "
    "default: as the model file says (the bundled model does)"
)


class ProgressBar:
    """A one-line progress bar on stderr with rate and time left; silent when stderr is not a terminal
    except for a line every few seconds, so logs stay readable."""

    def __init__(self, what: str, stream=None) -> None:
        # sys.stderr looked up now, not when this module was imported, so redirecting it takes effect.
        stream = stream or sys.stderr
        self.what, self.stream, self.start, self.last = what, stream, time.monotonic(), 0.0
        self.tty = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < (0.1 if self.tty else 5.0):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (total - done) / rate if rate else float("inf")
        filled = int(30 * done / max(total, 1))
        line = (
            f"{self.what} [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,} "
            f"{rate:,.0f}/s {'done' if done >= total else f'{left:,.0f}s left'}"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset folder or CSV, or 'demo' for the built-in synthetic dataset")
    parser.add_argument(
        "--columns",
        help="for a generic CSV: which column holds each field, e.g. image=file,label=emotion,x=bx,y=by,w=bw,h=bh",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="drop faces whose detector confidence is below this (faces without one are kept)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fer", description=__doc__)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"keep TensorFlow's own log lines (also: {logs.VERBOSE}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    summary = commands.add_parser("summary", help="count faces per label and split; what a threshold keeps")
    _dataset_args(summary)
    summary.add_argument("--seed", type=int, default=0, help="seed of the drawn split (datasets without one)")

    prepare = commands.add_parser(
        "prepare", help="crop, resize and grayscale every face; save them as images"
    )
    _dataset_args(prepare)
    prepare.add_argument(
        "--out", required=True, type=Path, help="folder to write <label>/<photo>_<face>.png into"
    )
    prepare.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"output side in pixels, {MIN_SIZE}-{MAX_SIZE} (default: the faces' own size, e.g. 48 for "
        "FER2013, or the median face box of photos with boxes; 224 where it cannot be told)",
    )
    prepare.add_argument(
        "--margin", type=float, default=0.0, help="share of the box added on each side (0-1)"
    )
    prepare.add_argument("--seed", type=int, default=0, help="seed of the drawn split (datasets without one)")
    prepare.add_argument("--workers", type=int, default=None, help="processes to use (default: every core)")
    prepare.add_argument("--cache-dir", type=Path, default=None, help="where processed faces are cached")

    _train_parser(commands)

    evaluate = commands.add_parser("evaluate", help="score a trained model on a dataset")
    _dataset_args(evaluate)
    evaluate.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a .keras model saved by train, or a .tflite / .onnx file written by export (default: bundled)",
    )
    evaluate.add_argument(
        "--split", choices=("test", "all"), default="test", help="faces to score (default test)"
    )
    evaluate.add_argument(
        "--predictions", type=Path, default=None, help="also write per-face predictions (CSV)"
    )
    evaluate.add_argument(
        "--detect",
        nargs="?",
        const=detect.DEFAULT,
        default=None,
        choices=detect.NAMES,
        help=f"find faces with a detector (default {detect.DEFAULT}) instead of the labelled boxes; a missed face is wrong",
    )
    evaluate.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help=MIRROR_HELP)

    predict = commands.add_parser("predict", help="find and classify the faces in photos")
    predict.add_argument("images", nargs="+", type=Path, help="photos (JPEG, PNG, ...)")
    predict.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a .keras model saved by train, or a .tflite / .onnx file written by export (default: bundled)",
    )
    predict.add_argument("--detector", choices=detect.NAMES, default=detect.DEFAULT, help="face detector")
    predict.add_argument(
        "--whole",
        action="store_true",
        help="each photo is one pre-cropped face: no detection (one that does not look like a face is reported)",
    )
    predict.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help=MIRROR_HELP)
    predict.add_argument(
        "--steady",
        action="store_true",
        help="read each found face from its box and slightly moved copies of it, averaged (steadier)",
    )
    predict.add_argument("--json", action="store_true", help="print one JSON object")

    report = commands.add_parser("report", help="write a run's shareable, self-contained HTML report")
    report.add_argument("run_dir", type=Path, help="a run folder written by train")
    report.add_argument("--out", required=True, type=Path, help="the HTML file to write")
    report.add_argument(
        "--faces-per-cell",
        type=int,
        default=4,
        help="example faces per label, for the right answers and for the mistakes each (default 4)",
    )

    export = commands.add_parser(
        "export",
        help="write a run's best model for shipping (.keras, or .tflite / .onnx to run without TensorFlow), "
        "with its labels, preprocessing and held-out scores in its metadata",
    )
    export.add_argument("source", type=Path, help="a run folder (its best.keras) or a .keras file")
    export.add_argument(
        "--out", required=True, type=Path, help="the file to write (.keras, .tflite or .onnx)"
    )
    export.add_argument(
        "--format",
        choices=("keras", "tflite", "onnx"),
        default=None,
        help="keras, tflite (LiteRT) or onnx (ONNX Runtime); default: what --out ends in",
    )
    export.add_argument(
        "--quantize",
        choices=("float16", "int8"),
        default=None,
        help="tflite / onnx: store the weights in half precision (half the size) or 8 bits (a quarter)",
    )
    export.add_argument(
        "--score", action="append", default=[], metavar="DATASET", help="score on its test part (repeatable)"
    )
    export.add_argument(
        "--detect",
        action="append",
        default=[],
        metavar="DATASET",
        help="score on its test part with faces found by the detector (repeatable)",
    )
    export.add_argument(
        "--detector",
        action="append",
        choices=detect.NAMES,
        default=None,
        help=f"the detector(s) --detect finds faces with (repeatable; default {detect.DEFAULT})",
    )
    calibrate = commands.add_parser(
        "calibrate",
        help="fit the model's probabilities to how often it is right, on datasets' val faces; write it with that",
    )
    calibrate.add_argument("model", type=Path, help="a .keras model saved by train")
    calibrate.add_argument("datasets", nargs="+", help="datasets whose val faces to fit on")
    calibrate.add_argument("--out", required=True, type=Path, help="the .keras file to write")
    calibrate.add_argument(
        "--weights",
        default="faces",
        help="each dataset's share of the fit: 'faces' (each face counts once, the default), 'equal', "
        "or one number per dataset, comma-separated (e.g. 0.725,0.275)",
    )
    calibrate.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make the model read each face with its mirror image too (--no-flip: not), and fit on "
        "those averaged answers; default: as the model file already says",
    )

    packer = commands.add_parser(
        "pack",
        help="prepare datasets' faces into one small file to train on elsewhere (a GPU machine)",
    )
    packer.add_argument("datasets", nargs="+", help="one or more datasets, as `train` takes them")
    packer.add_argument("--out", required=True, type=Path, help="the .npz file to write")
    packer.add_argument("--splits", default="train,val", help="which splits to keep (default train,val)")
    packer.add_argument(
        "--image-size",
        type=int,
        default=TrainConfig.image_size,
        help=f"face side in pixels ({MIN_SIZE}-{MAX_SIZE})",
    )
    packer.add_argument("--margin", type=float, default=TrainConfig.margin)
    packer.add_argument("--min-confidence", type=float, default=None, help="drop faces under this confidence")
    packer.add_argument("--quality", type=int, default=95, help="JPEG quality of the stored faces")
    packer.add_argument(
        "--reencode",
        action="store_true",
        help="encode every face at --quality, also photos kept as they are by default (smaller, lossy)",
    )
    packer.add_argument(
        "--seed", type=int, default=TrainConfig.seed, help="the split seed `train --seed` will use"
    )
    packer.add_argument(
        "--part",
        default="1/1",
        help="K/N: keep every N-th face from the K-th on, so N packs share the faces (default 1/1: all)",
    )
    packer.add_argument("--val-share", type=float, default=TrainConfig.val_share)
    packer.add_argument("--test-share", type=float, default=TrainConfig.test_share)
    return parser


# TrainConfig <-> `python -m fer train`, in one place: the train command's options are made from this
# table, parsed options become a TrainConfig through it (`train_config`), and a TrainConfig becomes the
# arguments that rebuild it (`train_args`, which fer.launch starts runs with).


@dataclass(frozen=True)
class Option:
    field: str  # the TrainConfig field
    flag: str  # its option on the command line
    kind: str  # "int", "float" or "str" (takes a value), "on" (present: True) or "off" (present: False)
    help: str | None = None
    choices: tuple[str, ...] | None = None


TRAIN_OPTIONS = (
    Option("arch", "--arch", "str", f"default {TrainConfig.arch}", ARCHITECTURES),
    Option("width", "--width", "int", "filters in the first block (vgg)"),
    Option("epochs", "--epochs", "int"),
    Option("batch_size", "--batch-size", "int"),
    Option("learning_rate", "--learning-rate", "float"),
    Option("dropout", "--dropout", "float"),
    Option("image_size", "--image-size", "int", f"face side in pixels ({MIN_SIZE}-{MAX_SIZE})"),
    Option("margin", "--margin", "float"),
    Option("min_confidence", "--min-confidence", "float", "drop faces under this confidence"),
    Option("seed", "--seed", "int"),
    Option("val_share", "--val-share", "float"),
    Option("test_share", "--test-share", "float"),
    Option("augment", "--no-augment", "off", "train without augmentation"),
    Option("class_weight", "--class-weight", "on", "weight the loss by inverse label frequency"),
    Option("label_smoothing", "--label-smoothing", "float"),
    Option("erase", "--erase", "float", "share of faces with a random patch erased (0-1; with augmentation)"),
    Option("weight_decay", "--weight-decay", "float", "AdamW weight decay (0: plain Adam)"),
    Option("patience", "--patience", "int", "early-stopping patience (epochs)"),
    Option("lr_patience", "--lr-patience", "int", "epochs before halving LR"),
    Option("max_faces", "--max-faces", "int", "train on at most this many faces"),
    Option(
        "teachers",
        "--teachers",
        "str",
        "model files, comma-separated, whose averaged answers (calibrated) the model also learns",
    ),
    Option("distill", "--distill", "float", "with --teachers: their share of each face's target (0-1]"),
    Option(
        "init_from",
        "--init-from",
        "str",
        "start from this saved model's weights (same --arch and labels; --width may be larger)",
    ),
    Option("strategy", "--strategy", "str", "tf.distribute (TensorFlow only)", STRATEGIES),
    Option(
        "precision",
        "--precision",
        "str",
        "what the layers compute in; auto: bfloat16 on a CPU with bfloat16 instructions, else float32",
        PRECISIONS,
    ),
)
_TYPES = {"int": int, "float": float, "str": str}


def _train_parser(commands) -> None:
    defaults = TrainConfig()
    train = commands.add_parser("train", help="train a model; writes a run folder")
    train.add_argument("datasets", nargs="*", help="one or more datasets (pooled; labels matched by name)")
    train.add_argument("--run-dir", type=Path, required=True, help="the run folder to write (or to resume)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last epoch"
    )
    for option in TRAIN_OPTIONS:
        default = getattr(defaults, option.field)
        if option.kind in ("on", "off"):
            action = "store_true" if option.kind == "on" else "store_false"
            train.add_argument(option.flag, dest=option.field, action=action, help=option.help)
        else:
            train.add_argument(
                option.flag,
                dest=option.field,
                type=_TYPES[option.kind],
                default=default,
                choices=option.choices,
                help=option.help,
            )
    train.add_argument("--json", action="store_true", help="print the final metrics as JSON")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig that parsed `train` arguments ask for."""
    return TrainConfig(
        datasets=tuple(args.datasets),
        **{option.field: getattr(args, option.field) for option in TRAIN_OPTIONS},
    )


def train_args(config: TrainConfig, run_dir: Path) -> list[str]:
    """The `python -m fer train` arguments (after `train`) that rebuild `config`. Every field is spelled
    out, so the recorded command means the same run even if a default changes later; a field the command
    line cannot take is an error unless it is at its default, rather than silently dropped."""
    from fer.faces import dataset_root

    options = {option.field: option for option in TRAIN_OPTIONS}
    defaults = TrainConfig()
    # Absolute paths: the process runs in the project folder, and no dataset then starts with "-".
    args = [dataset_root(name) for name in config.datasets] + ["--run-dir", str(Path(run_dir).resolve())]
    for field in fields(TrainConfig):
        name, value = field.name, getattr(config, field.name)
        if name == "datasets" or value is None:
            continue
        option = options.get(name)
        if option is None:
            if value != getattr(defaults, name):
                raise ValueError(f"config.{name} cannot be passed to `python -m fer train`, got {value!r}")
            continue
        if option.kind in ("on", "off"):
            if value != (option.kind == "off"):  # a switch is given when the value is not its default
                args.append(option.flag)
        else:
            args += [option.flag, str(value)]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = "python -m fer " + " ".join(shlex.quote(a) for a in argv)
    if args.verbose:
        os.environ[logs.VERBOSE] = "1"  # and to the processes this one starts
    logs.quiet_environment()
    try:
        if args.command in KERAS_COMMANDS and _needs_keras(args):
            logs.load_keras()  # now, so that TensorFlow's start-up lines are left out
        handler = {
            "summary": _summary,
            "prepare": _prepare,
            "train": _train,
            "evaluate": _evaluate,
            "predict": _predict,
            "report": _report,
            "export": _export,
            "calibrate": _calibrate,
            "pack": _pack,
        }
        return handler[args.command](args)
    except (datasets.DatasetError, ValueError, OSError) as error:  # OSError: e.g. --out is not writable
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _needs_keras(args: argparse.Namespace) -> bool:
    """False for `predict` without the TensorFlow detector (mtcnn): its model runs on ONNX Runtime
    or LiteRT (a .keras model as its ONNX twin, which is written, loading Keras, only the first time)."""
    if args.command != "predict":
        return True
    return not args.whole and args.detector == "mtcnn"


def _load(args: argparse.Namespace) -> datasets.Dataset:
    return datasets.load(args.dataset, datasets.parse_columns(args.columns))


def _summary(args: argparse.Namespace) -> int:
    from fer import splits
    from fer.summary import format_summary, summarize

    result = summarize(_load(args), args.min_confidence, splits.SplitSettings(seed=args.seed))
    print(json.dumps(result) if args.json else format_summary(result))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from fer import export, preprocess, splits

    dataset = _load(args)
    size = export.default_size(dataset) if args.size is None else args.size
    settings = preprocess.PrepSettings(size=size, margin=args.margin)
    prepared = preprocess.prepare(
        dataset,
        settings,
        min_confidence=args.min_confidence,
        cache_dir=args.cache_dir,
        workers=args.workers,
        progress=ProgressBar("processing faces"),
    )
    written = export.export(prepared, args.out, progress=ProgressBar("writing images"))
    split = splits.assign(prepared.faces, splits.SplitSettings(seed=args.seed))
    duplicates = splits.cross_split_duplicates(prepared.faces, split, prepared.faces["hash"])
    skipped = prepared.skipped
    result = {
        "out": str(args.out),
        "size": settings.size,
        "written": len(written),
        "per_label": {k: int(v) for k, v in prepared.faces["label"].value_counts().sort_index().items()},
        "from_cache": prepared.from_cache,
        "cache": str(prepared.cache_dir),
        "skipped": int(len(skipped)),
        "skipped_faces": [
            {"photo": r.photo, "face": int(r.face), "reason": r.reason} for r in skipped.itertuples()
        ],
        "duplicates_across_splits": duplicates.to_dict("records"),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"wrote {len(written):,} faces ({settings.size}x{settings.size} grayscale PNG) under {args.out}")
    print("cache: " + ("reused " if prepared.from_cache else "built ") + str(prepared.cache_dir))
    if len(skipped):
        print(f"skipped {len(skipped):,} faces:")
        for r in skipped.head(20).itertuples():
            print(f"  {r.photo} face {r.face}: {r.reason}")
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20:,} more (--json lists all)")
    if len(duplicates):
        groups = duplicates["group"].nunique()
        print(
            f"{groups:,} images appear in more than one split ({len(duplicates):,} faces); --json lists them"
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    from fer import train

    if args.resume:
        metrics = train.train(TrainConfig(), args.run_dir, resume=True)  # keeps the run's own command
    else:
        if not args.datasets:
            raise ValueError("train needs at least one DATASET (or --resume with an existing --run-dir)")
        metrics = train.train(train_config(args), args.run_dir, command=args.command_line)
    if not metrics:
        print(f"run {args.run_dir} was cancelled; resume it with --resume", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(metrics))
    else:
        print(_format_metrics(metrics))
        print(f"run folder: {args.run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from fer.evaluate import evaluate

    model = args.model or _bundled_model()
    result, predictions = evaluate(
        args.dataset,
        model,
        split=args.split,
        min_confidence=args.min_confidence,
        detector=args.detect,
        flip=args.flip,
    )
    if args.predictions:
        from fer.runs import write_csv

        write_csv(args.predictions, predictions)
    print(json.dumps(result) if args.json else _format_metrics(result))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from fer.images import PhotoError
    from fer.predict import Predictor

    predictor = Predictor(args.model or _bundled_model(), detector=args.detector)
    photos, failed = [], 0
    for path in args.images:
        try:
            result = predictor.predict(path, whole=args.whole, flip=args.flip, steady=args.steady)
            photos.append({"photo": str(path), **asdict(result), "error": None})
        except (PhotoError, OSError) as error:
            failed += 1
            photos.append(
                {
                    "photo": str(path),
                    "width": None,
                    "height": None,
                    "faces": [],
                    "face_score": None,
                    "not_a_face": False,
                    "error": str(error),
                }  # fmt: skip
            )
    if args.json:
        print(json.dumps({"model": str(args.model or _bundled_model()), "photos": photos}))
    else:
        for photo in photos:
            if photo["error"]:
                print(f"{photo['photo']}: error: {photo['error']}")
            elif photo["not_a_face"]:
                print(
                    f"{photo['photo']}: warning: does not look like a face (face score {photo['face_score']:.0%}), "
                    "so no expression is given; crop it to one face, or leave out --whole to look for faces in it"
                )
            elif not photo["faces"]:
                print(f"{photo['photo']}: no face found (try a larger, frontal, well-lit face, or --whole)")
            for face in photo["faces"]:
                top, left, bottom, right = face["box"]
                best = face["probabilities"][face["label"]]
                print(f"{photo['photo']}: {face['label']} ({best:.0%} likely) at top={top:g} left={left:g} "
                      f"bottom={bottom:g} right={right:g}")  # fmt: skip
    return 1 if failed else 0


def _report(args: argparse.Namespace) -> int:
    from fer.report import build_report
    from fer.runs import write_text

    page = build_report(
        args.run_dir, faces_per_cell=args.faces_per_cell, progress=ProgressBar("reading the test faces")
    )
    write_text(args.out, page)
    print(f"wrote {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    import tempfile

    from fer import portable
    from fer.evaluate import export_model

    fmt = args.format or portable.format_of(args.out) or "keras"
    if portable.format_of(args.out) != fmt and (fmt in portable.PORTABLE or portable.is_portable(args.out)):
        raise ValueError(f"--out must name a {portable.FORMATS[fmt]} file for --format {fmt}, got {args.out}")
    if fmt == "keras" and args.quantize:
        raise ValueError("--quantize applies to --format tflite or onnx; a .keras file keeps float32 weights")
    with tempfile.TemporaryDirectory() as folder:
        keras_out = args.out if fmt == "keras" else Path(folder) / "model.keras"
        metadata = export_model(
            args.source,
            keras_out,
            score_on=tuple(args.score),
            detect_on=tuple(args.detect),
            detectors=tuple(args.detector or [detect.DEFAULT]),
            progress=lambda what: print(what, file=sys.stderr),
        )
        if fmt != "keras":
            print(f"writing {fmt}" + (f" ({args.quantize})" if args.quantize else ""), file=sys.stderr)
            check = portable.export(keras_out, args.out, fmt, args.quantize)
    print(f"wrote {args.out}")
    if fmt != "keras":
        print(
            f"  checked against the Keras model on {check['faces']} faces: same label on {check['same_label']}, "
            f"probabilities within {check['max_difference']:.2g}"
        )
    scored = metadata.get("test_metrics") if args.score or args.detect else None  # else the run's own
    for name, score in (scored or {}).items():
        print(
            f"  {name}: {score['n']:,} faces, accuracy {score['accuracy']:.4f}, weighted F1 {score['f1']:.4f}, "
            f"macro F1 {score['macro_f1']:.4f}"
        )
    return 0


def _calibration_weights(text: str) -> str | list[float]:
    """--weights as fer.calibration.shares takes it: 'faces', 'equal' or a list of numbers."""
    text = text.strip()
    if text in ("faces", "equal"):
        return text
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--weights must be 'faces', 'equal' or one number per dataset separated by commas, got {text!r}"
        ) from None


def _calibrate(args: argparse.Namespace) -> int:
    from fer.evaluate import calibrate_model

    metadata = calibrate_model(
        args.model,
        tuple(args.datasets),
        args.out,
        weights=_calibration_weights(args.weights),
        flip=args.flip,
        progress=lambda what: print(what, file=sys.stderr),
    )
    entry = metadata["calibration"]
    print(f"wrote {args.out}")
    print(
        f"  temperature {entry['temperature']:.4f}, fitted on the {entry['fitted_on']}: calibration error "
        f"{entry['ece_before']:.3f} before, {entry['ece_after']:.3f} after"
    )
    for part in entry["datasets"]:
        print(
            f"  {part['name']}: {part['faces']:,} val faces, share {part['share']:.3f}, calibration error "
            f"{part['ece_before']:.3f} before, {part['ece_after']:.3f} after"
        )
    return 0


def _pack(args: argparse.Namespace) -> int:
    from fer import faces, pack

    if not pack.is_pack(args.out):
        raise ValueError(f"--out must name a {pack.SUFFIX} file, got {args.out}")
    kept = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    part = _part(args.part)
    pack.check(args.datasets, splits=kept, quality=args.quality, part=part)
    config = TrainConfig(
        datasets=tuple(args.datasets),
        image_size=args.image_size,
        margin=args.margin,
        min_confidence=args.min_confidence,
        val_share=args.val_share,
        test_share=args.test_share,
        seed=args.seed,
    )
    loaded: dict[str, datasets.Dataset] = {}
    labels, prepared = faces.load_splits(config, loaded=loaded)
    summary = pack.write(
        args.out,
        config,
        labels,
        prepared,
        loaded=loaded,
        roots=[faces.dataset_root(name) for name in config.datasets],
        splits=kept,
        quality=args.quality,
        part=part,
        reencode=args.reencode,
    )
    counts = ", ".join(f"{n:,} {split}" for split, n in summary["counts"].items())
    print(f"wrote {args.out}: {summary['faces']:,} faces ({counts}), {summary['bytes'] / 2**20:.1f} MiB")
    print(
        f"train on it with: python -m fer train {args.out} --seed {args.seed} --image-size {args.image_size} ..."
    )
    return 0


def _part(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--part must be K/N, for example 1/2, got {text!r}") from None
    return k, n


def _bundled_model() -> Path:
    from fer.paths import BUNDLED_MODEL as path

    if not path.is_file():
        raise ValueError(f"no --model given and the bundled model {path} is missing")
    return path


def _format_metrics(m: dict) -> str:
    lines = [
        f"{m['n']:,} faces: accuracy {m['accuracy']:.4f}, precision {m['precision']:.4f}, "
        f"recall {m['recall']:.4f}, F1 {m['f1']:.4f} (weighted), macro F1 {m['macro_f1']:.4f}",
        "",
        f"{'label':<12}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}",
    ]
    for label, row in m["per_class"].items():
        lines.append(
            f"{label:<12}{row['precision']:>10.3f}{row['recall']:>8.3f}{row['f1']:>8.3f}{row['support']:>9,}"
        )
    width = max(len(label) for label in m["labels"])
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * (width + 1) + " ".join(f"{label[:7]:>7}" for label in m["labels"]))
    for label, row in zip(m["labels"], m["confusion_matrix"]):
        lines.append(f"{label:<{width}} " + " ".join(f"{v:>7,}" for v in row))
    return "\n".join(lines)
