"""Controls for verification: a planted signal is recovered, and shuffled labels find nothing.

Positive control: chosen and rejected are the same text except for one planted element (a link
sentence appended to chosen in 4 of 5 pairs, to rejected in the fifth), so the audit's prediction is "the reward rises with that element";
after a short DPO run on a tiny model the reward channel must agree in sign, with its CI above
zero and above the null. Negative control: pairs of two independent answers drawn from the same
distribution, labelled at random (seeded, before training), so the labels carry no signal: the
reported r must lie inside its null interval. (Shuffling the labels of the planted set is not a
null: its one strong axis — the link — keeps a chance imbalance of a few pairs, which DPO learns
and the audit predicts, so agreement there is real.)
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import prefaudit as pa
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LINK = " See http://www.example.com for more."
RUN = {
    "max_steps": 12,
    "learning_rate": 5e-2,
    "lora_r": 4,
    "max_length": 96,
    "save_model": False,
    "holdout": 0.3,
}
VERIFY = {"max_new_tokens": 8, "n_prompts": 4, "batch_size": 4, "n_boot": 300, "n_null": 300}


def _pairs(n: int, *, shuffle_seed: int | None) -> list[dict]:
    rng = random.Random(7)
    swap = random.Random(shuffle_seed)
    rows = []
    for i in range(n):
        base = " ".join(rng.choice(tiny.WORDS[:60]) for _ in range(rng.randint(6, 14)))
        # The link on the chosen side in 4 of 5 pairs and on the rejected side in the fifth (so Δ
        # varies; identical answers would be rejected by the loader).
        chosen, rejected = (base + LINK, base) if i % 5 else (base, base + LINK)
        if shuffle_seed is not None:
            # No planted element at all: two independent answers, labelled at random.
            chosen = " ".join(swap.choice(tiny.WORDS[:60]) for _ in range(swap.randint(6, 14)))
            rejected = " ".join(swap.choice(tiny.WORDS[:60]) for _ in range(swap.randint(6, 14)))
        rows.append(
            {
                "prompt": f"question {i}: " + " ".join(rng.choice(tiny.WORDS[:60]) for _ in range(4)),
                "chosen": chosen,
                "rejected": rejected,
            }
        )
    return rows


def _verified(tiny_model_dir, tiny_sae_dir, tmp_path, *, shuffle_seed):
    session = pa.AuditSession(
        pa.load_pairs(_pairs(60, shuffle_seed=shuffle_seed)),
        model=tiny_model_dir,
        sae=tiny_sae_dir,
        cache_dir=tmp_path / "cache",
        batch_size=8,
        shard_size=32,
    )
    session.encode(progress=False)
    session.test(n_boot=200)
    run = session.train(pa.DPORunConfig(intervention="none", output_dir=str(tmp_path / "run"), **RUN))
    assert run.wait(300) == "finished"
    return session, session.verify(run, **VERIFY)


def test_a_planted_link_is_recovered_by_the_reward_channel(tiny_model_dir, tiny_sae_dir, tmp_path):
    _session, res = _verified(tiny_model_dir, tiny_sae_dir, tmp_path, shuffle_seed=None)
    row = res.agreement.set_index("channel").loc["reward"]
    assert row["r"] > 0 and row["r_low"] > 0 and row["r"] > row["null_high"], row.to_dict()
    url = res.table.set_index("feature").loc["concept:url"]
    assert url["predicted_loading"] > 0 and url["observed_loading"] > 0
    # The held-out chosen responses (with the link) are preferred by the trained policy.
    assert res.heldout["correct"].mean() > 0.8


def test_shuffled_labels_find_nothing(tiny_model_dir, tiny_sae_dir, tmp_path):
    session, res = _verified(tiny_model_dir, tiny_sae_dir, tmp_path, shuffle_seed=11)
    assert (
        not (session.results["q"] < 0.05).any()
        or session.results.loc[session.results["q"] < 0.05].shape[0] < 3
    )
    row = res.agreement.set_index("channel").loc["reward"]
    assert row["null_low"] <= row["r"] <= row["null_high"], row.to_dict()
    assert np.isfinite(row["null_low"]) and row["null_low"] < 0 < row["null_high"]
