"""Launch Voila on the app's notebook: the command line, its configuration, the foreground run.

The page uses prefaudit's own Voila template (``share/voila/templates/prefaudit``): Voila's "lab"
template less the stylesheets it links from a CDN, so the app works offline and sends no
request off the machine. The template is found through ``JUPYTER_PATH``.

Locked down as Jupyter Server is by default (:func:`voila_settings`): a token (printed in the
URL; ``--no-token`` opts out), the Host header checked (Voila alone turns that off), no
tracebacks sent to the page, the kernels of closed pages culled, and at most ``max_kernels``
pages at once. That configuration goes to Voila as a file readable by its owner only, so the
token never shows on a command line (``ps``); Voila reads no other configuration file.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..audit.exports import EXPORT_DIR_ENV
from ..errors import ConfigError, MissingDependencyError
from .config import CONFIG_ENV, DEFAULT_PORT, TOKEN_ENV, AppConfig, ServeOptions
from .prepare import prepare_audit, write_app_files

#: Root of the Jupyter data folder that holds the template (``voila/templates/prefaudit``).
SHARE = Path(__file__).resolve().parent / "share"
TEMPLATE = "prefaudit"
HOST = "127.0.0.1"
#: Voila's kernel manager: jupyter_server's with a cap on live kernels.
KERNEL_MANAGER = "prefaudit.app.kernels.CappedKernelManager"


def require_voila() -> None:
    if importlib.util.find_spec("voila") is None:
        raise MissingDependencyError(
            "prefaudit app needs Voila: pip install 'prefaudit[app]' (or pip install voila)"
        )


def check_port(port: int) -> None:
    """Fail before minutes of encoding if 127.0.0.1:``port`` is taken."""
    with socket.socket() as s:
        try:
            s.bind((HOST, int(port)))
        except OSError as err:
            raise ConfigError(
                f"app: port {port} on {HOST} is not free ({err.strerror}); pass --port"
            ) from err


def app_url(port: int, token: str) -> str:
    """The page's address, with its token as Jupyter prints it."""
    return f"http://{HOST}:{int(port)}/" + (f"?token={token}" if token else "")


def voila_command(notebook: Path, *, port: int = DEFAULT_PORT, config_dir: Path | None = None) -> list[str]:
    """The ``python -m voila`` command that serves ``notebook`` on 127.0.0.1:``port``.

    ``config_dir`` holds the ``voila.json`` of :func:`voila_settings`; it is the only folder
    Voila reads configuration from (not the working directory's nor ``~/.jupyter``'s).
    """
    cmd = [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        f"--port={int(port)}",
        f"--Voila.ip={HOST}",
        # The port asked for, or a clear error: another port would not be where the user looks.
        "--Voila.port_retries=0",
        f"--template={TEMPLATE}",
        "--theme=light",
        # prefaudit opens the browser itself: Voila's own tab would lack the token.
        "--no-browser",
        # Notebook 7's lab extension expects a notebook shell that a Voila page has not.
        "--VoilaConfiguration.extension_denylist=@jupyter-notebook/lab-extension",
    ]
    if config_dir is not None:
        cmd.append(f"--Voila.config_file_paths={config_dir}")
    return cmd


def voila_settings(options: ServeOptions, token: str) -> dict[str, Any]:
    """Voila's configuration (``voila.json``): who may in, what the page sees, how kernels end.

    ``token`` "" turns the token off (``--no-token``).
    """
    return {
        "Voila": {
            "token": token,
            # Voila sets allow_remote_access=True; jupyter_server's default (False) makes every
            # handler refuse a Host header that is not localhost or a loopback address, which
            # keeps other web pages out through DNS rebinding.
            "tornado_settings": {
                "allow_remote_access": False,
                "local_hostnames": ["localhost"],
                "serve_traceback": False,
            },
        },
        "VoilaConfiguration": {
            # A failing cell says that it failed, not the code and paths of its traceback.
            "show_tracebacks": False,
            "multi_kernel_manager_class": KERNEL_MANAGER,
        },
        # Voila's default tells the visitor to restart Voila with tracebacks on.
        "VoilaExecutor": {"cell_error_instruction": "(prefaudit app sends no tracebacks to the page.)"},
        "CappedKernelManager": {"max_kernels": int(options.max_kernels)},
        "MappingKernelManager": {
            # A closed page's kernel has no connection left: it goes once idle this long. The
            # page asks for that itself on unload; this catches a browser that never says so.
            "cull_idle_timeout": int(options.idle_timeout),
            "cull_interval": options.cull_interval,
            "cull_connected": False,
            "cull_busy": False,
        },
    }


def write_voila_settings(folder: Path, settings: dict[str, Any]) -> Path:
    """Write ``settings`` as ``folder/voila.json``, readable by its owner only (it holds the token)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "voila.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1)
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
    return folder


def voila_env(
    config_path: Path, *, out: Path | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Voila's environment: the app's JSON file and export folder for the kernels, the template on
    ``JUPYTER_PATH``; no ``JUPYTER_TOKEN`` (the kernels inherit it and need none)."""
    env = dict(os.environ if base is None else base)
    env[CONFIG_ENV] = str(config_path)
    env["JUPYTER_PATH"] = os.pathsep.join([str(SHARE), *filter(None, [env.get("JUPYTER_PATH")])])
    env.pop(TOKEN_ENV, None)
    if out is not None:
        env[EXPORT_DIR_ENV] = str(out)
    return env


def output_folder(out: str | Path) -> Path:
    """The app's output folder, absolute and created (the export box writes only inside it)."""
    path = Path(out).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"app: cannot use {path} as the output folder (--out): {err.strerror}.") from err
    return path


def serve(
    config: AppConfig,
    options: ServeOptions | None = None,
    *,
    progress: bool = True,
    workdir: Path | None = None,
) -> int:
    """Serve the page at once and prepare the audit meanwhile; run until Voila exits, Ctrl-C or SIGTERM.

    Voila starts before the audit is built: each page says what the preparation is doing and
    fills in the dashboard once the audit is saved (:mod:`prefaudit.app.page`). The audit is
    built in a child process, so the model it loaded is not held in memory while Voila serves
    (each visitor's kernel loads it again only if a drill-down needs it). If it fails, Voila is
    stopped and the error raised here. The saved audit lives in a temporary folder removed
    afterwards (or in ``workdir``, kept); exports go to ``options.out``. Returns Voila's exit
    code (0 when stopped by a signal).
    """
    options = options or ServeOptions()
    require_voila()
    check_port(options.port)
    out = output_folder(options.out)
    token = options.resolved_token()
    if not token:
        print(
            f"prefaudit app: WARNING: --no-token: anyone who can reach {HOST}:{options.port} (every "
            f"user and program on this machine) can open the dashboard and write into {out}.",
            file=sys.stderr,
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="prefaudit-app-") as tmp:
        work = Path(workdir or tmp).resolve()
        files = write_app_files(config, work)
        config_dir = write_voila_settings(work / "voila", voila_settings(options, token))
        print(f"prefaudit app: the page's exports go to {out}", flush=True)
        previous = _sigterm_interrupts()
        # A pool, not a bare process: the child's exception comes back here; terminate() on exit.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pending = pool.apply_async(prepare_audit, (config, work), {"progress": progress})
            proc = subprocess.Popen(
                voila_command(files["notebook"], port=options.port, config_dir=config_dir),
                env=voila_env(files["config"], out=out),
                # Not the user's folder: Voila would read a voila.py found there.
                cwd=files["notebook"].parent,
            )
            url = app_url(options.port, token)
            threading.Thread(
                target=_announce, args=(proc, options.port, url, options.open_browser), daemon=True
            ).start()
            try:
                while not pending.ready() and proc.poll() is None:
                    pending.wait(0.5)
                if pending.ready():
                    pending.get()  # raises what the preparation raised
                    print("prefaudit app: the audit is ready", flush=True)
                return proc.wait()
            except KeyboardInterrupt:
                return _stop(proc)
            finally:
                if proc.poll() is None:
                    _stop(proc)
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)


def _announce(
    proc: subprocess.Popen, port: int, url: str, open_browser: bool, timeout: float = 300.0
) -> None:
    """Once Voila listens: print the page's URL (token included, as Jupyter does) and open it."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((HOST, port)) == 0:
                break
        time.sleep(0.2)
    else:
        return
    print(f"prefaudit app: serving the dashboard at {url} (Ctrl-C stops)", flush=True)
    if open_browser:
        webbrowser.open(url, new=2)


def _sigterm_interrupts() -> Any:
    """Make SIGTERM stop the app like Ctrl-C (so Voila and its kernels are shut down, not orphaned)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def _interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, _interrupt)


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM (Voila shuts its kernels down), then SIGKILL if it lingers."""
    with suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    return 0
