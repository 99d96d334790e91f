"""The training plan: one token window, planned before training, equal to what the trainer holds."""

from __future__ import annotations

import collections
import copy
import html
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import prefaudit as pa
from prefaudit.training.plan import STATUSES
from prefaudit.training.tokens import trl_token_ids, window_cut
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WINDOW = 64  # tokens: the long prompts below (90 words) fill it alone


def _long_pairs(n: int = 24, seed: int = 5) -> list[dict]:
    """Prompts of ~10, ~45 and ~100 tokens, responses of ~5 to ~70; some chosen flatter."""
    rng = random.Random(seed)
    words = tiny.WORDS[:60]

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    rows = []
    for i in range(n):
        chosen = ("What a great question! " if i % 4 == 0 else "") + text([5, 25, 60][(i // 3) % 3])
        rows.append(
            {
                "prompt": f"q{i}: " + text([6, 40, 90][i % 3]),
                "chosen": chosen,
                "rejected": text([4, 20, 50][i % 3]),
            }
        )
    return rows


@pytest.fixture()
def long_session(tiny_model_dir, tiny_cache_dir):
    pairs = pa.load_pairs(_long_pairs())
    return pa.AuditSession(pairs, model=tiny_model_dir, sae=False, cache_dir=tiny_cache_dir)


def _cfg(tmp_path, **kw) -> pa.DPORunConfig:
    base = {
        "intervention": "none",
        "max_length": WINDOW,
        "max_steps": 2,
        "batch_size": 2,
        "lora_r": 4,
        "learning_rate": 1e-3,
        "output_dir": str(tmp_path / "run"),
        "save_model": False,
    }
    return pa.DPORunConfig(**{**base, **kw})


def _trainer(session, prep, tmp_path, cls=None, window="plan"):
    from prefaudit.training.trainer import ShapedDPOTrainer

    cls = cls or ShapedDPOTrainer
    cfg, model = prep.config, session.backbone.model
    return cls(
        copy.deepcopy(model).float(),
        args=cfg.dpo_config(tmp_path / "out", n_train=len(prep.shaped.dataset)),
        train_dataset=prep.shaped.dataset,
        processing_class=session.backbone.tokenizer,
        peft_config=cfg.peft_config(),
        window=prep.plan.window if window == "plan" else window,
    )


def _prepare(session, cfg):
    from prefaudit.training.launch import prepare_run

    return prepare_run(session, cfg)


# ---------------------------------------------------------------------- the window
def test_window_cut_keeps_the_prompt_end_and_the_response_start():
    p, c, r = window_cut(list(range(100)), list(range(10)), list(range(3)), 64, 32)
    assert p == list(range(46, 100)) and c == list(range(10)) and r == [0, 1, 2]  # room for the longest
    p, c, r = window_cut(list(range(100)), list(range(50)), [7], 64, 32)
    assert p == list(range(68, 100)) and c == list(range(32)) and r == [7]  # the prompt keeps 32
    assert window_cut([1, 2], [3], [4], 64, 32) == ([1, 2], [3], [4])  # short pairs are never cut
    assert window_cut(list(range(80)), [1], [2], 64, 64)[1:] == ([], [])  # prompt fills the window


# ---------------------------------------------------------------------- (a) plan == trainer
def test_plan_counts_equal_the_trainers_prepared_dataset(long_session, tmp_path):
    prep = _prepare(long_session, _cfg(tmp_path))
    plan, t = prep.plan, prep.plan.table.set_index("pair_id")
    trainer = _trainer(long_session, prep, tmp_path)
    ds = trainer.train_dataset
    in_data = t[t["status"].isin(["trained", "not_sampled"])]
    assert sorted(ds["pair_id"]) == sorted(in_data.index) and len(ds) == len(prep.shaped.dataset)
    for row in ds:
        want = t.loc[row["pair_id"], ["prompt_kept", "chosen_kept", "rejected_kept"]].tolist()
        assert [len(row["prompt_ids"]), len(row["chosen_ids"]), len(row["rejected_ids"])] == want
    plan.check_dataset(ds)
    # Prompts longer than the whole window are kept — their end — and responses are cut at the end.
    long = in_data[in_data["prompt_tokens"] >= WINDOW]
    assert len(long) >= 3 and (long["prompt_kept"] < long["prompt_tokens"]).all()
    assert (
        (in_data["chosen_kept"] < in_data["chosen_tokens"])
        | (in_data["rejected_kept"] < in_data["rejected_tokens"])
    ).any()
    pid = int(long.index[0])
    row = ds[[int(x) for x in ds["pair_id"]].index(pid)]
    shaped_row = prep.shaped.dataset[[int(x) for x in prep.shaped.dataset["pair_id"]].index(pid)]
    full = trl_token_ids(shaped_row, long_session.backbone.tokenizer)
    assert (
        row["prompt_ids"] == full[0][-len(row["prompt_ids"]) :]
        and row["chosen_ids"] == full[1][: len(row["chosen_ids"])]
    )
    # The collator has nothing left to cut: every completion token the plan keeps reaches the batch.
    batch = trainer.data_collator([ds[i] for i in range(len(ds))])
    assert batch["input_ids"].shape[1] <= WINDOW
    kept = np.concatenate([[len(r) for r in ds["chosen_ids"]], [len(r) for r in ds["rejected_ids"]]])
    assert batch["completion_mask"].sum(1).tolist() == kept.tolist()
    # trl's own rule (no window) drops exactly the pairs whose prompt alone fills max_length.
    plain = _trainer(long_session, prep, tmp_path / "plain", window=None)
    assert len(plain.train_dataset) == len(ds) - len(long)


def test_nothing_is_dropped_silently(long_session, tmp_path):
    from prefaudit.training.plan import split_positions

    # max_prompt_length == max_length lets a prompt fill the window: those pairs are dropped, listed.
    cfg = _cfg(tmp_path, max_prompt_length=WINDOW, max_train_pairs=15)
    prep = _prepare(long_session, cfg)
    plan, t = prep.plan, prep.plan.table
    n = len(long_session.data)
    assert t["position"].tolist() == list(range(n)) and t["pair_id"].is_unique
    assert t["pair_id"].tolist() == long_session.data.df["pair_id"].tolist()
    assert set(t["status"]) <= set(STATUSES) and (t["reason"] != "").all()
    counts = plan.counts()
    assert sum(counts[s] for s in STATUSES) == counts["n_pairs"] == n
    train, held = split_positions(n, cfg)
    assert t.loc[t["status"] == "held_out", "position"].tolist() == held.tolist()
    assert counts["excluded"] == n - len(held) - 15
    assert set(t.loc[t["status"] == "excluded", "reason"]) == {"beyond max_train_pairs"}
    dropped = plan.pair_ids("dropped_length")
    assert dropped and t.loc[t["status"] == "dropped_length", "prompt_tokens"].min() >= WINDOW
    assert (
        plan.to_dict()["dropped_length"] == dropped and f"dropped by length {len(dropped)}" in plan.summary()
    )
    trainer = _trainer(long_session, prep, tmp_path)
    assert trainer.window_dropped == dropped
    assert not set(dropped) & set(trainer.train_dataset["pair_id"])
    assert len(trainer.train_dataset) == 15 - len(dropped)
    plan.check_dataset(trainer.train_dataset)
    with pytest.raises(RuntimeError, match="differs from the training plan"):
        plan.check_dataset(trainer.train_dataset.select(range(1, len(trainer.train_dataset))))
    assert set(plan.trained_positions) <= set(train)


# ---------------------------------------------------------------------- which pairs the sampler draws
@pytest.mark.parametrize(
    ("intervention", "steps", "accum"),
    [("none", 3, 1), ("none", 7, 2), ("reweight", 6, 1)],
    ids=["random", "random-two-epochs", "weighted"],
)
def test_planned_draws_are_the_pairs_training_sees(long_session, tmp_path, intervention, steps, accum):
    from prefaudit.training.trainer import ShapedDPOTrainer

    class Recording(ShapedDPOTrainer):
        seen: list[tuple[int, ...]]

        def training_step(self, model, inputs, *args, **kwargs):
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            b = len(ids) // 2  # chosen rows first
            self.seen += [tuple(r[: int(m.sum())].tolist()) for r, m in zip(ids[:b], mask[:b], strict=True)]
            return super().training_step(model, inputs, *args, **kwargs)

    if intervention == "reweight":
        long_session.set_weight("flattery", -2.0)
    prep = _prepare(
        long_session,
        _cfg(tmp_path, intervention=intervention, max_steps=steps, gradient_accumulation_steps=accum),
    )
    if intervention == "reweight":
        assert len(set(prep.shaped.sample_weights)) > 1
    trainer = _trainer(long_session, prep, tmp_path, cls=Recording)
    trainer.seen = []
    trainer.train()
    ds = trainer.train_dataset
    key = {tuple(r["prompt_ids"] + r["chosen_ids"]): int(r["pair_id"]) for r in ds}
    assert len(key) == len(ds)
    seen = collections.Counter(key[s] for s in trainer.seen)
    t = prep.plan.table
    planned = {int(p): int(d) for p, d in zip(t["pair_id"], t["draws"], strict=True) if d > 0}
    assert prep.plan.exact_sampling and seen == planned
    # 7 steps × 2 batches of 2 over 19 pairs: an epoch is 10 batches (the last of 1 pair), so 19 + 8 draws.
    n_batches = -(-len(ds) // 2)
    assert sum(planned.values()) == (27 if steps * accum > n_batches else steps * accum * 2)
    trained = set(prep.plan.pair_ids("trained"))
    assert trained == set(seen) and set(prep.plan.pair_ids("not_sampled")) == set(ds["pair_id"]) - trained


def test_unreproduced_sampler_reports_an_expected_count(long_session, tmp_path):
    plan = long_session.plan_training(
        _cfg(tmp_path, dpo_kwargs={"train_sampling_strategy": "group_by_length"})
    )
    assert not plan.exact_sampling and plan.counts()["not_sampled"] == 0
    assert plan.expected_not_sampled is not None and "expected" in plan.summary()


# ---------------------------------------------------------------------- session, run, panel, export
def test_session_plan_equals_the_runs_plan_which_is_recorded_and_shown(long_session, tmp_path):
    cfg = _cfg(tmp_path, max_prompt_length=WINDOW)
    planned = long_session.plan_training(cfg, max_steps=3)
    assert planned.counts()["dropped_length"] > 0
    run = long_session.train(cfg, max_steps=3)
    assert run.wait(300) == "finished", run.error
    assert run.plan.table.equals(planned.table) and run.plan.window == {
        "max_length": WINDOW,
        "max_prompt_length": WINDOW,
    }
    assert run.window_dropped == run.plan.pair_ids("dropped_length")
    record = json.loads((run.output_dir / "run.json").read_text())
    assert record["plan"]["counts"] == run.plan.counts() and len(record["plan"]["pairs"]) == len(
        long_session.data
    )
    # (d) the run panel shows the plan's counts line
    panel = run.panel()
    assert "pa-run-plan" in panel.plan._dom_classes
    assert html.escape(run.plan.summary()) in panel.plan.value
    assert f"dropped by length {run.plan.counts()['dropped_length']}" in panel.plan.value
    assert "trained" in panel.plan.value and "not sampled" in panel.plan.value


def test_export_writes_the_window_and_the_plan_and_its_trainer_finds_the_cut(long_session, tmp_path):
    out = long_session.export_training(tmp_path / "export", config=_cfg(tmp_path))
    cfg = json.loads((out / "config.json").read_text())
    plan = long_session.plan_training(_cfg(tmp_path))
    assert cfg["window"] == plan.window == {"max_length": WINDOW, "max_prompt_length": WINDOW // 2}
    assert cfg["plan"]["counts"] == plan.counts() and "pairs" not in cfg["plan"]
    assert 'window=cfg.get("window")' in (out / "train_dpo.py").read_text()
    assert plan.summary() in (out / "README.md").read_text()
    # Outside prefaudit the verbatim trainer imports the cut from the verbatim plan beside it.
    code = (
        "import shaped_trainer, shaped_tokens; assert shaped_trainer.window_cut is shaped_tokens.window_cut"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(out), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_config_validates_the_window():
    assert pa.DPORunConfig(max_length=100).window() == {"max_length": 100, "max_prompt_length": 50}
    with pytest.raises(pa.ConfigError, match="exceeds max_length"):
        pa.DPORunConfig(max_length=64, max_prompt_length=65)
    with pytest.raises(pa.ConfigError, match="max_prompt_length must be an integer"):
        pa.DPORunConfig(max_prompt_length=0)


# ---------------------------------------------------------------------- (c) the real HH slice
@pytest.mark.slow
def test_hh_slice_with_the_real_tokenizer_drops_at_most_two_percent(hh_path, capsys):
    """Measured (SmolLM2 tokenizer, max_length 256): trl's rule dropped 14.7 % and cut 13.0 %."""
    from trl.data_utils import _tokenize, common_prefix_length

    from prefaudit.default_model import default_model_dir

    # The model loads with its tokenizer (a few seconds); only the tokenizer is used.
    session = pa.AuditSession(pa.load_pairs(hh_path), model=default_model_dir(), sae=False, cache_dir=False)
    cfg = pa.DPORunConfig()
    plan = session.plan_training(cfg)
    t, c = plan.table, plan.counts()
    assert c["n_pairs"] == len(session.data) == 997
    assert c["dropped_length"] / c["n_pairs"] <= 0.02
    rc = (t["chosen_kept"] < t["chosen_tokens"]) | (t["rejected_kept"] < t["rejected_tokens"])
    pc = t["prompt_kept"] < t["prompt_tokens"]
    trl_drop = (t["prompt_tokens"] >= cfg.max_length).mean()
    trl_cut = (
        (t["prompt_tokens"] < cfg.max_length)
        & (t["prompt_tokens"] + np.maximum(t["chosen_tokens"], t["rejected_tokens"]) > cfg.max_length)
    ).mean()
    with capsys.disabled():
        print(
            f"\nHH, all {len(t)} pairs at max_length {cfg.max_length}: window drops {c['dropped_length'] / len(t):.1%},"
            f" cuts a response in {rc.mean():.1%} and a prompt in {pc.mean():.1%};"
            f" trl's rule would drop {trl_drop:.1%} and cut {trl_cut:.1%}. {plan.summary()}"
        )
    assert 0.12 < trl_drop < 0.17  # the problem this plan fixes is still there in trl's rule
    # The plan's token counts are trl's own tokenisation of the shaped rows (before the cut).
    from prefaudit.interventions import shape_pairs

    tok = session.backbone.tokenizer
    sample = np.random.default_rng(0).choice(len(t), 50, replace=False)
    rows = shape_pairs(session, "none", positions=np.sort(sample)).dataset
    for pos, row in zip(np.sort(sample), rows, strict=True):
        prompt = _tokenize(tok, row["prompt"], add_generation_prompt=True, tools=None)["input_ids"]
        chosen = _tokenize(tok, row["prompt"] + row["chosen"], tools=None)["input_ids"]
        rejected = _tokenize(tok, row["prompt"] + row["rejected"], tools=None)["input_ids"]
        n = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
        got = t.loc[pos, ["prompt_tokens", "chosen_tokens", "rejected_tokens"]].tolist()
        assert got == [n, len(chosen) - n, len(rejected) - n]
