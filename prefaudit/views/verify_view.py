"""Views of a verification: predicted vs observed shift (scatter with the diagonal) and the table.

``VerifyView`` shows one :class:`~prefaudit.verify.VerifyResult`, led by one figure — the
predicted against the observed concept shift in the policy's own generations
(:func:`concept_shift_figure`) and one sentence saying what it means (:func:`shift_sentence`);
``CompareView`` two runs side by side (summary table, observed shift of run a against run b,
per-feature table). Both are read-only: they compute nothing and only render the result objects.

Example
-------
>>> session.verify(run)                 # displays VerifyView     # doctest: +SKIP
>>> session.compare(vanilla, shaped)    # displays CompareView    # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd

from .base import SessionView
from .figures import _fmt, scatter_svg, table_html

# The agreement table as shown: verify.channel_base.VERIFY_COLUMNS but the fitted scale (the scatters
# draw it); spelled out because views sit below verification and do not import it.
AGREEMENT_SHOWN = [
    "channel",
    "level",
    "r",
    "r_low",
    "r_high",
    "r2",
    "null_low",
    "null_high",
    "ceiling",
    "n_features",
    "n_units",
    "baseline_r",
    "baseline_low",
    "baseline_high",
    "ess",
]
#: Points named on the figure: the largest distances from the fitted line.
N_OUTLIERS = 5


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
        "allows (split halves); R² after a scale fitted through the origin; level: single features or "
        "feature clusters (a cluster's value is the mean of its members'); baseline: the r of a policy that "
        "knows only the labels (ρ = ±1 on chosen/rejected; 0 by construction within pairs), with its CI — "
        "a reward row shows learning beyond the labels only above it; ess: the importance weights' "
        "effective sample size.</div></div>"
    )


def shift_points(result: Any) -> tuple[pd.DataFrame, str]:
    """The figure's points: one per cluster when the run has clusters, else one per evaluated feature.

    Columns ``unit``, ``label``, ``predicted``, ``observed``, ``se``; and the level's name.
    """
    c = getattr(result, "clusters", None)
    if c is not None and len(c):
        pts = pd.DataFrame(
            {
                "unit": c["cluster"],
                "label": c["label"],
                "predicted": c["predicted_z"],
                "observed": c["observed_z"],
                "se": c["observed_se_z"],
            }
        )
        return pts, "cluster"
    t = result.table
    pts = pd.DataFrame(
        {
            "unit": t["feature"],
            "label": t["label"],
            "predicted": t["predicted_z"],
            "observed": t["observed_z"],
            "se": t["observed_se_z"],
        }
    )
    return pts, "feature"


def _generation_row(result: Any, level: str) -> dict[str, Any]:
    ag = result.agreement
    if not len(ag) or "level" not in ag.columns:
        return {}
    hit = ag[(ag["channel"] == "generation") & (ag["level"] == level)]
    return hit.iloc[0].to_dict() if len(hit) else {}


def shift_sentence(result: Any) -> str:
    """One sentence: did the generations move, concept by concept, where the audit predicted?"""
    pts, level = shift_points(result)
    row = _generation_row(result, level)
    r = float(row.get("r", math.nan))
    if not math.isfinite(r):
        return f"Too few samples or {level}s that vary to compare the generations' shift with the prediction."
    lo, hi = float(row["r_low"]), float(row["r_high"])
    n_lo, n_hi = float(row["null_low"]), float(row["null_high"])
    beyond = math.isfinite(lo) and math.isfinite(n_hi) and lo > n_hi
    verdict = (
        "moved where the audit predicted"
        if beyond and r > 0
        else "did not move along the prediction more than chance allows"
    )
    return (
        f"Over {len(pts)} {level}s, the policy's own generations {verdict}: r = {r:.2f} "
        f"(95% CI {lo:.2f} to {hi:.2f}; no learning gives {n_lo:.2f} to {n_hi:.2f}) "
        f"from {int(row.get('n_units', 0))} samples."
    )


def concept_shift_figure(result: Any, *, size: int = 420) -> str:
    """SVG: predicted (x) against observed (y) shift in the generations, in the audit's sd.

    One point per cluster (per feature without clusters) with its 95% interval (±1.96 s.e.), the
    identity line y = x (dashed), the line fitted through the origin (solid; its slope is the
    row's ``scale``) and the :data:`N_OUTLIERS` points farthest from it named.
    """
    pts, level = shift_points(result)
    row = _generation_row(result, level)
    x, y = pts["predicted"].to_numpy(dtype=float), pts["observed"].to_numpy(dtype=float)
    se = np.nan_to_num(pts["se"].to_numpy(dtype=float))
    ok = np.isfinite(x) & np.isfinite(y)
    m, pad = 44, 10
    inner = size - m - pad
    xlim = max(float(np.abs(x[ok]).max(initial=0)) * 1.1, 1e-6)
    ylim = max(float(np.abs(np.r_[y[ok] - 1.96 * se[ok], y[ok] + 1.96 * se[ok]]).max(initial=0)) * 1.05, 1e-6)

    def px(v: float) -> float:
        return m + (v + xlim) / (2 * xlim) * inner

    def py(v: float) -> float:
        return pad + (ylim - np.clip(v, -ylim, ylim)) / (2 * ylim) * inner

    out = [
        f'<svg class="pa-shift-figure" width="{size}" height="{size}" xmlns="http://www.w3.org/2000/svg" '
        'font-size="10">',
        f'<rect x="{m}" y="{pad}" width="{inner}" height="{inner}" fill="#fcfcfc" stroke="#ccc"/>',
        f'<line x1="{px(-xlim):.1f}" y1="{py(0):.1f}" x2="{px(xlim):.1f}" y2="{py(0):.1f}" stroke="#eee"/>',
        f'<line x1="{px(0):.1f}" y1="{py(-ylim):.1f}" x2="{px(0):.1f}" y2="{py(ylim):.1f}" stroke="#eee"/>',
    ]
    d = min(xlim, ylim)
    out.append(
        f'<line class="pa-diagonal" x1="{px(-d):.1f}" y1="{py(-d):.1f}" x2="{px(d):.1f}" y2="{py(d):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"><title>y = x</title></line>'
    )
    k = float(row.get("scale", math.nan))
    if math.isfinite(k):
        end = min(xlim, ylim / abs(k)) if k != 0 else xlim
        out.append(
            f'<line class="pa-fit" x1="{px(-end):.1f}" y1="{py(-k * end):.1f}" x2="{px(end):.1f}" '
            f'y2="{py(k * end):.1f}" stroke="#b58900" stroke-width="1.5"><title>fitted: observed = '
            f"{k:.3g} × predicted</title></line>"
        )
    resid = np.where(ok, np.abs(y - (k if math.isfinite(k) else 0.0) * x), -np.inf)
    named = set(np.argsort(-resid)[: min(N_OUTLIERS, int(ok.sum()))].tolist())
    for i in np.flatnonzero(ok):
        tip = html.escape(
            f"{pts['unit'].iloc[i]} {pts['label'].iloc[i]}: predicted {x[i]:+.3f}, observed "
            f"{y[i]:+.3f} ± {1.96 * se[i]:.3f}"
        )
        cx, cy = px(x[i]), py(y[i])
        out.append(
            f'<line x1="{cx:.1f}" y1="{py(y[i] - 1.96 * se[i]):.1f}" x2="{cx:.1f}" '
            f'y2="{py(y[i] + 1.96 * se[i]):.1f}" stroke="#93a1a1"/>'
        )
        out.append(
            f'<circle class="pa-point" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="#268bd2" '
            f'fill-opacity="0.8"><title>{tip}</title></circle>'
        )
        if i in named:
            name = f"{pts['unit'].iloc[i]} {str(pts['label'].iloc[i])[:28]}".strip()
            anchor = "end" if cx > m + inner * 0.6 else "start"
            dx = -5 if anchor == "end" else 5
            out.append(
                f'<text class="pa-outlier" x="{cx + dx:.1f}" y="{cy - 4:.1f}" text-anchor="{anchor}">'
                f"{html.escape(name)}</text>"
            )
    out.append(
        f'<text x="{m + inner / 2:.0f}" y="{size - 4}" text-anchor="middle">predicted shift ({level}, z)</text>'
    )
    out.append(
        f'<text x="12" y="{pad + inner / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad + inner / 2:.0f})">observed shift in generations (z)</text>'
    )
    out.append(
        f'<text x="{m + 3}" y="{pad + 11}" fill="#999">x ±{xlim:.2g}, y ±{ylim:.2g}; bars: 95% CI</text></svg>'
    )
    return "".join(out)


def planted_html(result: Any) -> str:
    """The planted concepts' rates in base and trained samples, by detector, with the detector check."""
    p = getattr(result, "planted", None)
    if p is None or not len(p):
        return ""
    cols = [
        "concept",
        "detector",
        "unit",
        "base",
        "trained",
        "rise",
        "rise_se",
        "n",
        "audit_tpr",
        "audit_fpr",
        "audit_auc",
    ]
    return (
        "<div class='pa-planted'><b>Planted concepts in the generations</b>"
        + table_html(p, cols, max_rows=len(p))
        + "<div class='pa-agreement-note'>rate of samples carrying the concept (base → trained, same prompts "
        "and seed), rise ± s.e.; pattern: its text pattern; cluster: its SAE cluster firing (catches "
        "paraphrases), checked on the audit's responses against the pattern (TPR, FPR, AUC).</div></div>"
    )


def drift_html(result: Any) -> str:
    """One line: how far the policy moved from its reference."""
    d = getattr(result, "drift", None) or {}
    if not d:
        return ""
    return (
        "<div class='pa-drift'><b>drift</b>: ρ = log π_θ − log π_ref on held-out responses "
        f"mean {_fmt(d.get('rho_mean'), '{:.1f}')}, sd {_fmt(d.get('rho_sd'), '{:.1f}')} "
        f"(range {_fmt(d.get('rho_min'), '{:.0f}')} … {_fmt(d.get('rho_max'), '{:.0f}')}); KL on the verification "
        f"prompts {_fmt(d.get('kl'), '{:.2f}')} ± {_fmt(d.get('kl_se'), '{:.2f}')} nats per sample; importance "
        f"weights' effective sample size {_fmt(d.get('ess'), '{:.1f}')} of {_fmt(d.get('n_samples'), '{:.0f}')}.</div>"
    )


def channel_scatters(result: Any) -> list[w.HTML]:
    """Generation (standardised shift) and reward (loadings) scatters, each with its fitted and identity line."""
    t, out = result.table, []
    ag = result.agreement
    feat = ag[ag["level"] == "feature"] if "level" in ag.columns else ag
    scale = dict(zip(feat["channel"], feat["scale"], strict=True))
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
        # Leads the view: what the policy's own generations did, concept by concept, against the prediction.
        self.figure = w.HTML(
            f"<div class='pa-shift'>{concept_shift_figure(result)}"
            f"<p class='pa-shift-sentence'>{html.escape(shift_sentence(result))}</p></div>"
        )
        scatters = channel_scatters(result)
        self.scatter = scatters[0]
        self.planted = w.HTML(planted_html(result) + drift_html(result))
        self.table = w.HTML(table_html(t, list(t.columns), max_rows=max_rows))
        self.set_body(self.figure, self.summary, self.agreement, self.planted, w.HBox(scatters), self.table)


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
