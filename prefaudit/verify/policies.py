"""Which model is the base policy of a run: the one choice every verification pass shares."""

from __future__ import annotations

import contextlib
from typing import Any


def base_policy(session: Any, run: Any) -> tuple[Any, Any]:
    """(model, context manager) of the policy the run started from.

    For LoRA it is the trained model with its adapter disabled — the exact weights and dtype the
    run started from; otherwise the session's own model (training copies it).
    """
    if hasattr(run.model, "disable_adapter"):
        return run.model, run.model.disable_adapter()
    return session.backbone.model, contextlib.nullcontext()


def base_dtype(session: Any, run: Any) -> str:
    """The base policy's parameter dtype (part of every cache key: bf16 and fp32 samples differ)."""
    model, _ = base_policy(session, run)
    return str(next(model.parameters()).dtype)
