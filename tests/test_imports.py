"""The package's shape: imports inside fer/ form no cycle, fer/ never imports streamlit, the light
commands load no TensorFlow, and TensorFlow's start-up lines stay out of what users read."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fer import logs

PACKAGE = Path(__file__).resolve().parents[1] / "fer"


def _imports(path: Path) -> set[str]:
    """Every fer module `path` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "fer":  # from fer import runs
                found |= {f"fer.{alias.name}" for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"fer.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_imports_inside_fer_form_no_cycle():
    graph = _graph()
    assert len(graph) > 20
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_fer_never_imports_streamlit():
    users = [p.name for p in PACKAGE.glob("*.py") if any(m.startswith("streamlit") for m in _imports(p))]
    assert users == []


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "FER_DATA_ROOTS": ""},
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["summary", "demo", "--json"]])
def test_light_commands_load_no_tensorflow(argv):
    loaded = _modules_after(
        f"from fer.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    )
    assert "fer.cli" in loaded
    assert not {"tensorflow", "keras", "jax"} & loaded


def test_classifying_does_not_load_the_training_code():
    loaded = _modules_after("import fer.predict")
    assert "fer.predict" in loaded
    assert not {"fer.train", "tensorflow", "keras"} & loaded  # the model loads when one is asked for


def test_tensorflow_start_up_lines_are_noise_and_errors_are_not():
    assert logs.is_noise(
        "I0000 00:00:1796105497.061276    9104 port.cc:153] oneDNN custom operations are on."
    )
    assert logs.is_noise(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    )
    assert logs.is_noise(
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
        "appropriate compiler flags."
    )
    assert not logs.is_noise("E0000 00:00:1796105497.061276    9104 cuda.cc:1] failed to load")
    assert not logs.is_noise("error: dataset not found")


def _load_keras_stderr(verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", logs.VERBOSE)}
    if verbose:
        env[logs.VERBOSE] = "1"
    code = (
        "import os, sys\n"
        "from fer import logs\n"
        "with logs._stderr_filtered():\n"
        "    os.write(2, b'a real problem\\n')\n"
        "logs.load_keras()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stderr


def test_loading_keras_prints_none_of_tensorflows_start_up_lines():
    quiet = _load_keras_stderr(verbose=False)
    assert "a real problem" in quiet  # what is not noise still reaches the user
    assert not [line for line in quiet.splitlines() if logs.is_noise(line)], quiet
    assert "oneDNN" not in quiet


def test_verbose_keeps_tensorflows_lines():
    loud = _load_keras_stderr(verbose=True)
    if "tensorflow" not in loud.lower() and "onednn" not in loud.lower():
        pytest.skip("this TensorFlow build prints nothing at start-up")
    assert any(logs.is_noise(line) for line in loud.splitlines())


def test_loading_keras_leaves_out_packages_it_does_not_need_yet_they_stay_importable():
    code = (
        "import os, sys\n"
        "os.environ.pop('KERAS_BACKEND', None)\n"
        "from fer import logs\n"
        "logs.load_keras()\n"
        "print('jax' in sys.modules, 'sklearn' in sys.modules)\n"
        "import sklearn.metrics\n"
        "print(sys.modules['sklearn'] is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]
