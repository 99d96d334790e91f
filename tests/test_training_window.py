"""The audit read in the training window: the prediction and verification see the trained tokens."""

from __future__ import annotations

import numpy as np
import pytest

import prefaudit as pa
from prefaudit.features.encode import encode_batch
from prefaudit.training.plan import plan_training
from prefaudit.training.window import window_matrix, window_token_ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"max_length": 24, "max_prompt_length": 12, "max_steps": 3, "holdout": 0.25}


@pytest.fixture()
def encoded(tiny_session):
    tiny_session.encode(progress=False)
    return tiny_session


def test_window_tokens_are_the_plan_s_kept_tokens(encoded):
    plan = plan_training(encoded, pa.DPORunConfig(**SMALL))
    pos = plan.trained_positions[:6]
    ids = window_token_ids(encoded, plan.window, pos)
    table = plan.table.set_index("position").loc[pos]
    assert [len(x[0]) for x in ids] == list(table["prompt_kept"])
    assert [len(x[1]) for x in ids] == list(table["chosen_kept"])
    assert [len(x[2]) for x in ids] == list(table["rejected_kept"])
    assert all(len(x[0]) + max(len(x[1]), len(x[2])) <= SMALL["max_length"] for x in ids)


def test_window_matrix_rows_follow_positions_and_sides(encoded):
    plan = plan_training(encoded, pa.DPORunConfig(**SMALL))
    pos = plan.trained_positions[:5]
    m = window_matrix(encoded, plan.window, pos)
    assert m.shape == (len(pos), len(encoded.feature_ids))
    ids = window_token_ids(encoded, plan.window, pos)
    # An independent read of the same tokens, pair by pair, gives the same SAE columns in order.
    d_sae = encoded.sae.d_sae
    for k, (p, c, r) in enumerate(ids):
        out, _ = encode_batch(encoded.backbone, encoded.sae, [p], [(c, r)], pooling="max")
        for side, row in ((0, m.chosen), (1, m.rejected)):
            dense = np.zeros(d_sae)
            dense[out[side][0]] = out[side][1]
            assert np.allclose(row[k, :d_sae].toarray().ravel(), dense, atol=1e-5)
    # Concepts read the kept text: a cut response has no more words than the whole one.
    j = encoded.space.column("concept:length")
    full = encoded.matrix.chosen[pos][:, j].toarray().ravel()
    assert np.all(m.chosen[:, j].toarray().ravel() <= full + 1e-9)
    assert m is window_matrix(encoded, plan.window, pos)  # cached


def test_predict_with_a_config_reads_the_trained_window(encoded):
    cfg = pa.DPORunConfig(**SMALL)
    w = {"concept:flattery": -2.0}
    pred = encoded.predict(w, config=cfg)
    plan = plan_training(encoded, cfg)
    assert pred.attrs["plan"] == plan.counts()
    assert np.array_equal(pred.attrs["positions"], plan.trained_positions)
    direct = encoded.shaping.preview(
        w, matrix=window_matrix(encoded, plan.window, plan.trained_positions)
    ).table
    assert np.allclose(pred["signal_after"], direct["signal_after"])
    # The window cuts these responses, so the trained text's signal differs from the whole audit's.
    whole = encoded.predict(w).set_index("feature")
    assert not np.allclose(
        pred.set_index("feature").loc[whole.index, "signal_before"], whole["signal_before"]
    )
