"""Volcano view: typed arrays, click / lasso / search, redraws, escaping, 65k features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import prefaudit as pa
from prefaudit.views import VolcanoView
from prefaudit.views.figures import CATEGORIES, volcano_points
from prefaudit.views.volcano import SELECTED_TRACE
from tests import tiny, views_fixtures
from tests.views_fixtures import click, lasso, point_of

session, hostile = views_fixtures.session, views_fixtures.hostile  # shared fixtures


# ---------------------------------------------------------------------- volcano
def test_volcano_draws_every_varying_feature_as_typed_arrays(session):
    view = VolcanoView(session)
    res = session.results
    drawn = np.concatenate(view._rows)
    expected = np.flatnonzero(np.isfinite(res["d_z"]) & np.isfinite(res["q"]))
    assert sorted(drawn) == sorted(expected)
    state = view.figure.get_state()
    for k in range(len(CATEGORIES)):
        x = state["_widget_data"][k]["x"]
        assert isinstance(x, dict) and isinstance(x["buffer"], memoryview) and x["dtype"] == "float64"
        rows = view._rows[k]
        np.testing.assert_allclose(np.frombuffer(x["buffer"], dtype=np.float64), res["d_z"].to_numpy()[rows])
        text = state["_widget_data"][k]["text"]
        assert len(text) == len(rows) and all(
            f"<b>{f}</b>" in t for f, t in zip(res["feature"].iloc[rows], text, strict=True)
        )
        assert "customdata" not in state["_widget_data"][k]  # 2-D arrays would bloat the JS→Python echo
    # colours: significant 'chosen' features in the chosen trace
    chosen_trace = next(n for n, (key, _, _) in enumerate(CATEGORIES) if key == "chosen")
    chosen = set(res["feature"].iloc[view._rows[chosen_trace]])
    assert "concept:url" in chosen and "concept:flattery" in chosen
    assert all(res.set_index("feature").loc[f, "q"] < 0.05 for f in chosen)


def test_volcano_click_selects_and_focuses_and_rings_the_point(session):
    view = VolcanoView(session)
    click(view, *point_of(view, "concept:url"))
    assert session.selection == ["concept:url"] and session.focus == "concept:url"
    click(view, *point_of(view, "concept:apology"))
    assert session.selection == ["concept:url", "concept:apology"] and session.focus == "concept:apology"
    ring = view.figure.data[SELECTED_TRACE]
    x_apology = session.results.set_index("feature").loc["concept:apology", "d_z"]
    assert len(ring.x) == 2 and np.isclose(ring.x[1], x_apology)
    assert ring.marker.color[1] != ring.marker.color[0]  # the focus ring differs


def test_volcano_lasso_adds_features_smallest_q_first_up_to_the_cap(session):
    session.select_feature("concept:length")
    view = VolcanoView(session, max_lasso=2)
    picked = ["concept:apology", "concept:flattery", "concept:url"]
    lasso(view, [point_of(view, f) for f in picked])
    q = session.results.set_index("feature")["q"]
    best_two = sorted(picked, key=lambda f: q[f])[:2]
    assert session.selection == ["concept:length", *best_two]
    assert view.last_error is None
    assert all(
        view.figure.data[k].unselected.marker.opacity == view.figure.data[k].marker.opacity for k in range(3)
    )


def test_volcano_effect_dropdown_changes_x(session):
    view = VolcanoView(session)
    view.effect.value = "rank_biserial"
    for k, rows in enumerate(view._rows):
        np.testing.assert_allclose(view.figure.data[k].x, session.results["rank_biserial"].to_numpy()[rows])
    assert "rank-biserial" in view.figure.layout.xaxis.title.text
    with pytest.raises(ValueError, match="effect"):
        VolcanoView(session, effect="p")


def test_volcano_search_by_id_and_label(session):
    session.set_label("concept:url", "links to websites")
    view = VolcanoView(session)
    view.search.value = "WEBSITES"  # one label match: selected
    assert session.selection == ["concept:url"]
    view.search.value = "sae:1"  # no SAE in this session: nothing
    assert "No feature matches" in view.info.value
    view.search.value = "concept:"  # many matches: offered, highlighted, not selected
    assert session.selection == ["concept:url"]
    assert len(view.matches.options) == len(session.results) and view.matches.layout.display == "flex"
    assert view.matches.options[0][1] == session.results.sort_values("q").iloc[0]["feature"]
    assert len(view.figure.data[3].x) == len(np.concatenate(view._rows))
    view.matches.value = "concept:refusal"
    assert session.selection[-1] == "concept:refusal" and session.focus == "concept:refusal"
    view.search.value = "apology"
    assert session.focus == "concept:apology"


def test_volcano_redraws_when_results_change(session):
    view = VolcanoView(session)
    n_before = sum(len(d.x) for d in view.figure.data[: len(CATEGORIES)])
    session.set_label("concept:url", "a new label")
    assert any("a new label" in t for d in view.figure.data[: len(CATEGORIES)] for t in d.text)
    session.add_concept("great", r"great question")
    assert "No results yet" in view.info.value
    assert sum(len(d.x) for d in view.figure.data[: len(CATEGORIES)]) == 0
    session.test(n_boot=50)
    assert sum(len(d.x) for d in view.figure.data[: len(CATEGORIES)]) == n_before + 1
    click(view, *point_of(view, "concept:great"))
    assert session.focus == "concept:great"


def test_volcano_before_test_builds_and_fills_later():
    s = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(20)), sae=False, cache_dir=False)
    view = VolcanoView(s)
    assert "session.test()" in view.info.value
    s.test(n_boot=20)
    assert sum(len(d.x) for d in view.figure.data[: len(CATEGORIES)]) > 0


def test_volcano_hover_text_is_escaped(hostile):
    view = VolcanoView(hostile)
    texts = [t for d in view.figure.data[: len(CATEGORIES)] for t in d.text]
    joined = "".join(texts)
    assert "<script" not in joined and "<img" not in joined
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in joined and "&lt;img src=x" in joined


def synthetic_results(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = rng.normal(0, 0.3, n)
    q = np.clip(np.exp(-np.abs(d) * rng.uniform(5, 40, n)), 1e-30, 1)
    return pd.DataFrame(
        {
            "feature": [f"sae:{i}" for i in range(n)],
            "source": "sae",
            "label": [f"tok{i % 97}" for i in range(n)],
            "n_active": rng.integers(1, 500, n),
            "delta_mean": d * 0.5,
            "d_z": d,
            "rank_biserial": np.tanh(d),
            "delta_len_ctrl": d * 0.4,
            "q": q,
            "direction": np.where(d > 0, "chosen", "rejected"),
        }
    )


def test_volcano_65536_features_as_binary_buffers():
    from prefaudit.features.encoded import EncodedFeatures, SidePooled

    n, d = 30, 65_536
    rng = np.random.default_rng(1)

    def side():
        import scipy.sparse as sp

        v = sp.random(n, d, density=0.001, format="csr", random_state=rng, dtype=np.float32)
        z = np.zeros(v.nnz, np.int32)
        return SidePooled(v, z, z, np.zeros((n, 4), np.float32), np.full(n, 10, np.int32), np.zeros(n, bool))

    s = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(n)), sae="synthetic", concepts=False, cache_dir=False
    )
    s.encoded = EncodedFeatures(side(), side(), "max")
    s.results = synthetic_results(d)
    s.results_version += 1
    view = VolcanoView(s)
    assert sum(len(r) for r in view._rows) == d
    state = view.figure.get_state()
    for k in range(len(CATEGORIES)):
        for axis in ("x", "y"):
            assert isinstance(state["_widget_data"][k][axis]["buffer"], memoryview)
        assert len(state["_widget_data"][k]["text"]) == len(view._rows[k])
    last = max(range(len(CATEGORIES)), key=lambda k: len(view._rows[k]))
    click(view, last, len(view._rows[last]) - 1)
    assert s.focus == s.results["feature"].iloc[view._rows[last][-1]]
    pts = volcano_points(s.results)
    assert np.isfinite(pts["y"]).all()
