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
import pandas as pd

from .base import SessionView

#: Effect columns the x axis can show, with their axis titles.
EFFECTS: dict[str, str] = {
    "d_z": "Cohen's d_z (paired, chosen − rejected)",
    "rank_biserial": "rank-biserial r (chosen − rejected)",
    "delta_mean": "mean Δ (chosen − rejected)",
    "delta_len_ctrl": "length-controlled Δ (chosen − rejected)",
}
Q_THRESHOLD = 0.05
#: Main traces in drawing order (grey first, so coloured points sit on top).
CATEGORIES = (
    ("ns", "not significant", "#b4b4b4"),
    ("rejected", "more in rejected (q < 0.05)", "#d62728"),
    ("chosen", "more in chosen (q < 0.05)", "#1f77b4"),
)
SEARCH_TRACE, SELECTED_TRACE = len(CATEGORIES), len(CATEGORIES) + 1
FOCUS_COLOR, SELECTED_COLOR, SEARCH_COLOR = "#ff7f0e", "#222222", "#2ca02c"
MAX_LABEL = 80  # hover labels are cut here: 65k long labels would bloat every redraw


def hover_escape(text: str) -> str:
    """Escape text for plotly hover labels, which render a subset of HTML (``<b>``, ``<br>``, ...)."""
    return html.escape(str(text), quote=False)


def volcano_points(results: pd.DataFrame, effect: str = "d_z") -> pd.DataFrame:
    """The plottable rows of a results table: ``row`` (position in ``results``), ``x``, ``y``, ``category``.

    Rows with a non-finite effect or q (features that never vary) are left out. ``q = 0``
    (underflow) is drawn at the smallest positive q so that it stays on the chart.
    """
    if effect not in EFFECTS:
        raise ValueError(f"effect={effect!r}; choose one of {', '.join(EFFECTS)}.")
    if effect not in results.columns:
        raise ValueError(f"The results table has no {effect!r} column.")
    x = results[effect].to_numpy(dtype=np.float64)
    q = results["q"].to_numpy(dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(q)
    positive = q[keep & (q > 0)]
    floor = positive.min() if positive.size else 1e-300
    y = -np.log10(np.clip(q, floor, 1.0))
    sig = q < Q_THRESHOLD
    direction = results["direction"].to_numpy()
    category = np.where(
        sig & (direction == "chosen"), "chosen", np.where(sig & (direction == "rejected"), "rejected", "ns")
    )
    rows = np.flatnonzero(keep)
    return pd.DataFrame({"row": rows, "x": x[rows], "y": y[rows], "category": category[rows]})


def volcano_traces(
    results: pd.DataFrame, effect: str = "d_z"
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Plotly trace dicts for the three main categories, and each trace's rows in ``results``.

    Coordinates are numpy arrays (plotly sends them as typed arrays); hover text is escaped.
    """
    pts = volcano_points(results, effect)
    size = 9 if len(pts) < 500 else 6 if len(pts) < 5000 else 4
    traces, rows = [], []
    fmt = ".3f" if effect != "delta_mean" else ".3g"
    # Numbers go into the per-point text, not a 2-D customdata: the FigureWidget echoes every
    # trace's computed data back to Python, and 2-D typed arrays make that echo explode in size.
    template = "%{text}<br>" + effect + ": %{x:" + fmt + "}<extra></extra>"
    for key, name, color in CATEGORIES:
        sub = pts[pts["category"] == key]
        r = sub["row"].to_numpy()
        opacity = 0.8 if key != "ns" else 0.5
        res = results.iloc[r]
        text = [
            f"<b>{hover_escape(f)}</b><br>{hover_escape(lab[:MAX_LABEL] + ('…' if len(lab) > MAX_LABEL else ''))}"
            f"<br>Δ mean {dm:.3g} · q {q:.2e} · n_active {int(na)}"
            for f, lab, dm, q, na in zip(
                res["feature"],
                res["label"].fillna("").astype(str),
                res["delta_mean"],
                res["q"],
                res["n_active"],
                strict=True,
            )
        ]
        traces.append(
            {
                "type": "scattergl",
                "mode": "markers",
                "name": name,
                "x": sub["x"].to_numpy(np.float64),
                "y": sub["y"].to_numpy(np.float64),
                "text": text,
                "hovertemplate": template,
                "marker": {"color": color, "size": size, "opacity": opacity},
                # No dimming after a box/lasso: the rings (the session's selection) are the truth.
                "unselected": {"marker": {"opacity": opacity}},
            }
        )
        rows.append(r)
    return traces, rows


def volcano_layout(effect: str = "d_z", *, height: int = 460) -> dict[str, Any]:
    """Axes, threshold lines (q = 0.05 and no effect) and legend of the volcano."""
    y_thr = -np.log10(Q_THRESHOLD)
    return {
        "height": height,
        "template": "plotly_white",
        "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
        "xaxis": {"title": {"text": EFFECTS[effect]}, "zeroline": False},
        "yaxis": {"title": {"text": "−log10 q (BH)"}, "rangemode": "tozero"},
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        "hovermode": "closest",
        "dragmode": "zoom",
        "shapes": [
            {
                "type": "line",
                "xref": "paper",
                "x0": 0,
                "x1": 1,
                "y0": y_thr,
                "y1": y_thr,
                "line": {"dash": "dash", "color": "#888", "width": 1},
            },
            {
                "type": "line",
                "yref": "paper",
                "y0": 0,
                "y1": 1,
                "x0": 0,
                "x1": 0,
                "line": {"color": "#888", "width": 1},
            },
        ],
        "annotations": [
            {
                "xref": "paper",
                "x": 1,
                "y": y_thr,
                "text": "q = 0.05",
                "showarrow": False,
                "xanchor": "right",
                "yanchor": "bottom",
                "font": {"size": 10, "color": "#666"},
            }
        ],
    }


def volcano_figure(session: Any, effect: str = "d_z", *, height: int = 460) -> Any:
    """A static ``plotly.graph_objects.Figure`` of the session's results (used by the report)."""
    import plotly.graph_objects as go

    traces, _ = volcano_traces(session._require_results(), effect)
    return go.Figure(data=traces, layout=volcano_layout(effect, height=height))


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
            shown, n_sig = len(pts), int((results["q"] < Q_THRESHOLD).sum())
            hidden = len(results) - shown
            self._say(
                f"{shown:,} features shown, {n_sig:,} with q < {Q_THRESHOLD}"
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
