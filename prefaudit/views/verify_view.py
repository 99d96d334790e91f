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
import math
from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd

from .base import SessionView


def _fmt(x: Any, spec: str = "{:+.3f}") -> str:
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return html.escape(str(x))
    return "–" if not math.isfinite(xf) else spec.format(xf)


def scatter_svg(
    x: Sequence[float],
    y: Sequence[float],
    names: Sequence[str],
    *,
    highlight: Sequence[str] = (),
    xlabel: str = "predicted (z)",
    ylabel: str = "observed (z)",
    size: int = 300,
) -> str:
    """Inline SVG scatter with the diagonal y = x; hover a point for its feature (``<title>``)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    m, pad = 34, 8
    lim = float(max(np.abs(xs[ok]).max(initial=0), np.abs(ys[ok]).max(initial=0), 1e-6)) * 1.1
    inner = size - m - pad

    def px(v: float) -> float:
        return m + (v + lim) / (2 * lim) * inner

    def py(v: float) -> float:
        return pad + (lim - v) / (2 * lim) * inner

    out = [
        f'<svg class="pa-scatter" width="{size}" height="{size}" xmlns="http://www.w3.org/2000/svg" font-size="10">'
    ]
    out.append(f'<rect x="{m}" y="{pad}" width="{inner}" height="{inner}" fill="#fcfcfc" stroke="#ccc"/>')
    out.append(
        f'<line x1="{px(-lim):.1f}" y1="{py(0):.1f}" x2="{px(lim):.1f}" y2="{py(0):.1f}" stroke="#eee"/>'
    )
    out.append(
        f'<line x1="{px(0):.1f}" y1="{py(-lim):.1f}" x2="{px(0):.1f}" y2="{py(lim):.1f}" stroke="#eee"/>'
    )
    out.append(
        f'<line class="pa-diagonal" x1="{px(-lim):.1f}" y1="{py(-lim):.1f}" x2="{px(lim):.1f}" y2="{py(lim):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"/>'
    )
    hl = set(highlight)
    for xi, yi, name, good in zip(xs, ys, names, ok, strict=True):
        if not good:
            continue
        color, r = ("#dc322f", 4.5) if name in hl else ("#268bd2", 3)
        out.append(
            f'<circle cx="{px(xi):.1f}" cy="{py(yi):.1f}" r="{r}" fill="{color}" fill-opacity="0.75">'
            f"<title>{html.escape(name)}: {xi:+.3f}, {yi:+.3f}</title></circle>"
        )
    out.append(
        f'<text x="{m + inner / 2:.0f}" y="{size - 4}" text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="10" y="{pad + inner / 2:.0f}" text-anchor="middle" transform="rotate(-90 10 {pad + inner / 2:.0f})">'
        f"{html.escape(ylabel)}</text>"
    )
    out.append(f'<text x="{m + 2}" y="{pad + 10}" fill="#999">±{lim:.2g}</text></svg>')
    return "".join(out)


def table_html(df: pd.DataFrame, columns: Sequence[str], *, max_rows: int = 25) -> str:
    """A compact HTML table of ``columns`` (numbers signed to 3 decimals, text escaped)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for _, row in df.head(max_rows).iterrows():
        cells = []
        for c in columns:
            v = row[c]
            if isinstance(v, (bool, np.bool_)):
                cells.append("✓" if v else "✗")
            elif isinstance(v, (int, np.integer)):
                cells.append(str(int(v)))
            elif isinstance(v, (int, float, np.number)):
                cells.append(_fmt(v))
            else:
                cells.append(html.escape(str(v))[:60])
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    more = (
        f"<tr><td colspan='{len(columns)}'><i>… {len(df) - max_rows} more</i></td></tr>"
        if len(df) > max_rows
        else ""
    )
    return f"<table class='pa-verify-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}{more}</tbody></table>"


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
