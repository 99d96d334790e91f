"""Verification: generation, observed vs predicted shift, comparison and views (tiny model + SAE)."""

from __future__ import annotations

import html
import math

import numpy as np
import pytest

import prefaudit as pa
from prefaudit.features.concepts import builtin_concepts, concept_matrix
from prefaudit.generation import SamplingConfig, generate_texts
from prefaudit.interventions import get as get_intervention
from prefaudit.stats.agreement import origin_r2
from prefaudit.training.window import window_matrix
from prefaudit.verify import sign_agreement, sign_chance
from prefaudit.verify.channel_base import VERIFY_COLUMNS
from prefaudit.verify.channel_weighted import MIN_ESS_FRACTION
from prefaudit.verify.planted import PLANTED_COLUMNS
from tests import tiny

GEN = {"max_new_tokens": 12, "n_prompts": 6, "batch_size": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_sae_dir, tmp_path_factory):
    """A tiny session with two finished runs (margin-shaped and vanilla)."""
    tmp = tmp_path_factory.mktemp("verify")
    session = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(40)),
        model=tiny_model_dir,
        sae=tiny_sae_dir,
        cache_dir=tmp / "cache",
        batch_size=4,
        shard_size=16,
    )
    session.encode(progress=False)
    session.test(n_boot=100)
    session.decisions.set_weights({"concept:flattery": -2.0, "sae:5": -1.0})
    common = {
        "max_steps": 3,
        "learning_rate": 5e-2,
        "lora_r": 4,
        "max_length": 96,
        "save_model": False,
        "holdout": 10,
    }
    shaped = session.train(pa.DPORunConfig(intervention="margin", output_dir=str(tmp / "a"), **common))
    vanilla = session.train(pa.DPORunConfig(intervention="none", output_dir=str(tmp / "b"), **common))
    assert shaped.wait(300) == "finished" and vanilla.wait(300) == "finished"
    return session, shaped, vanilla


def test_generation_is_seeded_and_coupled(trained):
    session, _run, _ = trained
    bb = session.backbone
    prompts = [session.data.messages(i) for i in range(5)]
    s = SamplingConfig(max_new_tokens=10, batch_size=2, seed=3)
    a = generate_texts(bb.model, bb, prompts, s, strip=True)
    assert a == generate_texts(bb.model, bb, prompts, s, strip=True)
    assert a != generate_texts(
        bb.model, bb, prompts, SamplingConfig(max_new_tokens=10, batch_size=2, seed=4), strip=True
    )
    assert all(isinstance(x, str) for x in a)


def test_verify_reports_observed_against_predicted(trained):
    session, run, _ = trained
    res = session.verify(run, **GEN)
    assert run.verification is res
    assert res.n_prompts == 6 and len(res.generations) == 6
    # Default prompts are the held-out pairs' prompts, never a trained one.
    held = {session.data.df["prompt"].iloc[i] for i in run.heldout_positions}
    assert set(res.generations["prompt"]) <= held
    assert not set(run.heldout_positions) & set(run.train_positions)
    # Prediction: over the pairs the plan trained on, read in its window, each weighted by how often
    # it was drawn times σ(its loss margin) — standardised by the audit's sd.
    pv = session.predict(run.weights).set_index("feature")
    feats = res.features.set_index("feature")
    rows = np.asarray(run.plan.trained_positions)
    table = run.plan.table.set_index("position").loc[rows]
    loss = dict(zip(run.shaped.positions.tolist(), run.shaped.dataset["margin"], strict=True))
    g = table["draws"].to_numpy() / (1 + np.exp(-np.array([loss[i] for i in rows])))
    window_delta = window_matrix(session, run.plan.window, rows).delta.toarray()
    expected_signal = g @ window_delta / g.sum()
    assert np.allclose(feats["predicted"].to_numpy(), expected_signal)
    assert np.allclose(feats["predicted_z"], np.where(pv["sd"] > 0, expected_signal / pv["sd"], 0.0))
    # Observation: trained − base per prompt, mean, divided by the audit's sd (checked by hand for a concept).
    excl = next(c for c in builtin_concepts() if c.name == "exclamation")
    gens = res.generations
    diff = (
        concept_matrix(list(gens["trained"]), [excl])[:, 0] - concept_matrix(list(gens["base"]), [excl])[:, 0]
    )
    sd = pv.loc["concept:exclamation", "sd"]
    expected = diff.mean() / sd if sd > 0 else 0.0
    assert res.shift("exclamation") == pytest.approx(expected)
    # The evaluated set is fixed by the audit: every q < ALPHA feature that varies, the weighted ones,
    # and a seeded sample of the rest — the same set whatever the run learned.
    fids = set(res.table["feature"])
    sig = session.results[
        (session.results["q"] < 0.05) & (pv["sd"].loc[session.results["feature"]].to_numpy() > 0)
    ]
    assert {"concept:flattery", "sae:5"} <= fids and set(sig["feature"]) <= fids
    assert res.n_features == len(res.table) <= len(sig) + 2 + 100
    again = session.verify(run, **GEN)
    assert list(again.table["feature"]) == list(res.table["feature"])
    # One agreement row per channel and level, each with its CI, null and ceiling.
    ag = res.agreement[res.agreement["level"] == "feature"].set_index("channel")
    shown = ["reward", "reward, within pair", "generation", "generation, length-adjusted"]
    # The importance-weighted row only where the weights keep half of the samples' information.
    weighted = res.drift["ess_fraction"] >= MIN_ESS_FRACTION
    assert list(ag.index) == shown + ["generation, importance-weighted"] * weighted
    assert list(res.agreement.columns) == list(VERIFY_COLUMNS)
    # Label-only baselines beside the reward rows (0 within pairs, by construction), NaN elsewhere.
    assert np.isfinite(ag.loc["reward", "baseline_r"]) and ag.loc["reward, within pair", "baseline_r"] == 0.0
    assert ag.loc[["generation", "generation, length-adjusted"], "baseline_r"].isna().all()
    # The reward channel always has numbers; a generation row may be NaN (too few tokens), but
    # then all of its figures are, never a half-filled row.
    figures = ["r", "r_low", "r_high", "null_low", "null_high"]
    assert ag.loc["reward", figures].notna().all()
    for channel, row in ag.iterrows():
        if math.isnan(row["r"]):
            assert row[["r_low", "r_high"]].isna().all(), channel
            continue
        assert -1 <= row["r"] <= 1, channel
        assert row["r_low"] <= row["r_high"] and row["null_low"] <= row["null_high"], channel
    assert res.r == ag.loc["reward", "r"] and ag.loc["reward", "n_units"] == len(run.heldout_positions)
    t = res.table
    assert res.r2 == pytest.approx(
        origin_r2(t["predicted_loading"].to_numpy(), t["observed_loading"].to_numpy())
    )
    assert res.generations["trained"].tolist() != res.generations["base"].tolist()
    # Drift: ρ of the held-out responses as scored, and the KL estimate with its standard error.
    rho = np.r_[res.heldout["reward_chosen"], res.heldout["reward_rejected"]] / res.beta
    assert res.drift["rho_mean"] == pytest.approx(rho.mean()) and res.drift["kl_se"] > 0
    assert 1.0 <= res.drift["ess"] <= res.n_prompts
    # Every planted concept's rate by its pattern, in base and trained samples, with the rise's s.e.
    planted = res.planted.set_index(["concept", "detector"])
    assert list(res.planted.columns) == list(PLANTED_COLUMNS)
    flat = planted.loc[("flattery", "pattern")]
    trained_flat = np.mean(
        [bool(x) for x in concept_matrix(list(gens["trained"]), [_concept("flattery")])[:, 0]]
    )
    assert flat["trained"] == pytest.approx(trained_flat) and flat["n"] == res.n_prompts


def _concept(name):
    return next(c for c in builtin_concepts() if c.name == name)


def test_cluster_rows_average_their_members(trained):
    """With clusters in the audit (given by hand: the tiny set is too small for the co-firing rule),
    every channel also reports a cluster row, and a cluster's shift is the mean of its members'."""
    from prefaudit.features.clusters import CofiringClusters

    session, run, _ = trained
    d_sae = session.encoded.d_sae
    members = [np.arange(4 * k, 4 * k + 4) for k in range(6)]
    membership = np.full(d_sae, -1)
    for k, m in enumerate(members):
        membership[m] = k
    empty = np.zeros(0, np.int64)
    loose = CofiringClusters(
        membership, members, dict.fromkeys(("rare",), empty), np.zeros(d_sae, np.int64), 80, 0
    )
    session.stage_cache("verify")["clusters"] = loose
    res = session.verify(run, **GEN)
    ag = res.agreement
    assert set(ag.loc[ag["level"] == "cluster", "channel"]) >= {"reward", "generation"}
    feats = res.features.set_index("feature")
    sd = feats["sd"].to_numpy()
    for _, row in res.clusters.iterrows():
        members = loose.members[int(row["cluster"].split(":")[1])]
        members = members[sd[members] > 0]
        fids = [session.feature_ids[j] for j in members]
        assert row["n_members"] == len(members)
        assert row["observed_z"] == pytest.approx(feats.loc[fids, "observed_z"].mean())
        assert row["predicted_z"] == pytest.approx(feats.loc[fids, "predicted_z"].mean())
    gen = res.row("generation", "cluster")
    assert gen["n_features"] == len(res.clusters)
    assert gen["r"] == pytest.approx(
        np.corrcoef(res.clusters["predicted_z"], res.clusters["observed_z"])[0, 1]
    )


def test_verify_with_explicit_prompts_and_samples(trained):
    session, run, _ = trained
    res = session.verify(
        run,
        prompts=["hello there", [{"role": "user", "content": "what is a word"}]],
        max_new_tokens=8,
        samples_per_prompt=2,
    )
    assert (
        res.n_prompts == 4 and list(res.generations["prompt"]) == ["hello there"] * 2 + ["what is a word"] * 2
    )
    # "window": as many new tokens as the run's window keeps of a response whose prompt fills its share.
    win = session.verify(run, prompts=["hello there"], max_new_tokens="window", drift=False, clusters=False)
    assert win.settings.max_new_tokens == run.plan.window["max_length"] - run.plan.window["max_prompt_length"]
    assert set(win.agreement["level"]) == {"feature"}
    # Without the drift pass no sample is scored (the held-out ρ is read for the reward rows anyway).
    assert np.isnan(win.drift["kl"]) and np.isnan(win.drift["ess"]) and np.isfinite(win.drift["rho_mean"])


def test_verify_refuses_runs_that_did_not_finish(trained):
    session, run, _ = trained

    class Busy:
        name, status, model, error = "busy", "running", None, None

    with pytest.raises(pa.ConfigError, match=r"call run\.wait"):
        session.verify(Busy())
    Busy.status, Busy.error = "failed", "Traceback: boom"
    with pytest.raises(pa.ConfigError, match="boom"):
        session.verify(Busy())
    with pytest.raises(pa.ConfigError, match="prompts must be"):
        session.verify(run, prompts="just a string")


def test_compare_puts_two_runs_side_by_side(trained):
    session, shaped, vanilla = trained
    cmp = session.compare(vanilla, shaped, **GEN)
    assert list(cmp.summary["intervention"]) == ["none", "margin"]
    assert cmp.same_prompts
    row = cmp.table.set_index("feature").loc["concept:flattery"]
    assert row["difference"] == pytest.approx(row["observed_z_b"] - row["observed_z_a"])
    # Same prompts and seed: the base generations are shared (cached), so the comparison is paired.
    assert cmp.a.generations["base"].tolist() == cmp.b.generations["base"].tolist()


def test_views_render_scatter_with_diagonal_and_tables(trained):
    from prefaudit.views.verify_view import CompareView, VerifyView

    session, shaped, vanilla = trained
    res = session.verify(shaped, **GEN)
    view = res.view()
    assert isinstance(view, VerifyView)
    assert "pa-diagonal" in view.scatter.value and view.scatter.value.count("<circle") == len(res.table)
    assert "concept:flattery" in view.table.value and "sign agreement" in view.summary.value
    assert "pa-fit" in view.scatter.value and "pa-agreement" in view.agreement.value
    cmp = session.compare(vanilla, shaped, **GEN)
    cv = cmp.view()
    assert isinstance(cv, CompareView) and "pa-diagonal" in cv.scatter.value
    assert "shaping change" in set(cmp.agreement["channel"]) and "shaping change" in cv.agreement.value
    assert "text/plain" in res._repr_mimebundle_()
    # The view leads with one figure: predicted vs observed shift, identity and fitted line, 95%
    # intervals, at most N_OUTLIERS points named, and one sentence saying what it means.
    from prefaudit.views.verify_view import N_OUTLIERS, shift_points, shift_sentence

    fig = view.figure.value
    assert view.figure in _descendants(view)
    assert "pa-diagonal" in fig and "pa-fit" in fig and 0 < fig.count("pa-outlier") <= N_OUTLIERS
    # One point per cluster where the audit has clusters (an earlier test gave this session some), else per feature.
    pts, level = shift_points(res)
    assert level == ("cluster" if len(res.clusters) else "feature")
    assert fig.count("pa-point") == int(np.isfinite(pts[["predicted", "observed"]]).all(axis=1).sum())
    sentence = shift_sentence(res)
    assert sentence.count(". ") == 0 and sentence.endswith(".") and html.escape(sentence) in fig
    # The report carries it, for every verified run.
    from prefaudit.report.verify_section import verify_html

    section = verify_html(session)
    assert section.count("pa-shift-figure") == len([r for r in session.runs if r.verification is not None])
    assert html.escape(sentence) in section and "baseline" in section


def _descendants(widget):
    out = []
    for child in getattr(widget, "children", ()):
        out += [child, *_descendants(child)]
    return out


def test_each_intervention_predicts_its_signal(trained):
    session, _run, _ = trained
    w = {"concept:flattery": -2.0}
    pv = session.predict(w).set_index("feature")
    delta = session.space.delta().toarray()
    m = np.asarray(session.shaping.preview(w).margins)
    sd = pv["sd"].to_numpy()
    j = list(pv.index).index("concept:url")
    keep = m > -1.0
    filt = get_intervention("filter").predict(session, w).set_index("feature")
    assert filt.loc["concept:url", "predicted"] == pytest.approx(delta[keep, j].mean())
    flip = get_intervention("flip").predict(session, w).set_index("feature")
    assert flip.loc["concept:url", "predicted"] == pytest.approx(np.where(keep, 1, -1) @ delta[:, j] / len(m))
    assert flip.loc["concept:url", "predicted_z"] == pytest.approx(
        flip.loc["concept:url", "predicted"] / sd[j]
    )
    abl = get_intervention("ablate").predict(session, {"sae:5": -1.0}, ablated=["sae:5"]).set_index("feature")
    assert abl.loc["sae:5", "predicted"] == 0.0
    assert abl.loc["concept:url", "predicted"] == pytest.approx(delta[:, j].mean())
    none = get_intervention("none").predict(session, w).set_index("feature")
    assert none.loc["concept:flattery", "predicted"] == pytest.approx(
        delta[:, list(pv.index).index("concept:flattery")].mean()
    )


def test_sign_agreement_ignores_zeros():
    sign, n = sign_agreement(np.array([1.0, 2.0, -1.0, 0.0]), np.array([2.0, 3.0, -0.5, 0.4]))
    assert (sign, n) == (1.0, 3)  # the zero prediction does not count for signs
    sign, n = sign_agreement(np.zeros(3), np.zeros(3))
    assert math.isnan(sign) and n == 0
    # Signs that lean one way agree by chance: all-positive predictions vs 3 of 4 positive observations.
    assert sign_chance(np.ones(4), np.array([1.0, 2.0, 3.0, -1.0])) == pytest.approx(0.75)
