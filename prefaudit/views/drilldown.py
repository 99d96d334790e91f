"""Pair drill-down: the pairs where one feature fires most, tokens shaded by its activation.

The view follows ``session.focus`` (set by clicking the volcano) unless it is pinned to a
feature. Each card shows the prompt, then the chosen and rejected responses side by side with
their pooled values and which side is higher. SAE features shade each token by its activation
(``session.space.token_activations``); regex concepts (built-in or user) highlight their matches; other
concepts (length, callables, directions) have no token-level value and the legend says so.

A page answers at once: its rows (prompt, responses, pooled values) are sent as soon as they are
ranked; an SAE feature's token shading, which reads the page's responses through the model, follows
in a second message (legend ``kind`` "pending" in between). Only the page's rows travel; the
ranking stays in Python (``session.space.top_pairs``, cached per feature and order).

The front end (``widgets/drilldown.js``) builds the DOM with ``textContent`` only: dataset text
is shown as text, never interpreted as HTML or markdown.

Example
-------
>>> view = session.drilldown()                 # follows the focus      # doctest: +SKIP
>>> view = session.drilldown("flattery")       # pinned to a concept    # doctest: +SKIP
>>> view.sort = "rejected"; view.page = 1  # same as the controls   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from .. import ids
from ._assets import asset
from .base import SessionView
from .figures import _finite, concept_naming, concept_regex, regex_segments, token_segments

SORTS = ("abs_delta", "delta", "chosen", "rejected")


def page_max(pairs: list[dict[str, Any]]) -> float:
    """The largest token activation on a page (0 when none): the darkest shade."""
    acts = [
        a for p in pairs for side in ("chosen", "rejected") for _, a in p[side]["segments"] if a is not None
    ]
    return max([0.0, *acts])


class PairsWidget(anywidget.AnyWidget):
    """Front end of :class:`PairsView`: one page of pairs as JSON, controls as traits.

    ``sort``, ``page`` and ``pinned`` are set by the browser (the user's controls); the rest is
    written by Python. ``version`` increments once per page so the front end redraws once.
    """

    _esm = asset("drilldown.js")
    _css = asset("drilldown.css")

    feature = t.Unicode(None, allow_none=True).tag(sync=True)
    header = t.Dict().tag(sync=True)  # label and statistics of the feature
    legend = t.Dict().tag(sync=True)  # kind ("sae" | "regex" | "none"), text, max
    pairs = t.List().tag(sync=True)
    sort = t.Enum(SORTS, default_value="abs_delta").tag(sync=True)
    page = t.Int(0).tag(sync=True)
    page_size = t.Int(5).tag(sync=True)
    n_pairs = t.Int(0).tag(sync=True)
    pinned = t.Bool(False).tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    version = t.Int(0).tag(sync=True)


class PairsView(SessionView):
    """The top-activating pairs of one feature, prompt then chosen | rejected, tokens shaded.

    Parameters
    ----------
    session : AuditSession
    feature : int or str, optional
        Pin the view to this feature; by default it follows ``session.focus``.
    sort : {"abs_delta", "delta", "chosen", "rejected"}
        Initial order: by |Δ|, by Δ (chosen − rejected), or by the chosen / rejected pooled value.
    page_size : int
        Pairs per page (each SAE page reads ``2 × page_size`` responses through the model).

    Attributes
    ----------
    widget : PairsWidget
        The anywidget; ``widget.sort`` / ``widget.page`` / ``widget.pinned`` are its controls.

    Example
    -------
    >>> view = PairsView(session, feature="sae:17", sort="chosen")   # doctest: +SKIP
    """

    css_class = "prefaudit-pairs"

    def __init__(
        self,
        session: Any,
        *,
        feature: int | str | None = None,
        sort: str = "abs_delta",
        page_size: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        if sort not in SORTS:
            raise ValueError(f"sort={sort!r}; choose one of {', '.join(SORTS)}.")
        if int(page_size) < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size!r}.")
        fid = None if feature is None else self.session.space.feature_id(feature)
        self.widget = PairsWidget(
            sort=sort, page_size=int(page_size), pinned=fid is not None, n_pairs=len(self.session.data)
        )
        self.widget.feature = fid if fid is not None else self.session.focus
        self._shown: tuple | None = None  # the (feature, sort, page, ...) on screen
        self.set_body(self.widget)
        self.widget.observe(self.guard(self._on_control), names=["sort", "page", "pinned"])
        self.observe_session(self._on_focus, "focus")
        self.observe_session(lambda _c: self._load(), "results_version")  # part of the page key
        self.observe_session(self._on_labels, "labels")
        self.observe_session(self._on_topic_filter, "topic_filter")
        self._load()

    # ------------------------------------------------------------------ state from the session
    def _on_focus(self, change: Any) -> None:
        if not self.widget.pinned and change["new"] != self.widget.feature:
            with self.widget.hold_trait_notifications():
                self.widget.feature = change["new"]
                self.widget.page = 0
            self._load()

    def _on_control(self, change: Any) -> None:
        if change["name"] == "pinned" and not change["new"] and self.session.focus:
            self.widget.feature = self.session.focus  # unpinned: follow the focus again
        if change["name"] == "sort" and self.widget.page != 0:
            self.widget.page = 0  # fires _on_control again, which loads
            return
        self._load()

    def _on_topic_filter(self, _change: Any) -> None:
        # Another set of pairs is ranked (session.space.top_pairs honours the filter): back to page one.
        if self.widget.page != 0:
            self.widget.page = 0  # the page observer reloads
        else:
            self._load()

    def _on_labels(self, _change: Any) -> None:
        if self.widget.feature is not None:  # the label is in the header only: no new page
            with self.widget.hold_sync():
                self.widget.header = self._header(self.widget.feature)
                self.widget.version += 1

    def _load(self) -> None:
        """Fill the widget with the current page of the current feature (once per distinct page).

        The front end sends ``sort`` and ``page`` together; each fires an observer, and an SAE page
        costs model reads, so a page already shown (same key) is not loaded again.
        """
        wdg, fid = self.widget, self.widget.feature
        key = (
            fid,
            wdg.sort,
            wdg.page,
            wdg.page_size,
            self.session.results_version,
            self.session.topic_filter,
        )
        if key == self._shown:
            return
        wdg.n_pairs = len(self.session.topics.filtered_positions())
        if fid is None:
            with wdg.hold_sync():
                wdg.pairs, wdg.header, wdg.legend = [], {}, {}
                wdg.status = (
                    "Select a feature (click it in the volcano) to see the pairs where it fires most."
                )
                wdg.version += 1
            self._shown = key
            return
        n_pages = max(1, math.ceil(wdg.n_pairs / wdg.page_size))
        if wdg.page >= n_pages or wdg.page < 0:
            wdg.page = min(max(wdg.page, 0), n_pages - 1)
            return  # the page observer reloads
        legend, segments, slow = self._shading(fid)
        try:
            top = self.session.space.top_pairs(
                fid, by=wdg.sort, n=wdg.page_size, offset=wdg.page * wdg.page_size
            )
            if slow:  # the rows now, unshaded; the shading once the model has read them
                pending = {
                    "kind": "pending",
                    "text": f"token shade of {fid}: reading the page through the model…",
                }
                self._show_page(fid, self._cards(top, None), pending, "shading tokens…")
                self._shown = key
            pairs = self._cards(top, segments)
        except Exception:
            wdg.status = ""  # the error box says what went wrong
            raise
        legend["max"] = page_max(pairs)
        self._show_page(fid, pairs, legend, "")
        self._shown = key

    def _show_page(self, fid: str, pairs: list[dict[str, Any]], legend: dict[str, Any], status: str) -> None:
        """One page down: rows, header, legend and status, then ``version`` (one redraw)."""
        wdg = self.widget
        with wdg.hold_sync():
            wdg.pairs, wdg.header, wdg.legend = pairs, self._header(fid), legend
            wdg.status = status
            wdg.version += 1

    def _cards(self, top: Any, segments: Any) -> list[dict[str, Any]]:
        """The page's pairs as JSON-ready dicts; ``segments`` shades the responses (``None``: plain text)."""
        pairs = []
        for row in top.itertuples(index=False):
            texts = {side: str(getattr(row, f"{side}_text")) for side in ("chosen", "rejected")}
            segs = (
                {side: [[text, None]] for side, text in texts.items()}
                if segments is None
                else segments(int(row.position), texts)
            )
            c, r = float(row.chosen), float(row.rejected)
            messages = self.session.data.messages(int(row.position))
            pairs.append(
                {
                    "pair_id": str(row.pair_id),
                    "position": int(row.position),
                    "prompt": [
                        {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
                        for m in messages
                    ],
                    **{
                        side: {"segments": segs[side], "pooled": _finite(getattr(row, side))}
                        for side in texts
                    },
                    "delta": _finite(c - r),
                    "higher": "chosen" if c > r else "rejected" if r > c else "equal",
                }
            )
        return pairs

    def _header(self, fid: str) -> dict[str, Any]:
        """Label and statistics; a concept's ``description`` and, for a regex, its ``pattern``.

        A regex concept is named by its description, never by the raw regular expression (the
        front end shows the pattern on demand, in a ``<details>``).
        """
        naming = concept_naming(self.session, fid)
        label = self.session.label(fid)
        if "pattern" in naming and label == f"matches of /{naming['pattern']}/":
            label = naming["description"]  # the automatic label quotes the regex
        out: dict[str, Any] = {"label": label, **naming}
        res = self.session.results
        if res is not None:
            # Results rows are in feature-column order: one lookup, not a scan of every feature.
            j = self.session.space.column(fid)
            rows = (
                [j]
                if j < len(res) and res["feature"].iat[j] == fid
                else np.flatnonzero(res["feature"] == fid)
            )
            if len(rows):
                r = res.iloc[int(rows[0])]
                out.update({k: _finite(r[k]) for k in ("d_z", "delta_mean", "q") if k in r.index})
                out["direction"] = str(r.get("direction", ""))
        return out

    def _shading(self, fid: str) -> tuple[dict[str, Any], Any, bool]:
        """Legend, a ``(position, {side: text}) -> {side: segments}`` function for this feature,
        and whether it is slow (reads the model: the rows are sent before it runs)."""
        if ids.is_sae(fid):

            def sae(position: int, texts: dict[str, str]) -> dict[str, list[list[Any]]]:
                acts = self.session.space.token_activations(position, fid)  # one read for both sides
                return {
                    side: token_segments(text, list(acts[side][0]), np.asarray(acts[side][1]))
                    for side, text in texts.items()
                }

            legend = {"kind": "sae", "text": f"token shade = activation of {fid} (darkest = page maximum)"}
            return legend, sae, True
        rx = concept_regex(self.session, fid)
        if rx is not None:
            naming = concept_naming(self.session, fid)
            legend = {"kind": "regex", "text": f"highlighted: {naming['description']}", "pattern": rx.pattern}
            return (
                legend,
                lambda _p, texts: {side: regex_segments(text, rx) for side, text in texts.items()},
                False,
            )
        legend = {
            "kind": "none",
            "text": f"{fid} is computed from the whole response: no token-level shading",
        }
        return legend, lambda _p, texts: {side: [[text, None]] for side, text in texts.items()}, False
