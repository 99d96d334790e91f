"""``prefaudit app`` without a browser: options, the app's JSON file, the Voila command, the round trip.

The page itself (Voila in Chromium, offline) is tested in tests/browser/test_app_browser.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket

import pandas as pd
import pytest

from prefaudit.app import (
    AppConfig,
    build_session,
    open_app_session,
    prepare_app,
    read_app_config,
    voila_command,
    voila_env,
)
from prefaudit.app.command import app_config
from prefaudit.app.serve import SHARE
from prefaudit.cli import _parser, main
from prefaudit.errors import ConfigError
from tests import tiny


@pytest.fixture()
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in tiny.planted_pairs(40)) + "\n")
    return path


def test_cli_options_become_the_app_config(pairs_file):
    args = _parser().parse_args(
        ["app", str(pairs_file), "--no-sae", "--no-cache", "--limit", "10", "--port", "9"]
    )
    config = app_config(args)
    assert (config.data, config.sae, config.cache_dir, config.limit) == (str(pairs_file), False, False, 10)
    assert config.session_kwargs()["sae"] is False and "model" not in config.session_kwargs()
    with pytest.raises(ConfigError, match="at least 2"):
        AppConfig("demo", limit=1)


def test_prepared_app_opens_the_same_audit(pairs_file, tmp_path):
    config = AppConfig(str(pairs_file), sae=False, cache_dir=False)
    files = prepare_app(config, tmp_path / "app", progress=False)
    assert sorted(p.name for p in files["notebook"].parent.iterdir()) == ["dashboard.ipynb"]
    app = read_app_config(files["config"])
    assert app["title"] == str(pairs_file) and app["config"]["sae"] is False
    opened = open_app_session(files["config"])
    built = build_session(config, progress=False)
    assert len(opened.data) == 40
    cols = ["feature", "d_z", "q"]
    pd.testing.assert_frame_equal(
        opened.results[cols].reset_index(drop=True), built.results[cols].reset_index(drop=True)
    )


def test_the_app_json_file_is_named_or_the_error_says_how_to_start(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFAUDIT_APP_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="prefaudit app DATA"):
        read_app_config()
    with pytest.raises(ConfigError, match="no such file"):
        read_app_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        read_app_config(bad)
    bad.write_text(json.dumps({"title": "x"}))
    with pytest.raises(ConfigError, match="'session'"):
        read_app_config(bad)


def test_voila_serves_the_notebook_with_prefaudits_offline_template(tmp_path):
    cmd = voila_command(tmp_path / "dashboard.ipynb", port=8899)
    assert cmd[1:4] == ["-m", "voila", str(tmp_path / "dashboard.ipynb")]
    # prefaudit opens the browser itself, at the URL with the token.
    assert {"--port=8899", "--template=prefaudit", "--no-browser", "--Voila.port_retries=0"} <= set(cmd)
    env = voila_env(tmp_path / "app.json", base={"JUPYTER_PATH": "/elsewhere"})
    assert env["PREFAUDIT_APP_CONFIG"] == str(tmp_path / "app.json")
    assert env["JUPYTER_PATH"].split(":") == [str(SHARE), "/elsewhere"]
    template = SHARE / "voila" / "templates" / "prefaudit"
    assert json.loads((template / "conf.json").read_text())["base_template"] == "lab"
    assert "://" not in (template / "index.html.j2").read_text()


def test_a_busy_port_is_refused_before_any_encoding(pairs_file, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["app", str(pairs_file), "--no-sae", "--port", str(port), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and "--port" in err


def test_the_page_says_the_stage_then_fills_in_the_dashboard(pairs_file, tmp_path):
    """Voila serves the page before the audit exists: the box says what the preparation does,
    and the same box holds the audit's line and dashboard once the status file says ready."""
    import asyncio

    from prefaudit.app import app_page, prepare_audit, write_app_files
    from prefaudit.app.status import read_status, write_status
    from prefaudit.views.dashboard import Dashboard

    config = AppConfig(str(pairs_file), sae=False, cache_dir=False)
    files = write_app_files(config, tmp_path / "app")
    assert read_status(files["status"]) == {"state": "preparing", "stage": "starting"}
    write_status(files["status"], "preparing", "testing every feature")

    async def served():
        box = app_page(files["config"], poll=0.01)  # returns at once: the audit is not there yet
        first = box.children[0].value
        assert len(box.children) == 1 and first.startswith("preparing the audit: testing every feature")
        await asyncio.to_thread(prepare_audit, config, tmp_path / "app", progress=False)
        for _ in range(500):
            if len(box.children) == 2:
                break
            await asyncio.sleep(0.01)
        return box

    # On a thread of its own: the session's sync Playwright (browser and widget tests) keeps an
    # event loop running on the main thread, where asyncio.run refuses to start.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        box = pool.submit(asyncio.run, served()).result()
    assert read_status(files["status"])["state"] == "ready"
    assert box.children[0].value.startswith(f"{pairs_file}: 40 pairs") and isinstance(
        box.children[1], Dashboard
    )


def test_a_failed_preparation_is_said_on_the_page_and_raised(tmp_path):
    from prefaudit.app import app_page, prepare_audit, write_app_files
    from prefaudit.app.status import read_status

    config = AppConfig(str(tmp_path / "missing.jsonl"), sae=False, cache_dir=False)
    files = write_app_files(config, tmp_path / "app")
    with pytest.raises(Exception, match="missing"):
        prepare_audit(config, tmp_path / "app", progress=False)
    status = read_status(files["status"])
    assert (status["state"], status["stage"]) == ("failed", "loading the pairs failed")
    box = app_page(files["config"])  # no loop needed: it knows at once
    assert "failed (loading the pairs failed)" in box.children[0].value and len(box.children) == 1
