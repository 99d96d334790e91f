"""``FigureWidget``: plotly's ``FigureWidget`` that draws its data and fills its container's width.

plotly 6+ builds its ``FigureWidget`` on anywidget, and three things go wrong with it as it is:

* **Data sent after the comm opened.** plotly's ``__init__`` sets the figure (``_widget_data``,
  ``_widget_layout``) only after ipywidgets opened the comm, so the figure travels as update
  messages behind an empty initial state. anywidget holds a model's messages until its ES module
  is imported and gives up after 2 s; then the updates are dropped and the plot is drawn from
  the empty state: axes, no points, 360 px high (seen in JupyterLab on a busy machine).
  Here the comm opens only once the figure is set, so its first state already holds it.
* **A 5 MB module per figure, inside that 2 s.** plotly's bundle took 2.6 s to import on a
  quiet 2-core machine (once per figure: anywidget imports each model's module from its own
  Blob URL); past 2 s the page logs "[anywidget] Failed to initialize model" and every later
  message (selection rings, effect changes) is lost. ``_esm`` is now a small loader
  (``widgets/plotly_figure.js``) that returns from ``initialize`` at once, imports plotly's
  bundle (the ``_plotly_esm`` trait) once per page, and replays the messages that came meanwhile.
* **700 px wide.** plotly's anywidget view sizes the plot once, at render, when its element is
  not in the page yet, and never again. The loader keeps it as wide as its container.

Example
-------
>>> from prefaudit.views.plotly_widget import FigureWidget
>>> fig = FigureWidget(data=[{"type": "scatter", "x": [1, 2], "y": [3, 4]}])   # doctest: +SKIP
>>> fig.get_state()["_widget_data"][0]["x"]                                   # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Any

import plotly
import plotly.graph_objects as go
import traitlets

from ._assets import asset


@functools.cache
def plotly_bundle() -> str:
    """plotly's FigureWidget ES module (``plotly/package_data/widgetbundle.js``), read once."""
    return str(go.FigureWidget._esm)  # noqa: SLF001 - anywidget turns the class's file path into its contents


class FigureWidget(go.FigureWidget):
    """plotly's ``FigureWidget``, opened with its figure in the first state, loaded outside
    anywidget's 2 s, and as wide as its container (see the module docstring)."""

    _esm = asset("plotly_figure.js")
    _plotly_esm = traitlets.Unicode().tag(sync=True)
    _plotly_version = traitlets.Unicode(plotly.__version__).tag(sync=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._defer_open = True  # ipywidgets opens the comm inside __init__: not yet
        super().__init__(*args, **kwargs)
        self._plotly_esm = plotly_bundle()
        self._defer_open = False
        self.open()

    def open(self) -> None:
        if not getattr(self, "_defer_open", False):
            super().open()
