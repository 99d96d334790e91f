"""Dashboard: the volcano, the pair drill-down, the weight sliders, the topic heatmap and the drivers, linked.

The views are linked only through the session (intents up, state down): clicking a point in the
volcano calls ``session.select_feature``, which sets ``focus`` (the drill-down and the drivers
follow it) and adds the feature to ``selection`` (the shaper grows a slider row for it);
clicking a heatmap cell sets ``topic_filter`` and ``focus`` (the drill-down shows that feature on
that topic's pairs). Any number of dashboards or single views of the same session stay in sync.

The header shows the lens fit (``session.sae_fit()``: explained variance, L0, dead latents on
this data's responses) with a warning below EV 0.7. Measuring it reads 128 responses through the
model, so it happens once, on the first dashboard build, and is cached on the session.

Example
-------
>>> session.dashboard()            # doctest: +SKIP
"""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as w

from .base import SessionView
from .drilldown import PairsView
from .drivers_view import DriversView
from .shaper import ShaperView
from .volcano import VolcanoView


class Dashboard(SessionView):
    """Volcano on top; below it the shaper with its preview and the drill-down, side by side.

    Parameters
    ----------
    session : AuditSession
    effect : str
        Initial x axis of the volcano (see :data:`prefaudit.views.figures.EFFECTS`).
    page_size : int
        Pairs per drill-down page.
    topics : bool or None
        The topic heatmap: ``None`` shows it when ``session.test(by="topic")`` has run (else a
        button builds it), ``True`` runs the per-topic tests now, ``False`` leaves it to the button.
    lens_fit : bool
        Measure ``session.sae_fit()`` for the header if it has not been measured (else a button does).

    Attributes
    ----------
    volcano : VolcanoView
    pairs : PairsView
    shaper : ShaperView
    heatmap : TopicHeatmapView or None (until built)
    drivers : DriversView
    lens : ipywidgets.HTML (``.pa-lens``; ``.pa-lens-warning`` when EV < 0.7)

    Example
    -------
    >>> dash = Dashboard(session)                       # doctest: +SKIP
    >>> dash.volcano.search.value = "sae:17"            # focus + selection   # doctest: +SKIP
    >>> dash.pairs.widget.feature, session.selection    # doctest: +SKIP
    ('sae:17', ['sae:17'])
    """

    css_class = "prefaudit-dashboard"

    def __init__(
        self,
        session: Any,
        *,
        effect: str = "d_z",
        page_size: int = 5,
        topics: bool | None = None,
        lens_fit: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        self.lens = w.HTML()
        self.lens.add_class("pa-lens")
        self.lens_button = w.Button(description="Measure lens fit", tooltip="session.sae_fit()")
        self.lens_button.add_class("pa-lens-button")
        self.lens_button.on_click(self.guard(lambda _b: self._show_lens(measure=True)))
        self._show_lens(measure=lens_fit)
        # The volcano gets the full width (views/plotly_widget.py keeps the plot as wide as its container).
        self.volcano = VolcanoView(session, effect=effect)
        self.shaper = ShaperView(session, layout=w.Layout(flex="1 1 420px", min_width="0"))
        self.pairs = PairsView(session, page_size=page_size, layout=w.Layout(flex="2 1 560px", min_width="0"))
        below = w.HBox(
            [self.shaper, self.pairs],
            layout=w.Layout(flex_flow="row wrap", align_items="flex-start", width="100%"),
        )
        # What a run with the default config and the current weights would train on — asked for on
        # demand, because planning tokenises every pair (and loads the model for a concepts-only audit).
        self.plan = w.HTML("", layout=w.Layout(margin="0 0 0 8px"))
        self.plan.add_class("pa-plan")
        self.plan_button = w.Button(
            description="Plan a run", tooltip="session.plan_training(): counts per pair"
        )
        self.plan_button.add_class("pa-plan-button")
        self.plan_button.on_click(self.guard(self._show_plan))
        plan_row = w.HBox([self.plan_button, self.plan], layout=w.Layout(align_items="center"))
        self.heatmap: Any = None
        self.topics_box = w.VBox()
        self.topics_button = w.Button(description="Topic heatmap", tooltip='session.test(by="topic")')
        self.topics_button.add_class("pa-heatmap-button")
        self.topics_button.on_click(self.guard(lambda _b: self._show_heatmap()))
        if topics or (topics is None and session.topics.results("topic") is not None):
            self._show_heatmap()
        else:
            self.topics_box.children = (self.topics_button,)
        self.drivers = DriversView(session)
        lens_row = w.HBox([self.lens_button, self.lens], layout=w.Layout(align_items="center"))
        self.set_body(lens_row, self.volcano, plan_row, self.topics_box, below, self.drivers)

    def _show_heatmap(self) -> None:
        from .heatmap import TopicHeatmapView  # plotly's second FigureWidget: only when asked for

        self.heatmap = TopicHeatmapView(self.session, compute=True)
        self.topics_box.children = (self.heatmap,)

    def _show_lens(self, *, measure: bool) -> None:
        """The header: the SAE's fit on this data (measured now if ``measure`` and not yet cached)."""
        s = self.session
        self.lens_button.layout.display = "none"
        if not s.uses_sae:
            self.lens.value = "<span class='pa-lens-none'>lens: text concepts only (no SAE to fit)</span>"
            return
        cached = (128, 0) in s.lens_fit.all()
        if not cached and not measure:
            self.lens.value = "lens fit not measured yet (reads 128 responses through the model)"
            self.lens_button.layout.display = None
            return
        start = time.perf_counter()
        fit = s.sae_fit()
        took = time.perf_counter() - start
        note = (
            ""
            if cached
            else f" · measured on this first dashboard build in {took:.1f} s, cached: session.sae_fit()"
        )
        ev = fit.explained_variance
        text = (
            f"<span class='pa-lens-fit' data-ev='{ev:.4f}'>lens fit on {fit.n_responses} responses "
            f"({fit.n_tokens:,} tokens): explained variance <b>{ev:.2f}</b> · L0 {fit.l0:.1f} · "
            f"dead {100 * fit.dead_fraction:.1f} %{html.escape(note)}</span>"
        )
        if fit.warning:
            text += (
                "<div class='pa-lens-warning' style='color:#b00020;font-weight:bold'>"
                f"⚠ {html.escape(fit.warning)}</div>"
            )
        self.lens.value = text

    def _show_plan(self, _button: Any = None) -> None:
        plan = self.session.plan_training()
        self.plan.value = f"<span class='pa-plan-summary'>{html.escape(plan.summary())}</span>"
