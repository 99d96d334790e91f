"""Pair edits (exclude / flip / export) and the topic filter: state, predicted signal, training plan.

The predicted signal with edits is checked against a direct numpy computation of
Σ gᵢsᵢΔᵢ / Σ gᵢ (gᵢ = σ(sᵢmᵢ), 0 for an excluded pair) from the unedited margins and Δ.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import prefaudit as pa
from prefaudit.audit.pair_edits import EXCLUDED_REASON
from prefaudit.errors import ConfigError
from prefaudit.interventions import registry
from tests import tiny

FEATURES = ["concept:url", "concept:flattery", "concept:length"]

BAKING = ["bread", "yeast", "flour", "oven", "dough", "bake", "loaf", "crust", "knead"]
CODING = ["python", "code", "bug", "error", "debug", "function", "compile", "script", "variable"]


def topic_rows(n: int = 40, seed: int = 0) -> list[dict]:
    """Planted pairs whose prompts fall in two clear topics; only baking answers add a URL."""
    rng = random.Random(seed)
    rows = tiny.planted_pairs(n, seed=seed)
    for i, r in enumerate(rows):
        words = BAKING if i % 2 == 0 else CODING
        r["prompt"] = "How do I " + " ".join(rng.sample(words, 4)) + "?"
        if i % 2 == 1:
            r["chosen"] = r["chosen"].replace(" See http://www.example.com for more.", "")
    return rows


@pytest.fixture()
def session() -> pa.AuditSession:
    s = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(40)), sae=False, cache_dir=False)
    s.test(n_boot=20)
    return s


def manual_signal(s, feature, signs, weights=None):
    """Σ g s Δ / Σ g with g = σ(s·m)·[s ≠ 0], from the session's unedited margins."""
    delta = s.space.values(feature)["delta"].to_numpy()
    m = np.zeros(len(delta))
    if weights:
        s2 = pa.AuditSession(s.data, sae=False, cache_dir=False)
        m = np.asarray(s2.shaping.preview(weights, features=[]).margins)
    g = expit(np.where(signs < 0, -m, m)) * (signs != 0)
    return float((g * signs) @ delta / g.sum())


# ---------------------------------------------------------------------- intents
def test_intents_write_the_trait_and_refuse_unknown_pairs(session):
    ids = session.data.df["pair_id"].tolist()
    seen = []
    session.observe(lambda c: seen.append(dict(c["new"])), names="pair_edits")
    session.exclude_pairs(ids[:3])
    session.flip_pairs([ids[2], ids[5]])  # a flip replaces the exclusion of pair 2
    assert session.pair_edits == {ids[0]: "exclude", ids[1]: "exclude", ids[2]: "flip", ids[5]: "flip"}
    assert session.edits.signs()[:6].tolist() == [0, 0, -1, 1, 1, -1]
    table = session.edits.table()
    assert table["pair_id"].tolist() == [ids[0], ids[1], ids[2], ids[5]]
    assert table["edit"].tolist() == ["exclude", "exclude", "flip", "flip"]
    session.edits.restore([ids[0], ids[7]])  # 7 had no edit: accepted, nothing changes for it
    assert ids[0] not in session.pair_edits and len(session.pair_edits) == 3
    with pytest.raises(ConfigError, match=r"2 unknown pair_id\(s\).*\[999, 1000\]"):
        session.exclude_pairs([ids[0], 999, 1000])
    with pytest.raises(ConfigError, match="list of pair ids"):
        session.flip_pairs("3")
    assert len(session.pair_edits) == 3  # a refused call changes nothing
    session.edits.clear()
    assert session.pair_edits == {} and len(seen) == 4


# ---------------------------------------------------------------------- predicted signal
@pytest.mark.parametrize("weights", [None, {"concept:url": -1.5, "concept:flattery": 0.7}])
def test_predict_honours_exclusions_and_flips(session, weights):
    before = session.predict(weights, features=FEATURES)
    ids = session.data.df["pair_id"].to_numpy()
    session.exclude_pairs(ids[[0, 3, 11]])
    session.flip_pairs(ids[[1, 4, 25, 30]])
    signs = session.edits.signs()
    after = session.predict(weights, features=FEATURES)
    for k, f in enumerate(FEATURES):
        assert after["signal_before"].iloc[k] == pytest.approx(manual_signal(session, f, signs), rel=1e-12)
        assert after["signal_after"].iloc[k] == pytest.approx(
            manual_signal(session, f, signs, weights), rel=1e-12
        )
    g = np.asarray(session.shaping.preview(weights, features=FEATURES).gradient_weight)
    assert np.all(g[signs == 0] == 0) and np.all(g[signs != 0] > 0)
    assert not np.allclose(before["signal_before"], after["signal_before"])
    session.edits.clear()
    pd.testing.assert_frame_equal(session.predict(weights, features=FEATURES), before)


def test_intervention_prediction_follows_the_edits(session):
    ids = session.data.df["pair_id"].to_numpy()
    session.exclude_pairs(ids[:5])
    session.flip_pairs(ids[5:12])
    signs = session.edits.signs()
    pred = registry.get("none").predict(session, {})
    for f in FEATURES:
        row = pred.loc[pred["feature"] == f].iloc[0]
        delta = session.space.values(f)["delta"].to_numpy()
        assert row["predicted"] == pytest.approx((signs @ delta) / np.abs(signs).sum(), rel=1e-12)


def test_drivers_and_what_if_preview_agree_with_predict(session):
    f = "concept:url"
    weights = {"concept:flattery": -1.0}
    session.decisions.set_weights(weights)
    plain = session.drivers(f)
    top = plain["pair_id"].head(4).tolist()
    what = session.edits.preview(f, top)
    assert (
        what["signal"]
        == pytest.approx(plain.attrs["signal"])
        == pytest.approx(session.predict(features=[f])["signal_after"].iloc[0])
    )
    assert what["signal_unedited"] == what["signal"]
    session.exclude_pairs(top)
    assert session.predict(features=[f])["signal_after"].iloc[0] == pytest.approx(what["signal_excluded"])
    edited = session.drivers(f)
    assert edited["pair_id"].tolist() == plain["pair_id"].tolist()  # editing a driver does not move it
    assert (edited.loc[edited["pair_id"].isin(top), "share"] == 0).all()
    assert edited.attrs["signal"] == pytest.approx(what["signal_excluded"])
    session.flip_pairs(top)
    assert session.predict(features=[f])["signal_after"].iloc[0] == pytest.approx(what["signal_flipped"])
    flipped = session.drivers(f)
    assert (
        np.sign(flipped.loc[flipped["pair_id"].isin(top), "share"]) == -np.sign(plain["share"].head(4))
    ).all()
    # the preview starts from the current edits: excluding again from a flipped state
    again = session.edits.preview(f, top)
    assert again["signal"] == pytest.approx(what["signal_flipped"])
    assert again["signal_excluded"] == pytest.approx(what["signal_excluded"])
    assert again["signal_unedited"] == pytest.approx(what["signal"])


# ---------------------------------------------------------------------- export
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_export_writes_ids_and_texts_as_data(session, tmp_path, suffix):
    df = session.data.df
    ids = df["pair_id"].iloc[[7, 2, 30]].tolist()
    session.flip_pairs([ids[1]])
    path = session.edits.export(tmp_path / f"top{suffix}", ids, feature="concept:url")
    back = pd.read_json(path, lines=True) if suffix == ".jsonl" else pd.read_csv(path, keep_default_na=False)
    assert back["pair_id"].tolist() == ids
    for col in ("prompt", "chosen", "rejected"):
        assert back[col].tolist() == df[col].iloc[[7, 2, 30]].tolist()
    assert back["edit"].tolist() == ["", "flip", ""]
    assert np.allclose(back["delta"], session.space.values("concept:url")["delta"].iloc[[7, 2, 30]])
    with pytest.raises(ConfigError, match=r"jsonl or \.csv"):
        session.edits.export(tmp_path / "top.txt", ids)


def test_export_keeps_chat_prompts_and_hostile_text(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"q{i} <script>alert(1)</script>"}],
            "chosen": [{"role": "assistant", "content": f'yes, "quoted", {i}\nnew line'}],
            "rejected": [{"role": "assistant", "content": "no"}],
        }
        for i in range(4)
    ]
    s = pa.AuditSession(pa.load_pairs(rows), sae=False, cache_dir=False)
    csv = pd.read_csv(s.edits.export(tmp_path / "p.csv", [0, 3]), keep_default_na=False)
    assert json.loads(csv["prompt"].iloc[1]) == s.data.df["prompt"].iloc[3]
    assert csv["chosen"].iloc[1] == s.data.df["chosen"].iloc[3]
    line = s.edits.export(tmp_path / "p.jsonl", [3]).read_text(encoding="utf-8")
    assert json.loads(line)["prompt"] == s.data.df["prompt"].iloc[3]


# ---------------------------------------------------------------------- topic filter
def test_topic_filter_restricts_top_pairs():
    s = pa.AuditSession(pa.load_pairs(topic_rows(40)), sae=False, cache_dir=False)
    labels = s.topics.labels()
    assert len(labels) == 2 and sorted(labels["n_pairs"]) == [20, 20]
    assignment = s.topics()["topic"].to_numpy()
    everything = s.space.top_pairs("concept:url", by="abs_delta", n=40)
    for topic in (0, 1):
        s.topics.set_filter(topic)
        assert s.topics.filtered_positions().tolist() == np.flatnonzero(assignment == topic).tolist()
        top = s.space.top_pairs("concept:url", by="abs_delta", n=40)
        assert len(top) == 20 and set(assignment[top["position"]]) == {topic}
        # same order as the unfiltered ranking, restricted to the topic
        assert top["position"].tolist() == [p for p in everything["position"] if assignment[p] == topic]
        assert (
            s.space.top_pairs("concept:url", n=5, offset=18)["position"].tolist()
            == top["position"].tolist()[18:]
        )
    with pytest.raises(ConfigError, match=r"topics are 0\.\.1"):
        s.topics.set_filter(2)
    with pytest.raises(ConfigError, match="topic number or None"):
        s.topics.set_filter("0")
    s.topics.set_filter(None)
    assert len(s.topics.filtered_positions()) == 40


# ---------------------------------------------------------------------- training plan
def _text(side):
    return side if isinstance(side, str) else side[-1]["content"]


@pytest.mark.usefixtures("one_torch_thread")
def test_training_plan_leaves_out_excluded_and_swaps_flipped(tiny_session):
    from prefaudit.training.config import resolve_config
    from prefaudit.training.plan import shape_training_set

    df = tiny_session.data.df
    weights = {"concept:url": -1.0, "concept:flattery": 0.5}
    config = resolve_config(
        {"max_steps": 2, "batch_size": 2, "intervention": "margin", "weights": weights}, {}
    )
    unedited, _, _ = shape_training_set(tiny_session, config)
    base = tiny_session.plan_training(config)
    trained = base.table[base.table["status"].isin(["trained", "not_sampled"])]["pair_id"].tolist()
    held = base.pair_ids("held_out")
    excluded, flipped = trained[:2] + held[:1], trained[2:5]
    tiny_session.exclude_pairs(excluded)
    tiny_session.flip_pairs(flipped)
    plan = tiny_session.plan_training(config)
    t = plan.table.set_index("pair_id")
    assert (t.loc[trained[:2], "status"] == "excluded").all()
    assert (t.loc[trained[:2], "reason"] == EXCLUDED_REASON).all()
    assert t.loc[held[0], "status"] == "held_out"  # verification still reads it
    assert t.loc[flipped, "flipped"].all() and t["flipped"].sum() == 3
    assert plan.counts()["excluded"] == base.counts()["excluded"] + 2
    shaped, _, _ = shape_training_set(tiny_session, config)
    assert shaped.flipped == flipped
    rows = {r["pair_id"]: r for r in shaped.dataset}
    before = {r["pair_id"]: r for r in unedited.dataset}
    for pid in flipped:
        original = df.loc[df["pair_id"] == pid].iloc[0]
        assert _text(rows[pid]["chosen"]) == original["rejected"]
        assert _text(rows[pid]["rejected"]) == original["chosen"]
        assert rows[pid]["margin"] == pytest.approx(-before[pid]["margin"])  # read from the swapped sides
    assert any(before[pid]["margin"] != 0 for pid in flipped)
    for pid in set(rows) - set(flipped):
        assert rows[pid]["chosen"] == before[pid]["chosen"] and rows[pid]["margin"] == before[pid]["margin"]
    assert not set(excluded) & set(rows)
    assert json.loads(shaped.dataset.info.description)["prefaudit"]["flipped_by_person"] == flipped


@pytest.mark.usefixtures("one_torch_thread")
def test_window_prediction_reads_flipped_pairs_swapped(tiny_session):
    """predict(config=...) is about what the run trains on: a person-flipped pair teaches −Δ there too."""
    from prefaudit.training.config import resolve_config

    config = resolve_config({"max_steps": 2, "batch_size": 2, "intervention": "margin"}, {})
    features = ["concept:url", "concept:flattery", "concept:length"]
    before = tiny_session.predict({}, config=config, features=features).set_index("feature")
    trained = tiny_session.plan_training(config).table
    trained_ids = trained[trained["status"].isin(["trained", "not_sampled"])]["pair_id"].tolist()
    tiny_session.flip_pairs(trained_ids)
    try:
        after = tiny_session.predict({}, config=config, features=features).set_index("feature")
    finally:
        tiny_session.edits.clear()
    assert (before["signal_before"].abs() > 0).any()
    # Every trained pair flipped: the learning signal of each feature changes sign, size kept.
    assert np.allclose(after["signal_before"], -before["signal_before"], atol=1e-12)
