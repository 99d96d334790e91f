"""Launching a run: check the config, shape the training pairs, plan, then start a :class:`DPORun`.

``prepare_run`` is everything decided before training (runs and exports share it);
``start_run`` copies the session's model into a background run (``session.train`` calls it).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import DPORunConfig, resolve_config
from .plan import TrainingPlan, build_plan, shape_training_set
from .run import TRAIN_LOCK, DPORun

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

_COUNTER = itertools.count(1)


@dataclasses.dataclass
class PreparedRun:
    """Everything decided before training: config, weights, split, shaped data, plan, ablation."""

    config: DPORunConfig
    shaped: Any
    train_positions: np.ndarray
    heldout_positions: np.ndarray
    ablation: tuple[np.ndarray, int] | None
    plan: TrainingPlan


def prepare_run(session: AuditState, config: Any = None, **overrides: Any) -> PreparedRun:
    """Validate the config, shape the session's training pairs and plan the run (runs and exports)."""
    from ..interventions.ablate import training_ablation

    cfg = resolve_config(config, overrides)
    shaped, train, held = shape_training_set(session, cfg)
    # Only an intervention that names directions to ablate (``ablate``) changes the forward pass.
    ablation = training_ablation(session, shaped.ablate_features) if shaped.ablate_features else None
    # Validate dpo_kwargs now, not in the thread. Building a DPOConfig resets accelerate's global
    # state (TrainingArguments._setup_devices), which breaks a run that is training at that moment:
    # while one is, check the field names only; their values are then checked when this run's
    # trainer is built (a failure shows in its panel and run.error).
    if TRAIN_LOCK.acquire(blocking=False):
        try:
            cfg.dpo_config("unused")
        finally:
            TRAIN_LOCK.release()
    else:
        cfg.check_dpo_kwargs()
    plan = build_plan(session, cfg, shaped, held)
    return PreparedRun(cfg, shaped, train, held, ablation, plan)


def start_run(
    session: AuditState, config: Any = None, *, callbacks: Sequence[Any] = (), **overrides: Any
) -> DPORun:
    """Shape the session's pairs, copy its model and start a DPO run in the background.

    Parameters
    ----------
    session : AuditSession
    config : DPORunConfig or dict, optional
        Keyword ``overrides`` replace its fields (``session.train(max_steps=10)``).
    callbacks : sequence of transformers.TrainerCallback
        Extra callbacks for the trainer.

    Returns
    -------
    DPORun (already started); ``run.plan`` is what it trains (:func:`prefaudit.training.plan.plan_training`).

    Example
    -------
    >>> run = start_run(session, DPORunConfig(intervention="reweight"), max_steps=5)  # doctest: +SKIP
    """
    prep = prepare_run(session, config, **overrides)
    cfg, backbone = prep.config, session.backbone
    name = cfg.name or f"{cfg.intervention}-{next(_COUNTER)}"
    out_dir = cfg.default_output_dir(f"{time.strftime('%Y%m%d-%H%M%S')}-{name}")
    run = DPORun(
        name=name,
        config=cfg,
        shaped=prep.shaped,
        # Trained on a copy, taken when the run starts: the session's model stays the base model
        # for reading features and for verification.
        base=backbone.model,
        tokenizer=backbone.tokenizer,
        output_dir=out_dir,
        train_positions=prep.train_positions,
        heldout_positions=prep.heldout_positions,
        ablation=prep.ablation,
        callbacks=callbacks,
        source={"model": backbone.name, "layer": backbone.layer, "pairs": len(session.data)},
        session=session,
        plan=prep.plan,
    )
    return run.start()
