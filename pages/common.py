"""What every page shares: session keys, the loaders they cache, and the models they can use.

Not a page itself (the router lists pages by file). Session state holds only names (a dataset
path, a model path, a run folder); heavy things are cached by Streamlit, keyed by those names:
`st.cache_data` for manifests and summaries (copied per session), `st.cache_resource` for loaded
models (one per server, shared by every session, used under a lock).
"""

from __future__ import annotations

import atexit
import functools
import html
import logging
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from fer import datasets, launch, modelfile, paths, portable, results, runs, summary

# Session keys, initialised once in streamlit_app.py.
DATASET = "dataset"  # "demo" or a resolved path under a data root
MIN_CONFIDENCE = "min_confidence"  # the Data page's threshold (0 keeps every face)
MODEL = "model"  # path of the .keras model the Classify page uses
RUN = "run"  # the run folder the Results page shows ("" for the newest)

PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]  # what photo_uploads takes

DEFAULTS = {DATASET: "demo", MIN_CONFIDENCE: 0.0, MODEL: str(paths.BUNDLED_MODEL), RUN: ""}

# The server's own log (stderr) says when it loads a model: once per model file per server, however
# many visitors, which is how an operator (and tests/test_sharing.py) can tell the cache works.
log = logging.getLogger("fer")
if not log.handlers and not logging.getLogger().handlers:  # unless the host configured logging
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(_handler)
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)


# Showing data as text -----------------------------------------------------------------------------
# Labels, dataset folders, photo and file names, run names and error messages come from files anyone
# can make. Streamlit renders every body, caption, alert, widget label and image caption as Markdown
# (links, images that the browser fetches, :icons:, LaTeX), and Plotly renders a subset of HTML in
# every text of a chart (<a href>, <b>, <br>), so such a string goes through md() or plot_text() first.

_JOINER = "\u2060"  # a word joiner: invisible, it only keeps the characters around it from forming a pattern
# Characters that start markup wherever they stand: links and images ([ ]), HTML and autolinks (< >),
# entities (&), emphasis (* ~, and _ at a word's edge), code (`), maths ($), tables (|), headings (#),
# directives' attributes ({ }).
_MARKUP = re.compile(r"[\\`*\[\]<>#|~$&{}]|(?<![^\W_])_|_(?![^\W_])")
# What Streamlit's renderer still finds in plain text: :emoji:, :material/icon:, :streamlit: and
# :color[...] directives, http:// www. and e-mail autolinks, -> and >= turned into arrows.
_PATTERNS = re.compile(r":(?=[\w+\-/:])|(?i:\bw)(?=ww\.)|(?=@)|[-<>=~](?=[-<>=~])")


def md(value: object, code: bool = False) -> str:
    """`value` as Markdown that shows it exactly as it is, on one line: the characters that start markup
    backslash-escaped, a list marker at its start too, and the shortcodes and autolinks Streamlit's
    renderer finds in plain text broken by an invisible joiner. With `code`, a code span holding it
    instead (backslashes do nothing inside one, so its fence outnumbers its backticks)."""
    text = " ".join(str(value).split())
    if code:
        text = text.replace(":material/", ":" + _JOINER + "material/")  # an icon even in a code span
        fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
        padded = text.startswith("`") or text.endswith("`")
        return f"{fence} {text} {fence}" if padded else fence + text + fence
    text = _PATTERNS.sub(lambda match: match.group() + _JOINER if match.group() else _JOINER, text)
    text = _MARKUP.sub(lambda match: "\\" + match.group(), text)
    list_marker = r"^([-+])(?=\s|$)|^(\d+)([.)])(?=\s|$)"
    return re.sub(list_marker, lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", text)


def plot_text(value: object) -> str:
    """`value` as text for a Plotly chart (axis ticks, titles, legend, hover), shown as it is."""
    return html.escape(str(value), quote=False)


_TRACEBACK = re.compile(
    r'Traceback \(most recent call last\)|\bFile "[^"]*", line \d+|^During handling of|^The above exception'
)


def error_line(error: object) -> str:
    """A recorded error as the one line a visitor sees: whatever traceback it quotes is left out (the
    run folder and the server's log keep it)."""
    lines = [_TRACEBACK.split(line)[0] for line in str(error).splitlines() if not line[:1].isspace()]
    text = " ".join(" ".join(lines).split()).rstrip(":")
    return text if len(text) <= 500 else text[:499] + "…"


@st.cache_resource(show_spinner=False, max_entries=256)
def _log_failure(run_dir: str, stamp: float) -> None:
    status = runs.read_status(Path(run_dir))
    detail = status.get("traceback") or f"no traceback recorded; see {Path(run_dir) / runs.LOG}"
    log.error("run %s failed: %s\n%s", run_dir, status.get("error"), detail)


def log_failure(run_dir: Path | str) -> None:
    """Write a failed run's error and traceback to the server's log, once per server (and again only if
    the run fails anew), however many visitors look at it."""
    try:
        stamp = (Path(run_dir) / runs.STATUS).stat().st_mtime
    except OSError:
        stamp = 0.0
    _log_failure(str(run_dir), stamp)


def init_session(entry: bool = False) -> None:
    """Session defaults. The entry file calls it with entry=True; every page calls it too, so that a
    page run alone in Streamlit's old pages/-folder mode hands over to the entry file (see
    leave_pages_folder_mode)."""
    if not entry and leave_pages_folder_mode():
        st.rerun()  # the entry file now runs first and routes to this same page
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)


def leave_pages_folder_mode() -> bool:
    """Switch Streamlit out of its old pages/-folder mode; True when it was in it.

    Streamlit treats an app with a pages/ folder beside its entry file as an old-style multipage app
    (each file a page, run alone) until the entry file first calls st.navigation in this server
    process. A fresh server's first visitor who opens a page's own URL (a shared link) would get that
    page run alone, with the wrong menu. Streamlit (1.67) has no public API or config option for this:
    the mode is the class attribute PagesManager.uses_pages_directory, set from the folder's existence,
    so this sets it as st.navigation would. tests/test_streamlit_internals.py fails, naming this
    function, when an upgrade removes or renames it; without it, only a shared link's first visit is
    wrong (the entry file itself runs before st.navigation, when the flag is still up, and does not
    call this)."""
    from streamlit.runtime.pages_manager import PagesManager

    if not getattr(PagesManager, "uses_pages_directory", None):
        return False
    PagesManager.uses_pages_directory = False
    return True


def dataset_stamp(path: str) -> float:
    """Modification time of a dataset's index (or folder): what a cache of something computed from the
    dataset at `path` is keyed on besides the path, so edits on disk invalidate it."""
    if path == "demo":
        return 0.0
    target = Path(path)
    for name in ("label.lst", "fer2013.csv"):
        if (target / name).is_file():
            return (target / name).stat().st_mtime
    try:
        return target.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner="Reading the dataset...", max_entries=8)
def _load(path: str, stamp: float) -> datasets.Dataset:
    return datasets.load(path)


def load_dataset(path: str) -> datasets.Dataset:
    return _load(path, dataset_stamp(path))


@st.cache_data(show_spinner=False, max_entries=64)
def _summary(path: str, stamp: float, min_confidence: float | None) -> dict:
    return summary.summarize(_load(path, stamp), min_confidence)


def dataset_summary(path: str, min_confidence: float | None = None) -> dict:
    return _summary(path, dataset_stamp(path), min_confidence)


def dataset_label(path: str) -> str:
    return "Built-in demo dataset" if path == "demo" else Path(path).name


class SharedPredictor:
    """One loaded model for the whole server; predictions are serialised by a lock."""

    def __init__(self, model_path: str) -> None:
        from fer.predict import Predictor

        self.predictor = Predictor(model_path)
        self.lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return self.predictor.labels

    @property
    def metadata(self) -> dict:
        return self.predictor.metadata

    def predict(self, source, **options):
        with self.lock:
            return self.predictor.predict(source, **options)

    def classify(self, faces, **options):
        """Probabilities for already-cropped (n, size, size) uint8 faces (fer.predict.Predictor.classify)."""
        with self.lock:
            return self.predictor.classify(faces, **options)

    def maps(self, faces, labels=None):
        """Where the model looked, per face (fer.predict.Predictor.maps), under the same lock."""
        with self.lock:
            return self.predictor.maps(faces, labels)


class ModelLoading:
    """One model file being loaded in a background thread: pages ask for it without waiting (is it
    ready?) or wait for it (the predictor). TensorFlow's import alone takes seconds, which a page that
    only shows the model's facts should not wait for."""

    def __init__(self, model_path: str) -> None:
        self._done = threading.Event()
        self._shared: SharedPredictor | None = None
        self._error: Exception | None = None
        threading.Thread(target=self._load, args=(model_path,), name="model-warm-up", daemon=True).start()
        # A process ending while TensorFlow is half-imported can hang in its teardown: it waits for the load.
        atexit.register(self._done.wait)

    def _load(self, model_path: str) -> None:
        try:
            self._shared = SharedPredictor(model_path)
            log.info("loaded model %s", model_path)
        except Exception as error:  # noqa: BLE001 - raised again in the page that waits for the model
            self._error = error
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def result(self) -> SharedPredictor:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._shared


@st.cache_resource(show_spinner=False, max_entries=4)
def _loading(model_path: str, stamp: float) -> ModelLoading:
    return ModelLoading(model_path)


def warm_up(model_path: str) -> None:
    """Start loading `model_path` in the background, once per server (and again when the file
    changes); returns at once. A file that is missing is left for the page that uses it to report."""
    try:
        stamp = Path(model_path).stat().st_mtime
    except OSError:
        return
    _loading(model_path, stamp)


def predictor(model_path: str) -> SharedPredictor:
    """The shared predictor for `model_path`, waiting for its load (started here if no page started
    it). A load that failed is forgotten once reported, so the next visit tries again."""
    stamp = Path(model_path).stat().st_mtime
    loading = _loading(model_path, stamp)
    try:
        if loading.ready:
            return loading.result()
        with st.spinner("Loading the model..."):
            return loading.result()
    except Exception:
        _loading.clear(model_path, stamp)
        raise


@st.cache_data(show_spinner=False, max_entries=16)
def _metadata(model_path: str, stamp: float) -> dict:
    return modelfile.read_metadata(Path(model_path))


def model_metadata(model_path: str) -> dict:
    """A model file's metadata (labels, scores, settings), read from the file without loading the model."""
    return _metadata(model_path, Path(model_path).stat().st_mtime)


def model_choices() -> dict[str, str]:
    """Label shown -> model path: the bundled model, then every finished run with a best model."""
    choices = {}
    if paths.BUNDLED_MODEL.is_file():
        choices["Bundled model (trained on FER2013 + ExpW)"] = str(paths.BUNDLED_MODEL)
    for run in runs.list_runs(paths.runs_dir()):
        if (run / runs.BEST).is_file() and runs.read_status(run).get("state") == "done":
            choices[f"{runs.run_title(run)} (run {run.name})"] = str(run / runs.BEST)
    return choices


def model_label(model_path: str) -> str:
    for label, path in model_choices().items():
        if path == model_path:
            return label
    return Path(model_path).name


# Links to a view ----------------------------------------------------------------------------------
# A reload, a new tab or a shared link starts a new session that knows nothing but the address, so
# each page writes what it shows into the address's query parameters (only what differs from the
# defaults: the demo dataset and the bundled model leave the address bare) and reads them back when
# they are new to the session. Every value is checked as strictly as the input it stands for: a
# dataset must pass the Data page's checks (inside the served folders, readable, its photos inside
# them too), a run or model must be one the server lists itself, named by its folder, never a path.
# A value that fails is dropped with a warning naming it, and the page keeps its default. Pages read
# and write the address only through these functions.

Q_DATASET, Q_THRESHOLD, Q_RUN, Q_MODEL, Q_COMPARE = "dataset", "threshold", "run", "model", "compare"
Q_START = "start_from"  # the Train form's starting model, named like Q_MODEL
BUNDLED = "bundled"  # the bundled model, in a link
URL_SEEN = "url_seen"  # state key: {parameter: values} as this browser tab last read or wrote them
TRAIN_SETTINGS = "train_settings"  # session key: the Train form's values, kept while other pages show
TRAIN_FILL = "train_fill"  # session key: set when the Train form is to take TRAIN_SETTINGS anew

# The Train form's choices, shared by its widgets and the checks of its query parameters.
IMAGE_SIZES = [48, 64, 96, 128, 160, 224]
BATCH_SIZES = [8, 16, 32, 64, 128, 256]
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]


def one_of(options: list) -> Callable[[str], object]:
    """A parser taking one of `options` written as text (numbers compared as numbers)."""

    def parse(text: str) -> object:
        for option in options:
            if text == str(option) or (
                isinstance(option, (int, float)) and _number(text) == option and not isinstance(option, bool)
            ):
                return option
        raise ValueError(
            f"it must be one of {', '.join(f'{o:g}' if isinstance(o, float) else str(o) for o in options)}"
        )

    return parse


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """A parser taking a whole number from `low` to `high` (no upper bound when None)."""

    def parse(text: str) -> int:
        value = _number(text)
        if value is None or value != int(value) or value < low or (high is not None and value > high):
            raise ValueError(f"it must be a whole number from {low:,}" + (f" to {high:,}" if high else " up"))
        return int(value)

    return parse


def share(low: float, high: float, step: float) -> Callable[[str], float]:
    """A parser taking a number from `low` to `high` on a grid of `step` (as the slider offers)."""

    def parse(text: str) -> float:
        value = _number(text)
        if value is None or not low - 1e-9 <= value <= high + 1e-9:
            raise ValueError(f"it must be a number from {low:g} to {high:g}")
        snapped = round(round(value / step) * step, 6)
        if abs(snapped - value) > 1e-6:
            raise ValueError(f"it must be a multiple of {step:g}")
        return snapped

    return parse


def flag(text: str) -> bool:
    """A parser taking true / false (also 1 / 0, on / off, yes / no)."""
    word = str(text).strip().lower()
    if word in ("true", "1", "on", "yes"):
        return True
    if word in ("false", "0", "off", "no"):
        return False
    raise ValueError("it must be true or false")


def threshold(text: str) -> float:
    """A parser taking a detector-confidence threshold: a number, 0 or more."""
    value = _number(text)
    if value is None or value < 0:
        raise ValueError("it must be a number, 0 or more")
    return value


def checked_dataset(text: str) -> str:
    """The dataset `text` names, as the Data page would take it: "demo", or a path that lies under the
    served folders, reads as a dataset, and whose photos lie there too; ValueError saying why not."""
    if text == "demo":
        return text
    from fer import uploads

    candidate = str(paths.check_dataset_path(text))  # PathError (a ValueError) outside the served folders
    try:
        dataset = load_dataset(candidate)
    except (datasets.DatasetError, OSError) as error:
        raise ValueError(f"it cannot be read as a dataset ({error})") from error
    if uploads.photos_outside(dataset, paths.data_roots()):
        raise ValueError("some of its files lie outside the folders this server serves datasets from")
    return candidate


def _run_folder(name: str, finished: bool = False) -> Path:
    """The run folder called `name` in the runs folder (finished: with test metrics); ValueError if the
    server lists no such run. Only names listed are taken, so no path reaches the file system."""
    for run in runs.list_runs(paths.runs_dir()):
        if run.name == name:
            if finished and not (run / runs.METRICS).is_file():
                raise ValueError("that run has no test results yet")
            return run
    raise ValueError("this server has no run of that name (it may have been deleted)")


def checked_run(text: str) -> str:
    """A parser taking a run folder's name; the run folder's path."""
    return str(_run_folder(text))


def checked_runs(values: list[str]) -> list[str]:
    """A parser taking finished runs' folder names; their paths, without repeats."""
    found = []
    for name in values:
        try:
            path = str(_run_folder(name, finished=True))
        except ValueError as error:
            raise ValueError(f"{name}: {error}" if len(values) > 1 else str(error)) from error
        if path not in found:
            found.append(path)
    return found


def checked_model(text: str) -> str:
    """A parser taking "bundled" or a finished run's folder name; the path of the model file."""
    wanted = str(paths.BUNDLED_MODEL) if text == BUNDLED else str(paths.runs_dir() / text / runs.BEST)
    if wanted not in model_choices().values():
        raise ValueError(f'it must be "{BUNDLED}" or the folder name of a finished run with a model')
    return wanted


def model_param(model_path: str) -> str | None:
    """The model in a link: "bundled", a run's folder name, or None (no link can name an upload)."""
    if model_path == str(paths.BUNDLED_MODEL):
        return BUNDLED
    path = Path(model_path)
    if path.name == runs.BEST and path.parent.parent == paths.runs_dir():
        return path.parent.name
    return None


def read_url(parsers: dict[str, Callable], many: tuple[str, ...] = ()) -> dict[str, object]:
    """The query parameters named in `parsers` that are new to this browser tab (a reload, a new tab, a
    shared link), each parsed by its parser (those in `many` get every value, the others the last).
    A value its parser refuses is left out, with a warning naming it."""
    seen = st.session_state.setdefault(URL_SEEN, {})
    found = {}
    for key, parse in parsers.items():
        values = st.query_params.get_all(key)
        if not values or values == seen.get(key):
            continue
        seen[key] = values  # warned once, not at every rerun
        try:
            found[key] = parse(values if key in many else values[-1])
        except (ValueError, OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
            shown = ", ".join(values if key in many else values[-1:])
            st.warning(
                f"The link's {md(key)} ({md(shown[:200])}) cannot be used: {md(error)}. "
                "Showing the default instead.",
                icon=":material/link_off:",
            )
    return found


def write_url(values: dict[str, object]) -> None:
    """Make the address hold exactly `values` (None, "" and [] left out; numbers and flags as text),
    so that copying it copies the view."""
    query = {}
    for key, value in values.items():
        if value is None or value == "" or value == []:
            continue
        items = value if isinstance(value, list) else [value]
        query[key] = [_text(item) for item in items]
    current = {key: st.query_params.get_all(key) for key in st.query_params}
    if query != current:
        st.query_params.from_dict({key: v if len(v) > 1 else v[0] for key, v in query.items()})
    st.session_state[URL_SEEN] = query


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def read_dataset_url() -> dict[str, object]:
    """Apply a link's dataset and threshold to the session (a dataset first: a new one resets the
    threshold). Returns what was applied."""
    found = read_url({Q_DATASET: checked_dataset, Q_THRESHOLD: threshold})
    if Q_DATASET in found and found[Q_DATASET] != st.session_state[DATASET]:
        st.session_state[DATASET] = found[Q_DATASET]
        st.session_state[MIN_CONFIDENCE] = 0.0
    if Q_THRESHOLD in found:
        st.session_state[MIN_CONFIDENCE] = found[Q_THRESHOLD]
    return found


def dataset_url() -> dict[str, object]:
    """The browser tab's dataset and threshold as query parameters (none for the defaults)."""
    dataset = st.session_state[DATASET]
    return {
        Q_DATASET: None if dataset == DEFAULTS[DATASET] else dataset,
        Q_THRESHOLD: float(st.session_state[MIN_CONFIDENCE] or 0.0) or None,
    }


# The Train form: its fields, their defaults and checks; remembered across pages and links ----------


def train_form() -> dict[str, tuple[Callable[[str], object], object]]:
    """The Train form's fields: widget key (also its query parameter) -> (parser, default)."""
    from fer.config import ARCHITECTURES, TrainConfig

    default = TrainConfig()
    return {
        "arch": (one_of(list(ARCHITECTURES)), default.arch),
        "image_size": (one_of(IMAGE_SIZES), default.image_size),
        "epochs": (whole(1, 500), default.epochs),
        "batch_size": (one_of(BATCH_SIZES), default.batch_size),
        "learning_rate": (one_of(LEARNING_RATES), default.learning_rate),
        "dropout": (share(0.0, 0.9, 0.05), default.dropout),
        "val_share": (share(0.05, 0.5, 0.05), default.val_share),
        "augment": (flag, default.augment),
        "class_weight": (flag, default.class_weight),
        "seed": (whole(0, 2**31 - 1), default.seed),
        "max_faces": (whole(0), 0),
    }


def train_form_values(train: dict) -> tuple[dict[str, object], list[str]]:
    """A run's training settings (its config's "train") as Train form values, and a sentence for each
    setting the form cannot offer (such as an image size only the command line takes): the form keeps
    its default there."""
    values, refused = {}, []
    for key, (parse, default) in train_form().items():
        value = train.get(key)
        if key == "max_faces" and not value:
            value = 0
        if value is None:
            continue
        try:
            values[key] = parse(_text(value))
        except ValueError as error:
            refused.append(f"{key} {_text(value)} ({error}; the form keeps {_text(default)})")
    init_from = train.get("init_from")
    values[Q_START] = init_from or ""
    if init_from and init_from not in model_choices().values():
        values[Q_START] = ""
        refused.append(
            f"start_from {Path(init_from).name} (not a model this server lists; a new model instead)"
        )
    return values, refused


def fill_train_form(run_dir: str) -> None:
    """The "Train again with these settings" callback: the Train form, and the dataset and threshold,
    take the settings of the run in `run_dir`."""
    train = dict((runs.read_json(Path(run_dir) / runs.CONFIG, {}) or {}).get("train") or {})
    values, refused = train_form_values(train)
    names = list(train.get("datasets") or [])
    if len(names) == 1:
        try:
            dataset = checked_dataset(str(names[0]))
        except (ValueError, OSError, RuntimeError) as error:
            refused.append(f"dataset {names[0]} ({error}; the dataset chosen stays)")
        else:
            st.session_state[DATASET] = dataset
            st.session_state[MIN_CONFIDENCE] = float(train.get("min_confidence") or 0.0)
    elif names:
        refused.append("datasets: the run pooled several, and the form takes one (the dataset chosen stays)")
    st.session_state[TRAIN_SETTINGS] = values
    st.session_state[TRAIN_FILL] = {"run": Path(run_dir).name, "refused": refused}


def train_again_button(run_dir: Path | str, key: str) -> bool:
    """The "Train again with these settings" button; True in the rerun after its click."""
    return st.button(
        "Train again with these settings",
        key=key,
        icon=":material/replay:",
        on_click=fill_train_form,
        args=(str(run_dir),),
        help="Fills the Train form with this run's settings, dataset and threshold; change any before starting.",
    )


def run_settings(train: dict) -> None:
    """A run's settings, as a small table (every cell through md(): dataset names can hold anything)."""
    start = train.get("init_from")
    if not start:
        start = "a new model"
    elif start == str(paths.BUNDLED_MODEL):
        start = "the bundled model"
    else:
        start = f"the model of run {Path(start).parent.name}"
    rows = [
        ("datasets", ", ".join(dataset_label(str(d)) for d in train.get("datasets") or []) or "?"),
        ("minimum detector score", _text(train.get("min_confidence") or 0)),  # the Data page's name
        ("starting model", start),
    ]
    for key in train_form():
        value = train.get(key)
        shown = _text(value) if value is not None else "all" if key == "max_faces" else "?"
        if key == "arch" and value in results.ARCH_WORDS:  # the network's name explained where it shows
            shown = f"{shown}: {results.ARCH_WORDS[value]}"
        rows.append((key.replace("_", " "), shown))
    st.table({"setting": [md(r[0]) for r in rows], "value": [md(r[1]) for r in rows]})


# Run names and notes ------------------------------------------------------------------------------


def note_markdown(note: str) -> str:
    """A run's note as Markdown showing it as typed, line by line."""
    return "  \n".join(md(line) for line in str(note).splitlines())


def naming_editor(run_dir: Path | str, key: str) -> None:
    """A form to name a run and note what it is for (name.json in its folder)."""
    run = Path(run_dir)
    naming = runs.read_naming(run)
    with st.form(key=f"{key}_{run.name}", border=False):
        name = st.text_input(
            "Name",
            value=runs.run_title(run),
            max_chars=runs.MAX_NAME,
            key=f"{key}_name_{run.name}",
            help="Shown in the run lists, the comparison, the model list and the report.",
        )
        note = st.text_area(
            "Note",
            value=naming.get("note", ""),
            max_chars=runs.MAX_NOTE,
            key=f"{key}_note_{run.name}",
            placeholder="What this run tried, what to remember about it",
        )
        if st.form_submit_button("Save name and note", icon=":material/save:", key=f"{key}_save_{run.name}"):
            try:
                runs.write_naming(run, name, note)
            except (ValueError, OSError) as error:
                st.error(f"The name was not saved: {md(error)}")
            else:
                st.success(f"Saved: {md(runs.clean_name(name))}.")


# The model to run elsewhere: written from the .keras file when a button is clicked, then cached.
PORTABLE_DOWNLOADS = {
    "onnx": ("Model (ONNX)", "For ONNX Runtime: Python, C#, Java, JavaScript in the browser"),
    "tflite": ("Model (TFLite)", "For LiteRT (TensorFlow Lite): Android, iOS, small boards"),
}


@st.cache_data(show_spinner=False, max_entries=8)
def _portable_bytes(model_path: str, stamp: float, fmt: str) -> bytes:
    return portable.file_bytes(Path(model_path), fmt)


def portable_downloads(model_path: str, name: str, key: str) -> None:
    """Download buttons for the .keras model at `model_path` as ONNX and TFLite files named `name`.*,
    with its labels and preprocessing inside (see docs/portable.md)."""
    path = Path(model_path)
    stamp = path.stat().st_mtime if path.is_file() else 0.0
    for column, (fmt, (label, use)) in zip(st.columns(len(PORTABLE_DOWNLOADS)), PORTABLE_DOWNLOADS.items()):
        column.download_button(
            label,
            data=functools.partial(_portable_bytes, model_path, stamp, fmt),
            file_name=f"{name}{portable.FORMATS[fmt]}",
            mime="application/octet-stream",
            on_click="ignore",
            disabled=not path.is_file(),
            icon=":material/download:",
            key=f"{key}_{fmt}",
            help=f"{use}. Labels, face size and calibration are inside the file; written when clicked.",
        )


# Charts -------------------------------------------------------------------------------------------
# Plotly draws its toolbar (zoom, download...) over the top right of a chart, where a title drawn
# inside the chart runs at phone width (390 px). So the title is text above the chart, where it also
# wraps, and the chart keeps an empty band at its top for the toolbar.
TOOLBAR_ROOM = 36  # pixels at the top of a chart left to Plotly's toolbar


def chart(figure, where=None, **options):
    """`st.plotly_chart(figure, **options)` (in `where`, a column or container, if given) with the
    figure's title moved above it and room at its top for the toolbar; returns what plotly_chart does."""
    title, margin = figure.layout.title.text, figure.layout.margin.t
    if title:  # the title's band becomes the toolbar's
        figure.update_layout(title_text=None, margin_t=TOOLBAR_ROOM)
    elif margin is not None:  # Plotly's default top margin (100 px) already has room
        figure.update_layout(margin_t=margin + TOOLBAR_ROOM)
    options.setdefault("width", "stretch")
    options.setdefault("config", {"displaylogo": False})
    box = (where or st).container()
    if title:
        box.markdown(f"**{md(html.unescape(title))}**")
    return box.plotly_chart(figure, **options)


def photo_uploads(key: str) -> list:
    """The photo uploader of the pages that take photos (Classify, Your faces): several at once."""
    return (
        st.file_uploader(
            "Photos (several at once)",
            type=PHOTO_TYPES,
            accept_multiple_files=True,
            key=key,
            help="JPEG, PNG, WebP and the like; phone pictures are turned upright.",
        )
        or []
    )


def resume_button(run: Path) -> None:
    """The Resume button (key "resume_<run>") of a run that stopped without finishing
    (fer.launch.RESUMABLE): it carries on from its last finished epoch, waiting for a free training
    slot like a new run, and the page redraws."""
    if st.button(
        "Resume training",
        key=f"resume_{Path(run).name}",
        icon=":material/play_arrow:",
        help="Carry on from the last finished epoch. It waits for a free training slot like a new run.",
    ):
        try:
            launch.resume(run)
        except ValueError as error:
            st.error(f"This run cannot be resumed: {md(results.without_paths(error_line(str(error))))}")
        else:
            st.rerun()
