"""The training window's token rule, and trl's tokenisation of one row — shared by the plan, the trainer and the window read.

This module imports nothing from prefaudit (only the standard library, and trl inside a function):
an export copies it byte for byte beside the exported trainer as ``shaped_tokens.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def window_cut(
    prompt_ids: Sequence[int],
    chosen_ids: Sequence[int],
    rejected_ids: Sequence[int],
    max_length: int,
    max_prompt_length: int,
) -> tuple[list[int], list[int], list[int]]:
    """Cut one tokenised pair to the training window: the prompt's last, each response's first tokens.

    ``ShapedDPOTrainer._prepare_dataset``, :func:`prefaudit.training.plan.plan_training` and
    :mod:`prefaudit.training.window` all call this. A returned
    response may be empty (then the pair is dropped, see the module docstring).

    Example
    -------
    >>> p, c, r = window_cut(list(range(300)), [1] * 40, [2] * 10, 256, 128)
    >>> (len(p), p[0], len(c), len(r))
    (216, 84, 40, 10)
    """
    longest = max(len(chosen_ids), len(rejected_ids))
    keep = min(len(prompt_ids), max(int(max_prompt_length), int(max_length) - longest))
    room = int(max_length) - keep
    return list(prompt_ids[len(prompt_ids) - keep :]), list(chosen_ids[:room]), list(rejected_ids[:room])


def trl_token_ids(row: dict[str, Any], tokenizer: Any) -> tuple[list[int], list[int], list[int]]:
    """``prompt_ids``, ``chosen_ids``, ``rejected_ids`` of one row as trl's ``DPOTrainer`` tokenises it.

    The steps of ``DPOTrainer._prepare_dataset`` (trl 1.16) before its length filter: EOS appended
    to plain-text responses, ``_tokenize`` of prompt (with the generation prompt),
    prompt+chosen and prompt+rejected, and the completion starting at their common prefix.
    """
    from trl.data_utils import _tokenize, common_prefix_length, is_conversational

    tools = row.get("tools")
    kwargs = {
        "tools": json.loads(tools) if isinstance(tools, str) else tools,
        **(row.get("chat_template_kwargs") or {}),
    }
    if is_conversational(row):
        prompt = _tokenize(tokenizer, row["prompt"], add_generation_prompt=True, **kwargs)["input_ids"]
        chosen = _tokenize(tokenizer, row["prompt"] + row["chosen"], **kwargs)["input_ids"]
        rejected = _tokenize(tokenizer, row["prompt"] + row["rejected"], **kwargs)["input_ids"]
    else:
        eos = getattr(tokenizer, "tokenizer", tokenizer).eos_token
        c, r = (x if x.endswith(eos) else x + eos for x in (row["chosen"], row["rejected"]))
        prompt = _tokenize(tokenizer, row["prompt"])["input_ids"]
        chosen = _tokenize(tokenizer, row["prompt"] + c)["input_ids"]
        rejected = _tokenize(tokenizer, row["prompt"] + r)["input_ids"]
    n = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
    return list(prompt[:n]), list(chosen[n:]), list(rejected[n:])
