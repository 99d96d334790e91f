"""The topic × feature heatmap as plain data and plotly dicts (no widgets, no session).

:func:`topic_grid` turns the long table of ``session.test(by="topic")`` (one row per topic ×
feature, ``q`` = Benjamini–Hochberg over **all** those tests) into a grid of the strongest
features; :func:`heatmap_trace` / :func:`heatmap_layout` draw it. Cells are ``d_z`` within the
topic (red: chosen higher, blue: rejected higher), a ✱ marks q < α, a grey cell had no non-zero
Δ in its topic (untested). Labels are dataset text (topic words come from the prompts): every
string that reaches plotly is escaped, so it shows as text.

Example
-------
>>> import pandas as pd
>>> long = pd.DataFrame({"topic": [0, 0, 1, 1], "topic_label": ["a", "a", "b", "b"],
...     "feature": ["concept:x", "concept:y"] * 2, "label": ["x", "y"] * 2,
...     "d_z": [0.9, 0.1, -0.2, 0.0], "q": [0.01, 0.5, 0.3, 1.0], "n_pairs": [20, 20, 20, 20],
...     "n_nonzero": [20, 20, 20, 0]})
>>> g = topic_grid(long, n_features=2)
>>> g.features, g.topics, g.significant.tolist()
(['concept:x', 'concept:y'], [0, 1], [[True, False], [False, False]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import ids
from .figures import MAX_LABEL, hover_escape

#: Colour of d_z: blue (rejected higher) – white (0) – red (chosen higher), symmetric about 0.
COLORSCALE = "RdBu_r"
SIGNIFICANT_MARK = "✱"


@dataclass
class TopicGrid:
    """What the heatmap shows: rows = features, columns = topics (arrays ``(n_features, n_topics)``).

    ``d_z`` is NaN where the feature had no non-zero Δ in the topic (untested; ``q`` = 1 there).
    """

    features: list[str]
    feature_labels: list[str]
    topics: list[int]
    topic_labels: list[str]
    topic_sizes: list[int]
    d_z: np.ndarray
    q: np.ndarray
    significant: np.ndarray
    alpha: float

    def cell(self, row: int, col: int) -> tuple[str, int]:
        """(feature id, topic number) of a cell."""
        return self.features[int(row)], self.topics[int(col)]


def topic_grid(
    long: pd.DataFrame,
    *,
    n_features: int = 12,
    features: Sequence[str] | None = None,
    alpha: float = ids.ALPHA,
) -> TopicGrid:
    """The heatmap's grid from the ``test(by="topic")`` table.

    ``features`` fixes the rows (in that order); otherwise the ``n_features`` features with a
    significant cell in some topic come first, then by their largest |d_z| in any tested topic.
    """
    need = {"topic", "topic_label", "feature", "label", "d_z", "q", "n_pairs", "n_nonzero"}
    missing = need - set(long.columns)
    if missing:
        raise ValueError(f"the topic table lacks column(s) {sorted(missing)}: pass session.test(by='topic').")
    tested = long["n_nonzero"].to_numpy() > 0
    d_z = np.where(tested, long["d_z"].to_numpy(dtype=np.float64), np.nan)
    frame = long.assign(
        _dz=d_z, _abs=np.abs(np.nan_to_num(d_z)), _sig=tested & (long["q"].to_numpy() < alpha)
    )
    if features is None:
        per = frame.groupby("feature", sort=False).agg(sig=("_sig", "max"), strength=("_abs", "max"))
        per = per[per["strength"] > 0]
        order = per.sort_values(["sig", "strength"], ascending=[False, False], kind="stable")
        rows = list(order.index[: max(int(n_features), 0)])
    else:
        rows = list(dict.fromkeys(features))
        unknown = [f for f in rows if f not in set(frame["feature"])]
        if unknown:
            raise ValueError(f"feature(s) {unknown[:5]} are not in the topic table.")
    topics = frame.drop_duplicates("topic").sort_values("topic")
    cols = [int(t) for t in topics["topic"]]
    sub = frame[frame["feature"].isin(rows)]

    def pivot(column: str, fill: float) -> np.ndarray:
        table = sub.pivot(index="feature", columns="topic", values=column)
        return table.reindex(index=rows, columns=cols).to_numpy(dtype=np.float64, na_value=fill)

    labels = sub.drop_duplicates("feature").set_index("feature")["label"].reindex(rows).fillna("")
    return TopicGrid(
        features=rows,
        feature_labels=[str(x) for x in labels],
        topics=cols,
        topic_labels=[str(x) for x in topics["topic_label"]],
        topic_sizes=[int(x) for x in topics["n_pairs"]],
        d_z=pivot("_dz", np.nan),
        q=pivot("q", 1.0),
        significant=pivot("_sig", 0.0) > 0,
        alpha=float(alpha),
    )


def _short(text: str) -> str:
    return text[:MAX_LABEL] + ("…" if len(text) > MAX_LABEL else "")


def row_ticks(grid: TopicGrid) -> list[str]:
    """Row tick labels: the feature id and its label (escaped)."""
    return [
        hover_escape(f if not lab else f"{f} · {_short(lab)}")
        for f, lab in zip(grid.features, grid.feature_labels, strict=True)
    ]


def column_ticks(grid: TopicGrid) -> list[str]:
    """Column tick labels: topic number, its words and size (escaped; words on a second line)."""
    return [
        f"{t}: {hover_escape(_short(lab))}<br>n = {n}"
        for t, lab, n in zip(grid.topics, grid.topic_labels, grid.topic_sizes, strict=True)
    ]


def heatmap_trace(grid: TopicGrid) -> dict[str, Any]:
    """One plotly heatmap trace: x = topic column, y = feature row (numbers; ticks carry the names)."""
    finite = np.isfinite(grid.d_z)
    lim = float(np.abs(grid.d_z[finite]).max()) if finite.any() else 1.0
    lim = lim if lim > 0 else 1.0
    # A constant Δ within a topic has d_z = ±inf: drawn at the scale's end, and said so on hover.
    z = np.where(np.isinf(grid.d_z), np.sign(grid.d_z) * lim, grid.d_z)
    n_rows, n_cols = grid.d_z.shape
    custom = np.empty((n_rows, n_cols, 3), dtype=object)
    for i in range(n_rows):
        for j in range(n_cols):
            dz, q = grid.d_z[i, j], grid.q[i, j]
            custom[i, j] = [
                hover_escape(grid.features[i]),
                f"{grid.topics[j]}: {hover_escape(_short(grid.topic_labels[j]))} (n = {grid.topic_sizes[j]})",
                _cell_text(dz, q),
            ]
    return {
        "type": "heatmap",
        # Plain lists: an int64 array travels to the browser as a typed array plotly cannot read.
        "x": list(range(n_cols)),
        "y": list(range(n_rows)),
        # None, not NaN, for an untested cell: NaN is not JSON, and a widget's state travels as JSON.
        "z": [[float(v) if np.isfinite(v) else None for v in row] for row in z],
        "zmid": 0.0,
        "zmin": -lim,
        "zmax": lim,
        "colorscale": COLORSCALE,
        "colorbar": {"title": {"text": "d_z"}, "thickness": 12},
        "xgap": 2,
        "ygap": 2,
        "text": np.where(grid.significant, SIGNIFICANT_MARK, "").tolist(),
        "texttemplate": "%{text}",
        "customdata": custom.tolist(),
        "hovertemplate": "<b>%{customdata[0]}</b><br>topic %{customdata[1]}<br>%{customdata[2]}<extra></extra>",
        "hoverongaps": True,
        "showscale": True,
    }


def _cell_text(dz: float, q: float) -> str:
    if np.isinf(dz):
        return f"constant Δ: d_z = {'+∞' if dz > 0 else '−∞'} · q {q:.3g}"
    return "untested (no non-zero Δ)" if not np.isfinite(dz) else f"d_z {dz:+.2f} · q {q:.3g}"


def heatmap_layout(grid: TopicGrid, *, row_height: int = 26) -> dict[str, Any]:
    """Axes with the escaped names as ticks; height grows with the number of rows."""
    n_rows, n_cols = grid.d_z.shape
    return {
        "height": max(220, 110 + row_height * n_rows),
        "template": "plotly_white",
        "plot_bgcolor": "#e6e6e6",  # shows through untested (NaN) cells: grey
        "margin": {"l": 10, "r": 10, "t": 30, "b": 60},
        "xaxis": {
            "tickmode": "array",
            "tickvals": list(range(n_cols)),
            "ticktext": column_ticks(grid),
            "side": "bottom",
            "showgrid": False,
            "zeroline": False,
        },
        "yaxis": {
            "tickmode": "array",
            "tickvals": list(range(n_rows)),
            "ticktext": row_ticks(grid),
            "autorange": "reversed",
            "automargin": True,
            "showgrid": False,
            "zeroline": False,
        },
        "title": {
            "text": f"d_z within each topic · {SIGNIFICANT_MARK} q < {grid.alpha:g} (BH over all topic × feature tests)",
            "font": {"size": 12},
            "x": 0,
        },
        "hovermode": "closest",
        "dragmode": False,
    }
