"""Validation of what verification is given: a finished run and well-formed prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

Message = dict[str, str]


def verification_prompts(session: Any, run: Any, prompts: Any, n_prompts: int) -> list[list[Message]]:
    if prompts is None:
        held = list(getattr(run, "heldout_positions", []))
        if not held:
            raise ConfigError(
                f"Run {run.name!r} held out no pairs: pass prompts=[...] or train with holdout > 0."
            )
        return [session.data.messages(int(i)) for i in held[:n_prompts]]
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ConfigError("prompts must be a non-empty list of strings or of message lists.")
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append([{"role": "user", "content": p}])
        elif isinstance(p, Sequence) and all(
            isinstance(m, dict) and "role" in m and "content" in m for m in p
        ):
            out.append([dict(m) for m in p])
        else:
            raise ConfigError(
                f"A prompt must be a string or a list of {{'role', 'content'}} messages, got {p!r}."
            )
    return out


def check_run(run: Any) -> None:
    status = getattr(run, "status", None)
    if status is None or not hasattr(run, "model"):
        raise ConfigError(f"verify needs a DPORun, got {type(run).__name__}.")
    if status == "failed":
        raise ConfigError(f"Run {run.name!r} failed; nothing to verify. Its error:\n{run.error}")
    if status not in ("finished", "cancelled"):
        raise ConfigError(f"Run {run.name!r} is {status}; call run.wait() before verifying it.")
    # A run cancelled while queued never copied a model (it holds none until it starts).
    if getattr(getattr(run, "policy", None), "trained", True) is False and run.model is None:
        raise ConfigError(f"Run {run.name!r} was stopped before training; nothing to verify.")
