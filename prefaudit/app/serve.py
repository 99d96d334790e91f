"""Launch Voila on the app's notebook: the command line, its environment, the foreground run.

The page uses prefaudit's own Voila template (``share/voila/templates/prefaudit``): Voila's "lab"
template less the stylesheets it links from a CDN, so the app works offline and sends no
request off the machine. The template is found through ``JUPYTER_PATH``.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from .config import CONFIG_ENV, AppConfig
from .prepare import prepare_app

#: Root of the Jupyter data folder that holds the template (``voila/templates/prefaudit``).
SHARE = Path(__file__).resolve().parent / "share"
TEMPLATE = "prefaudit"
DEFAULT_PORT = 8866


def require_voila() -> None:
    if importlib.util.find_spec("voila") is None:
        raise MissingDependencyError(
            "prefaudit app needs Voila: pip install 'prefaudit[app]' (or pip install voila)"
        )


def check_port(port: int) -> None:
    """Fail before minutes of encoding if 127.0.0.1:``port`` is taken."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError as err:
            raise ConfigError(
                f"app: port {port} on 127.0.0.1 is not free ({err.strerror}); pass --port"
            ) from err


def voila_command(notebook: Path, *, port: int = DEFAULT_PORT, open_browser: bool = True) -> list[str]:
    """The ``python -m voila`` command that serves ``notebook`` on 127.0.0.1:``port``."""
    cmd = [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        f"--port={int(port)}",
        "--Voila.ip=127.0.0.1",
        # The port asked for, or a clear error: another port would not be where the user looks.
        "--Voila.port_retries=0",
        f"--template={TEMPLATE}",
        "--theme=light",
        "--show_tracebacks=True",
        # Notebook 7's lab extension expects a notebook shell that a Voila page has not.
        "--VoilaConfiguration.extension_denylist=@jupyter-notebook/lab-extension",
    ]
    if not open_browser:
        cmd.append("--no-browser")
    return cmd


def voila_env(config_path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Voila's environment: the app's JSON file for the kernels, the template on ``JUPYTER_PATH``."""
    env = dict(os.environ if base is None else base)
    env[CONFIG_ENV] = str(config_path)
    env["JUPYTER_PATH"] = os.pathsep.join([str(SHARE), *filter(None, [env.get("JUPYTER_PATH")])])
    return env


def serve(
    config: AppConfig,
    *,
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    progress: bool = True,
    workdir: Path | None = None,
) -> int:
    """Prepare the audit, then run Voila in the foreground until it exits, Ctrl-C or SIGTERM.

    The audit is built in a child process, so the model it loaded is not held in memory while
    Voila serves (each visitor's kernel loads it again only if a drill-down needs it). The saved
    audit lives in a temporary folder removed afterwards (or in ``workdir``, kept). Returns
    Voila's exit code (0 when stopped by a signal).
    """
    require_voila()
    check_port(port)
    with tempfile.TemporaryDirectory(prefix="prefaudit-app-") as tmp:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            files = pool.submit(prepare_app, config, Path(workdir or tmp), progress=progress).result()
        print(f"prefaudit app: serving the dashboard at http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)
        proc = subprocess.Popen(
            voila_command(files["notebook"], port=port, open_browser=open_browser),
            env=voila_env(files["config"]),
        )
        previous = _sigterm_interrupts()
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return _stop(proc)
        finally:
            if proc.poll() is None:
                _stop(proc)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


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
