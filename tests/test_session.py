"""AuditSession: encode → test → intents → predict → save/load, on tiny real parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import prefaudit as pa
from prefaudit.stats import paired_tests
from tests import tiny

COLUMNS = [
    "feature",
    "source",
    "label",
    "n_pairs",
    "n_active",
    "frac_active_chosen",
    "frac_active_rejected",
    "mean_chosen",
    "mean_rejected",
    "delta_mean",
    "d_z",
    "rank_biserial",
    "ci_low",
    "ci_high",
    "p",
    "q",
    "split_half_agree",
    "delta_len_ctrl",
    "p_len_ctrl",
    "direction",
]


@pytest.fixture()
def tested(tiny_session):
    tiny_session.encode(progress=False)
    tiny_session.test()
    return tiny_session


def test_table_has_one_row_per_sae_feature_and_concept(tested):
    table = tested.results
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    d_sae = tested.encoded.d_sae
    assert len(table) == d_sae + len(tested.concepts)
    assert (table["source"].iloc[:d_sae] == "sae").all()
    assert (table["source"].iloc[d_sae:] == "concept").all()
    assert table["feature"].iloc[0] == "sae:0" and table["feature"].iloc[d_sae] == "concept:length"
    assert table["feature"].is_unique


def test_planted_concepts_are_found_in_the_planted_direction(tested):
    table = tested.results.set_index("feature")
    # tiny.planted_pairs: chosen has "What a great question!" in 80% and a URL in 60% of pairs;
    # rejected apologises in 30%.
    for fid, direction in [
        ("concept:flattery", "chosen"),
        ("concept:url", "chosen"),
        ("concept:apology", "rejected"),
    ]:
        assert table.loc[fid, "q"] < 0.05, fid
        assert table.loc[fid, "direction"] == direction


def test_session_table_equals_paired_tests_on_the_same_matrices(tested):
    chosen, rejected = tested.matrix.chosen, tested.matrix.rejected
    ref = paired_tests(chosen, rejected, lengths=tested.space.lengths(), names=tested.feature_ids)
    pd.testing.assert_series_equal(tested.results["p"], ref["p"])
    pd.testing.assert_series_equal(tested.results["q"], ref["q"])


def test_sae_features_get_automatic_labels_from_peak_tokens(tested):
    active = tested.results[(tested.results["source"] == "sae") & (tested.results["n_active"] > 0)]
    assert len(active) > 0
    assert all(isinstance(s, str) and s for s in active["label"])
    tested.set_label(int(active["feature"].iloc[0][4:]), "my label")
    assert tested.label(active["feature"].iloc[0]) == "my label"
    assert tested.results.set_index("feature").loc[active["feature"].iloc[0], "label"] == "my label"


def test_user_concepts_regex_callable_and_direction(tiny_session):
    tiny_session.encode(progress=False)
    fid = tiny_session.add_concept("example_link", r"example\.com")
    tiny_session.add_concept("n_chars", len)
    d = tiny_session.encoded.chosen.mean_act.shape[1]
    direction = np.random.default_rng(0).normal(size=d)
    tiny_session.add_concept("dir", direction=direction)
    table = tiny_session.test().set_index("feature")
    assert table.loc[fid, "source"] == "concept"
    assert table.loc[fid, "q"] < 0.05 and table.loc[fid, "direction"] == "chosen"
    vals = tiny_session.space.values("n_chars")
    assert vals["chosen"].iloc[0] == len(tiny_session.data.df["chosen"].iloc[0])
    unit = direction / np.linalg.norm(direction)
    np.testing.assert_allclose(
        tiny_session.space.values("dir")["chosen"], tiny_session.encoded.chosen.mean_act @ unit, rtol=1e-5
    )
    with pytest.raises(pa.ConfigError, match="already exists"):
        tiny_session.add_concept("n_chars", len)
    with pytest.raises(pa.ConfigError, match="regular expression"):
        tiny_session.add_concept("bad", "(unclosed")


def test_failing_callable_concept_names_concept_and_row(tiny_session):
    tiny_session.add_concept("explodes", lambda text: 1 / 0 if "great" in text else 0.0)
    with pytest.raises(pa.ConfigError, match=r"'explodes' failed on response row \d+"):
        tiny_session.space.concept_values()


def test_intents_update_observable_state(tested):
    seen = []
    tested.observe(
        lambda ch: seen.append((ch["name"], ch["new"])), names=["selection", "focus", "weights", "verdicts"]
    )
    tested.select_feature("flattery")
    tested.select_feature(3)
    assert tested.selection == ["concept:flattery", "sae:3"] and tested.focus == "sae:3"
    tested.set_verdict("flattery", "suppress")
    assert tested.weights == {"concept:flattery": -1.0}
    tested.set_weight("flattery", -2.5)
    tested.set_verdict("flattery", "suppress")  # an existing negative weight is kept
    assert tested.weights["concept:flattery"] == -2.5
    tested.set_verdict("flattery", "allow")
    assert "concept:flattery" not in tested.weights
    tested.decisions.deselect("sae:3")
    assert tested.focus == "concept:flattery"
    names = [name for name, _ in seen]
    assert {"selection", "focus", "weights", "verdicts"} <= set(names)
    with pytest.raises(pa.ConfigError, match="Unknown concept"):
        tested.select_feature("no_such_concept")
    with pytest.raises(pa.ConfigError, match=r"features 0\.\.63"):
        tested.set_weight(64, 1.0)
    with pytest.raises(pa.ConfigError, match="finite"):
        tested.set_weight("flattery", float("nan"))
    with pytest.raises(pa.ConfigError, match="Verdict"):
        tested.set_verdict("flattery", "ban")


def test_predict_equals_manual_gradient_weighted_means(tested):
    tested.set_weight("flattery", -2.0)
    tested.set_weight("url", 1.0)
    pv = tested.shaping.preview()
    pred = pv.table.set_index("feature")
    c, r = tested.space.concept_values()
    names = [c_.name for c_ in tested.concepts]
    delta = c - r
    fl, url = names.index("flattery"), names.index("url")

    def scale(d):  # the margin scale of prefaudit.shaping: spread or mean |Δ| where active
        a = d[d != 0]
        return max(a.std(ddof=1) if a.size > 1 else 0.0, np.abs(a).mean())

    m = np.clip(-2.0 * delta[:, fl] / scale(delta[:, fl]) + 1.0 * delta[:, url] / scale(delta[:, url]), -4, 4)
    g = expit(m)
    for j, name in enumerate(names):
        row = pred.loc["concept:" + name]
        assert row["signal_before"] == pytest.approx(delta[:, j].mean())
        assert row["signal_after"] == pytest.approx((g * delta[:, j]).sum() / g.sum())
    np.testing.assert_allclose(pv.margins, m)
    assert pv.n_dominated == int((m <= -1.0).sum())  # dominated: m <= -τ, as filter drops
    # Suppressing flattery lowers its predicted signal; the vanilla prediction is unchanged.
    assert pred.loc["concept:flattery", "signal_after"] < pred.loc["concept:flattery", "signal_before"]
    vanilla = tested.predict(weights={}).set_index("feature")
    np.testing.assert_allclose(vanilla["signal_after"], vanilla["signal_before"])


def test_top_pairs_sorted_and_token_activations_align(tested):
    active = tested.results[(tested.results["source"] == "sae") & (tested.results["n_active"] > 0)]
    fid = active.sort_values("n_active").iloc[-1]["feature"]
    top = tested.space.top_pairs(fid, by="chosen", n=5)
    assert list(top["chosen"]) == sorted(top["chosen"], reverse=True)
    assert top["pair_id"].tolist() == tested.data.df["pair_id"].iloc[top["position"]].tolist()
    acts = tested.space.token_activations(int(top["position"].iloc[0]), fid)
    toks, vals = acts["chosen"]
    assert "".join(toks) == tested.data.df["chosen"].iloc[int(top["position"].iloc[0])][: len("".join(toks))]
    # The pooled (max) value is the maximum of the per-token activations.
    assert vals.max() == pytest.approx(top["chosen"].iloc[0], rel=1e-4)
    # Both sides come from one read; the rejected side matches its pooled value too.
    r_toks, r_vals = acts["rejected"]
    assert (
        "".join(r_toks)
        == tested.data.df["rejected"].iloc[int(top["position"].iloc[0])][: len("".join(r_toks))]
    )
    assert max(r_vals.max(), 0.0) == pytest.approx(top["rejected"].iloc[0], rel=1e-4, abs=1e-6)
    page2 = tested.space.top_pairs(fid, by="delta", n=3, offset=3)
    assert len(page2) == 3


def test_concepts_only_session_needs_no_model(tmp_path):
    session = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(40)), sae=False, cache_dir=False)
    # Concept labels exist before anything is encoded or tested.
    assert session.label("flattery") == "flattering opener praising the question or the user"
    table = session.test()
    assert set(table["source"]) == {"concept"}
    assert table.set_index("feature").loc["concept:url", "label"].startswith("links")
    assert session.encode() is None and session._backbone is None


def test_save_load_round_trip_is_exact(tested, tmp_path):
    tested.add_concept("example_link", r"example\.com")
    tested.add_concept("n_chars", len)
    tested.test()
    tested.set_label("url", "links!")
    tested.set_note("url", "<b>not html</b>")
    tested.set_weight("flattery", -1.5)
    tested.set_verdict("url", "suppress")
    tested.select_feature(5)
    ids = tested.data.df["pair_id"].tolist()
    tested.flip_pairs(ids[:2])
    tested.exclude_pairs(ids[2:3])
    fit = tested.sae_fit(n=8)
    path = tested.save(tmp_path / "saved")
    tested.edits.clear()  # the fixture is shared
    back = pa.AuditSession.load(path)
    pd.testing.assert_frame_equal(back.data.df, tested.data.df)
    pd.testing.assert_frame_equal(back.results, tested.results)
    for side in ("chosen", "rejected"):
        a, b = tested.encoded.side(side), back.encoded.side(side)
        assert (a.values != b.values).nnz == 0
        np.testing.assert_array_equal(a.top_token, b.top_token)
        np.testing.assert_array_equal(a.mean_act, b.mean_act)
    for attr in ("labels", "notes", "weights", "verdicts", "selection", "focus", "auto_labels"):
        assert getattr(back, attr) == getattr(tested, attr), attr
    assert back.pair_edits == {ids[0]: "flip", ids[1]: "flip", ids[2]: "exclude"}
    assert back.sae_fit(n=8) == fit  # the measured fit comes back; the model is not read for it
    assert back.data.report.n_read == tested.data.report.n_read
    np.testing.assert_array_equal(back.space.concept_values()[0], tested.space.concept_values()[0])
    # Re-testing the loaded session reproduces the table without touching the model.
    pd.testing.assert_frame_equal(back.test(), tested.results)
    assert back._backbone is None
    # A callable concept comes back as values only, with a clear message if used on new text.
    with pytest.raises(pa.ConfigError, match="only its values"):
        next(c for c in back.concepts if c.name == "n_chars")("new text")


def test_conversational_and_hh_pairs_round_trip(tmp_path, hh_path):
    pairs = pa.load_pairs(hh_path, limit=30)
    session = pa.AuditSession(pairs, sae=False, cache_dir=False)
    session.test()
    back = pa.AuditSession.load(session.save(tmp_path / "hh"))
    assert back.data.messages(3) == pairs.messages(3)
    pd.testing.assert_frame_equal(back.results, session.results)


def test_predict_on_a_subset_equals_the_full_prediction(tested):
    tested.set_weight("flattery", -1.0)
    full = tested.predict().set_index("feature")
    part = tested.predict(features=["url", 3, "flattery"]).set_index("feature")
    assert list(part.index) == ["concept:url", "sae:3", "concept:flattery"]
    pd.testing.assert_frame_equal(part, full.loc[part.index], check_like=True)
