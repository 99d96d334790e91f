"""Faults of ``prefaudit app``: who may in, what the page may write, which kernels stay alive.

Fast layer: the Voila configuration the app builds (token, Host check, no tracebacks, culling,
the cap on kernels), the cap itself with a stand-in kernel start, and the export box refusing
paths outside its folder or over a file. One test runs the real app on a free port of
127.0.0.1 (marked ``kernel`` and ``slow``: every page starts a kernel) and speaks HTTP to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import prefaudit as pa
from prefaudit.app import AppConfig, ServeOptions, load_app_pairs, voila_command, voila_env, voila_settings
from prefaudit.app.command import serve_options
from prefaudit.app.serve import app_url, write_voila_settings
from prefaudit.audit.exports import EXPORT_DIR_ENV
from prefaudit.cli import _parser, main
from prefaudit.errors import ConfigError
from prefaudit.views import DriversView
from tests import tiny

TOKEN_RE = re.compile(r"\?token=([0-9a-f]+)")


def run_async(coroutine):
    """``asyncio.run`` on a thread of its own: the session's sync Playwright (browser tests, widget
    tests) keeps an event loop running on the main thread, where ``asyncio.run`` refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# ---------------------------------------------------------------------- the server's configuration
def test_voila_is_configured_like_jupyter_server(tmp_path):
    settings = voila_settings(ServeOptions(max_kernels=3, idle_timeout=120), "s3cret")
    voila = settings["Voila"]
    assert voila["token"] == "s3cret"
    assert voila["tornado_settings"]["allow_remote_access"] is False  # the Host header is checked
    assert voila["tornado_settings"]["serve_traceback"] is False
    assert settings["VoilaConfiguration"]["show_tracebacks"] is False
    assert "show_tracebacks" not in settings["VoilaExecutor"]["cell_error_instruction"]
    assert (
        settings["VoilaConfiguration"]["multi_kernel_manager_class"]
        == "prefaudit.app.kernels.CappedKernelManager"
    )
    assert settings["CappedKernelManager"] == {"max_kernels": 3}
    cull = settings["MappingKernelManager"]
    assert cull["cull_idle_timeout"] == 120 and cull["cull_connected"] is False
    assert 0 < cull["cull_interval"] <= 60

    cmd = voila_command(tmp_path / "dashboard.ipynb", port=8899, config_dir=tmp_path / "voila")
    assert "--Voila.ip=127.0.0.1" in cmd and "--no-browser" in cmd
    assert f"--Voila.config_file_paths={tmp_path / 'voila'}" in cmd
    assert not any("token" in a or "show_tracebacks" in a for a in cmd), "nothing secret or open on argv"


def test_the_settings_file_holding_the_token_is_private(tmp_path):
    settings = voila_settings(ServeOptions(), "s3cret")
    folder = write_voila_settings(tmp_path / "voila", settings)
    path = folder / "voila.json"
    assert json.loads(path.read_text()) == settings
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_token_by_default_and_no_token_only_when_asked(monkeypatch):
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    a, b = ServeOptions().resolved_token(), ServeOptions().resolved_token()
    assert a != b and len(a) == 48 and int(a, 16) >= 0
    assert app_url(8866, a) == f"http://127.0.0.1:8866/?token={a}"
    monkeypatch.setenv("JUPYTER_TOKEN", "chosen")  # as Jupyter Server honours it
    assert ServeOptions().resolved_token() == "chosen"
    assert ServeOptions(token="").resolved_token() == "" and app_url(8866, "") == "http://127.0.0.1:8866/"
    # The kernels get the export folder, not the token.
    env = voila_env(Path("/x/app.json"), out=Path("/x/out"), base={"JUPYTER_TOKEN": "chosen"})
    assert env[EXPORT_DIR_ENV] == "/x/out" and "JUPYTER_TOKEN" not in env


def test_cli_options_of_the_lock_down(tmp_path):
    args = _parser().parse_args(["app", "demo"])
    default = serve_options(args)
    assert (default.token, default.max_kernels, default.idle_timeout) == (None, 8, 300)
    args = _parser().parse_args(
        ["app", "demo", "--no-token", "--max-kernels", "2", "--idle-timeout", "30", "--out", str(tmp_path)]
    )
    opts = serve_options(args)
    assert (opts.token, opts.max_kernels, opts.idle_timeout, Path(opts.out)) == ("", 2, 30, tmp_path)
    with pytest.raises(ConfigError, match="--max-kernels"):
        ServeOptions(max_kernels=-1)
    with pytest.raises(ConfigError, match="--idle-timeout"):
        ServeOptions(idle_timeout=-5)


def test_bad_serve_options_are_refused_before_any_encoding(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tiny.planted_pairs(10)) + "\n")
    assert main(["app", str(data), "--no-sae", "--max-kernels", "-1", "--no-browser"]) == 2
    captured = capsys.readouterr()
    assert "--max-kernels" in captured.err and "encoding" not in captured.out


# ---------------------------------------------------------------------- the cap on kernels
def test_pages_beyond_the_cap_get_a_message_not_a_kernel(monkeypatch):
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from tornado import web

    from prefaudit.app.kernels import CappedKernelManager

    live: list[str] = []

    async def start(self, *, kernel_id=None, **kwargs):
        await asyncio.sleep(0.01)  # a kernel takes a while to start: pages opened together overlap
        live.append(kernel_id)
        return kernel_id

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", start)
    monkeypatch.setattr(CappedKernelManager, "list_kernel_ids", lambda self: list(live))
    km = CappedKernelManager(max_kernels=2)

    async def open_pages(n):
        return await asyncio.gather(*(km.start_kernel() for _ in range(n)), return_exceptions=True)

    got = run_async(open_pages(3))
    refused = [g for g in got if isinstance(g, Exception)]
    assert len(live) == 2 and len(refused) == 1
    assert isinstance(refused[0], web.HTTPError) and refused[0].status_code == 503
    assert "close another tab" in refused[0].reason and "2 pages" in refused[0].reason
    live.pop()  # a page closed: its kernel was shut down
    assert isinstance(run_async(open_pages(1))[0], str)


# ---------------------------------------------------------------------- exports
@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "data" / "pairs.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(r) for r in tiny.planted_pairs(40)) + "\n")
    return path


@pytest.fixture()
def session(data_file):
    s = pa.AuditSession(pa.load_pairs(str(data_file)), sae=False, cache_dir=False)
    s.test(n_boot=50)
    return s


@pytest.fixture()
def root(tmp_path):
    path = tmp_path / "exports"
    path.mkdir()
    return path


def test_export_refuses_paths_outside_its_folder(session, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file.jsonl").symlink_to(outside / "file.jsonl")
    for path in ["../x.jsonl", str(outside / "x.jsonl"), "link/x.jsonl", "file.jsonl", "sub/../../x.jsonl"]:
        with pytest.raises(ConfigError, match="outside the export folder"):
            session.edits.export(path, [0, 1], root=root)
    assert sorted(p.name for p in outside.iterdir()) == [] and not (tmp_path / "x.jsonl").exists()
    written = session.edits.export("sub/ok.jsonl", [0, 1], root=root)  # inside: fine, made relative to it
    assert written == (root / "sub" / "ok.jsonl").resolve() and len(written.read_text().splitlines()) == 2


def test_the_apps_folder_confines_exports_by_default(session, root, tmp_path, monkeypatch):
    monkeypatch.setenv(EXPORT_DIR_ENV, str(root))  # as prefaudit app sets it for its kernels
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="outside the export folder"):
        session.edits.export("../escape.jsonl", [0])
    assert session.edits.export("d.csv", [0]).parent == root.resolve()
    assert not (tmp_path / "d.csv").exists()


def test_export_never_overwrites_without_being_asked(session, root):
    first = session.edits.export("d.jsonl", [0, 1], root=root)
    before = first.read_text()
    with pytest.raises(FileExistsError, match="overwrite=True") as err:
        session.edits.export("d.jsonl", [2], root=root)
    assert err.value.filename == str(first) and first.read_text() == before
    session.edits.export("d.jsonl", [2], root=root, overwrite=True)
    assert json.loads(first.read_text())["pair_id"] == 2 and len(first.read_text().splitlines()) == 1
    assert sorted(p.name for p in root.iterdir()) == ["d.jsonl"]  # no temporary file left


class _FullDisk:
    """A text file whose writes fail as on a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, _text):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_leaves_no_half_export_and_the_old_file_whole(session, root, monkeypatch):
    from prefaudit.audit import exports

    real_open, real_fdopen = open, os.fdopen
    monkeypatch.setattr(exports, "open", lambda *a, **k: _FullDisk(real_open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="No space") as err:
        session.edits.export("new.jsonl", [0], root=root)
    assert err.value.filename == str(root.resolve() / "new.jsonl") and list(root.iterdir()) == []
    monkeypatch.undo()
    old = session.edits.export("old.jsonl", [0], root=root).read_text()
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="No space") as err:
        session.edits.export("old.jsonl", [1, 2], root=root, overwrite=True)
    assert err.value.filename == str(root.resolve() / "old.jsonl")
    monkeypatch.undo()
    assert (root / "old.jsonl").read_text() == old and [p.name for p in root.iterdir()] == ["old.jsonl"]


def test_export_never_writes_over_the_audited_dataset(session, data_file):
    before = data_file.read_bytes()
    with pytest.raises(ConfigError, match="audited dataset"):
        session.edits.export(data_file, [0], overwrite=True)
    link = data_file.parent / "alias.jsonl"
    link.symlink_to(data_file)
    with pytest.raises(ConfigError, match="audited dataset"):
        session.edits.export(link, [0], overwrite=True)
    assert data_file.read_bytes() == before


def test_the_apps_kernels_know_the_dataset_file_from_any_folder(data_file, tmp_path, monkeypatch):
    monkeypatch.chdir(data_file.parent)  # `prefaudit app pairs.jsonl`, typed where the file is
    pairs = load_app_pairs(AppConfig("pairs.jsonl", sae=False))
    assert pairs.report.source == str(data_file.resolve())
    monkeypatch.chdir(tmp_path)  # a visitor's kernel runs in the notebook's folder
    s = pa.AuditSession(pairs, sae=False, cache_dir=False)
    with pytest.raises(ConfigError, match="audited dataset"):
        s.edits.export(data_file, [0], overwrite=True)


def test_export_box_says_why_and_asks_before_replacing(session, root):
    view = DriversView(session, top_k=3, export_root=root)
    session.set_focus("concept:url")
    view.path.value = "../escape.jsonl"
    view.export_button.click()
    assert "pa-drivers-refused" in view.message.value and "outside the export folder" in view.message.value
    assert view.last_error is None  # said in the message line, not as a traceback
    assert not (root.parent / "escape.jsonl").exists()

    (root / "d.csv").write_text("keep me\n")
    view.path.value = "d.csv"
    view.export_button.click()
    assert "exists" in view.message.value and view.overwrite_button.layout.display is None
    assert (root / "d.csv").read_text() == "keep me\n"
    view.path.value = "other.csv"  # a confirm holds for the file it was asked for only
    assert view.overwrite_button.layout.display == "none"
    view.overwrite_button.click()
    assert not (root / "other.csv").exists() and (root / "d.csv").read_text() == "keep me\n"
    view.path.value = "d.csv"
    view.export_button.click()
    view.overwrite_button.click()
    back = pd.read_csv(root / "d.csv", keep_default_na=False)
    assert back["pair_id"].tolist() == view.driver_ids() and "wrote 3 pairs" in view.message.value
    assert view.overwrite_button.layout.display == "none"


# ---------------------------------------------------------------------- the real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port, method, path, headers=None, body=None, timeout=180):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _cookies(headers) -> dict[str, str]:
    pairs = (v.split(";", 1)[0].split("=", 1) for k, v in headers if k.lower() == "set-cookie")
    return dict(pairs)


def _kernel_status(port, token, kernel_id) -> int:
    return _request(port, "GET", f"/api/kernels/{kernel_id}", {"Authorization": f"token {token}"})[0]


def _kernel_environ(kernel_id: str) -> dict[str, str]:
    """The environment of the kernel whose command line names its connection file (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and kernel_id in (proc / "cmdline").read_text():
                items = (proc / "environ").read_bytes().decode("utf-8", "replace").split("\0")
                return dict(i.split("=", 1) for i in items if "=" in i)
        except OSError:
            continue
    raise AssertionError(f"no process names kernel {kernel_id}")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``prefaudit app`` as a person starts it, with one page at most and a 2 s idle timeout."""
    base = tmp_path_factory.mktemp("app")
    data = base / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tiny.planted_pairs(40)) + "\n")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}
    env.update(TMPDIR=str(base), HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "prefaudit.cli", "app", str(data), "--no-sae", "--no-cache", "--quiet"]
    cmd += ["--port", str(port), "--no-browser", "--max-kernels", "1", "--idle-timeout", "2"]
    log = open(base / "app.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not TOKEN_RE.search((base / "app.log").read_text()):
            assert proc.poll() is None, (base / "app.log").read_text()
            assert time.monotonic() < deadline, (base / "app.log").read_text()
            time.sleep(0.3)
        token = TOKEN_RE.search((base / "app.log").read_text()).group(1)
        yield {"port": port, "token": token, "base": base, "log": base / "app.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
        log.close()


@pytest.mark.kernel
@pytest.mark.slow
def test_the_app_wants_its_token_and_its_own_host_name(app):
    port, token = app["port"], app["token"]
    kernels_before = app["log"].read_text().count("Kernel started")
    status, headers, _ = _request(port, "GET", "/")
    assert status == 302 and dict(headers)["Location"].startswith("/login")
    assert _request(port, "GET", "/?token=" + "0" * len(token))[0] == 302
    status, _, body = _request(port, "GET", f"/?token={token}", {"Host": f"attacker.example:{port}"})
    assert status == 403 and "kernelId" not in body
    assert app["log"].read_text().count("Kernel started") == kernels_before, (
        "a refused request started a kernel"
    )


@pytest.mark.kernel
@pytest.mark.slow
def test_closed_pages_free_their_kernels_and_the_cap_holds(app):
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    port, token = app["port"], app["token"]
    auth = {"Authorization": f"token {token}"}

    def open_page():
        status, headers, body = _request(port, "GET", f"/?token={token}")
        ids = re.findall(r'"kernelId": "([0-9a-f-]+)"', body)
        return status, _cookies(headers), body, (ids[0] if ids else None)

    def wait_gone(kernel_id):
        deadline = time.monotonic() + 120
        while _kernel_status(port, token, kernel_id) != 404:
            assert time.monotonic() < deadline, app["log"].read_text()[-3000:]
            time.sleep(0.5)

    async def scenario():
        status, cookies, body, kid = open_page()
        assert status == 200 and "pairs.jsonl: 40 pairs" in body and "Traceback" not in body
        # The tab stays open: a connected kernel is never culled, and no second page fits.
        ws = await websocket_connect(
            HTTPRequest(f"ws://127.0.0.1:{port}/api/kernels/{kid}/channels", headers=auth)
        )
        status, _, body, _ = await asyncio.to_thread(open_page)
        assert status == 503 and "close another tab of this app" in body
        assert _kernel_status(port, token, kid) == 200
        if Path("/proc/self/environ").exists():  # what the page's export box is bound by
            env = _kernel_environ(kid)
            assert env.get(EXPORT_DIR_ENV) == str((app["base"] / "prefaudit-exports").resolve())
            assert "JUPYTER_TOKEN" not in env
        ws.close()  # the tab closed without a word (a crashed browser): the culler ends the kernel
        await asyncio.to_thread(wait_gone, kid)
        # A page closed normally posts Voila's unload beacon, with the _xsrf cookie it was given.
        status, cookies, _, kid = await asyncio.to_thread(open_page)
        assert status == 200 and "_xsrf" in cookies
        beacon = f'--B\r\nContent-Disposition: form-data; name="_xsrf"\r\n\r\n{cookies["_xsrf"]}\r\n--B--\r\n'
        headers = {
            "Content-Type": "multipart/form-data; boundary=B",
            "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
            "Origin": f"http://127.0.0.1:{port}",
        }
        status, _, reply = _request(port, "POST", f"/voila/api/shutdown/{kid}", headers, beacon)
        assert status == 204, reply
        assert _kernel_status(port, token, kid) == 404

    run_async(scenario())


def test_a_served_view_shows_no_traceback(monkeypatch) -> None:
    from prefaudit.app.config import CONFIG_ENV
    from prefaudit.views.base import SERVED_ENV, SessionView

    assert SERVED_ENV == CONFIG_ENV  # the two names of one variable stay one
    view = SessionView.__new__(SessionView)  # only the error box is needed
    import ipywidgets as w

    view._error_html, view._error_box = w.HTML(), w.Box()

    def fail() -> None:
        raise ValueError("bad <b>input</b>")

    try:
        fail()
    except ValueError as err:
        monkeypatch.delenv(SERVED_ENV, raising=False)
        view.show_error(err)
        assert "traceback" in view._error_html.value and "fail()" in view._error_html.value
        monkeypatch.setenv(SERVED_ENV, "/tmp/app.json")
        view.show_error(err)
        assert view._error_html.value == "<b>ValueError</b>: bad &lt;b&gt;input&lt;/b&gt;"
