"""Build the audit once, save it, and open it again in each visitor's kernel.

Encoding happens here, in a child of the ``prefaudit app`` process (progress in the terminal),
while Voila already serves the page: :func:`write_app_files` writes what Voila needs first,
:func:`prepare_audit` then builds and saves the audit and says how far it got in the status file
(:mod:`prefaudit.app.status`); each visitor's kernel opens the saved audit once it is ready.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..ids import ALPHA
from .config import NOTEBOOK, AppConfig, read_app_config
from .status import write_status


def load_app_pairs(config: AppConfig) -> Any:
    """The pairs of ``config.data`` (the embedded demo for ``"demo"``), with their load report."""
    if config.is_demo:
        from ..demo import load_demo_pairs

        return load_demo_pairs(limit=config.limit)
    from ..pairs import load_pairs

    # A file by its absolute path: the visitors' kernels run elsewhere and must still know the
    # dataset's own file (the export box never overwrites it).
    source = Path(config.data).expanduser()
    data = str(source.resolve()) if source.is_file() else config.data
    return load_pairs(data, limit=config.limit, split=config.split)


def build_session(config: AppConfig, *, progress: bool = True) -> Any:
    """Load, encode and test ``config.data``: the session the dashboard shows."""
    from ..session import AuditSession

    session = AuditSession(load_app_pairs(config), **config.session_kwargs())
    session.encode(progress=progress)
    session.test()
    return session


def write_app_files(config: AppConfig, workdir: Path) -> dict[str, Path]:
    """The notebook and the app's JSON file under ``workdir`` (before the audit exists).

    Returns ``{"notebook", "config", "session", "status"}`` paths. Run Voila on ``notebook``
    with ``PREFAUDIT_APP_CONFIG=<config>`` in its environment (:func:`voila_env`).
    """
    workdir = Path(workdir)
    # The notebook sits alone in its folder: Voila serves nothing else from there.
    nb_dir = workdir / "notebook"
    nb_dir.mkdir(parents=True, exist_ok=True)
    notebook = nb_dir / NOTEBOOK.name
    notebook.write_bytes(NOTEBOOK.read_bytes())
    files = {
        "notebook": notebook,
        "config": workdir / "app.json",
        "session": workdir / "session",
        "status": workdir / "status.json",
    }
    title = "embedded demo" if config.is_demo else str(config.data)
    files["config"].write_text(
        json.dumps(
            {
                "session": str(files["session"]),
                "status": str(files["status"]),
                "title": title,
                "config": asdict(config),
            },
            indent=1,
        )
    )
    return files


def prepare_audit(config: AppConfig, workdir: Path, *, progress: bool = True) -> Path:
    """Build and save the audit into ``workdir/session``, saying each stage in ``workdir/status.json``.

    A failure is written as ``failed`` (the pages say so; the terminal shows the error) and raised.
    """
    import time

    status = Path(workdir) / "status.json"
    started = time.monotonic()
    stage = "loading the pairs"
    try:
        write_status(status, "preparing", stage, started=started)
        from ..session import AuditSession

        session = AuditSession(load_app_pairs(config), **config.session_kwargs())
        stage = "encoding the pairs (progress in the terminal that started the app)"
        write_status(status, "preparing", stage, started=started)
        session.encode(progress=progress)
        stage = "testing every feature"
        write_status(status, "preparing", stage, started=started)
        session.test()
        if session.uses_sae:
            stage = "measuring the lens fit"
            write_status(status, "preparing", stage, started=started)
            session.sae_fit()  # the dashboard's header: measured once here, not in every visitor's kernel
        stage = "saving the audit"
        write_status(status, "preparing", stage, started=started)
        session_dir = session.save(Path(workdir) / "session")
    except BaseException:
        write_status(status, "failed", f"{stage} failed", started=started)
        raise
    write_status(status, "ready", "ready", started=started)
    return session_dir


def prepare_app(config: AppConfig, workdir: Path, *, progress: bool = True) -> dict[str, Path]:
    """Write the app's files and build and save the audit under ``workdir``, in that order.

    Returns ``{"notebook", "config", "session", "status"}`` paths (:func:`write_app_files`).
    """
    files = write_app_files(config, workdir)
    files["session"] = prepare_audit(config, workdir, progress=progress)
    return files


def open_app_session(path: str | Path | None = None) -> Any:
    """The notebook's side: open the saved audit named by the app's JSON file."""
    from ..session import AuditSession

    return AuditSession.load(read_app_config(path)["session"])


def describe(session: Any, title: str) -> str:
    """One line above the dashboard: what is shown (plain text)."""
    n_sig = len(session.significant())
    return f"{title}: {len(session.data)} pairs, {len(session.results)} features, {n_sig} with q < {ALPHA:g}"
