"""TensorFlow's own log lines, off unless asked for.

Loading TensorFlow prints a page of lines meant for its developers ("oneDNN custom operations are
on", which CPU instructions the build could use, absl's note that it logs before being set up):
they bury what the command line and the server say to their users. Most come from C++ before
TF_CPP_MIN_LOG_LEVEL is read, so `load_keras` imports Keras (and with it TensorFlow) with the
process's stderr caught at the file-descriptor level, and passes on every line that is not one of
those. Python-side, TensorFlow's and absl's loggers are set to errors only.

`FER_VERBOSE=1` (or `fer --verbose ...`) keeps everything, for reporting a TensorFlow problem.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

VERBOSE = "FER_VERBOSE"  # the environment variable that keeps TensorFlow's log lines

# TensorFlow's start-up lines: absl's prefix for INFO / WARNING ("I0000 00:00:17... port.cc:153]"),
# its note about logging before InitializeLog, and the two lines of the CPU-instructions notice;
# and LiteRT's note, when it first runs a .tflite model, that it uses its XNNPACK delegate.
_NOISE = re.compile(
    r"^([IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions:.*rebuild TensorFlow"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU)"
)


def verbose() -> bool:
    return os.environ.get(VERBOSE, "").strip().lower() not in ("", "0", "false", "no")


def quiet_environment() -> None:
    """Before TensorFlow loads: its C++ INFO and WARNING lines off (errors still show), unless verbose.
    Also what a training process started by the dashboard inherits."""
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def is_noise(line: str) -> bool:
    return bool(_NOISE.match(line))


@contextlib.contextmanager
def _stderr_filtered() -> Iterator[None]:
    """Catch everything written to file descriptor 2 inside the block, then pass on all but the noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = caught.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


@contextlib.contextmanager
def stderr_filtered() -> Iterator[None]:
    """Inside the block, the runtimes' start-up lines are left out of stderr (all kept when verbose)."""
    if verbose():
        yield
    else:
        with _stderr_filtered():
            yield


@contextlib.contextmanager
def _optional_packages_hidden() -> Iterator[None]:
    """Hide, while Keras and TensorFlow are imported, packages they import only because they are
    installed, for features fer never uses: JAX (TensorFlow Lite's JAX converter) and scikit-learn
    (Keras' scikit-learn wrappers). About 165 MB less memory in a process that only predicts. They stay
    importable afterwards (fer's metrics import scikit-learn as usual); under the JAX backend, JAX is
    Keras' own and is left alone."""
    hidden = ["sklearn"]
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        hidden.append("jax")
    hidden = [name for name in hidden if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # an import of it raises ImportError, which both packages expect
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def load_keras():
    """`import keras` with TensorFlow's start-up lines left out (all of them kept when verbose).
    Cheap after the first call."""
    if "keras" in sys.modules or verbose():
        import keras

        return keras
    quiet_environment()
    with _stderr_filtered(), _optional_packages_hidden():
        import keras
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return keras
