"""Several visitors at once, and a dashboard that is safe to share.

A shared server meets people who type paths, upload files and click at the same time. What must
hold: a typed path is opened only under the configured data roots; Results, Classify and Train take
no typed path at all; uploads are capped and need the XSRF token; one visitor's dataset, threshold
and run never appear in another's session; and the model is loaded once per server, however many
visitors classify at once (the server log says "loaded model" once).

The path rules are unit tests of `fer.paths`; the sessions are AppTest instances sharing one
process (and so Streamlit's caches and the pages' modules, as on a server); the rest runs against
a real `streamlit run` server (helpers.serving) with eight Chromium sessions.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import LOAD_MS, expw_faces, face_crop, known_run, require_browser, serving
from PIL import Image
from streamlit.testing.v1 import AppTest

from fer import demo, paths
from fer import runs as R
from pages import common

PROJECT = Path(__file__).resolve().parents[1]
APP = str(PROJECT / "streamlit_app.py")
CONFIG = PROJECT / ".streamlit" / "config.toml"
CAP_MB = 1  # the real server's upload cap in these tests, so an over-cap file stays small
SERVER = "A folder or CSV on the server"  # the Data page's chooser option for a typed path
VISITORS = 8


# Paths a visitor types --------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A data folder (FER_HOME) with one dataset in it, and no extra roots."""
    folder = tmp_path / "home"
    (folder / "mine").mkdir(parents=True)
    monkeypatch.setenv("FER_HOME", str(folder))
    monkeypatch.setenv(paths.ROOTS_VARIABLE, "")
    return folder


def refused(text: str, why: str = "is outside the folders") -> None:
    with pytest.raises(paths.PathError, match=why):
        paths.check_dataset_path(text)


def test_a_dataset_under_the_data_folder_is_accepted(home):
    assert paths.check_dataset_path(str(home / "mine")) == (home / "mine").resolve()
    assert paths.check_dataset_path(f"  {home / 'mine'}  ") == (home / "mine").resolve()  # pasted with spaces


def test_dot_dot_cannot_climb_out_of_a_root(home, tmp_path):
    (tmp_path / "secret").mkdir()
    refused(str(home / "mine" / ".." / ".." / "secret"))
    refused(str(home / ".."))
    refused(str(home / "mine" / ".." / ".." / ".." / ".." / ".." / ".." / "etc"))
    refused("../../../../../../etc")  # relative: resolved against the project, still outside
    # Climbing down again inside the root is harmless.
    assert paths.check_dataset_path(str(home / "mine" / ".." / "mine")) == (home / "mine").resolve()


def test_a_symlink_inside_a_root_that_points_outside_is_refused(home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "label.lst").write_text("x.jpg 0 0 0 1 1 0.9 3\n")
    (home / "escape").symlink_to(outside)
    (home / "passwd").symlink_to("/etc/passwd")
    refused(str(home / "escape"))
    refused(str(home / "escape" / "label.lst"))
    refused(str(home / "passwd"))
    (home / "inside").symlink_to(home / "mine")  # a link that stays inside is fine
    assert paths.check_dataset_path(str(home / "inside")) == (home / "mine").resolve()


def test_absolute_paths_outside_every_root_are_refused(home):
    for text in ("/etc", "/etc/passwd", "/", "/proc/self/environ", str(Path.home()), "~", "~/.ssh"):
        refused(text)


def test_roots_from_fer_data_roots_are_accepted_and_nothing_beside_them(home, tmp_path, monkeypatch):
    first, second, other = tmp_path / "datasets-a", tmp_path / "datasets-b", tmp_path / "elsewhere"
    for folder in (first / "fer", second / "expw", other / "fer"):
        folder.mkdir(parents=True)
    refused(str(first / "fer"))  # not configured yet
    monkeypatch.setenv(paths.ROOTS_VARIABLE, os.pathsep.join([str(first), "", str(second)]))
    assert paths.data_roots() == [home.resolve(), first.resolve(), second.resolve()]
    assert paths.check_dataset_path(str(first / "fer")) == (first / "fer").resolve()
    assert paths.check_dataset_path(str(second / "expw")) == (second / "expw").resolve()
    assert paths.check_dataset_path(str(home / "mine")) == (home / "mine").resolve()  # the data folder stays
    refused(str(other / "fer"))


def test_a_root_reached_through_a_symlink_still_serves_its_datasets(home, tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "fer").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv(paths.ROOTS_VARIABLE, str(tmp_path / "link"))
    assert paths.check_dataset_path(str(tmp_path / "link" / "fer")) == (real / "fer").resolve()
    assert paths.check_dataset_path(str(real / "fer")) == (real / "fer").resolve()


def test_a_folder_whose_name_only_starts_like_a_root_is_refused(home, tmp_path, monkeypatch):
    root = tmp_path / "x" / "data"
    (root / "ok").mkdir(parents=True)
    for twin in ("data2", "data-private", "data.bak"):
        (tmp_path / "x" / twin / "ds").mkdir(parents=True)
    monkeypatch.setenv(paths.ROOTS_VARIABLE, str(root))
    assert paths.check_dataset_path(str(root / "ok")) == (root / "ok").resolve()
    for twin in ("data2", "data-private", "data.bak"):
        refused(str(tmp_path / "x" / twin / "ds"))
    refused(str(home) + "2")  # the same trick on the data folder itself


def test_nul_bytes_and_empty_paths_are_refused_with_a_reason(home):
    refused(f"{home / 'mine'}\0/etc/passwd", "NUL character")
    refused("\0", "NUL character")
    refused("", "type the path")
    refused("   ", "type the path")
    refused(str(home / "missing"), "does not exist")


def test_an_empty_fer_data_roots_leaves_only_the_data_folder(home):
    assert paths.data_roots() == [home.resolve()]


# Configuration -----------------------------------------------------------------------------------


def test_the_served_config_caps_uploads_and_keeps_xsrf_protection_on(monkeypatch):
    server = tomllib.loads(CONFIG.read_text())["server"]
    # Set explicitly (Streamlit's own default could change), and small enough to refuse a disk image.
    assert isinstance(server.get("maxUploadSize"), int) and 1 <= server["maxUploadSize"] <= 500
    assert server.get("enableXsrfProtection") is True
    assert server.get("enableCORS", True) is True  # CORS off would weaken what XSRF protects
    assert server.get("headless") is True  # a served dashboard never opens a browser on the server
    # Streamlit itself reads the same values (the project config is found from the project folder).
    from streamlit import config

    monkeypatch.chdir(PROJECT)  # where `streamlit run` looks for .streamlit/config.toml
    config.get_config_options(force_reparse=True)
    assert config.get_option("server.maxUploadSize") == server["maxUploadSize"]
    assert config.get_option("server.enableXsrfProtection") is True


# No page takes a typed path but the Data page ----------------------------------------------------


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory) -> Path:
    """A server home with two finished runs (an older and a newer one) for the Results page."""
    home = tmp_path_factory.mktemp("sharing-home")
    for age, name in ((200, "older"), (100, "newer")):
        run = known_run(home / "runs" / name)
        stamp = run.stat().st_mtime - age
        os.utime(run / "config.json", (stamp, stamp))  # runs are listed newest first by this file
    return home


@pytest.fixture
def sharing_home(shared_home, monkeypatch) -> Path:
    # The demo dataset is the one the other tests use (conftest's FER_HOME), linked in rather than
    # generated a second time.
    if not (shared_home / demo.NAME).exists():
        (shared_home / demo.NAME).symlink_to(demo.ensure(paths.data_dir()))
    monkeypatch.setenv("FER_HOME", str(shared_home))
    monkeypatch.setenv(paths.ROOTS_VARIABLE, "")
    return shared_home


def visit(page: str = "pages/data.py") -> AppTest:
    """A new visitor (a browser session of its own) on `page`."""
    at = AppTest.from_file(APP, default_timeout=180).switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
@pytest.mark.parametrize("page", ["pages/results.py", "pages/classify.py", "pages/train.py"])
def test_results_classify_and_train_take_no_typed_path(sharing_home, page):
    at = visit(page)
    assert at.get("selectbox") or at.get("file_uploader")  # the page really rendered its inputs
    for kind in ("text_input", "text_area", "chat_input"):
        # The only text they take is a run's name and note, kept in its folder, never opened as a path.
        typed = [w for w in at.get(kind) if not re.match(r"(results|train)_naming_(name|note)_", w.key or "")]
        assert not typed, f"{page} has a {kind}: {[w.label for w in typed]}"
    # What they take instead: choices the server lists itself, from its own folders.
    served = (paths.runs_dir().resolve(), paths.BUNDLED_MODEL.parent.resolve())
    for box in at.selectbox:
        if box.key == "results_run":
            names = [path.name for path in R.list_runs(paths.runs_dir())]
            # "<run name> · <folder> (<state>)"
            folders = [option.split(" (")[0].rsplit(" · ", 1)[1] for option in box.options]
            assert folders == names == ["newer", "older"]
        elif box.key == "classify_model":
            assert box.options == list(common.model_choices())
        else:
            continue
        assert any(Path(box.value).resolve().is_relative_to(folder) for folder in served), box.value
    # Nor from the address bar: pages read it only through pages/common.py, whose checks take runs and
    # models by the names the server lists (tests/test_url_state.py).
    assert "query_params" not in (PROJECT / page).read_text()


# One visitor's choices stay in their session ----------------------------------------------------


def metrics(at: AppTest) -> dict[str, int]:
    return {m.label: int(m.value.replace(",", "")) for m in at.metric}


@pytest.mark.slow
def test_a_visitors_dataset_threshold_and_run_never_reach_another_session(sharing_home):
    older, newer = (str(paths.runs_dir() / name) for name in ("older", "newer"))
    mine = expw_faces(paths.data_dir() / "datasets" / "mine", photos=14).resolve()
    first, second = visit(), visit()

    # The first visitor opens their own dataset, raises the threshold and picks the older run.
    first.radio(key="data_source").set_value(SERVER).run()
    first.text_input(key="data_path").input(str(mine)).run()
    first.slider(key="data_threshold").set_value(0.5).run()
    assert not first.exception and not first.error
    assert first.session_state[common.DATASET] == str(mine) and metrics(first)["Faces"] == 14
    first.switch_page("pages/results.py").run()
    first.selectbox(key="results_run").select(older).run()
    assert first.session_state[common.RUN] == older

    # The second visitor, already there, still has the demo with every face kept; their own threshold
    # does not reach the first visitor either.
    second.run()
    assert second.session_state[common.DATASET] == "demo"
    assert second.session_state[common.MIN_CONFIDENCE] == 0.0
    assert second.slider(key="data_threshold").value == 0.0
    assert metrics(second) == {"Kept": 1500, "Dropped": 0, "Faces": 1500}
    second.slider(key="data_threshold").set_value(60.0).run()
    assert 0 < metrics(second)["Kept"] < 1500
    # Nor the first visitor's run: the second one's Results page opens on the newest run.
    second.switch_page("pages/results.py").run()
    assert second.selectbox(key="results_run").value == newer
    assert second.session_state[common.RUN] == newer
    assert second.session_state[common.MIN_CONFIDENCE] == 60.0
    first.run()
    assert first.selectbox(key="results_run").value == older
    assert first.session_state[common.DATASET] == str(mine)
    assert first.session_state[common.MIN_CONFIDENCE] == 0.5

    # A visitor arriving later starts from the defaults, not from what the others chose.
    third = visit()
    assert third.session_state[common.DATASET] == "demo"
    assert third.session_state[common.MIN_CONFIDENCE] == 0.0
    assert metrics(third)["Kept"] == 1500
    assert {k: third.session_state[k] for k in common.DEFAULTS} == common.DEFAULTS


# A page file is run afresh for every rerun of every session, so its top-level names are its own; a
# module the pages import (pages/common.py) is imported once per server, so a list, dict or set it
# keeps, or an attribute a page sets on it, is shared by every browser tab.
MUTATORS = {"append", "extend", "insert", "update", "setdefault", "pop", "popitem", "clear", "add", "remove",
            "discard", "__setitem__", "appendleft"}  # fmt: skip
FACTORIES = {"list", "dict", "set", "defaultdict", "deque", "Counter", "OrderedDict"}


def shared_state_changes(source: str, imported: bool, modules: set[str]) -> list[str]:
    """Where code changes state all sessions share: in an imported module, a list, dict or set kept at
    its top level, or a `global`; in any file, an attribute of an imported page module (`common.X = ..`,
    `common.X[k] = ..`, `common.X.append(..)`)."""
    tree = ast.parse(source)
    containers = set()
    for statement in tree.body if imported else []:
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets = [statement.target]
        value = getattr(statement, "value", None)
        mutable = isinstance(value, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            mutable |= value.func.id in FACTORIES
        if mutable:
            containers |= {t.id for t in targets if isinstance(t, ast.Name)}

    def shared(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in containers
        return (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
        )

    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if imported and isinstance(node, ast.Global | ast.Nonlocal):
            found.append(f"line {line}: rebinds {', '.join(node.names)}")
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del) and shared(node):
            found.append(f"line {line}: sets {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Store | ast.Del)
            and shared(node.value)
        ):
            found.append(f"line {line}: changes {ast.unparse(node.value)}")
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS
        ):
            if shared(node.func.value):
                found.append(f"line {line}: changes {ast.unparse(node.func.value)}")
    return found


def imported_page_modules() -> list[Path]:
    """The files under pages/ that the entry file or a page imports (rather than runs as a page)."""
    names = set()
    for file in [PROJECT / "streamlit_app.py", *(PROJECT / "pages").glob("*.py")]:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pages":
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pages."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pages.")}
    return [PROJECT / "pages" / f"{name}.py" for name in sorted(names)]


def test_no_page_changes_state_that_every_session_shares():
    # The check itself sees each kind of change.
    leaky = "SEEN = []\nCOUNTS = {}\ndef page(x):\n    SEEN.append(x)\n    COUNTS[x] = 1\n    global N\n"
    assert len(shared_state_changes(leaky, True, set())) == 3
    assert not shared_state_changes(leaky, False, set())  # a page script's own names are per run
    page = "common.DEFAULTS['dataset'] = x\ncommon.LAST = x\ncommon.SEEN.add(x)\ncommon.N += 1\n"
    assert len(shared_state_changes(page, False, {"common"})) == 4
    imported = imported_page_modules()
    assert PROJECT / "pages" / "common.py" in imported
    modules = {path.stem for path in imported}
    for file in [PROJECT / "streamlit_app.py", *sorted((PROJECT / "pages").glob("*.py"))]:
        found = shared_state_changes(file.read_text(), file in imported, modules)
        assert not found, (file.name, found)


# A real server: eight visitors at once, the upload cap, XSRF ------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One `streamlit run` with its own FER_HOME and a 1 MB upload cap (Streamlit reads the cap from
    STREAMLIT_SERVER_MAX_UPLOAD_SIZE, over config.toml): the log shows each model load."""
    require_browser()
    home = tmp_path_factory.mktemp("sharing-server")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STREAMLIT_SERVER_MAX_UPLOAD_SIZE", str(CAP_MB))
            url = stack.enter_context(serving(home))
        yield url, home


def grey_crop(path: Path, shade: int) -> Path:
    """A face-sized picture of its own (a different picture per visitor, so none is cached): a real
    face cut close, brightened or darkened by `shade`, since one that is not a face gets no answer."""
    rng = np.random.default_rng(shade)
    face = np.asarray(face_crop(96), dtype=np.float64)
    pixels = np.clip(face + (shade - 128) * 0.5 + rng.normal(0, 3, face.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def open_classify(browser, url: str):
    context = browser.new_context(viewport={"width": 1100, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(LOAD_MS)
    page.goto(f"{url}/classify", wait_until="commit")  # the others open meanwhile
    return page


PHOTO_INPUT = '.st-key-uploads [data-testid="stFileUploaderDropzoneInput"]'  # the photos, not a model file


def upload(page, photo: Path) -> None:
    """Put `photo` in the Classify page's photo uploader once the page has settled (during a rerun
    its elements can briefly be there twice, the stale and the new)."""
    page.get_by_role("tab", name="Upload photos").click()
    page.wait_for_function(
        f"""() => !document.querySelector('[data-testid="stStatusWidget"]')
                  && document.querySelectorAll('{PHOTO_INPUT}').length === 1"""
    )
    page.locator(PHOTO_INPUT).set_input_files(str(photo))


@pytest.mark.slow
def test_eight_visitors_classifying_at_once_all_get_their_answer_from_one_loaded_model(
    server,
    browser,
    tmp_path,
):
    from fer.predict import Predictor

    url, home = server
    photos = [grey_crop(tmp_path / f"visitor-{i}.png", 40 + 25 * i) for i in range(VISITORS)]
    pages = [open_classify(browser, url) for _ in range(VISITORS)]  # their first runs overlap
    try:
        for page in pages:
            page.get_by_text("already cropped").first.click()
        for page, photo in zip(pages, photos):
            upload(page, photo)
        # All eight uploads are in; now each page must come back with its own photo's answer.
        expected = Predictor(paths.BUNDLED_MODEL)
        for page, photo in zip(pages, photos):
            heading = page.locator("p", has_text="Face 1:").first
            heading.wait_for()
            face = expected.predict(photo.read_bytes(), whole=True).faces[0]
            answer = f"Face 1: {face.label} — {face.probabilities[face.label]:.0%} likely"
            assert heading.inner_text().strip() == answer, photo.name
            shown = [p.name for p in photos if page.get_by_role("heading", name=p.name).count()]
            assert shown == [photo.name]
            assert not page.locator('[data-testid="stException"]').count()
    finally:
        for page in pages:
            page.context.close()
    log = (home / "server.log").read_text()
    loads = re.findall(r"loaded model (\S+)", log)
    assert loads == [str(paths.BUNDLED_MODEL)], log[-3000:]


CLOSED_EARLY = -1  # put_upload: the server closed the connection before taking the whole body


def put_upload(url: str, size: int, cookie: str | None, token: str | None) -> int:
    """The HTTP status of a PUT of a `size`-byte file to `url`, the way Streamlit's uploader sends it."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + os.urandom(size)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(url, data=body, method="PUT")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    if cookie:
        request.add_header("Cookie", f"_streamlit_xsrf={cookie}")
    if token:
        request.add_header("X-Xsrftoken", token)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except urllib.error.URLError as error:
        # The server may answer a body over the cap before it has all of it and close the
        # connection: the client's send then fails with a broken pipe or a reset.
        if isinstance(error.reason, (BrokenPipeError, ConnectionResetError)):
            return CLOSED_EARLY
        raise
    except (BrokenPipeError, ConnectionResetError):
        return CLOSED_EARLY


def xsrf_cookie(url: str) -> str:
    """A fresh XSRF cookie, as the server hands one to any visitor."""
    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=30) as response:
        for header in response.headers.get_all("Set-Cookie") or []:
            match = re.match(r"_streamlit_xsrf=([^;]+)", header)
            if match:
                return match.group(1)
    raise AssertionError("the server set no _streamlit_xsrf cookie: is XSRF protection off?")


@pytest.mark.slow
def test_uploads_over_the_cap_and_without_the_xsrf_token_are_refused(
    server,
    browser,
    tmp_path,
):
    url, _ = server
    page = open_classify(browser, url)
    try:
        big = tmp_path / "big.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(big)
        assert big.stat().st_size > CAP_MB * 1024**2
        upload(page, big)
        page.get_by_text(f"File must be {CAP_MB}.0MB or smaller").first.wait_for()
        # A small photo goes through; its request names this browser session on the server.
        with page.expect_request(lambda r: "/_stcore/upload_file/" in r.url and r.method == "PUT") as sent:
            upload(page, grey_crop(tmp_path / "small.png", 120))
        page.get_by_role("heading", name="small.png").wait_for()
        assert not page.get_by_role("heading", name="big.png").count()
        session = sent.value.url.split("/_stcore/upload_file/")[1].split("/")[0]

        # The same endpoint from outside the browser, while the session is still open (the server
        # forgets a closed one). With the cookie and the matching token, a small file is taken (so the
        # session and token are good), and one over the cap is refused.
        endpoint = f"{url}/_stcore/upload_file/{session}"
        cookie = xsrf_cookie(url)
        assert put_upload(f"{endpoint}/ok", 1000, cookie, cookie) == 204
        assert put_upload(f"{endpoint}/too-big", CAP_MB * 1024**2 + 10_000, cookie, cookie) in (
            413,
            CLOSED_EARLY,
        )
        assert put_upload(f"{endpoint}/ok-again", 1000, cookie, cookie) == 204  # refused, not broken
        # Without the XSRF cookie or token (a form on another site posting through a visitor's
        # browser sends the cookie but cannot read it to send the token), nothing is taken.
        assert put_upload(f"{endpoint}/no-xsrf", 1000, None, None) == 403
        assert put_upload(f"{endpoint}/no-token", 1000, cookie, None) == 403
        assert put_upload(f"{endpoint}/wrong-token", 1000, cookie, xsrf_cookie(url)) == 403
    finally:
        page.context.close()
