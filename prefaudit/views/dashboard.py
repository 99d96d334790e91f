"""Dashboard: the volcano, the pair drill-down and the weight sliders of one session, linked.

The views are linked only through the session (intents up, state down): clicking a point in the
volcano calls ``session.select_feature``, which sets ``focus`` (the drill-down follows it) and
adds the feature to ``selection`` (the shaper grows a slider row for it). Any number of
dashboards or single views of the same session stay in sync.

Example
-------
>>> session.dashboard()            # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from .base import SessionView
from .drilldown import PairsView
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

    Attributes
    ----------
    volcano : VolcanoView
    pairs : PairsView
    shaper : ShaperView

    Example
    -------
    >>> dash = Dashboard(session)                       # doctest: +SKIP
    >>> dash.volcano.search.value = "sae:17"            # focus + selection   # doctest: +SKIP
    >>> dash.pairs.widget.feature, session.selection    # doctest: +SKIP
    ('sae:17', ['sae:17'])
    """

    css_class = "prefaudit-dashboard"

    def __init__(self, session: Any, *, effect: str = "d_z", page_size: int = 5, **kwargs: Any) -> None:
        super().__init__(session, **kwargs)
        # The volcano gets the full width: plotly sizes itself once, from its container at render.
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
        self.set_body(self.volcano, plan_row, below)

    def _show_plan(self, _button: Any = None) -> None:
        plan = self.session.plan_training()
        self.plan.value = f"<span class='pa-plan-summary'>{html.escape(plan.summary())}</span>"
