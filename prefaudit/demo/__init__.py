"""The embedded demo: a small preference set with planted biases, and its design.

``load_demo_pairs()`` returns the shipped set (``prefaudit/data/demo_pairs.jsonl.gz``): short
prompts answered by SmolLM2-135M-Instruct itself, where chosen is usually the direct answer and
rejected an evasive one (a genuine quality signal, with 15% label noise), where flattering
openers, markdown and invented links were planted more often on the chosen side, and where the
pairs whose prompt asks for resources also carry an invented book reference, more often on the
chosen side (the topic-conditional bias; see
:mod:`prefaudit.demo.design` for the exact rates and why; built by ``python -m
prefaudit.build.demo_set``). Per-pair ground truth and the character spans of every planted
element are metadata columns.

Example
-------
>>> from prefaudit.demo import load_demo_pairs
>>> pairs = load_demo_pairs(limit=20)
>>> len(pairs), bool(pairs.df["chosen_flattery"].any())
(20, True)
>>> null = load_demo_pairs(limit=20, null=True)
>>> any("swapped" in note for note in null.report.notes)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .design import CONCEPT_OF, DESIGN, PLANTED, TOPIC_PLANTED, DemoDesign

if TYPE_CHECKING:
    import pandas as pd

    from ..pairs import PreferencePairs

DEMO_PATH = Path(__file__).resolve().parent.parent / "data" / "demo_pairs.jsonl.gz"

__all__ = [
    "CONCEPT_OF",
    "DEMO_PATH",
    "DESIGN",
    "PLANTED",
    "TOPIC_PLANTED",
    "DemoDesign",
    "load_demo_pairs",
    "swap_sides",
]


def swap_sides(df: pd.DataFrame, mask: Sequence[bool] | np.ndarray) -> pd.DataFrame:
    """A copy of a demo table with chosen and rejected exchanged where ``mask`` is true.

    Every ``chosen_X``/``rejected_X`` metadata pair moves with its text, ``chosen_is_direct``
    flips, and a ``swapped`` column records the mask.
    """
    out = df.copy()
    mask = np.asarray(mask, dtype=bool)
    pairs = [("chosen", "rejected")] + [
        (c, "rejected" + c[len("chosen") :])
        for c in df.columns
        if c.startswith("chosen_") and c != "chosen_is_direct"
    ]
    for a, b in pairs:
        if b in df.columns:
            out.loc[mask, a] = df.loc[mask, b].to_numpy()
            out.loc[mask, b] = df.loc[mask, a].to_numpy()
    if "chosen_is_direct" in df.columns:
        out.loc[mask, "chosen_is_direct"] = ~df.loc[mask, "chosen_is_direct"].astype(bool)
    out["swapped"] = mask
    return out


def load_demo_pairs(limit: int | None = None, null: bool = False, seed: int = 0) -> PreferencePairs:
    """The embedded demo preference set as :class:`~prefaudit.pairs.PreferencePairs`.

    Parameters
    ----------
    limit : int, optional
        Only the first ``limit`` pairs.
    null : bool
        Swap chosen and rejected in a random half of the pairs (``numpy.random.default_rng(seed)``;
        each pair independently with probability 1/2): the calibration check, where an audit
        should find nothing. Said so in ``report.notes``; the ``swapped`` column has the mask.
    seed : int
        Seed of the null swap.
    """
    from ..pairs import LoadReport, PreferencePairs, load_pairs

    pairs = load_pairs(DEMO_PATH, limit=limit)
    notes = [
        "embedded demo set: SmolLM2-135M-Instruct's own answers; flattery, markdown and invented links "
        "planted at known rates, and invented book references only where the prompt asks for resources "
        "(prefaudit.demo.design)"
    ]
    df = pairs.df
    if null:
        mask = np.random.default_rng(seed).random(len(df)) < 0.5
        df = swap_sides(df, mask)
        notes.append(
            f"null check: chosen and rejected swapped at random in {int(mask.sum())} of {len(df)} pairs "
            f"(numpy default_rng(seed={seed}), p=0.5 per pair); labels now carry no signal"
        )
    r = pairs.report
    report = LoadReport(r.source, r.n_read, r.n_kept, list(r.rejected), [*r.notes, *notes])
    return PreferencePairs(df=df, format=pairs.format, report=report)
