"""``ShapedDPOTrainer``: trl's ``DPOTrainer`` with feature-level reward shaping, reweighting and ablation.

This module depends only on torch, transformers, trl (and peft through trl): ``export_training``
copies it verbatim next to the exported ``train_dpo.py``, so a cluster needs trl, not prefaudit.

The shaped loss (``docs/DESIGN.md``) is ``loss_i = −log σ(β·h_i − m_i)`` with
``h_i = (log π(c_i) − log π_ref(c_i)) − (log π(r_i) − log π_ref(r_i))``.

How the margin enters — the design choice
-----------------------------------------
trl's own ``sigmoid`` loss computes ``−log σ(β·((π_c − ref_c) − (π_r − ref_r)))`` from reference
log-probs that, with ``precompute_ref_log_probs``, arrive in the batch. Adding ``m_i/β`` to
``ref_chosen_logps`` makes trl compute exactly ``−log σ(β·h_i − m_i)``: no line of DPO is
re-implemented, every trl feature around the loss (gradient accumulation, DDP/FSDP gathering,
metrics, logging) stays trl's, and the cost is one addition per pair. Without precomputed
reference log-probs the trainer computes them itself first, with trl's own
``compute_ref_log_probs`` (LoRA: adapter disabled; full: the reference copy) — the same forward trl
would run inside its loss — so the injection point is the same in both modes.

Alternatives considered: overriding ``_compute_loss`` with a copy of trl's loss (drifts with every
trl release); an extra loss term from a forward hook (cannot change the Bradley–Terry logit);
a custom ``loss_type`` (trl has no plug-in point for one).

The offset would leak into trl's logged rewards (``rewards/chosen`` would be ``β·(π_c − ref_c) − m``).
The trainer captures the policy's per-pair log-probs from the one policy forward (a forward hook
on the top-level model, read-only) and rewrites ``rewards/chosen``, ``rewards/margins`` and
``rewards/accuracies`` to their unshaped values; the shaped quantities are logged under their own
names: ``shaping/margin`` (mean m), ``rewards/shaped_margins`` (mean β·h − m) and
``rewards/shaped_accuracies`` (fraction with β·h > m).

Reweighting uses a ``WeightedRandomSampler`` over the ``weight`` column (seeded, with
replacement): trl has no per-example loss weights, and sampling pair i with probability ∝ ωᵢ gives
the same expected gradient as the weighted loss Σ ωᵢ ℓᵢ / Σ ωᵢ without touching the loss.

Concept ablation (CAFT-style) projects orthonormalised directions out of the output of one decoder
layer with a forward hook that is switched on for every pass the trainer runs — the policy's
(forward and, under gradient checkpointing, its recomputation) and the reference's alike — and
off otherwise (generation, and after ``remove_ablation``). Why the reference too: DPO's implicit
reward is ``h = log π/π_ref`` (chosen − rejected); with the policy ablated and the reference not,
the two models differ before any update (LoRA B = 0, or the untouched copy), so ``h ≠ 0`` at step 0
for every pair whose responses carry the direction, and the loss pays the policy to restore the
direction's effect by other routes — the opposite of ablating it. Ablating both passes trains
plain DPO on the ablated model: ``h = 0`` at step 0 and only training moves it. Every way trl
produces reference log-probs is covered: the LoRA policy with its adapter disabled (same module,
same hook), an explicit or trl-loaded ``ref_model`` (a second hook on its layer), and
``precompute_ref_log_probs`` (computed during ``__init__``, with the hooks installed and on; the
ablated subspace is folded into trl's cache key, so an un-ablated cached reference is not reused).

Example
-------
>>> from datasets import Dataset
>>> from trl import DPOConfig
>>> data = Dataset.from_list([{"prompt": "Hi", "chosen": " Hello", "rejected": " Go", "margin": -1.0}])
>>> trainer = ShapedDPOTrainer(model, args=DPOConfig("out", precompute_ref_log_probs=True,
...     report_to="none"), train_dataset=data, processing_class=tok)     # doctest: +SKIP
>>> trainer.train()                                                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

try:  # in prefaudit; an export copies prefaudit/training/tokens.py beside this file as shaped_tokens.py
    from .tokens import window_cut
except ImportError:
    from shaped_tokens import window_cut

#: Dataset columns the shaped trainer reads besides trl's own.
MARGIN_COLUMN, WEIGHT_COLUMN = "margin", "weight"


class ShapedPreferenceCollator(DataCollatorForPreference):
    """trl's preference collator that also carries the per-pair ``margin`` column as a float tensor."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        if MARGIN_COLUMN in examples[0]:
            out[MARGIN_COLUMN] = torch.tensor(
                [float(e[MARGIN_COLUMN]) for e in examples], dtype=torch.float32
            )
        return out


def find_decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The ``ModuleList`` of transformer blocks (``model.layers``, ``transformer.h``, ...), also inside PEFT."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) if config is not None else None
    for _name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and n and len(module) == n:
            return module
    raise ValueError(f"Could not find the {n} decoder layers of {type(model).__name__}.")


def orthonormal_basis(directions: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis ``(d_model, k)`` of the span of ``directions`` ``(n, d_model)``.

    SVD rather than QR so that (near-)duplicate directions are dropped instead of producing a
    basis vector from rounding noise.
    """
    d = torch.as_tensor(directions, dtype=torch.float64)
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"directions must have shape (n >= 1, d_model); got {tuple(d.shape)}.")
    u, s, _ = torch.linalg.svd(d.T, full_matrices=False)
    keep = s > tol * s.max()
    return u[:, keep].float()


class ResidualAblation:
    """Project a subspace out of one decoder layer's output while :attr:`active` is true.

    ``h ← h − (h Q) Qᵀ`` with ``Q`` orthonormal. Registered as a forward hook; it does nothing
    unless switched on with :meth:`enabled`, so generation and other uses of the model are untouched.

    The projection is computed in float32 (float64 stays float64) with autocast off: under mixed
    precision autocast would run ``h Q`` in bfloat16 and leave ~0.3 % of the direction in ``h``, a
    leak that grows with how strongly the model writes the direction.
    """

    def __init__(self, layer: torch.nn.Module, directions: torch.Tensor) -> None:
        self.basis = orthonormal_basis(directions)
        self.active = False
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, _module: torch.nn.Module, _args: Any, output: Any) -> Any:
        if not self.active:
            return None
        h = output[0] if isinstance(output, tuple) else output
        dtype = torch.promote_types(h.dtype, torch.float32)
        autocast = (
            torch.autocast(h.device.type, enabled=False)
            if torch.amp.is_autocast_available(h.device.type)
            else contextlib.nullcontext()
        )
        with autocast:
            x, q = h.to(dtype), self.basis.to(device=h.device, dtype=dtype)
            h = (x - (x @ q) @ q.T).to(h.dtype)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    @contextlib.contextmanager
    def enabled(self, on: bool = True) -> Iterator[None]:
        previous, self.active = self.active, on
        try:
            yield
        finally:
            self.active = previous

    def remove(self) -> None:
        self._handle.remove()
        self.active = False


class _PolicyLogps:
    """Read-only forward hook: the summed completion log-probs of the first fused forward in a window."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self._armed = False
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, _module: torch.nn.Module, _args: Any, output: Any) -> None:
        lp = getattr(output, "log_probs", None)
        if self._armed and lp is not None:
            # trl zeroes log_probs where the label is -100, so the row sum is the completion log-prob.
            self.value = lp.detach().sum(dim=1)
            self._armed = False

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        self.value, self._armed = None, True
        try:
            yield
        finally:
            self._armed = False

    def remove(self) -> None:
        self._handle.remove()
        self.value = None


class ShapedDPOTrainer(DPOTrainer):
    """trl ``DPOTrainer`` whose sigmoid loss is ``−log σ(β·h − m)`` with a per-pair margin column.

    Parameters are ``DPOTrainer``'s, plus:

    ablation_directions : torch.Tensor, shape (n, d_model), optional
        Residual-stream directions projected out of the output of decoder layer ``ablation_layer``
        (CAFT-style); orthonormalised here. They are projected out of the policy's *and* the
        reference's passes (on the fly or precomputed), so the implicit reward is 0 for every pair
        at step 0: training is plain DPO on the ablated model (module docstring).
    ablation_layer : int, optional
        Index of that decoder layer (0-based).
    window : dict, optional
        ``{"max_length": L, "max_prompt_length": P}``: cut every tokenised pair to the training
        window with ``window_cut`` (``prefaudit/training/tokens.py``: the prompt's last tokens, each
        response's first) instead of trl's rule (drop a pair whose prompt alone fills
        ``max_length``, keep the start of prompt+response). A pair left without a response token
        is removed; its ``pair_id`` (the row index without that column) is on ``window_dropped``.

    After training, call :meth:`remove_ablation`: the trained policy is then used without the hook,
    as in CAFT. It is the base model plus an update learned while the directions were absent at
    that layer — the gradient never had a component along them, and the layers above were trained
    on inputs without them. With the hook gone the layers up to the ablated one write the
    directions again (as the base does, up to incidental drift of their weights), so the policy
    keeps what the base does with the concept and learned the preference through other routes.
    Nothing in training pushes the directions' projection down, or makes the policy behave as if
    they were still ablated.

    The train dataset may carry ``margin`` (float, logit units; 0 = plain DPO) and ``weight``
    (float ≥ 0; rows are sampled with probability ∝ weight when the weights are not all equal).
    See the module docstring for why the margin goes through the reference log-probs.

    Example
    -------
    >>> trainer = ShapedDPOTrainer(model, args=dpo_config, train_dataset=shaped,
    ...                            processing_class=tokenizer)        # doctest: +SKIP
    >>> trainer.train()                                              # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        ref_model: Any = None,
        args: Any = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        *,
        ablation_directions: torch.Tensor | None = None,
        ablation_layer: int | None = None,
        window: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        if args is not None:
            _check_args(args)
        # Read by _prepare_dataset, which trl's __init__ calls.
        self.window = _check_window(window, args)
        self.window_dropped: list[int] = []
        # Set before trl's __init__, which precomputes reference log-probs through compute_ref_log_probs:
        # the hooks are installed on first use (_ablations), when trl has set model and ref_model.
        self.ablation: ResidualAblation | None = None
        self.ref_ablation: ResidualAblation | None = None
        if ablation_directions is not None and ablation_layer is None:
            raise ValueError("ablation_directions needs ablation_layer (the decoder layer index).")
        self._ablation_spec = None
        if ablation_directions is not None:
            self._ablation_spec = (torch.as_tensor(ablation_directions), int(ablation_layer))
        if data_collator is None and args is not None:
            tok = kwargs.get("processing_class")
            tok = getattr(tok, "tokenizer", tok)
            data_collator = ShapedPreferenceCollator(
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        super().__init__(model, ref_model, args, data_collator, train_dataset, **kwargs)
        _check_args(self.args)
        # From here on every batch carries reference log-probs: precomputed by trl, or computed by
        # compute_loss before the policy forward. trl then reads them from the batch.
        self._ref_on_the_fly = not self.precompute_ref_logps
        self.precompute_ref_logps = True
        self._policy_logps = _PolicyLogps(self.accelerator.unwrap_model(self.model))
        self._ablations()  # installed by the precompute already, or now
        self._sample_weights = _sample_weights(self.train_dataset)

    # ------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        window = getattr(self, "window", None)
        if window is None:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        # trl's own tokenisation without its length filter (it drops nothing), then the window.
        dataset = super()._prepare_dataset(dataset, processing_class, _NoLengthLimit(args), dataset_name)
        length, prompt_length = int(window["max_length"]), int(window["max_prompt_length"])

        def cut(example: dict[str, Any]) -> dict[str, Any]:
            ids = (example["prompt_ids"], example["chosen_ids"], example["rejected_ids"])
            p, c, r = window_cut(*ids, length, prompt_length)
            return {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}

        def has_responses(example: dict[str, Any]) -> bool:
            return len(example["chosen_ids"]) > 0 and len(example["rejected_ids"]) > 0

        if not hasattr(dataset, "column_names") or not hasattr(dataset, "select"):  # an IterableDataset
            return dataset.map(cut).filter(has_responses)
        dataset = dataset.map(
            cut, num_proc=args.dataset_num_proc, desc=f"Cutting {dataset_name} to the window"
        )
        chosen, rejected = dataset["chosen_ids"], dataset["rejected_ids"]
        empty = [i for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)) if not c or not r]
        if empty:
            ids = dataset["pair_id"] if "pair_id" in dataset.column_names else range(len(dataset))
            self.window_dropped += [int(ids[i]) for i in empty]
            gone = set(empty)
            dataset = dataset.select([i for i in range(len(dataset)) if i not in gone])
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if MARGIN_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, MARGIN_COLUMN]

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self._sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        # Same seed on every process: accelerate shards the sampled batches, so ranks must agree.
        gen = torch.Generator().manual_seed(int(self.args.seed))
        return torch.utils.data.WeightedRandomSampler(
            self._sample_weights, num_samples=len(self._sample_weights), replacement=True, generator=gen
        )

    # ------------------------------------------------------------------ loss
    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        inputs = {k: v for k, v in inputs.items() if k != MARGIN_COLUMN}
        # The reference is ablated like the policy (module docstring): on the fly and precomputed.
        with self._ablating():
            return super().compute_ref_log_probs(model, inputs)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        margin = inputs.pop(MARGIN_COLUMN, None)
        if self._ref_on_the_fly:
            ref = self.ref_model if self.ref_model is not None else self.model
            inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = self.compute_ref_log_probs(ref, inputs)
        ref_chosen = inputs["ref_chosen_logps"]
        if margin is None:
            margin = torch.zeros_like(ref_chosen)
        margin = margin.to(device=ref_chosen.device, dtype=ref_chosen.dtype)
        # The whole shaping: trl's sigmoid loss on (π_c − ref_c − m/β) − (π_r − ref_r) is −log σ(β·h − m).
        inputs["ref_chosen_logps"] = ref_chosen + margin / self.beta
        with self._policy_logps.window(), self._ablating():  # the policy pass (also in evaluation)
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._relabel_rewards(margin, ref_chosen, inputs["ref_rejected_logps"])
        return out

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        # The ablation covers the forwards and the backward (gradient-checkpoint recomputation).
        with self._ablating():
            return super().training_step(*args, **kwargs)

    def _relabel_rewards(
        self, margin: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor
    ) -> None:
        """Replace trl's last reward metrics (which include the offset) by unshaped ones; log shaped ones apart."""
        logps = self._policy_logps.value
        metrics = self._metrics["train" if self.model.training else "eval"]
        if logps is None or "rewards/chosen" not in metrics:
            return
        pol_c, pol_r = logps.to(ref_chosen.dtype).chunk(2, dim=0)
        chosen = self.beta * (pol_c - ref_chosen.detach())
        rejected = self.beta * (pol_r - ref_rejected.detach())
        gathered = self.accelerator.gather(torch.stack([chosen, rejected, margin.detach()], dim=1))
        c, r, m = gathered.unbind(dim=1)
        metrics["rewards/chosen"][-1] = c.mean().item()
        metrics["rewards/margins"][-1] = (c - r).mean().item()
        metrics["rewards/accuracies"][-1] = (c > r).float().mean().item()
        metrics["shaping/margin"].append(m.mean().item())
        metrics["rewards/shaped_margins"].append((c - r - m).mean().item())
        metrics["rewards/shaped_accuracies"].append((c - r > m).float().mean().item())

    # ------------------------------------------------------------------ ablation
    def _ablations(self) -> list[ResidualAblation]:
        """The ablation hooks, installed on first use: on the policy's layer and on the reference copy's."""
        if self._ablation_spec is None:
            return []
        directions, index = self._ablation_spec
        if self.ablation is None:
            layers = find_decoder_layers(self.accelerator.unwrap_model(self.model))
            self.ablation = ResidualAblation(layers[index], directions)
        ref = getattr(self, "ref_model", None)
        if ref is None and self.ref_ablation is not None:  # trl dropped a reference used only to precompute
            self.ref_ablation.remove()
            self.ref_ablation = None
        elif ref is not None and self.ref_ablation is None:
            layers = find_decoder_layers(self.accelerator.unwrap_model(ref))
            self.ref_ablation = ResidualAblation(layers[index], directions)
        return [a for a in (self.ablation, self.ref_ablation) if a is not None]

    @contextlib.contextmanager
    def _ablating(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for ablation in self._ablations():
                stack.enter_context(ablation.enabled(True))
            yield

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        # trl caches precomputed log-probs under Hasher.hash((dataset fingerprint, model hash)); a hook
        # is no weight, so the ablated subspace joins the key — else a cached un-ablated reference
        # would be reused (same data file, same weights).
        model_hash = self._precompute_model_hash
        ablations = self._ablations()
        if ablations:
            basis = ablations[0].basis.numpy().tobytes()
            self._precompute_model_hash = (model_hash, "ablation", self._ablation_spec[1], basis)
        try:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        finally:
            self._precompute_model_hash = model_hash

    def remove_ablation(self) -> None:
        """Remove the ablation hooks (the trained policy is used without them, as in CAFT).

        Afterwards the trainer's passes are un-ablated while reference log-probs it precomputed
        stay the ablated reference's: evaluate the trained policy elsewhere, not with this trainer.
        """
        for ablation in (self.ablation, self.ref_ablation):
            if ablation is not None:
                ablation.remove()
        self.ablation = self.ref_ablation = None
        self._ablation_spec = None

    def release(self) -> None:
        """Drop what only training needs: hooks, optimizer, scheduler, reference copy, accelerate's lists.

        Call it when training is over (or failed): the trained policy stays usable, without hooks,
        and the trainer no longer holds the optimizer state (2x the trained weights) or the reference
        model (a full copy for a full fine-tune), even while something still refers to the trainer.
        """
        self.remove_ablation()
        policy_logps = getattr(self, "_policy_logps", None)  # absent when __init__ failed early
        if policy_logps is not None:
            policy_logps.remove()
        self.optimizer = self.lr_scheduler = None
        self.callback_handler.optimizer = self.callback_handler.lr_scheduler = None
        self.ref_model = None
        self.accelerator.free_memory()


def _check_args(args: Any) -> None:
    """The margin is a shift of the Bradley–Terry logit: only trl's plain sigmoid loss has one."""
    loss_types = args.loss_type if isinstance(args.loss_type, list) else [args.loss_type]
    if list(loss_types) != ["sigmoid"]:
        raise ValueError(
            f"ShapedDPOTrainer needs loss_type='sigmoid' (the Bradley–Terry loss); got {loss_types}."
        )
    if getattr(args, "f_divergence_type", "reverse_kl") not in ("reverse_kl", None):
        raise ValueError("ShapedDPOTrainer needs f_divergence_type='reverse_kl' (standard DPO).")
    if getattr(args, "ld_alpha", None) is not None:
        raise ValueError("ShapedDPOTrainer does not support ld_alpha (length-desensitised log-probs).")


class _NoLengthLimit:
    """Training arguments as trl's ``_prepare_dataset`` reads them, with ``max_length=None`` (no drop filter)."""

    max_length = None

    def __init__(self, args: Any) -> None:
        self._args = args

    def __getattr__(self, name: str) -> Any:
        return getattr(self._args, name)


def _check_window(window: dict[str, int] | None, args: Any) -> dict[str, int] | None:
    """The window as ints; it must fit in ``args.max_length`` (the collator would cut it again)."""
    if window is None:
        return None
    length, prompt = int(window["max_length"]), int(window["max_prompt_length"])
    limit = getattr(args, "max_length", None)
    if not 1 <= prompt <= length or (limit is not None and length > limit):
        raise ValueError(
            f"window={window!r}: need 1 <= max_prompt_length <= max_length <= args.max_length ({limit})."
        )
    return {"max_length": length, "max_prompt_length": prompt}


def _sample_weights(dataset: Any) -> torch.Tensor | None:
    """Per-row sampling weights from the ``weight`` column, or ``None`` when absent or all equal."""
    names = getattr(dataset, "column_names", None) or []
    if WEIGHT_COLUMN not in names:
        return None
    w = torch.tensor(dataset[WEIGHT_COLUMN], dtype=torch.float64)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError("The 'weight' column must hold finite, non-negative numbers with a positive sum.")
    if bool(torch.all(w == w[0])):
        return None
    return w
