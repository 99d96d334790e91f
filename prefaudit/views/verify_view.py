"""Views of a verification: predicted vs observed shift (scatter with the diagonal) and the table.

``VerifyView`` shows one :class:`~prefaudit.verify.VerifyResult`; ``CompareView`` two runs side by
side (summary table, observed shift of run a against run b, per-feature table). Both are
read-only: they compute nothing and only render the result objects.

Example
-------
>>> session.verify(run)                 # displays VerifyView     # doctest: +SKIP
>>> session.compare(vanilla, shaped)    # displays CompareView    # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w
import pandas as pd

from .base import SessionView
from .figures import _fmt, scatter_svg, table_html


class VerifyView(SessionView):
    """Predicted vs observed shift of one run: summary, scatter with the diagonal, table."""

    css_class = "prefaudit-verify"

    def __init__(self, result: Any, *, max_rows: int = 25, **kwargs: Any) -> None:
        super().__init__(result.session, **kwargs)
        self.result = result
        t = result.table
        self.summary = w.HTML(
            f"<b>{html.escape(result.run_name)}</b> ({html.escape(result.intervention)}) · "
            f"r = {_fmt(result.r)} · R² = {_fmt(result.r2, '{:.3f}')} · sign agreement = "
            f"{_fmt(result.sign_agreement, '{:.0%}')} ({result.n_sign} features) · {result.n_prompts} prompts"
        )
        self.scatter = w.HTML(
            scatter_svg(t["predicted_z"], t["observed_z"], list(t["feature"]), highlight=list(result.weights))
        )
        self.table = w.HTML(table_html(t, list(t.columns), max_rows=max_rows))
        self.set_body(self.summary, w.HBox([self.scatter, self.table]))


class CompareView(SessionView):
    """Two verified runs: summary table, observed shift of a vs b (diagonal = no difference), features."""

    css_class = "prefaudit-compare"

    def __init__(self, comparison: Any, *, max_rows: int = 25, **kwargs: Any) -> None:
        super().__init__(comparison.a.session, **kwargs)
        self.comparison = comparison
        c = comparison
        s = c.summary.reset_index()
        note = (
            ""
            if c.same_prompts
            else "<br><b>note</b>: the runs were verified on different prompts or settings."
        )
        self.summary = w.HTML(
            table_html(s, ["label", "run", "intervention", "r", "r2", "sign_agreement", "n_prompts"]) + note
        )
        highlight = list(dict.fromkeys([*c.a.weights, *c.b.weights]))
        self.scatter = w.HTML(
            scatter_svg(
                c.table["observed_z_a"],
                c.table["observed_z_b"],
                list(c.table["feature"]),
                highlight=highlight,
                xlabel=f"observed (z): {c.a.run_name}",
                ylabel=f"observed (z): {c.b.run_name}",
            )
        )
        cols = [
            "feature",
            "label",
            "predicted_z_a",
            "observed_z_a",
            "predicted_z_b",
            "observed_z_b",
            "difference",
        ]
        order = c.table.reindex(c.table["difference"].abs().sort_values(ascending=False).index)
        first = c.table[c.table["feature"].isin(highlight)]
        shown = pd.concat([first, order[~order["feature"].isin(highlight)]])
        self.table = w.HTML(table_html(shown, cols, max_rows=max_rows))
        self.set_body(self.summary, w.HBox([self.scatter, self.table]))
