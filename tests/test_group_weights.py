"""A weight on a feature group: one feature with its own margin scale, the same in every consumer.

Tiny model + tiny SAE (``tests/tiny.py``); references are computed from ``session.groups.scores``
(the score ``session.groups()`` tests) with :func:`prefaudit.shaping.margin_scale`, not from the
code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit

import prefaudit as pa
from prefaudit import ids
from prefaudit.errors import ConfigError
from prefaudit.features.matrix import FeatureMatrix
from prefaudit.interventions import get as get_intervention
from prefaudit.interventions import shape_pairs
from prefaudit.shaping import MARGIN_CAP, margin_scale
from prefaudit.views import ShaperView
from tests import tiny
from tests.tiny import plant_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def grouped(tiny_model_dir, tiny_sae_dir, tiny_cache_dir):
    session = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(40)),
        model=tiny_model_dir,
        sae=tiny_sae_dir,
        cache_dir=tiny_cache_dir,
        batch_size=4,
        shard_size=16,
    )
    session.encode(progress=False)
    plant_blocks(session)  # the tiny random SAE's own features form no group
    return session


@pytest.fixture()
def session(grouped):
    grouped.decisions.set_weights({})
    grouped.decisions.set_selection([])
    yield grouped
    grouped.decisions.set_weights({})
    grouped.decisions.set_selection([])


def _group(session, min_members: int = 2) -> str:
    """The largest group whose score differs between pairs (has a margin scale)."""
    table = session.groups()
    for g in table.sort_values("n_members", ascending=False)["group"]:
        d = session.groups.scores(g)["delta"].to_numpy()
        if margin_scale(d[:, None])[0] > 0 and len(session.groups.members(g)) >= min_members:
            return g
    pytest.skip("the tiny SAE has no multi-member group that varies")


def _reference_margins(delta_g: np.ndarray, w: float) -> np.ndarray:
    return np.clip(w * delta_g / margin_scale(delta_g[:, None])[0], -MARGIN_CAP, MARGIN_CAP)


def test_a_group_weight_is_its_score_with_its_own_margin_scale(session):
    g = _group(session)
    session.set_weight(g, -1.5)
    assert session.weights == {g: -1.5}
    delta_g = session.groups.scores(g)["delta"].to_numpy()
    pv = session.shaping.preview(features=[g])
    pred = pv.table
    np.testing.assert_allclose(pv.margins, _reference_margins(delta_g, -1.5), atol=1e-8)
    # Not "each member at the weight": that would be the sum over members of w·Δⱼ/sⱼ.
    members = [session.space.column(f) for f in session.groups.members(g)]
    each = session.matrix.delta[:, members].toarray() @ (-1.5 / session.matrix.margin_scale[members])
    assert not np.allclose(pv.margins, np.clip(each, -MARGIN_CAP, MARGIN_CAP))
    # The group's row: the signal of its score's Δ, before and after, in sd(Δᵍ) units.
    row = pred.iloc[0]
    m = pv.margins
    assert row["feature"] == g and row["weight"] == -1.5
    assert row["label"] == session.groups().set_index("group").loc[g, "label"]
    assert row["signal_before"] == pytest.approx(delta_g.mean())
    assert row["signal_after"] == pytest.approx((expit(m) * delta_g).sum() / expit(m).sum())
    assert row["sd"] == pytest.approx(np.std(delta_g, ddof=1))
    assert pv.n_dominated == int((m <= -1.0).sum())


def test_group_and_feature_weights_add_and_rows_keep_the_requested_order(session):
    g = _group(session)
    member = session.groups.members(g)[0]
    both_pv = session.shaping.preview(
        {g: 1.0, "concept:length": -0.5}, features=["concept:length", g, member]
    )
    both = both_pv.table
    assert both["feature"].tolist() == ["concept:length", g, member]
    assert both["weight"].tolist() == [-0.5, 1.0, 0.0]
    alone_g = session.shaping.preview({g: 1.0}, features=[]).margins
    alone_l = session.shaping.preview({"concept:length": -0.5}, features=[]).margins
    raw = np.clip(alone_g, -MARGIN_CAP, MARGIN_CAP)  # each alone is far below the cap here
    assert np.abs(alone_g).max() < MARGIN_CAP and np.abs(alone_l).max() < MARGIN_CAP
    np.testing.assert_allclose(both_pv.margins, np.clip(raw + alone_l, -MARGIN_CAP, MARGIN_CAP), atol=1e-8)
    ref = session.predict({g: 1.0, "concept:length": -0.5}, features=[member]).iloc[0]
    assert both.iloc[2]["signal_after"] == pytest.approx(ref["signal_after"])


def test_other_pairs_read_elsewhere_use_the_same_group_definition(session):
    # What the training plan does: predict on the trained pairs read in another window. Here the
    # "window" is a subset of rows; the group's score there is the audit's cⱼᵍ on those values.
    g = _group(session)
    rows = np.arange(0, 40, 2)
    m = session.matrix
    sub = FeatureMatrix(sp.csr_matrix(m.chosen)[rows], sp.csr_matrix(m.rejected)[rows])
    margins = session.shaping.preview({g: -1.0}, matrix=sub).margins
    delta_g = session.groups.scores(g)["delta"].to_numpy()[rows]
    np.testing.assert_allclose(margins, _reference_margins(delta_g, -1.0), atol=1e-8)


def test_interventions_and_verification_see_the_group_margins(session):
    g = _group(session)
    weights = {g: -2.0}
    m = np.asarray(session.shaping.preview(weights).margins)
    shaped = shape_pairs(session, "margin", weights=weights)
    np.testing.assert_allclose(shaped.dataset["margin"], m)
    filtered = shape_pairs(session, "filter", weights=weights, threshold=1.0)
    pair_ids = session.data.df["pair_id"].to_numpy()
    assert sorted(filtered.dropped) == sorted(pair_ids[m <= -1.0].tolist())
    pred = get_intervention("margin").predict(session, weights)
    assert len(pred) == len(session.feature_ids)  # feature rows; the group has none of its own
    member = session.groups.members(g)[0]
    delta = session.space.values(member)["delta"].to_numpy()
    g_i = expit(m)
    assert pred.set_index("feature").loc[member, "predicted"] == pytest.approx(
        (g_i * delta).sum() / g_i.sum()
    )
    assert session.shaping.weighted_features(weights) == session.groups.members(g)


def test_group_ids_in_decisions_are_checked(session):
    g = _group(session)
    session.select_feature(g)  # a group joins the selection but is never the drill-down's focus
    assert g in session.selection and session.focus != g
    session.set_verdict(g, "suppress")
    assert session.weights[g] == -1.0
    session.set_note(g, "evasive answers")
    assert session.notes[g] == "evasive answers"
    session.set_verdict(g, None)
    session.set_note(g, "")
    n = session.groups().shape[0]
    with pytest.raises(ConfigError, match=f"groups 0..{n - 1}"):
        session.set_weight(ids.group_id(n + 5), -1.0)
    with pytest.raises(ConfigError, match="finite"):
        session.set_weight(g, float("nan"))


def test_concepts_only_audit_refuses_group_weights():
    s = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(12)), sae=False, cache_dir=False)
    with pytest.raises(ConfigError, match="concepts only"):
        s.set_weight("group:0", -1.0)
    assert s.weights == {}


def test_shaper_adds_a_group_row_with_its_label_and_member_count(session):
    g = _group(session)
    view = ShaperView(session)
    view.add_box.set_state({"value": g})
    assert view.last_error is None and list(view.rows) == [g]
    row = view.rows[g]
    n = len(session.groups.members(g))
    label = session.groups().set_index("group").loc[g, "label"]
    assert row.name.value == g and row.label.value == f"{label} · {n} features"
    row.slider.set_state({"value": -1.25})  # a slider release
    assert session.weights == {g: -1.25}
    preview_row = view.preview.features[0]
    assert (
        preview_row["id"] == g and preview_row["weight"] == -1.25 and f"{n} features" in preview_row["label"]
    )
    # The preview sends bin counts of the group's margins (the shaper's own histogram rule).
    pv = session.shaping.preview()
    counts, _ = np.histogram(pv.margins, bins=len(view.preview.bins), range=(-pv.cap, pv.cap))
    assert view.preview.bins == counts.tolist() and sum(view.preview.bins) == len(session.data)
    view.add_box.set_state({"value": "group:99999"})  # an unknown group: an error shown, nothing added
    assert view.last_error is not None and list(view.rows) == [g]
