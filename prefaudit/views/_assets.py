"""Where the front-end ES modules and stylesheets of the anywidget views live.

In an installed wheel they sit inside the package (``prefaudit/_widgets/``, force-included from
the repository's top-level ``widgets/`` by pyproject); in a source checkout (editable install)
they are read from ``widgets/`` beside the package.

Example
-------
>>> from prefaudit.views._assets import asset
>>> asset("drilldown.js").name
'drilldown.js'
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def widgets_dir() -> Path:
    """The directory holding ``*.js`` / ``*.css`` for the views."""
    for candidate in (_PACKAGE / "_widgets", _PACKAGE.parent / "widgets"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"prefaudit's front-end files were not found in {_PACKAGE / '_widgets'} or "
        f"{_PACKAGE.parent / 'widgets'}; reinstall prefaudit."
    )


def asset(name: str) -> Path:
    """Path of one front-end file, e.g. ``asset("drilldown.js")``."""
    path = widgets_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"prefaudit front-end file {name!r} is missing from {path.parent}.")
    return path
