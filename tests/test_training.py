"""Shaped DPO training on the tiny model: the loss, the interventions, and the background run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import prefaudit as pa
from tests import tiny

BETA = 0.3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------- helpers
def _load(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _dataset(n=8, margins=None, weights=None):
    from datasets import Dataset

    rows = tiny.planted_pairs(n, seed=3)
    margins = np.linspace(-2.0, 1.5, n) if margins is None else margins
    out = []
    for k, r in enumerate(rows):
        row = {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
            "margin": float(margins[k]),
        }
        if weights is not None:
            row["weight"] = float(weights[k])
        out.append(row)
    return Dataset.from_list(out)


def _args(tmp_path, **kw):
    from trl import DPOConfig

    base = dict(
        output_dir=str(tmp_path / "out"),
        beta=BETA,
        per_device_train_batch_size=4,
        max_length=96,
        report_to="none",
        use_cpu=True,
        activation_checkpointing=False,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-3,
        max_steps=2,
        logging_steps=1,
        precompute_ref_log_probs=True,
        bf16=False,  # trl defaults to bf16
    )
    return DPOConfig(**{**base, **kw})


def _seq_logps(model, batch):
    """Summed completion log-probs of every row, from ordinary logits (no trl code)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (lp * batch["completion_mask"][:, 1:]).sum(1)


def _perturb(params, seed=0, scale=0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=gen))


# ---------------------------------------------------------------------- the loss
@pytest.mark.parametrize("mode", ["full+precomputed", "lora+on-the-fly"])
def test_margin_loss_equals_hand_formula(tiny_model_dir, tmp_path, mode):
    from peft import LoraConfig

    from prefaudit.training.trainer import ShapedDPOTrainer

    model, tok = _load(tiny_model_dir)
    lora = mode.startswith("lora")
    trainer = ShapedDPOTrainer(
        model,
        args=_args(tmp_path, precompute_ref_log_probs=not lora),
        train_dataset=_dataset(),
        processing_class=tok,
        peft_config=LoraConfig(r=4, target_modules="all-linear") if lora else None,
    )
    # Move the policy away from the reference, so that h != 0.
    _perturb([p for n, p in trainer.model.named_parameters() if (not lora) or "lora_B" in n])
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    trainer.model.train()  # as in a training step (trl disabled dropout), so metrics go to "train"
    loss = trainer.compute_loss(trainer.model, dict(batch))

    ref, _ = _load(tiny_model_dir)
    policy = trainer.model
    with torch.no_grad():
        pi = _seq_logps(policy, batch)
        rho = _seq_logps(ref, batch)
    h = (pi[:4] - rho[:4]) - (pi[4:] - rho[4:])
    m = torch.tensor([r["margin"] for r in rows])
    expected = -F.logsigmoid(BETA * h - m).mean()
    assert h.abs().min() > 0.05
    # Reference log-probs summed over ~100 tokens by trl's chunked kernel and by plain logits
    # differ by ~1e-5 relative (float32), hence 1e-3; a wrong margin (sign, missing 1/β) is off by >0.1.
    assert loss.item() == pytest.approx(expected.item(), rel=1e-3)
    assert abs(-F.logsigmoid(BETA * h + m).mean().item() - loss.item()) > 0.1
    assert abs(-F.logsigmoid(BETA * h - m * BETA).mean().item() - loss.item()) > 0.1
    # The logged rewards are unshaped; the shaped ones are logged apart.
    metrics = trainer._metrics["train"]
    assert metrics["rewards/margins"][-1] == pytest.approx((BETA * h).mean().item(), rel=1e-2)
    assert metrics["rewards/accuracies"][-1] == pytest.approx((h > 0).float().mean().item())
    assert metrics["shaping/margin"][-1] == pytest.approx(m.mean().item())
    assert metrics["rewards/shaped_margins"][-1] == pytest.approx((BETA * h - m).mean().item(), rel=1e-3)


def test_zero_margin_equals_plain_trl_dpo(tiny_model_dir, tmp_path):
    from trl import DPOTrainer

    from prefaudit.training.trainer import ShapedDPOTrainer

    m1, tok = _load(tiny_model_dir)
    m2 = copy.deepcopy(m1)
    ds = _dataset(margins=np.zeros(8))
    shaped = ShapedDPOTrainer(m1, args=_args(tmp_path / "a"), train_dataset=ds, processing_class=tok)
    plain = DPOTrainer(
        m2, args=_args(tmp_path / "b"), train_dataset=ds.remove_columns("margin"), processing_class=tok
    )
    _perturb(shaped.model.parameters(), seed=1)
    _perturb(plain.model.parameters(), seed=1)
    shaped.model.train()
    plain.model.train()
    rows = list(range(4))
    b1 = shaped._prepare_inputs(shaped.data_collator([shaped.train_dataset[i] for i in rows]))
    b2 = plain._prepare_inputs(plain.data_collator([plain.train_dataset[i] for i in rows]))
    l1 = shaped.compute_loss(shaped.model, dict(b1))
    l2 = plain.compute_loss(plain.model, dict(b2))
    assert l1.item() == pytest.approx(l2.item(), rel=1e-6)
    for key in ("rewards/chosen", "rewards/margins", "rewards/accuracies"):
        assert shaped._metrics["train"][key][-1] == pytest.approx(
            plain._metrics["train"][key][-1], rel=1e-5, abs=1e-7
        )


def test_trainer_rejects_losses_without_a_bradley_terry_logit(tiny_model_dir, tmp_path):
    from prefaudit.training.trainer import ShapedDPOTrainer

    model, tok = _load(tiny_model_dir)
    with pytest.raises(ValueError, match="loss_type='sigmoid'"):
        ShapedDPOTrainer(
            model, args=_args(tmp_path, loss_type=["ipo"]), train_dataset=_dataset(), processing_class=tok
        )


# ---------------------------------------------------------------------- reweight and ablate
def test_reweight_samples_pairs_in_proportion_to_weight(tiny_model_dir, tmp_path):
    from prefaudit.training.trainer import ShapedDPOTrainer

    model, tok = _load(tiny_model_dir)
    w = np.array([4.0, 1.0, 1.0, 0.0, 2.0, 1.0, 1.0, 1.0])
    trainer = ShapedDPOTrainer(
        model, args=_args(tmp_path), train_dataset=_dataset(weights=w), processing_class=tok
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler)
    counts = np.zeros(8)
    for _ in range(500):
        for i in sampler:
            counts[i] += 1
    freq = counts / counts.sum()
    assert counts[3] == 0
    assert np.allclose(freq, w / w.sum(), atol=0.01)
    # Equal weights fall back to trl's own sampler.
    flat = ShapedDPOTrainer(
        _load(tiny_model_dir)[0],
        args=_args(tmp_path / "f"),
        train_dataset=_dataset(weights=np.ones(8)),
        processing_class=tok,
    )
    assert not isinstance(flat._get_train_sampler(), torch.utils.data.WeightedRandomSampler)


def test_ablation_zeroes_the_projection_on_policy_and_reference_passes(tiny_model_dir, tmp_path):
    from peft import LoraConfig

    from prefaudit.training.trainer import ShapedDPOTrainer, find_decoder_layers, orthonormal_basis

    model, tok = _load(tiny_model_dir)
    dirs = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    dirs[2] = dirs[0] + dirs[1]  # rank 2: the basis must not invent a third direction
    trainer = ShapedDPOTrainer(
        model,
        args=_args(tmp_path, precompute_ref_log_probs=False),
        train_dataset=_dataset(),
        processing_class=tok,
        peft_config=LoraConfig(r=4, target_modules="all-linear"),
        ablation_directions=dirs,
        ablation_layer=2,
    )
    q = orthonormal_basis(dirs)
    assert q.shape == (32, 2)
    layer = find_decoder_layers(trainer.model)[2]
    seen: list[tuple[bool, torch.Tensor]] = []

    def record(_m, _a, out):
        h = out[0] if isinstance(out, tuple) else out
        seen.append((torch.is_grad_enabled(), h.detach().clone()))

    handle = layer.register_forward_hook(record)  # runs after the ablation hook: sees its output
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call one step by hand
    trainer.training_step(trainer.model, dict(batch))
    handle.remove()
    ref_passes = [h for grad, h in seen if not grad]
    policy_passes = [h for grad, h in seen if grad]
    assert ref_passes and policy_passes
    for h in policy_passes + ref_passes:
        assert (h @ q).abs().max() < 1e-4 * h.abs().max()
    # The reference pass is the base model ablated like the policy (tests/test_ablation.py: h = 0 at step 0).
    base, _ = _load(tiny_model_dir)
    plain: list[torch.Tensor] = []
    h2 = find_decoder_layers(base)[2].register_forward_hook(
        lambda _m, _a, o: plain.append(o[0] if isinstance(o, tuple) else o)
    )
    with torch.no_grad():
        base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    h2.remove()
    assert torch.allclose(ref_passes[0], plain[0] - (plain[0] @ q) @ q.T, atol=1e-5)
    assert (plain[0] @ q).abs().max() > 1e-2
    trainer.remove_ablation()
    assert trainer.ablation is None


# ---------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"intervention": "prune"}, "intervention='prune'; choose one of"),
        ({"beta": 0}, "beta must be > 0"),
        ({"learning_rate": -1e-4}, "learning_rate must be > 0"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"holdout": 1.0}, "a fraction must be in"),
        ({"holdout": -3}, "must be >= 0"),
        ({"dtype": "int8"}, "dtype='int8'; choose one of"),
        ({"max_length": 8}, "leaves no room"),
        ({"lora_dropout": 1.0}, "lora_dropout must be in"),
        ({"weights": {"concept:length": float("nan")}}, "must be a finite number"),
        ({"dpo_kwargs": {"beta": 0.2}}, "DPORunConfig manages"),
        ({"intervention": "none", "weights": {"concept:length": 1.0}}, "trains plain DPO"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(pa.ConfigError, match=match):
        pa.DPORunConfig(**kwargs)


def test_config_builds_trl_config_and_rejects_unknown_trl_fields(tmp_path):
    cfg = pa.DPORunConfig(max_steps=7, lora=False, dpo_kwargs={"max_grad_norm": 0.5})
    args = cfg.dpo_config(tmp_path)
    assert (args.max_steps, args.learning_rate, args.max_grad_norm, args.loss_type) == (
        7,
        5e-6,
        0.5,
        ["sigmoid"],
    )
    with pytest.raises(pa.ConfigError, match=r"not trl\.DPOConfig fields"):
        pa.DPORunConfig(dpo_kwargs={"betta": 1}).dpo_config(tmp_path)


def test_session_train_rejects_bad_config_on_the_calling_thread(tiny_session):
    with pytest.raises(pa.ConfigError, match="Unknown DPORunConfig field"):
        tiny_session.train(max_stepz=3)
    with pytest.raises(pa.ConfigError, match="leaves 0 of 40 pairs"):
        tiny_session.train(holdout=40)


# ---------------------------------------------------------------------- background runs
def _cfg(tmp_path, **kw):
    return pa.DPORunConfig(
        **{
            "max_steps": 3,
            "batch_size": 4,
            "learning_rate": 1e-2,
            "lora_r": 4,
            "max_length": 96,
            "output_dir": str(tmp_path / "run"),
            **kw,
        }
    )


def test_run_trains_logs_and_moves_parameters_without_touching_the_session_model(tiny_session, tmp_path):
    base_before = {k: v.clone() for k, v in tiny_session.backbone.model.state_dict().items()}
    tiny_session.set_weight("flattery", -1.5)
    run = tiny_session.train(_cfg(tmp_path, intervention="margin"))
    assert run in tiny_session.runs
    assert run.wait(300) == "finished", run.error
    hist = run.history
    assert list(hist["step"]) == [1, 2, 3]
    assert np.all(np.isfinite(hist["loss"])) and "rewards/margins" in hist and "shaping/margin" in hist
    assert hist["shaping/margin"].abs().sum() > 0
    lora_b = [p for n, p in run.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero
    for k, v in tiny_session.backbone.model.state_dict().items():
        assert torch.equal(v, base_before[k]), k
    record = run.record()
    assert record["status"] == "finished" and record["weights"] == {"concept:flattery": -1.5}
    assert sorted(record["train_positions"] + record["heldout_positions"]) == list(range(40))
    assert (run.output_dir / "run.json").is_file() and (run.output_dir / "adapter_config.json").is_file()
    assert run.remaining == 0.0 and run.elapsed > 0


def test_full_fine_tune_with_a_reference_copy(tiny_session, tmp_path):
    run = tiny_session.train(
        _cfg(
            tmp_path,
            intervention="none",
            lora=False,
            precompute_ref_log_probs=False,
            learning_rate=1e-3,
            save_model=False,
        )
    )
    assert run.wait(300) == "finished", run.error
    base = tiny_session.backbone.model.state_dict()
    moved = [k for k, v in run.model.state_dict().items() if k in base and not torch.equal(v, base[k])]
    assert moved
    assert len(run.history) == 3


def test_starting_a_run_while_another_trains_leaves_it_running(tiny_session, tmp_path):
    # Building a trl.DPOConfig resets accelerate's global state; the second run's preparation must
    # not do that under the first one's feet (it crashed the first run at its next clip_grad_norm).
    from transformers import TrainerCallback

    started = __import__("threading").Event()

    class Started(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            started.set()

    first = tiny_session.train(_cfg(tmp_path / "a", intervention="none", max_steps=40), callbacks=[Started()])
    assert started.wait(120)
    second = tiny_session.train(_cfg(tmp_path / "b", intervention="none", max_steps=2))
    assert first.wait(300) == "finished", first.error
    assert second.wait(300) == "finished", second.error
    assert len(first.history) == 40


def test_cancel_stops_at_the_next_step(tiny_session, tmp_path):
    from transformers import TrainerCallback

    class CancelAtSecondStep(TrainerCallback):
        def __init__(self):
            self.run = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 1:
                self.run.cancel()

    cb = CancelAtSecondStep()
    run = tiny_session.train(_cfg(tmp_path, intervention="none", max_steps=50), callbacks=[cb])
    cb.run = run
    assert run.wait(300) == "cancelled"
    assert run.step == 2 and run.history["step"].max() == 2
    assert run.model is not None and run.error is None


def test_stop_button_cancels(tiny_session, tmp_path):
    from transformers import TrainerCallback

    class ClickStop(TrainerCallback):
        def __init__(self):
            self.panel = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 0:
                self.panel.stop.click()

    cb = ClickStop()
    run = tiny_session.train(_cfg(tmp_path, intervention="none", max_steps=50), callbacks=[cb])
    cb.panel = run.panel()
    assert run.wait(300) == "cancelled"
    assert run.step <= 2
    assert cb.panel.stop.disabled and "cancelled" in cb.panel.title.value


def test_exception_in_a_callback_lands_on_run_error_and_the_panel(tiny_session, tmp_path):
    from transformers import TrainerCallback

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raise RuntimeError(f"boom at step {state.global_step}")

    run = tiny_session.train(_cfg(tmp_path, intervention="none"), callbacks=[Boom()])
    panel = run.panel()
    assert run.wait(300, raise_on_error=False) == "failed"
    assert "boom at step 1" in run.error and "Traceback" in run.error
    assert isinstance(run.exception, RuntimeError)
    with pytest.raises(RuntimeError, match="boom at step 1"):
        run.wait()
    panel.redraw()
    assert "boom at step 1" in panel.error.value


def test_exception_in_the_data_lands_on_run_error(tiny_session, tmp_path, monkeypatch):
    from prefaudit.training import trainer as trainer_mod

    def broken(self, examples):
        raise ValueError("corrupt batch")

    monkeypatch.setattr(trainer_mod.ShapedPreferenceCollator, "torch_call", broken)
    run = tiny_session.train(_cfg(tmp_path, intervention="none"))
    assert run.wait(300, raise_on_error=False) == "failed"
    assert "corrupt batch" in run.error


def test_panel_shows_progress_and_metrics(tiny_session, tmp_path):
    from prefaudit.views.figures import fmt_seconds, sparkline_svg
    from prefaudit.views.run_panel import RunPanel

    run = tiny_session.train(_cfg(tmp_path, intervention="none"))
    run.wait(300)
    panel = run.panel()
    assert isinstance(panel, RunPanel) and run.panel() is panel
    panel.redraw()
    assert panel.progress.value == 3 and panel.progress.max == 3
    assert "loss" in panel.metrics.value and "accuracy" in panel.metrics.value
    assert "<polyline" in panel.chart.value
    assert fmt_seconds(75.2) == "1:15" and fmt_seconds(None) == "–"
    assert sparkline_svg({"a": [1.0]}).startswith("<svg")
    assert "text/plain" in run._repr_mimebundle_()
    with pytest.raises(TypeError, match="did you mean"):
        RunPanel(run, layot={})
