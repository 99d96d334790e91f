"""Volcano plot: every feature's effect size against −log10 q, in one plotly ``FigureWidget``.

Clicking a point selects the feature (``session.select_feature``: it joins the selection and
becomes the drill-down's focus); a box or lasso adds the features inside it (strongest first, at
most ``max_lasso``); the search box finds features by id or label. Selected features are ringed,
the focus ring is orange. Everything shown is read from the session and redrawn when its
``results_version``, ``selection`` or ``focus`` change.

Example
-------
>>> import prefaudit as pa
>>> session = pa.AuditSession(pa.load_pairs(rows), sae=False, cache_dir=False)  # doctest: +SKIP
>>> session.test()                                                             # doctest: +SKIP
>>> session.volcano(effect="rank_biserial")                                    # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w
import numpy as np

from .. import ids
from .base import SessionView
from .figures import CATEGORIES, EFFECTS, SIGNIFICANT, volcano_layout, volcano_points, volcano_traces

#: Overlay traces after the main ones: search matches, then the selection rings.
SEARCH_TRACE, SELECTED_TRACE = len(CATEGORIES), len(CATEGORIES) + 1
FOCUS_COLOR, SELECTED_COLOR, SEARCH_COLOR = "#ff7f0e", "#222222", "#2ca02c"


def _overlay(name: str, color: str, size: int) -> dict[str, Any]:
    # hoverinfo "skip": rings must not steal hover/clicks from the point underneath.
    return {
        "type": "scattergl",
        "mode": "markers",
        "name": name,
        "x": np.zeros(0),
        "y": np.zeros(0),
        "hoverinfo": "skip",
        "showlegend": False,
        # plotly marks overlays "unselected" after a lasso; keep the rings fully visible anyway.
        "unselected": {"marker": {"opacity": 1}},
        "marker": {"symbol": "circle-open", "size": size, "color": color, "line": {"width": 2}},
    }


class VolcanoView(SessionView):
    """Effect size vs −log10 q for every tested feature; click, box/lasso and search select.

    Parameters
    ----------
    session : AuditSession
    effect : {"d_z", "rank_biserial", "delta_mean", "delta_len_ctrl"}
        Column on the x axis (a dropdown changes it later).
    height : int
        Plot height in pixels.
    max_lasso : int
        A box/lasso adds at most this many features to the selection (smallest q first):
        every selected feature gets a slider row in the shaper.

    Attributes
    ----------
    figure : plotly.graph_objects.FigureWidget
        The one FigureWidget (trace 0–2: features by category, 3: search matches, 4: selection).
    effect : ipywidgets.Dropdown
    search : ipywidgets.Text  (CSS class ``pa-search``)

    Example
    -------
    >>> view = VolcanoView(session, effect="d_z")    # doctest: +SKIP
    >>> view.search.value = "flattery"               # selects concept:flattery  # doctest: +SKIP
    """

    css_class = "prefaudit-volcano"

    def __init__(
        self, session: Any, *, effect: str = "d_z", height: int = 460, max_lasso: int = 50, **kwargs: Any
    ) -> None:
        super().__init__(session, **kwargs)
        if effect not in EFFECTS:
            raise ValueError(f"effect={effect!r}; choose one of {', '.join(EFFECTS)}.")
        import plotly.graph_objects as go

        self.max_lasso = int(max_lasso)
        self._rows: list[np.ndarray] = [np.zeros(0, int) for _ in CATEGORIES]
        self._row_of: dict[str, int] = {}
        self._x_all, self._y_all = np.zeros(0), np.zeros(0)  # drawn x, y per results row (NaN: not drawn)
        self._pending: list[str] = []
        self._matches: list[str] = []

        self.effect = w.Dropdown(
            options=list(EFFECTS), value=effect, description="effect", layout=w.Layout(width="220px")
        )
        self.effect.observe(self.guard(lambda _c: self._redraw()), names="value")
        self.search = w.Text(
            placeholder="find feature: id or label, then Enter",
            continuous_update=False,
            layout=w.Layout(width="280px"),
        )
        self.search.add_class("pa-search")
        self.search.observe(self.guard(self._on_search), names="value")
        self.matches = w.Dropdown(
            options=[], description="matches", layout=w.Layout(width="320px", display="none")
        )
        self.matches.add_class("pa-search-matches")
        self.matches.observe(self.guard(self._on_pick_match), names="value")
        clear = w.Button(description="clear selection", layout=w.Layout(width="auto"))
        clear.on_click(self.guard(lambda _b: self.session.set_selection([])))
        self.info = w.HTML()  # HTML only so that long lines wrap; values are escaped (see _say)
        self.info.add_class("pa-info")

        # Data and layout go to the constructor: plotly sends later changes as restyle/relayout
        # messages, which saved or embedded widget state does not contain.
        base = [{"type": "scattergl", "mode": "markers", "name": n} for _, n, _c in CATEGORIES]
        base += [_overlay("search matches", SEARCH_COLOR, 14), _overlay("selected", SELECTED_COLOR, 13)]
        traces = [{**b, **u} for b, u in zip(base, self._trace_updates(), strict=True)]
        self.figure = go.FigureWidget(data=traces, layout=volcano_layout(effect, height=height))
        for k in range(len(CATEGORIES)):
            self.figure.data[k].on_click(self.guard(self._on_click))
            self.figure.data[k].on_selection(self.guard(self._on_selection))

        toolbar = w.HBox([self.effect, self.search, self.matches, clear])
        toolbar.layout.flex_flow = "row wrap"
        self.set_body(toolbar, self.figure, self.info)
        self.observe_session(lambda _c: self._redraw(), "results_version")
        self.observe_session(lambda _c: self._draw_selection(), "selection", "focus")

    # ------------------------------------------------------------------ drawing (state down)
    def _say(self, text: str) -> None:
        self.info.value = f"<span class='pa-info-text'>{html.escape(text)}</span>"

    def _trace_updates(self) -> list[dict[str, Any]]:
        """Per-trace data for the current session state; also refreshes the point→feature maps."""
        results, effect = self.session.results, self.effect.value
        if results is None:
            self._rows = [np.zeros(0, int) for _ in CATEGORIES]
            self._row_of, self._x_all, self._y_all = {}, np.zeros(0), np.zeros(0)
            main = [{"x": np.zeros(0), "y": np.zeros(0), "text": []} for _ in CATEGORIES]
            self._say("No results yet: run session.test().")
        else:
            traces, self._rows = volcano_traces(results, effect)
            main = [
                {k: tr[k] for k in ("x", "y", "text", "hovertemplate", "marker", "unselected")}
                for tr in traces
            ]
            pts = volcano_points(results, effect)
            self._x_all, self._y_all = np.full(len(results), np.nan), np.full(len(results), np.nan)
            self._x_all[pts["row"]], self._y_all[pts["row"]] = pts["x"], pts["y"]
            self._row_of = dict(zip(results["feature"], range(len(results)), strict=True))
            shown, n_sig = len(pts), int((results["q"] < ids.ALPHA).sum())
            hidden = len(results) - shown
            self._say(
                f"{shown:,} features shown, {n_sig:,} with {SIGNIFICANT}"
                + (f"; {hidden:,} never vary and are not drawn" if hidden else "")
                + ". Click a point to select it, box/lasso adds several; rings mark the selection (orange: the focus)."
            )
        return [*main, self._search_update(), self._selection_update()]

    def _redraw(self) -> None:
        updates = self._trace_updates()
        with self.figure.batch_update():
            for trace, update in zip(self.figure.data, updates, strict=True):
                trace.update(update)
            self.figure.layout.xaxis.title.text = EFFECTS[self.effect.value]

    def _xy(self, features: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Drawn coordinates of ``features`` (those not on the chart are dropped)."""
        kept = [f for f in features if f in self._row_of and np.isfinite(self._x_all[self._row_of[f]])]
        rows = np.array([self._row_of[f] for f in kept], dtype=int)
        return self._x_all[rows], self._y_all[rows], kept

    def _selection_update(self) -> dict[str, Any]:
        x, y, kept = self._xy(list(self.session.selection))
        colors = [FOCUS_COLOR if f == self.session.focus else SELECTED_COLOR for f in kept]
        return {"x": x, "y": y, "marker": {"color": colors}}

    def _search_update(self) -> dict[str, Any]:
        x, y, _ = self._xy(self._matches)
        return {"x": x, "y": y}

    def _draw_selection(self) -> None:
        self.figure.data[SELECTED_TRACE].update(self._selection_update())

    def _draw_search(self) -> None:
        self.figure.data[SEARCH_TRACE].update(self._search_update())

    # ------------------------------------------------------------------ intents (up)
    def feature_at(self, trace: int, point: int) -> str:
        """Feature id of point ``point`` of main trace ``trace``."""
        return str(self.session.results["feature"].iloc[int(self._rows[trace][point])])

    def _on_click(self, trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            self.session.select_feature(self.feature_at(points.trace_index, points.point_inds[0]))

    def _on_selection(self, trace: Any, points: Any, _selector: Any) -> None:
        # plotly dispatches a box/lasso to each trace in index order: collect, commit on the last.
        self._pending += [self.feature_at(points.trace_index, i) for i in points.point_inds]
        if points.trace_index != len(CATEGORIES) - 1:
            return
        picked, self._pending = self._pending, []
        q = self.session.results.set_index("feature")["q"]
        picked = sorted(picked, key=lambda f: q[f])[: self.max_lasso]
        if picked:
            self.session.set_selection([*self.session.selection, *picked])

    def _on_search(self, change: Any) -> None:
        query = str(change["new"]).strip()
        self._matches = self.find(query) if query else []
        self._draw_search()
        options = [(f"{f} — {self.session.label(f)[:60]}", f) for f in self._matches[:100]]
        self.matches.options = options
        self.matches.value = None
        self.matches.layout.display = "flex" if len(self._matches) > 1 else "none"
        if len(self._matches) == 1:
            self.session.select_feature(self._matches[0])
        if query and not self._matches:
            self._say(f"No feature matches {query!r}.")

    def _on_pick_match(self, change: Any) -> None:
        if change["new"]:
            self.session.select_feature(change["new"])

    def find(self, query: str) -> list[str]:
        """Feature ids whose id or label contains ``query`` (case-insensitive); an exact id first.

        Results are ordered by q (most significant first).
        """
        results = self.session.results
        if results is None or not query:
            return []
        try:
            exact = self.session.feature_id(query)
        except Exception:  # not a valid id: fall back to substring search
            exact = None
        if exact in self._row_of:
            return [exact]
        needle = query.lower()
        hit = results["feature"].str.lower().str.contains(needle, regex=False) | results["label"].fillna(
            ""
        ).str.lower().str.contains(needle, regex=False)
        return results.loc[hit].sort_values("q", kind="stable")["feature"].tolist()
