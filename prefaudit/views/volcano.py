"""Volcano plot: every feature's effect size against −log10 q, in one plotly ``FigureWidget``.

Clicking a point selects the feature (``session.select_feature``: it joins the selection and
becomes the drill-down's focus); a box or lasso adds the features inside it (strongest first, at
most ``max_lasso``); the search box finds features by id or label. Selected features are ringed,
the focus ring is orange. Everything shown is read from the session and redrawn when its
``results_version``, ``selection`` or ``focus`` change.

**Group mode** (the ``groups`` toggle, a view setting): one point per feature group of
``session.groups()``, sized by its number of members. Clicking a group *expands* it — only its
member features are drawn, clickable as usual — and "◀ all groups" goes back. Which group is
expanded is view state (it selects nothing); selecting a member goes through the session.

Only traces whose data changed are sent to the browser: a click redraws the rings, not the
65,536 points under them. A click answers with the drill-down first: the focus moves before the
selection grows (the shaper's new row and preview come after), and the rings are sent last, once —
the browser handles messages in order, and redrawing a WebGL plot takes longer than drawing a page
of pairs.

Example
-------
>>> import prefaudit as pa
>>> session = pa.AuditSession(pa.load_pairs(rows), sae=False, cache_dir=False)  # doctest: +SKIP
>>> session.test()                                                             # doctest: +SKIP
>>> session.volcano(effect="rank_biserial")                                    # doctest: +SKIP
>>> session.volcano(groups=True).expand("group:0")                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator
from typing import Any

import ipywidgets as w
import numpy as np

from .. import ids
from .base import SessionView
from .figures import (
    CATEGORIES,
    EFFECTS,
    SIGNIFICANT,
    volcano_layout,
    volcano_note,
    volcano_points,
    volcano_traces,
)

#: Overlay traces after the main ones: search matches, then the selection rings.
SEARCH_TRACE, SELECTED_TRACE = len(CATEGORIES), len(CATEGORIES) + 1
FOCUS_COLOR, SELECTED_COLOR, SEARCH_COLOR = "#ff7f0e", "#222222", "#2ca02c"
_MAIN_KEYS = ("x", "y", "text", "hovertemplate", "marker", "unselected")


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


def _same(a: Any, b: Any) -> bool:
    """Equal trace data (arrays by value, dicts and lists item by item)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and bool(np.array_equal(a, b))
    return type(a) is type(b) and a == b


class _Drawn:
    """What the main traces show: per trace its points' ids, and where each results row is drawn."""

    def __init__(self, updates: list[dict[str, Any]], point_ids: list[np.ndarray], n_rows: int) -> None:
        self.updates, self.point_ids = updates, point_ids
        self.x, self.y = np.full(n_rows, np.nan), np.full(n_rows, np.nan)  # NaN: not drawn
        self.rows: list[np.ndarray] = [np.zeros(0, int) for _ in CATEGORIES]
        self.message = ""
        self.source: Any = None


class VolcanoView(SessionView):
    """Effect size vs −log10 q for every tested feature; click, box/lasso and search select.

    Parameters
    ----------
    session : AuditSession
    effect : {"d_z", "rank_biserial", "delta_mean", "delta_len_ctrl"}
        Column on the x axis (a dropdown changes it later).
    groups : bool
        Start in group mode: one point per feature group (needs an SAE; the toggle changes it).
    height : int
        Plot height in pixels.
    max_lasso : int
        A box/lasso adds at most this many features to the selection (smallest q first):
        every selected feature gets a slider row in the shaper.

    Attributes
    ----------
    figure : prefaudit.views.plotly_widget.FigureWidget (a plotly ``FigureWidget``)
        The one FigureWidget (trace 0–2: features or groups by category, 3: search matches, 4: selection).
    effect : ipywidgets.Dropdown
    search : ipywidgets.Text  (CSS class ``pa-search``)
    group_mode : ipywidgets.ToggleButton  (CSS class ``pa-group-toggle``)
    back : ipywidgets.Button  (CSS class ``pa-group-back``; shown while a group is expanded)
    expanded : str or None
        The expanded group's id (view state: it changes nothing in the session).

    Example
    -------
    >>> view = VolcanoView(session, effect="d_z")    # doctest: +SKIP
    >>> view.search.value = "flattery"               # selects concept:flattery  # doctest: +SKIP
    >>> view.group_mode.value = True; view.expand("group:3")   # doctest: +SKIP
    """

    css_class = "prefaudit-volcano"

    def __init__(
        self,
        session: Any,
        *,
        effect: str = "d_z",
        groups: bool = False,
        height: int = 460,
        max_lasso: int = 50,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        if effect not in EFFECTS:
            raise ValueError(f"effect={effect!r}; choose one of {', '.join(EFFECTS)}.")
        if groups and not self.session.uses_sae:
            raise ValueError(
                "groups=True: feature groups cluster SAE features; this audit has concepts only."
            )
        from .plotly_widget import FigureWidget  # plotly loads here, not with the package

        self.max_lasso = int(max_lasso)
        self.expanded: str | None = None
        self._pending: list[str] = []
        self._matches: list[str] = []
        self._cache: dict[tuple, _Drawn] = {}
        self._rings_held = 0  # > 0 while a pick is in progress: rings drawn once, at its end
        self._rings_stale = False

        self.effect = w.Dropdown(
            options=list(EFFECTS), value=effect, description="effect", layout=w.Layout(width="220px")
        )
        self.effect.observe(self.guard(lambda _c: self._redraw()), names="value")
        self.group_mode = w.ToggleButton(
            value=bool(groups),
            description="groups",
            tooltip="one point per feature group (session.groups()); click a group to see its features"
            if self.session.uses_sae
            else "feature groups cluster SAE features; this audit has concepts only",
            disabled=not self.session.uses_sae,
            layout=w.Layout(width="auto"),
        )
        self.group_mode.add_class("pa-group-toggle")
        self.group_mode.observe(self.guard(self._on_group_mode), names="value")
        self.back = w.Button(description="◀ all groups", layout=w.Layout(width="auto", display="none"))
        self.back.add_class("pa-group-back")
        self.back.on_click(self.guard(lambda _b: self.expand(None)))
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
        clear.on_click(self.guard(lambda _b: self.session.decisions.set_selection([])))
        self.info = w.HTML()  # HTML only so that long lines wrap; values are escaped (see _say)
        self.info.add_class("pa-info")

        # Data and layout go to the constructor: plotly sends later changes as restyle/relayout
        # messages, which saved or embedded widget state does not contain.
        self._drawn = self._compute()
        self._sent = [*self._drawn.updates, self._search_update(), self._selection_update()]
        base = [{"type": "scattergl", "mode": "markers", "name": n} for _, n, _c in CATEGORIES]
        base += [_overlay("search matches", SEARCH_COLOR, 14), _overlay("selected", SELECTED_COLOR, 13)]
        traces = [{**b, **u} for b, u in zip(base, self._sent, strict=True)]
        layout = volcano_layout(effect, height=height)
        layout["xaxis"]["title"]["text"] = self._axis_title()
        self.figure = FigureWidget(data=traces, layout=layout)
        for k in range(len(CATEGORIES)):
            self.figure.data[k].on_click(self.guard(self._on_click))
            self.figure.data[k].on_selection(self.guard(self._on_selection))
        self._say(self._drawn.message)

        toolbar = w.HBox([self.effect, self.group_mode, self.back, self.search, self.matches, clear])
        toolbar.layout.flex_flow = "row wrap"
        self.set_body(toolbar, self.figure, self.info)
        self.observe_session(lambda _c: self._redraw(), "results_version")
        self.observe_session(lambda _c: self._draw_selection(), "selection", "focus")

    # ------------------------------------------------------------------ what is drawn (state down)
    def _say(self, text: str) -> None:
        self.info.value = f"<span class='pa-info-text'>{html.escape(text)}</span>"

    def _groups_shown(self) -> bool:
        return bool(self.group_mode.value) and self.expanded is None

    def _group_effect(self, table: Any) -> str:
        return self.effect.value if self.effect.value in table.columns else "d_z"

    def _axis_title(self) -> str:
        if self._groups_shown() and self.session.results is not None:
            eff = self._group_effect(self.session.groups())
            return f"group score: {EFFECTS[eff]}" + (
                "" if eff == self.effect.value else " (groups have no r)"
            )
        return EFFECTS[self.effect.value]

    def _compute(self) -> _Drawn:
        """The main traces for the current mode, cached per (mode, effect, results): toggling back
        and forth does not rebuild 65,536 hover texts."""
        results = self.session.results
        if results is None:
            empty = [{"x": np.zeros(0), "y": np.zeros(0), "text": []} for _ in CATEGORIES]
            drawn = _Drawn(empty, [np.zeros(0, object) for _ in CATEGORIES], 0)
            drawn.message = "No results yet: run session.test()."
            return drawn
        table = self.session.groups() if self.group_mode.value else None
        shown = self._groups_shown()
        key = (
            shown,
            self.expanded,
            self.effect.value,
            self.session.results_version,
            id(table) if table is not None and (shown or self.expanded) else None,
        )
        if key not in self._cache:
            keep = [k for k in self._cache if k[3] == key[3]][-3:]  # a few views of the same results
            self._cache = {k: self._cache[k] for k in keep}
            self._cache[key] = self._groups_drawn(results, table) if shown else self._features_drawn(results)
            self._cache[key].source = table  # held, so that id(table) in the key stays unique
        return self._cache[key]

    def _features_drawn(self, results: Any) -> _Drawn:
        """Every feature (or, with a group expanded, its members): one point each."""
        members = None
        if self.expanded is not None:
            table = self.session.groups()
            wanted = set(table.loc[table["group"] == self.expanded, "members"].iloc[0])
            members = np.flatnonzero(results["feature"].isin(wanted).to_numpy())
        sub = results if members is None else results.iloc[members]
        pts = volcano_points(sub, self.effect.value)
        traces, local = volcano_traces(sub, self.effect.value, points=pts)
        rows = local if members is None else [members[r] for r in local]
        fids = results["feature"].to_numpy()
        drawn = _Drawn([{k: t[k] for k in _MAIN_KEYS} for t in traces], [fids[r] for r in rows], len(results))
        drawn.rows = rows
        at = pts["row"].to_numpy() if members is None else members[pts["row"].to_numpy()]
        drawn.x[at], drawn.y[at] = pts["x"].to_numpy(), pts["y"].to_numpy()
        n_sig = int((sub["q"] < ids.ALPHA).sum())
        note = volcano_note(pts, self.effect.value)
        if members is None:
            drawn.message = (
                f"{len(pts):,} features shown, {n_sig:,} with {SIGNIFICANT}"
                + (f"; {note}" if note else "")
                + ". Click a point to select it, box/lasso adds several; rings mark the selection (orange: the focus)."
            )
        else:
            label = self.session.groups().set_index("group").loc[self.expanded, "label"]
            drawn.message = (
                f"{self.expanded} ({label}): its {len(members):,} features, {n_sig:,} with {SIGNIFICANT}"
                + (f" ({note})" if note else "")
                + "; all other features are hidden. Click a feature to select it; ◀ all groups goes back."
            )
        return drawn

    def _groups_drawn(self, results: Any, table: Any) -> _Drawn:
        """One point per group, sized by members; a selected feature is ringed on its group."""
        eff = self._group_effect(table)
        pts = volcano_points(table, eff)
        traces, rows = volcano_traces(table, eff, groups=True, points=pts)
        gids = table["group"].to_numpy()
        drawn = _Drawn([{k: t[k] for k in _MAIN_KEYS} for t in traces], [gids[r] for r in rows], len(results))
        drawn.rows = rows
        gx, gy = np.full(len(table), np.nan), np.full(len(table), np.nan)
        gx[pts["row"].to_numpy()], gy[pts["row"].to_numpy()] = pts["x"].to_numpy(), pts["y"].to_numpy()
        row_of = {f: j for j, f in enumerate(results["feature"])}
        for g, members in enumerate(table["members"]):
            at = [row_of[f] for f in members if f in row_of]
            drawn.x[at], drawn.y[at] = gx[g], gy[g]
        n_sig = int((table["q"] < ids.ALPHA).sum())
        n_concepts = int((~results["feature"].map(ids.is_sae)).sum())
        note = volcano_note(pts, eff).replace("never vary", "groups never vary")
        drawn.message = (
            f"{len(pts):,} feature groups shown (size = number of members; {int(table['n_members'].sum()):,} "
            f"SAE features), {n_sig:,} with {SIGNIFICANT}"
            + (f"; {note}" if note else "")
            + (
                ""
                if eff == self.effect.value
                else f"; x is d_z (the groups table has no {self.effect.value})"
            )
            + f". Not in any group, not drawn: {table.attrs.get('n_unclustered', 0):,} unclustered SAE "
            f"features and {n_concepts:,} concepts (turn groups off to see them). Click a group to see its features."
        )
        return drawn

    def _redraw(self) -> None:
        """Recompute and send only the traces whose data changed."""
        self._drawn = self._compute()
        updates = [*self._drawn.updates, self._search_update(), self._selection_update()]
        changed = [
            k for k, (new, old) in enumerate(zip(updates, self._sent, strict=True)) if not _same(new, old)
        ]
        title = self._axis_title()
        with self.figure.batch_update():
            for k in changed:
                self.figure.data[k].update(updates[k])
            if self.figure.layout.xaxis.title.text != title:
                self.figure.layout.xaxis.title.text = title
        self._sent = updates
        self._say(self._drawn.message)
        self.back.layout.display = "flex" if self.expanded is not None else "none"

    def _xy(self, features: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Where ``features`` are drawn (their group's point in group mode); those not drawn are dropped."""
        if self.session.results is None or not len(self._drawn.x):
            return np.zeros(0), np.zeros(0), []
        rows = np.array([self._row(f) for f in features], dtype=int)
        ok = np.flatnonzero(rows >= 0)
        ok = ok[np.isfinite(self._drawn.x[rows[ok]])]
        return self._drawn.x[rows[ok]], self._drawn.y[rows[ok]], [features[i] for i in ok]

    def _row(self, fid: str) -> int:
        """Row of a feature in ``results`` (−1: not there); results rows follow the feature columns."""
        res = self.session.results
        try:
            j = self.session.space.column(fid)
        except Exception:  # not a feature of this audit (any more)
            return -1
        return j if j < len(res) and res["feature"].iat[j] == fid else -1

    def _selection_update(self) -> dict[str, Any]:
        x, y, kept = self._xy(list(self.session.selection))
        colors = [FOCUS_COLOR if f == self.session.focus else SELECTED_COLOR for f in kept]
        if self._groups_shown():  # several members on one group point: one ring, orange if it holds the focus
            ring: dict[tuple[float, float], str] = {}
            for xi, yi, c in zip(x, y, colors, strict=True):
                ring[(xi, yi)] = FOCUS_COLOR if FOCUS_COLOR in (c, ring.get((xi, yi))) else c
            x, y = np.array([p[0] for p in ring]), np.array([p[1] for p in ring])
            colors = list(ring.values())
        return {"x": x, "y": y, "marker": {"color": colors}}

    def _search_update(self) -> dict[str, Any]:
        x, y, _ = self._xy(self._matches)
        return {"x": x, "y": y}

    def _send_trace(self, k: int, update: dict[str, Any]) -> None:
        if not _same(update, self._sent[k]):
            self.figure.data[k].update(update)
            self._sent[k] = update

    def _draw_selection(self) -> None:
        if self._rings_held:
            self._rings_stale = True
            return
        self._send_trace(SELECTED_TRACE, self._selection_update())

    @contextlib.contextmanager
    def _rings_last(self) -> Iterator[None]:
        """Draw the selection rings once, after everything the block sets off has been sent."""
        self._rings_held += 1
        try:
            yield
        finally:
            self._rings_held -= 1
            if not self._rings_held and self._rings_stale:
                self._rings_stale = False
                self._draw_selection()

    def pick(self, feature: str) -> None:
        """Select ``feature`` as a click does: focus first (the drill-down answers), then the
        selection (the shaper's row), rings last."""
        with self._rings_last():
            self.session.set_focus(feature)
            self.session.select_feature(feature)

    def _draw_search(self) -> None:
        self._send_trace(SEARCH_TRACE, self._search_update())

    # ------------------------------------------------------------------ view state: group mode
    def _on_group_mode(self, change: Any) -> None:
        if change["new"]:
            try:
                if not self.session.uses_sae:
                    raise ValueError("Feature groups cluster SAE features; this audit has concepts only.")
                self.session.groups()  # computed once per encoding (cached by the session)
            except Exception:
                self.group_mode.value = False  # the toggle says what is drawn
                raise
        self.expanded = None
        self._redraw()

    def expand(self, group: str | None) -> None:
        """Show only the member features of ``group`` (a ``group:<k>`` id); ``None`` goes back."""
        if group is not None:
            table = self.session.groups()
            if group not in set(table["group"]):
                raise ValueError(f"Unknown group {group!r}: this audit has group:0 … group:{len(table) - 1}.")
            self.group_mode.value = True  # no-op when already on
        self.expanded = group
        self._redraw()

    # ------------------------------------------------------------------ intents (up)
    def feature_at(self, trace: int, point: int) -> str:
        """Id of point ``point`` of main trace ``trace``: a feature, or in group mode a ``group:<k>``."""
        return str(self._drawn.point_ids[trace][point])

    @property
    def _rows(self) -> list[np.ndarray]:
        """Per main trace, its points' rows in the table drawn (``results``, or the groups table)."""
        return self._drawn.rows

    def _on_click(self, trace: Any, points: Any, _state: Any) -> None:
        if not points.point_inds:
            return
        picked = self.feature_at(points.trace_index, points.point_inds[0])
        if ids.is_group(picked):
            self.expand(picked)
        else:
            self.pick(picked)

    def _on_selection(self, trace: Any, points: Any, _selector: Any) -> None:
        # plotly dispatches a box/lasso to each trace in index order: collect, commit on the last.
        self._pending += [self.feature_at(points.trace_index, i) for i in points.point_inds]
        if points.trace_index != len(CATEGORIES) - 1:
            return
        picked, self._pending = self._pending, []
        if any(ids.is_group(p) for p in picked):  # a lasso over groups takes their members
            members = self.session.groups().set_index("group")["members"]
            picked = [f for p in picked for f in (members[p] if ids.is_group(p) else [p])]
        q = self.session.results.set_index("feature")["q"]
        picked = sorted(dict.fromkeys(picked), key=lambda f: q[f])[: self.max_lasso]
        if picked:
            self.session.decisions.set_selection([*self.session.selection, *picked])

    def _on_search(self, change: Any) -> None:
        query = str(change["new"]).strip()
        self._matches = self.find(query) if query else []
        if len(self._matches) == 1:
            self.pick(self._matches[0])  # the drill-down first, the highlight after
        self._draw_search()
        options = [(f"{f} — {self.session.label(f)[:60]}", f) for f in self._matches[:100]]
        self.matches.options = options
        self.matches.value = None
        self.matches.layout.display = "flex" if len(self._matches) > 1 else "none"
        if query and not self._matches:
            self._say(f"No feature matches {query!r}.")

    def _on_pick_match(self, change: Any) -> None:
        if change["new"]:
            self.pick(change["new"])

    def find(self, query: str) -> list[str]:
        """Feature ids whose id or label contains ``query`` (case-insensitive); an exact id first.

        Results are ordered by q (most significant first).
        """
        results = self.session.results
        if results is None or not query:
            return []
        try:
            exact = self.session.space.feature_id(query)
        except Exception:  # not a valid id: fall back to substring search
            exact = None
        if exact is not None and self._row(exact) >= 0:
            return [exact]
        needle = query.lower()
        hit = results["feature"].str.lower().str.contains(needle, regex=False) | results["label"].fillna(
            ""
        ).str.lower().str.contains(needle, regex=False)
        return results.loc[hit].sort_values("q", kind="stable")["feature"].tolist()
