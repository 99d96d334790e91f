"""``DPORunConfig``: everything a shaped DPO run needs, validated when it is built.

Example
-------
>>> from prefaudit.training.config import DPORunConfig
>>> cfg = DPORunConfig(intervention="margin", max_steps=20, holdout=0.25)
>>> cfg.resolved_learning_rate()
0.0002
>>> DPORunConfig(beta=0)
Traceback (most recent call last):
...
prefaudit.errors.ConfigError: beta must be > 0 (the DPO temperature), got 0.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..interventions import names as intervention_names
from ..shaping import DOMINANCE_THRESHOLD
from .files import check_run_name, run_folder

DTYPES = ("float32", "bfloat16", "float16")
# DPOConfig fields this config sets itself; dpo_kwargs may not override them.
_MANAGED = {
    "output_dir",
    "beta",
    "learning_rate",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "precompute_ref_log_probs",
    "activation_checkpointing",
    "gradient_checkpointing",
    "seed",
    "logging_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "report_to",
    "loss_type",
}


@dataclass
class DPORunConfig:
    """Configuration of one shaped DPO run (trl ``DPOTrainer`` underneath).

    Parameters
    ----------
    intervention : {"margin", "reweight", "filter", "flip", "ablate", "none"}
        How the session's weights shape training (see :mod:`prefaudit.interventions`).
    weights : dict, optional
        Feature -> weight; default: the session's weights when the run starts (copied).
    name : str, optional
        Run name (default: ``"<intervention>-<n>"``); also the default output folder name, so it must
        be a name, not a path: no ``/`` or ``\\``, not ``.``/``..``, no control characters, at most
        200 bytes (``prefaudit.training.files.check_run_name``).
    lora : bool
        Train a LoRA adapter (peft) rather than all weights. The reference is then the base model
        with the adapter disabled; no second copy is held.
    lora_r, lora_alpha, lora_dropout, lora_target_modules
        peft ``LoraConfig`` settings (``"all-linear"`` excludes the LM head, which trl requires).
    beta : float
        DPO temperature β.
    learning_rate : float, optional
        Default 2e-4 with LoRA, 5e-6 for a full fine-tune.
    max_steps, batch_size, gradient_accumulation_steps, warmup_steps, lr_scheduler_type
        Optimisation; ``batch_size`` is pairs per device per step.
    max_length : int
        Tokens per prompt+response sequence: the training window (``prefaudit.training.plan``).
    max_prompt_length : int, optional
        Tokens the prompt keeps at least when the window is short of room (default
        ``max_length // 2``): a long prompt keeps its last ``max(max_prompt_length, max_length −
        longest response)`` tokens, each response its first ``max_length − kept prompt`` tokens. At
        most ``max_length`` (then a prompt can fill the window and its pair is dropped, listed).
    holdout : float or int
        Pairs kept out of training for verification: a fraction in [0, 1) or a count.
    max_train_pairs : int, optional
        Cap on the training pairs (after the hold-out), for quick runs.
    seed : int
        Seeds the hold-out split, LoRA initialisation, data order (trl's ``data_seed`` too, unless
        ``dpo_kwargs`` sets it) and weighted sampling.
    precompute_ref_log_probs : bool, optional
        Compute reference log-probs once for the whole training set before training (a full
        fine-tune then keeps no reference copy in memory) rather than one reference forward per
        step. Default (``None``): precompute when the run covers at least one epoch — a shorter
        run would precompute pairs it never sees.
    activation_checkpointing : bool
        Recompute activations in the backward pass (trl's default is on; off is faster for small models).
    dtype : {"float32", "bfloat16", "float16"}
        Compute dtype: ``bfloat16``/``float16`` train with mixed precision (weights stay float32).
        Keep float32 on CPUs without native bf16 (AVX2 only: bf16 measured ~6x slower).
    filter_threshold : float
        τ for ``filter`` and ``flip``: pairs with margin ≤ −τ are dropped or flipped.
    logging_steps : int
        Log metrics every this many steps (the live panel's refresh rate).
    output_dir : str, optional
        Where the adapter/model and ``run.json`` go (default ``<cache>/runs/<name>``).
    save_model : bool
        Save the trained adapter (LoRA) or model (full) to ``output_dir`` at the end.
    dpo_kwargs : dict
        Further ``trl.DPOConfig`` fields (not those this config manages).

    Example
    -------
    >>> cfg = DPORunConfig(intervention="reweight", lora_r=8, max_steps=10)
    >>> cfg.to_dict()["lora_r"]
    8
    """

    intervention: str = "margin"
    weights: dict[str, float] | None = None
    name: str | None = None
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str | list[str] = "all-linear"
    beta: float = 0.1
    learning_rate: float | None = None
    max_steps: int = 40
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    lr_scheduler_type: str = "constant"
    max_length: int = 256
    max_prompt_length: int | None = None
    holdout: float | int = 0.2
    max_train_pairs: int | None = None
    seed: int = 0
    precompute_ref_log_probs: bool | None = None
    activation_checkpointing: bool = False
    dtype: str = "float32"
    filter_threshold: float = DOMINANCE_THRESHOLD
    logging_steps: int = 1
    output_dir: str | None = None
    save_model: bool = True
    dpo_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name is not None:  # it becomes a folder under runs/: a name, never a path
            check_run_name(self.name)
        if self.output_dir is not None and (
            not isinstance(self.output_dir, (str, os.PathLike)) or "\0" in os.fspath(self.output_dir)
        ):
            raise ConfigError(f"output_dir must be a path without NUL characters, got {self.output_dir!r}.")
        if self.intervention not in intervention_names():
            raise ConfigError(
                f"intervention={self.intervention!r}; choose one of {', '.join(intervention_names())}."
            )
        if self.weights is not None:
            if not isinstance(self.weights, dict):
                raise ConfigError(
                    f"weights must be a dict feature -> weight, got {type(self.weights).__name__}."
                )
            for f, w in self.weights.items():
                if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(float(w)):
                    raise ConfigError(f"Weight for {f!r} must be a finite number, got {w!r}.")
        _positive_number("beta", self.beta, "the DPO temperature")
        if self.learning_rate is not None:
            _positive_number("learning_rate", self.learning_rate)
        for name in (
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "logging_steps",
            "lora_r",
        ):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}.")
        if self.max_length < 16:
            raise ConfigError(
                f"max_length={self.max_length} leaves no room for prompt and response; use >= 16."
            )
        if self.max_prompt_length is not None:
            _positive_int("max_prompt_length", self.max_prompt_length)
            if self.max_prompt_length > self.max_length:
                raise ConfigError(
                    f"max_prompt_length={self.max_prompt_length} exceeds max_length={self.max_length}."
                )
        _positive_number("lora_alpha", self.lora_alpha)
        if not 0 <= float(self.lora_dropout) < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if isinstance(self.holdout, bool) or not isinstance(self.holdout, (int, float)):
            raise ConfigError(
                f"holdout must be a fraction in [0, 1) or a count of pairs, got {self.holdout!r}."
            )
        if isinstance(self.holdout, float) and not 0 <= self.holdout < 1:
            raise ConfigError(
                f"holdout={self.holdout!r}: a fraction must be in [0, 1) (or pass a count of pairs)."
            )
        if isinstance(self.holdout, int) and self.holdout < 0:
            raise ConfigError(f"holdout={self.holdout} pairs: must be >= 0.")
        if self.max_train_pairs is not None:
            _positive_int("max_train_pairs", self.max_train_pairs)
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype!r}; choose one of {', '.join(DTYPES)}.")
        _positive_number("filter_threshold", self.filter_threshold, "a margin in logit units")
        if not isinstance(self.dpo_kwargs, dict):
            raise ConfigError("dpo_kwargs must be a dict of trl.DPOConfig fields.")
        clash = sorted(set(self.dpo_kwargs) & _MANAGED)
        if clash:
            raise ConfigError(
                f"dpo_kwargs sets {', '.join(clash)}, which DPORunConfig manages; set them as DPORunConfig fields."
            )
        if self.intervention == "none" and self.weights:
            raise ConfigError(
                "intervention='none' trains plain DPO; remove the weights or pick an intervention."
            )

    # ------------------------------------------------------------------ derived
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 2e-4 if self.lora else 5e-6

    def window(self) -> dict[str, int]:
        """The token window of training (``ShapedDPOTrainer(window=...)``, ``plan.window_cut``)."""
        p = self.max_length // 2 if self.max_prompt_length is None else self.max_prompt_length
        return {"max_length": int(self.max_length), "max_prompt_length": int(p)}

    def n_holdout(self, n_pairs: int) -> int:
        """Pairs held out of ``n_pairs`` (at least 2 remain for training)."""
        k = round(self.holdout * n_pairs) if isinstance(self.holdout, float) else int(self.holdout)
        if n_pairs - k < 2:
            raise ConfigError(
                f"holdout={self.holdout!r} leaves {n_pairs - k} of {n_pairs} pairs for training; need >= 2."
            )
        return k

    def precompute_for(self, n_train: int | None) -> bool:
        """Whether reference log-probs are precomputed for a training set of ``n_train`` pairs."""
        if self.precompute_ref_log_probs is not None:
            return bool(self.precompute_ref_log_probs)
        if n_train is None:
            return True
        return self.max_steps * self.batch_size * self.gradient_accumulation_steps >= n_train

    def default_output_dir(self, name: str) -> Path:
        """``output_dir`` when set, else a new folder ``name`` inside ``<cache>/runs``, created here.

        The default folder is checked to stay inside ``runs/`` and claimed atomically (``name-2``
        when another run holds ``name``: :func:`prefaudit.training.files.run_folder`).
        """
        if self.output_dir is not None:
            return Path(self.output_dir).expanduser()
        from ..default_model import cache_root

        return run_folder(cache_root() / "runs", name, claim=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (weights as given)."""
        return dataclasses.asdict(self)

    def peft_config(self) -> Any:
        """The peft ``LoraConfig`` (``None`` for a full fine-tune)."""
        if not self.lora:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules,
            task_type="CAUSAL_LM",
        )

    def dpo_kwargs_dict(self, output_dir: str | Path, n_train: int | None = None) -> dict[str, Any]:
        """The ``trl.DPOConfig`` keyword arguments of this run (JSON-able; ``use_cpu`` left to the caller)."""
        return {
            "save_strategy": "no",
            "disable_tqdm": True,
            "dataset_num_proc": None,
            # Pins the data order to the seed (the training plan reproduces it), not to torch's RNG.
            "data_seed": int(self.seed),
            **self.dpo_kwargs,
            "output_dir": str(output_dir),
            "beta": float(self.beta),
            "learning_rate": self.resolved_learning_rate(),
            "max_steps": int(self.max_steps),
            "per_device_train_batch_size": int(self.batch_size),
            "gradient_accumulation_steps": int(self.gradient_accumulation_steps),
            "max_length": int(self.max_length),
            "precompute_ref_log_probs": self.precompute_for(n_train),
            "activation_checkpointing": bool(self.activation_checkpointing),
            "seed": int(self.seed),
            "logging_steps": int(self.logging_steps),
            "lr_scheduler_type": self.lr_scheduler_type,
            "warmup_steps": int(self.warmup_steps),
            "report_to": "none",
            "bf16": self.dtype == "bfloat16",
            "fp16": self.dtype == "float16",
            "loss_type": ["sigmoid"],
        }

    def check_dpo_kwargs(self) -> None:
        """Refuse ``dpo_kwargs`` that are not ``trl.DPOConfig`` fields (without building a DPOConfig)."""
        from trl import DPOConfig

        known = {f.name for f in dataclasses.fields(DPOConfig)}
        unknown = sorted(set(self.dpo_kwargs) - known)
        if unknown:
            raise ConfigError(f"dpo_kwargs: {', '.join(unknown)} are not trl.DPOConfig fields.")

    def dpo_config(
        self, output_dir: str | Path, *, use_cpu: bool | None = None, n_train: int | None = None
    ) -> Any:
        """The ``trl.DPOConfig`` of this run (no logging integrations, no checkpoints by default)."""
        from trl import DPOConfig

        if use_cpu is None:
            import torch

            use_cpu = not torch.cuda.is_available()
        self.check_dpo_kwargs()
        try:
            return DPOConfig(**self.dpo_kwargs_dict(output_dir, n_train), use_cpu=bool(use_cpu))
        except ValueError as err:
            raise ConfigError(f"trl.DPOConfig rejected the settings: {err}") from err


def resolve_config(config: Any, overrides: dict[str, Any]) -> DPORunConfig:
    """A ``DPORunConfig`` from a config, a dict of its fields or ``None``, with ``overrides`` applied."""
    try:
        if config is None:
            return DPORunConfig(**overrides)
        if isinstance(config, dict):
            return DPORunConfig(**{**config, **overrides})
        if not isinstance(config, DPORunConfig):
            raise ConfigError(
                f"config must be a DPORunConfig (or a dict of its fields), got {type(config).__name__}."
            )
        return dataclasses.replace(config, **overrides) if overrides else config
    except TypeError as err:
        raise ConfigError(f"Unknown DPORunConfig field: {err}") from err


def _positive_number(name: str, value: Any, what: str = "") -> None:
    ok = (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )
    if not ok:
        raise ConfigError(f"{name} must be > 0{f' ({what})' if what else ''}, got {value!r}.")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")
