"""Concept ablation (``intervention="ablate"``, CAFT-style) in shaped DPO on the tiny model.

The directions are projected out of the policy's and the reference's passes alike, so training is
plain DPO on the ablated model: the implicit reward is exactly 0 at step 0 on every reference path
trl has, and the direction is invisible to training end to end. Both have a control that leaves
the reference un-ablated (the behaviour before the fix) and shows the assertion can fail.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch

import prefaudit as pa
from prefaudit.training.trainer import MARGIN_COLUMN, ResidualAblation, ShapedDPOTrainer, find_decoder_layers
from tests import tiny
from tests.test_training import _args, _dataset, _load

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYER = 2
#: Four random residual directions of the tiny model (d_model = 32): enough to move its log-probs.
DIRECTIONS = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
REWARDS = ("rewards/chosen", "rewards/rejected", "rewards/margins")


def _unablate_reference(monkeypatch) -> None:
    """The behaviour before the fix: reference log-probs computed with the ablation switched off."""
    from trl import DPOTrainer

    def compute_ref_log_probs(self, model, inputs):
        inputs = {k: v for k, v in inputs.items() if k != MARGIN_COLUMN}
        with contextlib.ExitStack() as stack:
            for ablation in self._ablations():
                stack.enter_context(ablation.enabled(False))
            return DPOTrainer.compute_ref_log_probs(self, model, inputs)

    monkeypatch.setattr(ShapedDPOTrainer, "compute_ref_log_probs", compute_ref_log_probs)


@pytest.fixture()
def unablated_reference(monkeypatch):
    _unablate_reference(monkeypatch)


def _trainer(tiny_model_dir, tmp_path, mode, train_dataset=None, tokenizer=None, **kw):
    from peft import LoraConfig

    model, tok = _load(tiny_model_dir)
    tok = tok if tokenizer is None else tokenizer
    lora, precompute = mode.startswith("lora"), mode.endswith("precomputed")
    return ShapedDPOTrainer(
        model,
        ref_model=copy.deepcopy(model) if "+ref" in mode else None,
        args=_args(tmp_path, precompute_ref_log_probs=precompute, max_steps=1),
        train_dataset=_dataset(margins=np.zeros(8)) if train_dataset is None else train_dataset,
        processing_class=tok,
        peft_config=LoraConfig(r=4, target_modules="all-linear") if lora else None,
        **kw,
    )


def _first_step_rewards(trainer) -> dict[str, float]:
    trainer.train()
    first = trainer.state.log_history[0]  # logged at step 1: the forward ran before any update
    return {k: first[k] for k in REWARDS}


# ---------------------------------------------------------------------- step 0: h = 0 on every path
# full+trl-ref: no ref_model and no precompute, so trl loads the reference from the model's path
# (the exported script's full fine-tune).
MODES = ["lora", "lora+precomputed", "full+ref", "full+trl-ref", "full+precomputed", "full+ref+precomputed"]


@pytest.mark.parametrize("mode", MODES)
def test_implicit_reward_is_zero_at_step_0_with_the_reference_ablated(tiny_model_dir, tmp_path, mode):
    # lora: the adapter disabled on the same hooked module; full+ref, full+trl-ref: a second hook on
    # the reference model's layer; *precomputed: trl's __init__ computes them, hooks installed and on.
    trainer = _trainer(tiny_model_dir, tmp_path, mode, ablation_directions=DIRECTIONS, ablation_layer=LAYER)
    has_ref = "ref" in mode
    assert (trainer.ref_model is not None) == has_ref and (trainer.ref_ablation is not None) == has_ref
    rewards = _first_step_rewards(trainer)
    assert all(abs(v) < 1e-5 for v in rewards.values()), rewards


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("unablated_reference")
def test_control_an_unablated_reference_gives_a_nonzero_reward_at_step_0(tiny_model_dir, tmp_path, mode):
    # Before the fix: rewards/chosen −0.068, rewards/rejected −0.081 on every path (β = 0.3).
    trainer = _trainer(tiny_model_dir, tmp_path, mode, ablation_directions=DIRECTIONS, ablation_layer=LAYER)
    rewards = _first_step_rewards(trainer)
    assert max(abs(rewards["rewards/chosen"]), abs(rewards["rewards/rejected"])) > 1e-2, rewards


@pytest.mark.parametrize("autocast", [False, True])
def test_projection_removes_the_directions_under_mixed_precision(tiny_model_dir, autocast):
    """bf16/fp16 runs train under autocast: the hook still removes the directions to float32 rounding.

    The layer's output (the residual stream) stays float32 under autocast, but autocast would run
    the projection's ``h Q`` in bfloat16 and leave ~0.3 % of the directions in it (3e-3 here before
    the hook turned autocast off), more the more strongly the model writes them.
    """
    model, _ = _load(tiny_model_dir)
    layer = find_decoder_layers(model)[LAYER]
    ablation = ResidualAblation(layer, DIRECTIONS)
    seen: list[torch.Tensor] = []
    layer.register_forward_hook(lambda _m, _a, o: seen.append(o[0] if isinstance(o, tuple) else o))
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(input_ids=ids)
        with ablation.enabled():
            model(input_ids=ids)
    plain, ablated = seen
    assert ablated.dtype == plain.dtype == torch.float32
    left = (ablated @ ablation.basis).norm() / (plain @ ablation.basis).norm()
    assert left < 1e-5


def test_precomputed_reference_cache_is_keyed_on_the_ablation(tiny_model_dir, tmp_path):
    """trl caches precomputed log-probs by (tokenised dataset, weights); a hook changes neither.

    Without the ablation in the key the second trainer reads the first one's un-ablated values
    (checked by hand: identical arrays), as a rerun of an exported script on its data file would.
    """
    from datasets import load_from_disk

    _dataset(margins=np.zeros(8)).save_to_disk(str(tmp_path / "data"))
    data = load_from_disk(str(tmp_path / "data"))  # on disk, so trl's precompute writes a cache file
    assert data.cache_files
    # One tokenizer and one output_dir (both enter trl's tokenising map): one dataset fingerprint.
    tok = _load(tiny_model_dir)[1]
    plain = _trainer(tiny_model_dir, tmp_path, "full+precomputed", train_dataset=data, tokenizer=tok)
    ablated = _trainer(
        tiny_model_dir,
        tmp_path,
        "full+precomputed",
        train_dataset=data,
        tokenizer=tok,
        ablation_directions=DIRECTIONS,
        ablation_layer=LAYER,
    )
    ref_plain = np.array(plain.train_dataset["ref_chosen_logps"])
    ref_ablated = np.array(ablated.train_dataset["ref_chosen_logps"])
    assert np.abs(ref_plain - ref_ablated).max() > 0.1  # not the cached un-ablated values
    assert all(abs(v) < 1e-5 for v in _first_step_rewards(ablated).values())


# ---------------------------------------------------------------------- end to end through the session
def _lora_update(model) -> torch.Tensor:
    """Every adapted module's weight update B·A·scaling, flattened (the whole effect of training)."""
    parts = []
    for _name, module in sorted(model.named_modules(), key=lambda kv: kv[0]):
        if hasattr(module, "lora_B") and "default" in module.lora_B:
            delta = module.lora_B["default"].weight @ module.lora_A["default"].weight
            parts.append((delta * module.scaling["default"]).detach().flatten())
    return torch.cat(parts)


def _layer_outputs(session, model, positions) -> torch.Tensor:
    """Layer-``backbone.layer`` outputs of the held-out responses (chosen and rejected), read after the prompt."""
    bb = session.backbone
    seen: list[torch.Tensor] = []
    handle = find_decoder_layers(model)[bb.layer].register_forward_hook(
        lambda _m, _a, o: seen.append(o[0] if isinstance(o, tuple) else o)
    )
    out: list[torch.Tensor] = []
    try:
        for i in positions:
            prompt = bb.prompt_ids(session.data.messages(int(i)))
            for column in ("chosen", "rejected"):
                response = bb.response_ids(session.data.df[column].iloc[int(i)])[0]
                with torch.no_grad():
                    model(input_ids=torch.tensor([prompt + response]))
                out.append(seen.pop()[0, len(prompt) :].float())
    finally:
        handle.remove()
    return torch.cat(out)


def test_ablated_training_is_blind_to_the_direction_end_to_end(
    tiny_model_dir, tiny_sae_dir, tiny_cache_dir, monkeypatch
):
    """``session.train(intervention="ablate")``: training never sees the ablated direction.

    Why not "the direction's projection falls in the trained policy": with the direction projected
    out of both passes, the loss depends on the layer's output only through its orthogonal
    complement, so its gradient has no component along the direction and nothing in training pushes
    the projection down (or up). The layers up to the ablated one change only as a side effect of
    fitting the complement, so the projection moves incidentally — on this tiny model it *rose* for
    sae:5, 7, 11 and 20 (mean |proj| 0.016 → 0.017–0.023 after 6 steps at lr 1e-3, while the
    activations' norm grew ~25 %). Nor does anything make the policy with and without the hook closer
    than the base's: the hook is off after training and nothing was trained to be robust to it.

    What CAFT does guarantee, and what is asserted: the learned update does not depend on the
    direction at all. Change how strongly the base model writes the direction at that layer (add
    ``q aᵀ`` to the layer's MLP down-projection: the layer output changes only along ``q``) and
    train again: the losses, the step-0 rewards (exactly 0) and the LoRA update are the same, up to
    float rounding. With the reference un-ablated (the old bug) the reference log-probs see the
    change, and the update differs by percents.

    The session runs in float32 on every machine (``tiny_session`` picks bfloat16 on a CPU with
    AVX512-BF16 or AMX): a bfloat16 down-projection rounds ``W + 5 q aᵀ`` by ~0.4 % of a term far
    larger than ``W``, and that rounding is a change of the base *off* ``q``, which training sees
    (losses 4e-4 and the update 4 % apart, near the un-ablated control's 5 %).
    """
    from prefaudit.interventions import ablation_directions

    pairs = pa.load_pairs(tiny.planted_pairs(40))
    session = pa.AuditSession(
        pairs,
        model=tiny_model_dir,
        sae=tiny_sae_dir,
        cache_dir=tiny_cache_dir,
        batch_size=4,
        shard_size=16,
        dtype="float32",
    )
    session.encode(progress=False)
    feature = "sae:5"
    q = torch.as_tensor(ablation_directions(session, [feature])[0], dtype=torch.float32)
    q = q / q.norm()
    config = pa.DPORunConfig(
        intervention="ablate",
        weights={feature: -1.0},
        max_steps=6,
        learning_rate=1e-3,
        lora_r=4,
        max_length=96,
        save_model=False,
        holdout=10,
    )
    base = session.backbone.model
    assert next(base.parameters()).dtype == torch.float32
    down = find_decoder_layers(base)[session.backbone.layer].mlp.down_proj
    w0 = down.weight.detach().clone()
    a = torch.randn(w0.shape[1], generator=torch.Generator().manual_seed(1))

    def train_pair():
        """(run on the base model, run on the base writing 5·(a·x) more along q at the layer)."""
        runs = []
        for scale in (0.0, 5.0):
            with torch.no_grad():
                down.weight.copy_(w0 + scale * torch.outer(q, a))
            try:
                run = session.train(config)
                assert run.wait(300) == "finished", run.error
            finally:
                with torch.no_grad():
                    down.weight.copy_(w0)
            runs.append(run)
        return runs

    run, moved = train_pair()
    held = run.heldout_positions
    # The change is real: along q the perturbed base writes several times what the base does.
    proj = (_layer_outputs(session, base, held) @ q).abs().mean()
    with torch.no_grad():
        down.weight.copy_(w0 + 5.0 * torch.outer(q, a))
    try:
        proj_moved = (_layer_outputs(session, base, held) @ q).abs().mean()
    finally:
        with torch.no_grad():
            down.weight.copy_(w0)
    assert proj_moved > 3 * proj

    # Ablated in both passes: h = 0 before the first update, and only training moves it.
    for r in (run, moved):
        first = r.history.iloc[0]
        assert abs(first["rewards/chosen"]) < 1e-6 and abs(first["rewards/rejected"]) < 1e-6
        assert r.history["rewards/margins"].abs().max() > 1e-2
        assert r.trainer is None  # released once finished; the trained policy runs without the hook
        assert not find_decoder_layers(r.model)[session.backbone.layer]._forward_hooks
    # Float rounding in the projection (it removes a 5x larger q-component), amplified by Adam over 6
    # steps, leaves ~4e-6 relative in the losses and ~1e-4 in the update; the un-ablated control
    # below differs by 2e-2 and 5e-2.
    np.testing.assert_allclose(run.history["loss"], moved.history["loss"], rtol=1e-5)
    update, update_moved = _lora_update(run.model), _lora_update(moved.model)
    assert update.norm() > 0
    assert (update - update_moved).norm() / update.norm() < 2e-3

    # Control: with the reference left un-ablated the direction reaches the loss through it.
    with monkeypatch.context() as m:
        _unablate_reference(m)
        old, old_moved = train_pair()
    assert abs(old.history.iloc[0]["rewards/chosen"]) > 1e-4
    old_update, old_update_moved = _lora_update(old.model), _lora_update(old_moved.model)
    assert (old_update - old_update_moved).norm() / old_update.norm() > 2e-2
    loss_gap = np.abs(old.history["loss"] - old_moved.history["loss"]) / old_moved.history["loss"]
    assert loss_gap.max() > 2e-3  # the tolerance above tells the bug from rounding
