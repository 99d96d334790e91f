"""Interventions build the dataset they claim to (tiny model + tiny SAE; no training here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit

import prefaudit as pa
from prefaudit.interventions import ablation_directions, shape_pairs, shaped_dataset
from prefaudit.shaping import preview
from prefaudit.training.files import export_jsonl, export_parquet

WEIGHTS = {"concept:flattery": -2.0, "concept:url": -1.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _margins(session, weights=WEIGHTS):
    return np.asarray(session.shaping.preview(weights).margins)


def test_margin_column_is_the_preview_margin(tiny_session):
    shaped = shape_pairs(tiny_session, "margin", weights=WEIGHTS)
    m = _margins(tiny_session)
    assert np.allclose(shaped.dataset["margin"], m)
    assert np.all(np.asarray(shaped.dataset["weight"]) == 1.0)
    assert shaped.dataset.column_names == ["prompt", "chosen", "rejected", "pair_id", "margin", "weight"]
    assert np.any(np.abs(m) > 0.5), "the planted concepts must produce non-trivial margins"


def test_margin_on_positions_keeps_full_data_standardisation(tiny_session):
    pos = [3, 1, 7, 20]
    shaped = shape_pairs(tiny_session, "margin", weights=WEIGHTS, positions=pos)
    assert np.allclose(shaped.dataset["margin"], _margins(tiny_session)[pos])
    assert shaped.dataset["pair_id"] == [int(tiny_session.data.df["pair_id"].iloc[i]) for i in pos]


def test_reweight_is_sigmoid_of_margin_normalised_to_mean_one(tiny_session):
    ds = shaped_dataset(tiny_session, "reweight", weights=WEIGHTS)
    w = np.asarray(ds["weight"])
    g = expit(_margins(tiny_session))
    assert np.allclose(w, g / g.mean())
    assert w.mean() == pytest.approx(1.0)
    assert np.all(np.asarray(ds["margin"]) == 0.0)


def test_filter_drops_exactly_the_dominated_pairs(tiny_session):
    shaped = shape_pairs(tiny_session, "filter", weights=WEIGHTS, threshold=1.0)
    m = _margins(tiny_session)
    ids = tiny_session.data.df["pair_id"].to_numpy()
    assert sorted(shaped.dropped) == sorted(ids[m <= -1.0].tolist())
    assert 0 < len(shaped.dropped) < len(ids)
    assert len(shaped.dataset) == len(ids) - len(shaped.dropped)
    assert set(shaped.dataset["pair_id"]).isdisjoint(shaped.dropped)
    assert np.all(shaped.margins > -1.0)
    assert f"dropped {len(shaped.dropped)}" in shaped.summary()


@pytest.mark.parametrize("threshold", [1.0, 2.5])
def test_preview_counts_the_pairs_filter_drops_and_flip_swaps(tiny_session, threshold):
    # One definition of "dominated" (m <= -τ): what the preview shows is what filter/flip act on.
    delta = tiny_session.space.delta()  # encodes: the SAE features join feature_ids
    w = np.zeros(delta.shape[1])
    for f, v in WEIGHTS.items():
        w[tiny_session.feature_ids.index(f)] = v
    shown = preview(delta, w, threshold=threshold).n_dominated
    dropped = shape_pairs(tiny_session, "filter", weights=WEIGHTS, threshold=threshold).dropped
    flipped = shape_pairs(tiny_session, "flip", weights=WEIGHTS, threshold=threshold).flipped
    summary = shape_pairs(tiny_session, "margin", weights=WEIGHTS, threshold=threshold).summary()
    assert shown == len(dropped) == len(flipped) > 0
    assert f", {shown} with m <= -{threshold:g}" in summary
    if threshold == 1.0:  # the session's preview (the shaper's count) uses the default τ
        assert tiny_session.shaping.preview(WEIGHTS).n_dominated == shown


def test_flip_swaps_chosen_and_rejected_of_dominated_pairs_only(tiny_session):
    shaped = shape_pairs(tiny_session, "flip", weights=WEIGHTS)
    df = tiny_session.data.df
    m = _margins(tiny_session)
    assert sorted(shaped.flipped) == sorted(df["pair_id"][m <= -1.0].tolist())
    for row in shaped.dataset:
        src = df[df["pair_id"] == row["pair_id"]].iloc[0]
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        if row["pair_id"] in shaped.flipped:
            assert (chosen, rejected) == (src["rejected"], src["chosen"])
        else:
            assert (chosen, rejected) == (src["chosen"], src["rejected"])


def test_vanilla_is_the_same_path_with_zero_margins(tiny_session):
    none = shaped_dataset(tiny_session, "none", weights=WEIGHTS)
    zero = shaped_dataset(tiny_session, "margin", weights={})
    assert none.to_list() == zero.to_list()
    assert np.all(np.asarray(none["margin"]) == 0.0) and np.all(np.asarray(none["weight"]) == 1.0)


def test_rows_are_conversational_with_a_chat_template_else_the_audit_transcript(tiny_session):
    row = shaped_dataset(tiny_session, "none")[0]
    assert row["prompt"] == tiny_session.data.messages(0)
    assert row["chosen"] == [{"role": "assistant", "content": tiny_session.data.df["chosen"].iloc[0]}]
    text = shaped_dataset(tiny_session, "none", conversational=False)[0]
    assert text["prompt"] == tiny_session.backbone.render_prompt(tiny_session.data.messages(0))
    assert text["chosen"] == tiny_session.data.df["chosen"].iloc[0]


def test_shaped_dataset_carries_the_sessions_margins(tiny_session):
    tiny_session.decisions.set_weights(WEIGHTS)
    ds = shaped_dataset(tiny_session, "margin")
    assert np.allclose(ds["margin"], _margins(tiny_session))
    record = json.loads(ds.info.description)["prefaudit"]
    assert record["intervention"] == "margin" and record["weights"] == WEIGHTS


def test_ablate_collects_sae_decoder_directions_and_reports_text_concepts(tiny_session):
    tiny_session.encode(progress=False)
    weights = {"sae:5": -1.0, "sae:9": 2.0, "concept:flattery": -1.0}
    tiny_session.set_verdict("sae:11", "suppress")
    shaped = shape_pairs(tiny_session, "ablate", weights=weights)
    assert shaped.ablate_features == [
        "sae:5",
        "sae:11",
    ]  # negative weight, then verdict; not the amplified one
    assert shaped.not_ablatable == ["concept:flattery"]
    assert np.all(np.asarray(shaped.dataset["margin"]) == 0.0)
    d = ablation_directions(tiny_session, shaped.ablate_features)
    w_dec = tiny_session.sae.sae.W_dec.detach().numpy()
    assert np.allclose(d, w_dec[[5, 11]])


def test_ablate_without_directions_is_a_config_error(tiny_session):
    with pytest.raises(pa.ConfigError, match="text concepts without a direction"):
        shape_pairs(tiny_session, "ablate", weights={"concept:flattery": -1.0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"intervention": "prune"}, "choose one of margin, reweight"),
        ({"positions": [0, 99]}, "positions must be rows"),
        ({"positions": [1, 1]}, "must not repeat"),
        ({"threshold": 0.0, "intervention": "filter"}, "threshold must be > 0"),
        ({"weights": {"concept:nope": 1.0}}, "Unknown concept"),
    ],
)
def test_bad_arguments_are_config_errors(tiny_session, kwargs, match):
    kwargs = {"intervention": "margin", "weights": WEIGHTS, **kwargs}
    with pytest.raises(pa.ConfigError, match=match):
        shape_pairs(tiny_session, **kwargs)


def test_exports_round_trip(tiny_session, tmp_path):
    from datasets import Dataset, load_dataset

    ds = shaped_dataset(tiny_session, "reweight", weights=WEIGHTS)
    jl = export_jsonl(ds, tmp_path / "a" / "train.jsonl")
    back = [json.loads(line) for line in jl.read_text().splitlines()]
    assert back == ds.to_list()
    pq = export_parquet(ds, tmp_path / "train.parquet")
    again = Dataset.from_parquet(str(pq))
    assert again["weight"] == pytest.approx(ds["weight"]) and again["prompt"] == ds["prompt"]
    assert load_dataset("json", data_files=str(jl), split="train")["pair_id"] == ds["pair_id"]
