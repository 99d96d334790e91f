"""Fault injection, data and statistics: bad rows are rejected one by one, degenerate Δ is stated.

- A lone surrogate (``"\\ud800"``: valid JSON, not encodable text) in any field of one row
  rejects that row, with its index, field and where in the text; the others load. Every source
  and ``stream_pairs`` reach the same check; ``on_bad_row="raise"`` names row and field.
- A Δ equal in every pair (exactly, or up to float32 rounding) has ``d_z = ±inf`` and
  ``constant_delta = True`` instead of rounding noise (≈ 10¹⁶) or NaN; p stays scipy's.
- The volcano draws such features (clipped at the edge, their own marker, hover "constant Δ")
  and a NaN d_z with a finite q at 0, and says what it cannot draw.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

import prefaudit as pa
from prefaudit.errors import DataError
from prefaudit.pairs import load_pairs, stream_pairs
from prefaudit.stats import paired_tests
from prefaudit.views import VolcanoView
from prefaudit.views.figures import MARK_SYMBOLS, volcano_figure, volcano_points
from tests import tiny

LONE = "\ud800"
BAD_ROW = 2


# ---------------------------------------------------------------------- bad rows
def _rows(field: str | None = None, n: int = 6) -> list[dict[str, Any]]:
    """``n`` good text rows; with ``field``, row BAD_ROW holds a lone surrogate there at character 5."""
    rows = [
        {"prompt": f"question {i}", "chosen": f"yes {i}", "rejected": f"no {i}", "src": f"s{i}"}
        for i in range(n)
    ]
    if field is not None:
        rows[BAD_ROW][field] = "text " + LONE + " more"
    return rows


def _write(rows: list[dict[str, Any]], tmp_path: Path, kind: str) -> Any:
    """The rows as the source ``kind``; JSON files get the surrogate as a ``\\ud800`` escape."""
    if kind == "jsonl":
        path = tmp_path / "pairs.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="ascii")
        return path
    if kind == "json":
        path = tmp_path / "pairs.json"
        path.write_text(json.dumps(rows), encoding="ascii")
        return path
    if kind == "dataframe":  # pandas' default str columns cannot even hold it: object dtype
        return pd.DataFrame(rows, dtype=object)
    return rows


def _assert_rejected(report: Any, field: str, n: int = 6) -> None:
    assert report.n_read == n and report.n_kept == n - 1
    [bad] = report.rejected
    assert (bad.index, bad.field) == (BAD_ROW, field)
    assert bad.reason.startswith("lone surrogate U+D800 at character 5")
    assert LONE not in str(report)  # the report itself can be printed


@pytest.mark.parametrize("kind", ["jsonl", "json", "list", "dataframe"])
@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected", "src"])
def test_lone_surrogate_rejects_that_row_and_the_load_goes_on(tmp_path: Path, kind: str, field: str) -> None:
    pairs = load_pairs(_write(_rows(field), tmp_path, kind))
    _assert_rejected(pairs.report, field)
    assert pairs.df["pair_id"].tolist() == [0, 1, 3, 4, 5]
    # what was kept can be written anywhere: Arrow (parquet) and UTF-8
    pairs.df.to_parquet(tmp_path / "kept.parquet")
    assert json.dumps(pairs.to_records(), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("kind", ["jsonl", "list", "dataframe"])
@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected"])
def test_stream_pairs_rejects_the_same_row(tmp_path: Path, kind: str, field: str) -> None:
    source = _write(_rows(field), tmp_path, kind)
    stream = stream_pairs(source, batch_rows=2)
    ids = [chunk.df["pair_id"].tolist() for chunk in stream]
    assert ids == [[0, 1], [3], [4, 5]]
    _assert_rejected(stream.report, field)
    assert stream.report.rejected == load_pairs(source).report.rejected


def test_raise_mode_names_row_and_field(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"row 2, field 'chosen': lone surrogate U\+D800 at character 5"):
        load_pairs(_write(_rows("chosen"), tmp_path, "jsonl"), on_bad_row="raise")
    with pytest.raises(DataError, match=r"row 2, field 'rejected': lone surrogate"):
        list(stream_pairs(_rows("rejected"), on_bad_row="raise"))


def test_surrogate_inside_a_message_list_or_a_field_name(tmp_path: Path) -> None:
    conv = [
        {
            "chosen": [
                {"role": "user", "content": f"hi {i}"},
                {"role": "assistant", "content": f"hello {i}"},
            ],
            "rejected": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "go"}],
        }
        for i in range(4)
    ]
    conv[1]["chosen"][1]["content"] = "ok" + LONE
    pairs = load_pairs(conv)
    [bad] = pairs.report.rejected
    assert (bad.index, bad.field) == (1, "chosen")
    assert bad.reason.startswith("[1]['content']: lone surrogate U+D800 at character 2")

    rows = _rows()
    rows[BAD_ROW]["note" + LONE] = "x"  # a field name: it would become a column name
    pairs = load_pairs(_write(rows, tmp_path, "jsonl"))
    [bad] = pairs.report.rejected
    assert (bad.index, bad.field) == (BAD_ROW, "row") and "field name" in bad.reason
    assert list(pairs.df.columns) == ["pair_id", "prompt", "chosen", "rejected", "src"]
    with pytest.raises(
        DataError, match=r"column name 'src\\ud800' \(column 3, 0-based\): lone surrogate U\+D800"
    ):
        names = pd.Index(["prompt", "chosen", "rejected", "src" + LONE], dtype=object)
        load_pairs(pd.DataFrame([["p", "a", "b", 1], ["p", "c", "d", 2]], columns=names, dtype=object))


def test_iterable_dataset_reaches_the_same_check() -> None:
    datasets = pytest.importorskip("datasets")
    rows = _rows("chosen")
    ds = datasets.IterableDataset.from_generator(lambda: iter(rows))  # Python objects, no Arrow
    stream = stream_pairs(ds, batch_rows=4)
    stream.collect()
    _assert_rejected(stream.report, "chosen")
    _assert_rejected(load_pairs(ds).report, "chosen")


@pytest.mark.parametrize("kind", ["jsonl", "list", "parquet"])
def test_nul_and_control_characters_are_kept_and_nul_is_noted(tmp_path: Path, kind: str) -> None:
    rows = _rows()
    rows[1]["chosen"] = "binary\x00debris"
    rows[3]["rejected"] = "form\x0cfeed and escape \x1b[0m"
    if kind == "parquet":
        source: Any = tmp_path / "pairs.parquet"
        pd.DataFrame(rows).to_parquet(source)
    else:
        source = _write(rows, tmp_path, kind)
    pairs = load_pairs(source)
    assert len(pairs) == 6 and not pairs.report.rejected
    assert pairs.df["chosen"].iloc[1] == "binary\x00debris"
    assert any(
        n.startswith("1 rows: text holds NUL characters") and "pair_id 1" in n for n in pairs.report.notes
    )


# ---------------------------------------------------------------------- degenerate Δ
def _constant_columns(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Columns: 0 Δ ≡ 0.7, 1 Δ ≡ −0.5, 2 0.7 + float32 rounding, 3 base + 0.7 − base in float64,
    4 an ordinary feature, 5 never active, 6 0.7 with a real (float64) 1e-9 spread."""
    rng = np.random.default_rng(seed)
    base = rng.random(n)
    noise = 1e-9 * rng.standard_normal(n)
    chosen = np.column_stack(
        [
            np.full(n, 0.7),
            np.full(n, 1.0),
            (base + 0.7 + noise).astype(np.float32),
            base + 0.7,
            rng.random(n),
            np.zeros(n),
            base + 0.7 + noise,
        ]
    )
    rejected = np.column_stack(
        [np.zeros(n), np.full(n, 1.5), base.astype(np.float32), base, rng.random(n), np.zeros(n), base]
    )
    return chosen, rejected


@pytest.mark.parametrize("n", [5, 10, 30, 60])
def test_constant_delta_has_infinite_d_z_a_flag_and_scipys_p(n: int) -> None:
    chosen, rejected = _constant_columns(n)
    table = paired_tests(chosen, rejected, n_boot=20, n_splits=4)
    d_z = table["d_z"].to_numpy()
    assert d_z[0] == np.inf and d_z[1] == -np.inf and d_z[2] == np.inf and d_z[3] == np.inf
    assert table["constant_delta"].tolist() == [True, True, True, True, False, False, False]
    assert np.isnan(d_z[5])  # never active: untested, as before
    finite = d_z[np.isfinite(d_z)]
    assert (np.abs(finite) < 1e12).all()  # no rounding noise passed off as an effect
    # a real spread, however small, keeps its d_z
    d = chosen[:, 6] - rejected[:, 6]
    assert d_z[6] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-9)
    for j in (0, 1, 2, 3, 4, 6):
        assert table.loc[j, "p"] == pytest.approx(
            stats.wilcoxon(chosen[:, j] - rejected[:, j]).pvalue, rel=1e-12
        )
    if n >= 10:  # with 5 pairs the smallest exact p is 1/16
        assert (table.loc[:3, "q"] < 0.05).all()
    assert table.loc[0, "direction"] == "chosen" and table.loc[1, "direction"] == "rejected"
    t_test = paired_tests(chosen, rejected, test="t", n_boot=0, n_splits=0)
    assert t_test["constant_delta"].equals(table["constant_delta"])
    with warnings.catch_warnings():  # scipy warns of precision loss on the constant columns
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = [stats.ttest_rel(chosen[:, j], rejected[:, j]).pvalue for j in (0, 1, 2, 3, 4, 6)]
    np.testing.assert_allclose(t_test.loc[[0, 1, 2, 3, 4, 6], "p"], expected, rtol=1e-9, atol=1e-300)


def test_float32_inputs_and_sparse_inputs_give_the_same_flags() -> None:
    chosen, rejected = _constant_columns(40)
    dense = paired_tests(chosen, rejected, n_boot=0, n_splits=0)
    # float32 arrays as the user hands them over (SAE activations)
    c32 = (np.random.default_rng(3).random(40) + 0.7 + 1e-9).astype(np.float32)[:, None]
    r32 = (c32 - np.float32(0.7)).astype(np.float32)
    t32 = paired_tests(c32, r32, n_boot=0, n_splits=0)
    assert t32["d_z"].iloc[0] == np.inf and bool(t32["constant_delta"].iloc[0])
    sparse = paired_tests(sp.csr_array(chosen), sp.csc_array(rejected), n_boot=0, n_splits=0)
    pd.testing.assert_frame_equal(dense, sparse)


def test_numerically_zero_delta_is_no_effect_not_an_infinite_one() -> None:
    # c and r near 1000 in float32 differ by at most one unit in the last place: Δ is rounding
    rng = np.random.default_rng(0)
    r = (1000 + rng.random((50, 1))).astype(np.float32)
    towards = np.where(rng.random((50, 1)) < 0.5, np.inf, -np.inf).astype(np.float32)
    c = np.nextafter(r, towards)
    c[::3] = r[::3]
    assert c.dtype == np.float32 and 0 < np.count_nonzero(c - r) < 50
    table = paired_tests(c, r, n_boot=0, n_splits=0)
    assert bool(table["constant_delta"].iloc[0]) and table["d_z"].iloc[0] == 0.0


# ---------------------------------------------------------------------- views
@pytest.fixture(scope="module")
def constant_session() -> pa.AuditSession:
    """A concepts-only audit where concept:always is 0.7 in every chosen and 0 in every rejected."""
    rows = tiny.planted_pairs(40)
    chosen = {r["chosen"] for r in rows}
    s = pa.AuditSession(pa.load_pairs(rows), sae=False, cache_dir=False)
    s.add_concept("always", lambda text: 0.7 if text in chosen else 0.0)
    s.test(n_boot=50)
    return s


def test_session_results_flag_the_constant_feature(constant_session: pa.AuditSession) -> None:
    res = constant_session.results.set_index("feature")
    assert res.loc["concept:always", "d_z"] == np.inf and bool(res.loc["concept:always", "constant_delta"])
    assert res.loc["concept:always", "q"] < 0.05
    assert constant_session.significant().index[0] == res.index.get_loc("concept:always")


def test_volcano_draws_a_constant_delta_at_the_edge_with_its_own_marker(
    constant_session: pa.AuditSession,
) -> None:
    view = VolcanoView(constant_session)
    res = constant_session.results
    row = int(np.flatnonzero(res["feature"] == "concept:always")[0])
    trace = next(k for k, rows in enumerate(view._rows) if row in rows)
    i = int(np.flatnonzero(view._rows[trace] == row)[0])
    data = view.figure.data[trace]
    finite = np.abs(res["d_z"][np.isfinite(res["d_z"])])
    assert data.x[i] > finite.max()  # clipped just beyond every finite point
    assert data.marker.symbol[i] == MARK_SYMBOLS["+inf"]
    assert "constant Δ" in data.text[i] and "+∞" in data.text[i]
    assert "1 with constant Δ" in view.info.value
    # the static figure of the report shows it and says so
    fig = volcano_figure(constant_session)
    assert any("concept:always" in t for tr in fig.data for t in tr.text)
    assert "constant Δ" in fig.layout.title.text


def test_volcano_shows_a_nan_effect_with_a_q_and_counts_what_it_cannot_draw(
    constant_session: pa.AuditSession,
) -> None:
    # a results table saved by an older version: NaN d_z with q = 0, and one row without q
    res = constant_session.results.copy()
    res.loc[res["feature"] == "concept:always", "d_z"] = np.nan
    res.loc[res["feature"] == "concept:always", "q"] = 0.0
    pts = volcano_points(res)
    row = int(np.flatnonzero(res["feature"] == "concept:always")[0])
    hit = pts[pts["row"] == row]
    assert len(hit) == 1 and hit["x"].iloc[0] == 0.0 and hit["mark"].iloc[0] == "nan"
    assert hit["category"].iloc[0] == "chosen"
    res.loc[0, "q"] = np.nan
    pts = volcano_points(res)
    assert 0 not in set(pts["row"]) and pts.attrs["not_drawn"]["no_q"] == 1
    kept = constant_session.results
    constant_session.results = res
    constant_session.results_version += 1
    try:
        view = VolcanoView(constant_session)
        assert "undefined d_z drawn at 0" in view.info.value and "1 have no q" in view.info.value
    finally:
        constant_session.results = kept
        constant_session.results_version += 1


def test_heatmap_and_report_show_an_infinite_effect_as_such() -> None:
    from prefaudit.report.sections import num
    from prefaudit.views.topic_figures import TopicGrid, heatmap_trace

    d_z = np.array([[np.inf, 0.5], [np.nan, -1.5]])
    grid = TopicGrid(
        ["concept:a", "sae:1"],
        ["a", "one"],
        [0, 1],
        ["x", "y"],
        [10, 12],
        d_z,
        np.array([[1e-4, 0.2], [1.0, 0.01]]),
        np.array([[True, False], [False, True]]),
        0.05,
    )
    trace = heatmap_trace(grid)
    json.dumps(trace)  # the widget's state travels as JSON: no inf may reach it
    assert (trace["zmin"], trace["zmax"]) == (-1.5, 1.5)  # the scale of the finite cells
    assert trace["z"][0][0] == 1.5 and trace["z"][1][0] is None
    assert "constant Δ: d_z = +∞" in trace["customdata"][0][0][2]
    assert "untested" in trace["customdata"][1][0][2]
    assert (num(float("inf")), num(float("-inf")), num(float("nan"))) == ("+∞", "−∞", "–")
