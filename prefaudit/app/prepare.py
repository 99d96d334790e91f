"""Build the audit once, save it, and open it again in each visitor's kernel.

Encoding happens here, in the ``prefaudit app`` process (progress in the terminal); Voila
starts one kernel per visitor, and each only opens the saved audit (seconds).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..ids import ALPHA
from .config import NOTEBOOK, AppConfig, read_app_config


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


def prepare_app(config: AppConfig, workdir: Path, *, progress: bool = True) -> dict[str, Path]:
    """Build and save the audit under ``workdir``; write the notebook and the app's JSON file.

    Returns ``{"notebook", "config", "session"}`` paths. Run Voila on ``notebook`` with
    ``PREFAUDIT_APP_CONFIG=<config>`` in its environment (:func:`voila_env`).
    """
    workdir = Path(workdir)
    session = build_session(config, progress=progress)
    if session.uses_sae:
        session.sae_fit()  # the dashboard's header: measured once here, not in every visitor's kernel
    session_dir = session.save(workdir / "session")
    # The notebook sits alone in its folder: Voila serves nothing else from there.
    nb_dir = workdir / "notebook"
    nb_dir.mkdir(parents=True, exist_ok=True)
    notebook = nb_dir / NOTEBOOK.name
    notebook.write_bytes(NOTEBOOK.read_bytes())
    config_path = workdir / "app.json"
    title = "embedded demo" if config.is_demo else str(config.data)
    config_path.write_text(
        json.dumps({"session": str(session_dir), "title": title, "config": asdict(config)}, indent=1)
    )
    return {"notebook": notebook, "config": config_path, "session": session_dir}


def open_app_session(path: str | Path | None = None) -> Any:
    """The notebook's side: open the saved audit named by the app's JSON file."""
    from ..session import AuditSession

    return AuditSession.load(read_app_config(path)["session"])


def describe(session: Any, title: str) -> str:
    """One line above the dashboard: what is shown (plain text)."""
    n_sig = len(session.significant())
    return f"{title}: {len(session.data)} pairs, {len(session.results)} features, {n_sig} with q < {ALPHA:g}"
