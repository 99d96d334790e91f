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

from ..stats.agreement import AGREEMENT_COLUMNS
from .base import SessionView
from .figures import _fmt, scatter_svg, table_html

# The agreement table as shown: every column but the fitted scale (the scatters draw it).
AGREEMENT_SHOWN = [c for c in AGREEMENT_COLUMNS if c != "scale"]


def agreement_html(agreement: pd.DataFrame) -> str:
    """The agreement table, with a line that says how to read it."""
    if not len(agreement):
        return "<i>no agreement rows</i>"
    cols = [c for c in ["run", *AGREEMENT_SHOWN] if c in agreement.columns]
    return (
        "<div class='pa-agreement'>"
        + table_html(agreement, cols, max_rows=len(agreement))
        + "<div class='pa-agreement-note'>r with its bootstrap 95% CI; null: the interval r falls in when "
        "the two sides of every unit are exchanged at random; ceiling: the best r the observation noise "
        "allows (split halves); R² after a scale fitted through the origin.</div></div>"
    )


def channel_scatters(result: Any) -> list[w.HTML]:
    """Generation (standardised shift) and reward (loadings) scatters, each with its fitted and identity line."""
    t, out = result.table, []
    scale = dict(zip(result.agreement["channel"], result.agreement["scale"], strict=True))
    out.append(
        w.HTML(
            scatter_svg(
                t["predicted_z"],
                t["observed_z"],
                list(t["feature"]),
                highlight=list(result.weights),
                xlabel="generation: predicted (z)",
                ylabel="observed shift (z)",
                fit=scale.get("generation"),
            )
        )
    )
    if t["observed_loading"].notna().any():
        out.append(
            w.HTML(
                scatter_svg(
                    t["predicted_loading"],
                    t["observed_loading"],
                    list(t["feature"]),
                    highlight=list(result.weights),
                    xlabel="reward: predicted loading",
                    ylabel="observed loading of ρ",
                    fit=scale.get("reward"),
                    same_scale=False,
                )
            )
        )
    return out


class VerifyView(SessionView):
    """What one run learned against the prediction: the agreement table, one scatter per channel, the features."""

    css_class = "prefaudit-verify"

    def __init__(self, result: Any, *, max_rows: int = 25, **kwargs: Any) -> None:
        super().__init__(result.session, **kwargs)
        self.result = result
        t = result.table
        head = result.headline()
        ci = f" [{_fmt(head.get('r_low'))}, {_fmt(head.get('r_high'))}]" if head else ""
        null = f" · null [{_fmt(head.get('null_low'))}, {_fmt(head.get('null_high'))}]" if head else ""
        self.summary = w.HTML(
            f"<b>{html.escape(result.run_name)}</b> ({html.escape(result.intervention)}) · "
            f"{html.escape(str(head.get('channel', '')))} r = {_fmt(result.r)}{ci}{null} · "
            f"R² = {_fmt(result.r2, '{:.3f}')} · sign agreement = "
            f"{_fmt(result.sign_agreement, '{:.0%}')} ({result.n_sign} features) · {result.n_features} "
            f"features evaluated · {result.n_prompts} prompts"
        )
        self.agreement = w.HTML(agreement_html(result.agreement))
        scatters = channel_scatters(result)
        self.scatter = scatters[0]
        self.table = w.HTML(table_html(t, list(t.columns), max_rows=max_rows))
        self.set_body(self.summary, self.agreement, w.HBox(scatters), self.table)


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
            table_html(
                s, ["label", "run", "intervention", "channel", "r", "r_low", "r_high", "r2", "n_prompts"]
            )
            + note
        )
        self.agreement = w.HTML(agreement_html(c.agreement))
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
        self.set_body(self.summary, self.agreement, w.HBox([self.scatter, self.table]))
