"""Where the project keeps things, and which folders a dashboard visitor may read datasets from.

Everything lives under one home: $FER_HOME when set (tests, a shared server), else the project
folder. Typed dataset paths are resolved (symlinks and `..` included) and must fall under one of
the configured data roots, so a visitor cannot make the server read /etc or someone's home.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = PROJECT / "models" / "default.keras"
# os.pathsep-separated folders a visitor may open datasets from (besides the data folder itself).
ROOTS_VARIABLE = "FER_DATA_ROOTS"


class PathError(ValueError):
    """A path a visitor typed that the server will not open; the message says why and what to do."""


def home() -> Path:
    value = os.environ.get("FER_HOME")
    return Path(value) if value else PROJECT


def data_dir() -> Path:
    """The project's data folder: the demo, the cache, extracted uploads."""
    value = os.environ.get("FER_HOME")
    return Path(value) if value else PROJECT / "data"


def uploads_dir() -> Path:
    return data_dir() / "uploads"


def runs_dir() -> Path:
    return home() / "runs"


def data_roots() -> list[Path]:
    """Folders datasets may be opened from: the data folder, then $FER_DATA_ROOTS (or, when that is
    unset, the `shared/datasets` folder beside the project, where it exists)."""
    roots = [data_dir()]
    configured = os.environ.get(ROOTS_VARIABLE)
    if configured is not None:
        roots += [Path(p).expanduser() for p in configured.split(os.pathsep) if p.strip()]
    else:
        beside = PROJECT.parent / "shared" / "datasets"
        if beside.is_dir():
            roots.append(beside)
    return [r.resolve() for r in roots]


HOW_TO_ADD = (
    f"start the server with the dataset's folder added to {ROOTS_VARIABLE} "
    f"(folders separated by {os.pathsep!r}, e.g. {ROOTS_VARIABLE}=/srv/datasets)"
)


def served_folders() -> str:
    """The folders datasets may be opened from, in words, as this server sees them."""
    roots = data_roots()
    extra = roots[1:]
    where = f"from {ROOTS_VARIABLE}" if os.environ.get(ROOTS_VARIABLE) is not None else "beside the project"
    text = f"It serves the data folder {roots[0]}"
    if extra:
        text += f" and {', '.join(str(r) for r in extra)} ({where})"
    return text


def check_dataset_path(text: str) -> Path:
    """The resolved dataset path a visitor typed, if it lies under a data root; PathError if not."""
    text = (text or "").strip()
    if not text:
        raise PathError("type the path of a dataset folder or CSV file")
    if "\0" in text:
        raise PathError("the path contains a NUL character")
    path = Path(text).expanduser()
    resolved = path.resolve() if path.is_absolute() else (PROJECT / path).resolve()
    roots = data_roots()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        relative = "" if path.is_absolute() else f" (a relative path is read from {PROJECT}: {resolved})"
        raise PathError(
            f"{text} is outside the folders this server serves datasets from{relative}. {served_folders()}. "
            f"Put the dataset in one of them, upload it as a .zip, or {HOW_TO_ADD}"
        )
    if not resolved.exists():
        raise PathError(f"{text} does not exist (looked for {resolved})")
    return resolved


def package_file(package: str, name: str) -> str:
    """A data file inside an installed package, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the {package!r} package is not installed; run scripts/setup.sh, which installs "
            "requirements.txt and requirements-models.txt"
        )
    path = os.path.join(spec.submodule_search_locations[0], name)
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing; reinstall the {package!r} package (scripts/setup.sh)")
    return path
