"""Pure figure code of the views and the report: data in, plotly dicts / SVG / HTML strings out.

Nothing here imports ipywidgets, anywidget or traitlets (plotly only inside
:func:`volcano_figure`), so the static report (``prefaudit.report``) and scripts can use it
without a notebook. The widget modules (``volcano``, ``drilldown``, ``verify_view``,
``run_panel``) import from here and only add the interactive parts.

Where each chart is drawn: the verify scatter (:func:`scatter_svg`) and the run sparkline
(:func:`sparkline_svg`) are built here, in Python, as static SVG strings: they change only when
a result or a log event arrives, and the same markup can be embedded in the report. The shaper's
preview histogram stays in ``widgets/shaper_preview.js``: it redraws in the browser from a
binary buffer of margins at slider speed, which a round trip through Python would not keep up
with.

Example
-------
>>> from prefaudit.views.figures import fmt_seconds, regex_segments
>>> fmt_seconds(75.2)
'1:15'
>>> import re
>>> regex_segments("a bb a", re.compile("b+"))
[['a ', 0.0], ['bb', 1.0], [' a', 0.0]]
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import ids

__all__ = [
    "CATEGORIES",
    "EFFECTS",
    "MAX_LABEL",
    "SIGNIFICANT",
    "concept_naming",
    "concept_regex",
    "fmt_seconds",
    "group_marker_size",
    "hover_escape",
    "regex_segments",
    "scatter_svg",
    "sparkline_svg",
    "table_html",
    "token_segments",
    "volcano_figure",
    "volcano_layout",
    "volcano_note",
    "volcano_points",
    "volcano_traces",
]

# ---------------------------------------------------------------------- volcano
#: Effect columns the x axis can show, with their axis titles.
EFFECTS: dict[str, str] = {
    "d_z": "Cohen's d_z (paired, chosen − rejected)",
    "rank_biserial": "rank-biserial r (chosen − rejected)",
    "delta_mean": "mean Δ (chosen − rejected)",
    "delta_len_ctrl": "length-controlled Δ (chosen − rejected)",
}
#: How the significance threshold reads in legends and captions (``"q < 0.05"``).
SIGNIFICANT = f"q < {ids.ALPHA}"
#: Main traces in drawing order (grey first, so coloured points sit on top).
CATEGORIES = (
    ("ns", "not significant", "#b4b4b4"),
    ("rejected", f"more in rejected ({SIGNIFICANT})", "#d62728"),
    ("chosen", f"more in chosen ({SIGNIFICANT})", "#1f77b4"),
)
MAX_LABEL = 80  # hover labels are cut here: 65k long labels would bloat every redraw


def hover_escape(text: str) -> str:
    """Escape text for plotly hover labels, which render a subset of HTML (``<b>``, ``<br>``, ...)."""
    return html.escape(str(text), quote=False)


#: Marker symbols of points whose effect is not a finite number (``volcano_points``' ``mark``).
MARK_SYMBOLS = {"": "circle", "+inf": "triangle-right", "-inf": "triangle-left", "nan": "x"}


def volcano_points(results: pd.DataFrame, effect: str = "d_z") -> pd.DataFrame:
    """The plottable rows of a results table: ``row`` (position in ``results``), ``x``, ``y``, ``category``, ``mark``.

    No tested feature is left out for its numbers: an effect of ±inf (a Δ constant in every
    pair, ``constant_delta``) is drawn clipped just beyond the largest finite |x| (``mark``
    ``"+inf"``/``"-inf"``), and a NaN effect of a tested feature at x = 0 (``mark`` ``"nan"``).
    Left out, and counted in ``attrs["not_drawn"]``: untested features whose effect is NaN
    (``"untested"``: no non-zero Δ; without an ``n_nonzero`` column, q ≥ 1) and rows whose q is
    not a number (``"no_q"``: nothing to place them at). ``q = 0`` (underflow) is drawn at the
    smallest positive q so that it stays on the chart.
    """
    if effect not in EFFECTS:
        raise ValueError(f"effect={effect!r}; choose one of {', '.join(EFFECTS)}.")
    if effect not in results.columns:
        raise ValueError(f"The results table has no {effect!r} column.")
    x = results[effect].to_numpy(dtype=np.float64)
    q = results["q"].to_numpy(dtype=np.float64)
    untested = results["n_nonzero"].to_numpy() == 0 if "n_nonzero" in results.columns else ~(q < 1)
    has_q = np.isfinite(q)
    keep = has_q & ~(np.isnan(x) & untested)
    finite = np.abs(x[keep & np.isfinite(x)])
    edge = 1.15 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    mark = np.select([np.isnan(x), x == np.inf, x == -np.inf], ["nan", "+inf", "-inf"], "")
    x = np.where(np.isnan(x), 0.0, np.clip(x, -edge, edge))
    positive = q[keep & (q > 0)]
    floor = positive.min() if positive.size else 1e-300
    y = -np.log10(np.clip(q, floor, 1.0))
    sig = q < ids.ALPHA
    direction = results["direction"].to_numpy()
    category = np.where(
        sig & (direction == "chosen"), "chosen", np.where(sig & (direction == "rejected"), "rejected", "ns")
    )
    rows = np.flatnonzero(keep)
    pts = pd.DataFrame(
        {"row": rows, "x": x[rows], "y": y[rows], "category": category[rows], "mark": mark[rows]}
    )
    pts.attrs["not_drawn"] = {"untested": int((has_q & ~keep).sum()), "no_q": int((~has_q).sum())}
    return pts


def volcano_note(pts: pd.DataFrame, effect: str = "d_z") -> str:
    """What the chart cannot show as plain points, in words ("" when everything is plain)."""
    marks = pts["mark"].value_counts()
    n_inf, n_nan = int(marks.get("+inf", 0) + marks.get("-inf", 0)), int(marks.get("nan", 0))
    not_drawn = pts.attrs.get("not_drawn", {})
    parts = [
        f"{n_inf:,} with constant Δ ({effect} = ±∞) drawn at the edge as ▶/◀" if n_inf else "",
        f"{n_nan:,} with undefined {effect} drawn at 0 as ✕" if n_nan else "",
        f"{not_drawn['untested']:,} never vary and are not drawn" if not_drawn.get("untested") else "",
        f"{not_drawn['no_q']:,} have no q and cannot be drawn" if not_drawn.get("no_q") else "",
    ]
    return "; ".join(p for p in parts if p)


def _mark_text(mark: str, effect: str) -> str:
    if mark == "nan":
        return f"<br><i>{effect} undefined: drawn at 0</i>"
    return f"<br><i>constant Δ (no spread): {effect} = {mark[0]}∞, drawn at the edge</i>"


def group_marker_size(n_members: np.ndarray) -> np.ndarray:
    """Marker diameter (px) of a group point: grows with √members, 8 px for one, at most 40."""
    return np.minimum(8.0 + 3.0 * np.sqrt(np.maximum(np.asarray(n_members, dtype=np.float64), 1) - 1), 40.0)


def volcano_traces(
    results: pd.DataFrame,
    effect: str = "d_z",
    *,
    groups: bool = False,
    points: pd.DataFrame | None = None,
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Plotly trace dicts for the three main categories, and each trace's rows in ``results``.

    Coordinates are numpy arrays (plotly sends them as typed arrays); hover text is escaped.
    ``groups=True``: ``results`` is a ``session.groups()`` table, one point per group whose
    size grows with its ``n_members`` (:func:`group_marker_size`). ``points``: this table's
    :func:`volcano_points`, when the caller has them already (one pass over the table, not two).
    """
    pts = volcano_points(results, effect) if points is None else points
    size = 9 if len(pts) < 500 else 6 if len(pts) < 5000 else 4
    traces, rows = [], []
    fmt = ".3f" if effect != "delta_mean" else ".3g"
    # Numbers go into the per-point text, not a 2-D customdata: the FigureWidget echoes every
    # trace's computed data back to Python, and 2-D typed arrays make that echo explode in size.
    template = "%{text}<br>" + effect + ": %{x:" + fmt + "}<extra></extra>"
    id_col, count_col, count_name = (
        ("group", "n_members", "members") if groups else ("feature", "n_active", "n_active")
    )
    for key, name, color in CATEGORIES:
        sub = pts[pts["category"] == key]
        r = sub["row"].to_numpy()
        opacity = 0.8 if key != "ns" else 0.5
        res = results.iloc[r]
        marks = sub["mark"].to_numpy()
        text = [
            f"<b>{hover_escape(f)}</b><br>{hover_escape(lab[:MAX_LABEL] + ('…' if len(lab) > MAX_LABEL else ''))}"
            f"<br>Δ mean {dm:.3g} · q {q:.2e} · {count_name} {int(na)}"
            for f, lab, dm, q, na in zip(
                res[id_col],
                res["label"].fillna("").astype(str),
                res["delta_mean"],
                res["q"],
                res[count_col],
                strict=True,
            )
        ]
        marker = {
            "color": color,
            "size": group_marker_size(res[count_col].to_numpy()) if groups else size,
            "opacity": opacity,
        }
        special = marks != ""
        if special.any():
            # x of these points is where they are drawn, not their value: the text says it, so
            # this trace's template does not show x (all its points carry their value in text).
            value = res[effect].to_numpy(dtype=np.float64)
            text = [
                t + (_mark_text(m, effect) if m else f"<br>{effect}: {v:{fmt}}")
                for t, m, v in zip(text, marks, value, strict=True)
            ]
            marker["symbol"] = [MARK_SYMBOLS[m] for m in marks]
        traces.append(
            {
                "type": "scattergl",
                "mode": "markers",
                "name": name,
                "x": sub["x"].to_numpy(np.float64),
                "y": sub["y"].to_numpy(np.float64),
                "text": text,
                "hovertemplate": "%{text}<extra></extra>" if special.any() else template,
                "marker": marker,
                # No dimming after a box/lasso: the rings (the session's selection) are the truth.
                "unselected": {"marker": {"opacity": opacity}},
            }
        )
        rows.append(r)
    return traces, rows


def volcano_layout(effect: str = "d_z", *, height: int = 460) -> dict[str, Any]:
    """Axes, threshold lines (q = ``ids.ALPHA`` and no effect) and legend of the volcano."""
    y_thr = -np.log10(ids.ALPHA)
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
                "text": f"q = {ids.ALPHA}",
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

    results = session.require_results()
    pts = volcano_points(results, effect)
    traces, _ = volcano_traces(results, effect, points=pts)
    layout = volcano_layout(effect, height=height)
    note = volcano_note(pts, effect)
    if note:  # said on the figure itself: the report has no other place next to it
        layout["title"] = {"text": note, "font": {"size": 11}, "x": 0, "xanchor": "left"}
        layout["margin"]["t"] = 70
    return go.Figure(data=traces, layout=layout)


# ---------------------------------------------------------------------- drill-down
def concept_regex(session: Any, fid: str) -> re.Pattern[str] | None:
    """The compiled regex whose matches a text concept counts, or ``None`` if it has none."""
    if not ids.is_concept(fid):
        return None
    name = ids.concept_name(fid)
    concept = next((c for c in session.concepts if c.name == name), None)
    return getattr(concept, "regex", None)


def concept_naming(session: Any, fid: str) -> dict[str, str]:
    """How the drill-down names a concept: ``description`` and, for a regex concept, ``pattern``.

    A regex concept is named by its description; the regular expression itself is kept apart
    (the drill-down shows it on demand). A regex concept added without a description gets
    ``"matches of /<regex>/"`` from :func:`prefaudit.features.concepts.regex_concept`: it is
    named after the concept instead. ``{}`` for SAE features and unknown concepts.
    """
    if not ids.is_concept(fid):
        return {}
    name = ids.concept_name(fid)
    concept = next((c for c in session.concepts if c.name == name), None)
    if concept is None:
        return {}
    rx = getattr(concept, "regex", None)
    description = str(concept.description or "")
    if rx is None:
        return {"description": description}
    if not description or description == f"matches of /{rx.pattern}/":
        description = f"matches of the {name!r} pattern"
    return {"description": description, "pattern": rx.pattern}


def regex_segments(text: str, rx: re.Pattern[str]) -> list[list[Any]]:
    """``[[text, 1.0 | 0.0], ...]`` covering ``text``: matches of ``rx`` are 1."""
    out: list[list[Any]] = []
    pos = 0
    for m in rx.finditer(text):
        if m.end() == m.start():
            continue
        if m.start() > pos:
            out.append([text[pos : m.start()], 0.0])
        out.append([m.group(0), 1.0])
        pos = m.end()
    if pos < len(text):
        out.append([text[pos:], 0.0])
    return out


def token_segments(text: str, tokens: list[str], acts: np.ndarray) -> list[list[Any]]:
    """``[[token, act], ...]``; text beyond the model's truncation is one segment with ``act=None``."""
    out = [[tok, round(float(a), 4)] for tok, a in zip(tokens, acts, strict=True)]
    read = "".join(tokens)
    if len(read) < len(text) and text.startswith(read):
        out.append([text[len(read) :], None])
    return out


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------- verification
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
    fit: float | None = None,
    same_scale: bool = True,
) -> str:
    """Inline SVG scatter with the identity line y = x; hover a point for its feature (``<title>``).

    ``fit``: the slope k of a line through the origin (``obs ≈ k·pred``) drawn solid (class
    ``pa-fit``). ``same_scale=False`` gives each axis its own range (for quantities in different
    units, such as reward loadings, where only the fitted line is meaningful).
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    m, pad = 34, 8
    xlim = float(max(np.abs(xs[ok]).max(initial=0), 1e-12)) * 1.1
    ylim = float(max(np.abs(ys[ok]).max(initial=0), 1e-12)) * 1.1
    if same_scale:
        xlim = ylim = max(xlim, ylim, 1e-6)
    lim = xlim
    inner = size - m - pad

    def px(v: float) -> float:
        return m + (v + xlim) / (2 * xlim) * inner

    def py(v: float) -> float:
        return pad + (ylim - v) / (2 * ylim) * inner

    out = [
        f'<svg class="pa-scatter" width="{size}" height="{size}" xmlns="http://www.w3.org/2000/svg" font-size="10">'
    ]
    out.append(f'<rect x="{m}" y="{pad}" width="{inner}" height="{inner}" fill="#fcfcfc" stroke="#ccc"/>')
    out.append(
        f'<line x1="{px(-lim):.1f}" y1="{py(0):.1f}" x2="{px(lim):.1f}" y2="{py(0):.1f}" stroke="#eee"/>'
    )
    out.append(
        f'<line x1="{px(0):.1f}" y1="{py(-ylim):.1f}" x2="{px(0):.1f}" y2="{py(ylim):.1f}" stroke="#eee"/>'
    )
    d = min(xlim, ylim)
    out.append(
        f'<line class="pa-diagonal" x1="{px(-d):.1f}" y1="{py(-d):.1f}" x2="{px(d):.1f}" y2="{py(d):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"/>'
    )
    if fit is not None and np.isfinite(fit):
        # Clip the fitted line to the box: it leaves through the side it meets first.
        end = min(xlim, ylim / abs(fit)) if fit != 0 else xlim
        out.append(
            f'<line class="pa-fit" x1="{px(-end):.1f}" y1="{py(-fit * end):.1f}" x2="{px(end):.1f}" '
            f'y2="{py(fit * end):.1f}" stroke="#b58900" stroke-width="1.5"/>'
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
    scale = f"±{lim:.2g}" if same_scale else f"x ±{xlim:.2g}, y ±{ylim:.2g}"
    out.append(f'<text x="{m + 2}" y="{pad + 10}" fill="#999">{scale}</text></svg>')
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


# ---------------------------------------------------------------------- training runs
def fmt_seconds(s: float | None) -> str:
    """``75.2`` -> ``'1:15'``; ``None`` -> ``'–'``."""
    if s is None or not math.isfinite(s):
        return "–"
    s = round(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def sparkline_svg(series: dict[str, Sequence[float]], *, width: int = 320, height: int = 70) -> str:
    """Inline SVG with one polyline per series (each scaled to its own range), with a legend."""
    colors = ("#268bd2", "#d33682", "#859900")
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    parts.append(f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>')
    for k, (name, values) in enumerate(series.items()):
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        color = colors[k % len(colors)]
        parts.append(
            f'<text x="{6 + 110 * k}" y="12" font-size="10" fill="{color}">{html.escape(name)}</text>'
        )
        if len(vals) < 2:
            continue
        lo, hi = min(vals), max(vals)
        span = hi - lo or 1.0
        n = len(vals)
        pts = " ".join(
            f"{4 + (width - 8) * i / (n - 1):.1f},{height - 4 - (height - 20) * (v - lo) / span:.1f}"
            for i, v in enumerate(vals)
        )
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
    parts.append("</svg>")
    return "".join(parts)
