"""Weights: one slider row per selected feature, verdicts, notes, and a live shaping preview.

Each row holds an ipywidgets ``FloatSlider`` (reward weight, −3…+3: at weight w a pair where the
feature is active moves by about w logits, see :mod:`prefaudit.shaping`), a
verdict toggle (allow / suppress / amplify) and a note; each control calls one session intent
(``set_weight``, ``set_verdict``, ``set_note``) and is redrawn from the session's traits, so
every view of the session agrees. Rows are the session's selection plus any feature that carries
a weight (a weight never hides: everything that shapes the margins has a row). Removing a row
sets its weight to 0 and deselects it.

A row may be a **feature group** (type ``group:12`` in the add box): its slider weights the
group's score as one feature with its own margin scale (:mod:`prefaudit.audit.shaping`),
and the row shows the group's label and how many features it has.

The preview (:class:`ShaperPreview`, a small SVG anywidget) shows ``session.shaping.preview()``:
the predicted learning signal of each row's feature before and after shaping, the histogram of
pair margins with the dominated side shaded, how many pairs are dominated (m ≤ −τ: what
``filter`` would drop and ``flip`` would swap) and how many margins hit the cap. The histogram
travels as its bin counts (:func:`margin_bins`, exact, at fixed edges), not as one margin per pair:
at 260,000 pairs that is 80 integers instead of 1 MB per slider drop.

Example
-------
>>> view = session.shaper()                      # doctest: +SKIP
>>> session.set_weight("concept:length", -1.5)   # the length row's slider moves   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import anywidget
import ipywidgets as w
import numpy as np
import traitlets as t

from .. import ids
from ..shaping import VERDICTS
from ._assets import asset
from .base import SessionView

WEIGHT_RANGE = 3.0
#: Width of a margin-histogram bin, in logits. The edges are fixed (multiples of it from −cap to
#: +cap) so that the same margins always give the same counts, whatever else moved.
BIN_WIDTH = 0.1


def margin_bins(margins: np.ndarray, cap: float, width: float = BIN_WIDTH) -> np.ndarray:
    """Counts of ``margins`` in fixed bins of about ``width`` from −``cap`` to +``cap`` (int64).

    An even number of equal bins, so that 0 is an edge (the front end merges bins in pairs
    about it). The margins are capped at ±cap, so every one is counted (the last bin includes +cap, as in
    :func:`numpy.histogram`); a margin outside the range, or NaN, is an error, not dropped.

    >>> margin_bins(np.array([-4.0, -0.05, 0.0, 0.05, 4.0]), 4.0).sum()
    np.int64(5)
    """
    m = np.asarray(margins)
    n = 2 * max(1, round(float(cap) / width))
    counts, _ = np.histogram(m, bins=n, range=(-float(cap), float(cap)))
    if counts.sum() != m.size:
        raise ValueError(
            f"margin_bins: {m.size - int(counts.sum())} of {m.size} margins are outside ±{cap:g} or NaN."
        )
    return counts


def shaping_preview(session: Any, features: list[str]) -> Any:
    """The session's shaping preview for ``features``: a :class:`prefaudit.audit.shaping.Preview`."""
    return session.shaping.preview(features=features)


class ShaperPreview(anywidget.AnyWidget):
    """SVG preview of a shaping: signal before/after per feature and the margin histogram.

    ``bins`` are the histogram's counts at fixed edges (``BIN_WIDTH`` wide, from −``cap`` to
    +``cap``; :func:`margin_bins`), so what travels is what the eye sees, not a margin per pair;
    ``version`` increments once per update and the front end redraws on it.
    """

    _esm = asset("shaper_preview.js")
    _css = asset("shaper_preview.css")

    features = t.List().tag(sync=True)  # [{id, label, weight, before, after}]
    bins = t.List(t.Int()).tag(sync=True)  # counts of pair margins, fixed edges over ±cap
    n_pairs = t.Int(0).tag(sync=True)
    n_dominated = t.Int(0).tag(sync=True)  # m <= -threshold (prefaudit.shaping.dominated)
    threshold = t.Float(1.0).tag(sync=True)
    n_capped = t.Int(0).tag(sync=True)  # pairs whose summed margin exceeded ±cap
    cap = t.Float(4.0).tag(sync=True)
    version = t.Int(0).tag(sync=True)


class RowTag(anywidget.AnyWidget):
    """Invisible widget that writes ``data-feature`` onto its ``.pa-weight-row`` in the browser."""

    _esm = asset("rowtag.js")
    feature = t.Unicode("").tag(sync=True)


class WeightRow(w.HBox):
    """One feature's controls. Built by :class:`ShaperView`; callbacks are the view's intents."""

    def __init__(self, view: ShaperView, fid: str) -> None:
        super().__init__()
        self.feature, self.session = fid, view.session
        guard, session = view.guard, view.session
        self.add_class("pa-weight-row")
        self.name = w.Label(fid, layout=w.Layout(width="auto", min_width="120px"))
        self.name.add_class("pa-fid")
        self.label = w.Label(layout=w.Layout(flex="1 1 160px", min_width="0"))
        self.label.add_class("pa-flabel")
        self.slider = w.FloatSlider(
            value=0.0,
            min=-WEIGHT_RANGE,
            max=WEIGHT_RANGE,
            step=0.05,
            continuous_update=False,
            readout_format="+.2f",
            description="weight",
            layout=w.Layout(width="300px"),
        )
        self.slider.add_class("pa-weight")
        self.verdict = w.ToggleButtons(
            options=list(VERDICTS),
            value=None,
            style={"button_width": "86px"},
            tooltips=[
                "a legitimate preference: weight 0",
                "explain it away: negative weight",
                "teach it more: positive weight",
            ],
        )
        self.verdict.add_class("pa-verdict")
        self.note = w.Text(placeholder="note", continuous_update=False, layout=w.Layout(width="200px"))
        self.note.add_class("pa-note")
        self.remove = w.Button(
            description="remove",
            tooltip=f"weight 0 and drop {fid} from the selection",
            layout=w.Layout(width="auto"),
        )
        self.remove.add_class("pa-remove")

        def on_weight(change: Any) -> None:
            if change["new"] != session.weights.get(fid, 0.0):
                session.set_weight(fid, change["new"])

        def on_verdict(change: Any) -> None:
            if change["new"] != session.verdicts.get(fid):
                session.set_verdict(fid, change["new"])

        def on_note(change: Any) -> None:
            if change["new"] != session.notes.get(fid, ""):
                session.set_note(fid, change["new"])

        def on_remove(_b: Any) -> None:
            session.set_weight(fid, 0.0)
            session.decisions.deselect(fid)

        self.slider.observe(guard(on_weight), names="value")
        self.verdict.observe(guard(on_verdict), names="value")
        self.note.observe(guard(on_note), names="value")
        self.remove.on_click(guard(on_remove))
        self.tag = RowTag(feature=fid)
        self.layout.flex_flow = "row wrap"
        self.layout.align_items = "center"
        self.children = (self.tag, self.name, self.label, self.remove, self.slider, self.verdict, self.note)
        self.sync()

    def sync(self) -> None:
        """Show the session's weight, verdict, note and label for this feature."""
        s, fid = self.session, self.feature
        weight = float(s.weights.get(fid, 0.0))
        if abs(weight) > self.slider.max:  # widen rather than clamp: clamping would change the weight
            self.slider.min, self.slider.max = -abs(weight), abs(weight)
        self.slider.value = weight
        self.verdict.value = s.verdicts.get(fid)
        self.note.value = s.notes.get(fid, "")
        self.label.value = row_label(s, fid, s.label(fid))


def row_label(session: Any, fid: str, label: str) -> str:
    """A row's label; a group's says how many features it weights."""
    if not ids.is_group(fid):
        return label
    n = len(session.groups.members(fid))
    return f"{label} · {n} feature{'s' * (n != 1)}" if label else f"{n} feature{'s' * (n != 1)}"


class ShaperView(SessionView):
    """Weight sliders, verdicts and notes for the selected features, with a live preview.

    Parameters
    ----------
    session : AuditSession

    Attributes
    ----------
    rows : dict[str, WeightRow]
        Feature id → its row (``row.slider``, ``row.verdict``, ``row.note``, ``row.remove``).
    preview : ShaperPreview
    add_box : ipywidgets.Text
        Type a feature id, a concept name or a group id (``group:4``) and press Enter to add it.

    Example
    -------
    >>> view = ShaperView(session)                       # doctest: +SKIP
    >>> view.rows["concept:length"].slider.value = -1.0  # same as dragging   # doctest: +SKIP
    >>> session.weights                                  # doctest: +SKIP
    {'concept:length': -1.0}
    """

    css_class = "prefaudit-shaper"

    def __init__(self, session: Any, **kwargs: Any) -> None:
        super().__init__(session, **kwargs)
        self.rows: dict[str, WeightRow] = {}
        self.row_box = w.VBox()
        self.row_box.add_class("pa-weight-rows")
        self.add_box = w.Text(
            placeholder="add: sae:123, a concept name or group:4, then Enter",
            continuous_update=False,
            layout=w.Layout(width="340px"),
        )
        self.add_box.add_class("pa-add")
        self.add_box.observe(self.guard(self._on_add), names="value")
        self.empty = w.Label("No features selected: click points in the volcano or add one here.")
        self.preview = ShaperPreview()
        self.preview.add_class("pa-preview-widget")
        title = w.HTML(
            "<b>Reward shaping</b> — weight ≈ logits added where the feature is active: "
            "&lt; 0 suppresses, &gt; 0 amplifies"
        )
        self.set_body(title, self.empty, self.row_box, self.add_box, self.preview)
        self.observe_session(
            lambda _c: self._sync_rows(), "selection", "weights", "verdicts", "notes", "labels"
        )
        self.observe_session(lambda _c: self._update_preview(), "selection", "weights", "results_version")
        self._sync_rows()
        self._update_preview()

    def features(self) -> list[str]:
        """Row order: the selection, then weighted features (or groups) that are not selected."""
        sel = list(self.session.selection)
        return sel + [f for f in self.session.weights if f not in sel]

    # ------------------------------------------------------------------ state down
    def _sync_rows(self) -> None:
        wanted = self.features()
        for fid in [f for f in self.rows if f not in wanted]:
            self.rows.pop(fid).close()
        for fid in wanted:
            if fid not in self.rows:
                self.rows[fid] = WeightRow(self, fid)
            else:
                self.rows[fid].sync()
        self.row_box.children = tuple(self.rows[f] for f in wanted)
        self.empty.layout.display = "none" if wanted else "flex"

    def _update_preview(self) -> None:
        features = self.features()
        pv = shaping_preview(self.session, features)
        table = pv.table
        rows = [
            {
                "id": fid,
                "label": row_label(self.session, fid, label),
                "weight": float(weight),
                "before": float(before),
                "after": float(after),
            }
            for fid, label, weight, before, after in zip(
                table["feature"],
                table["label"],
                table["weight"],
                table["signal_before_z"],
                table["signal_after_z"],
                strict=True,
            )
        ]
        bins = margin_bins(pv.margins, pv.cap)
        p = self.preview
        with p.hold_sync():
            p.features = rows
            p.bins = bins.tolist()
            p.n_pairs = int(np.size(pv.margins))
            p.n_dominated = int(pv.n_dominated)
            p.threshold = float(pv.threshold)
            p.n_capped = int(pv.n_capped)
            p.cap = float(pv.cap)
            p.version += 1

    # ------------------------------------------------------------------ intents up
    def _on_add(self, change: Any) -> None:
        text = str(change["new"]).strip()
        if text:
            self.session.select_feature(text, focus=False)
            self.add_box.value = ""
