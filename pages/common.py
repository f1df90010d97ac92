"""What every page shares: session keys, the loaders they cache, and the models they can use.

Not a page itself (the router lists pages by file). Session state holds only names (a dataset
path, a model path, a run folder); heavy things are cached by Streamlit, keyed by those names:
`st.cache_data` for manifests and summaries (copied per session), `st.cache_resource` for loaded
models (one per server, shared by every session, used under a lock).
"""

from __future__ import annotations

import atexit
import html
import logging
import re
import threading
from pathlib import Path

import streamlit as st

from fer import datasets, modelfile, paths, runs, summary

# Session keys, initialised once in streamlit_app.py.
DATASET = "dataset"  # "demo" or a resolved path under a data root
MIN_CONFIDENCE = "min_confidence"  # the Data page's threshold (0 keeps every face)
MODEL = "model"  # path of the .keras model the Classify page uses
RUN = "run"  # the run folder the Results page shows ("" for the newest)

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
            choices[f"Run {run.name}"] = str(run / runs.BEST)
    return choices


def model_label(model_path: str) -> str:
    for label, path in model_choices().items():
        if path == model_path:
            return label
    return Path(model_path).name


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
