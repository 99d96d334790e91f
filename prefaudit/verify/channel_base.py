"""One small interface for every observation channel: observe, predict, and the rows they give.

A channel reads what a run learned in one way (its implicit reward, its generations, ...) and
compares it with the audit's prediction. It is a :class:`Channel` subclass registered with
:func:`prefaudit.verify.channel_registry.register`; a new channel is one file and one
registration. For every level (:mod:`prefaudit.verify.levels`: single features, feature
clusters) :meth:`Channel.rows` gives one agreement row:

* :meth:`Channel.observe` — the observed value of every unit as a function of the observation
  units it is read from (``observe(units, swap)``, :func:`prefaudit.stats.agreement.agreement_row`);
* :meth:`Channel.predict` — the prediction on the same units, from the audit alone;
* :meth:`Channel.baseline` — for reward-based channels, what a policy that knows **only the
  labels** would show: ρ = +1 on every chosen and −1 on every rejected held-out response, read
  exactly like the real ρ, r against the same prediction with its bootstrap CI
  (``baseline_r``, ``baseline_low``, ``baseline_high``). A reward row means "the audit predicted
  what DPO learned" only where its r is above that baseline. NaN where it does not apply.

Each row is the agreement row's columns plus ``level`` (``feature`` | ``cluster``), the baseline
and ``ess`` (the effective sample size of importance-weighted rows, NaN elsewhere):
:data:`VERIFY_COLUMNS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..stats.agreement import AGREEMENT_COLUMNS, Observe, agreement_row
from .levels import Level

#: Columns of every verification agreement table, in order.
VERIFY_COLUMNS: tuple[str, ...] = (
    "channel",
    "level",
    *AGREEMENT_COLUMNS[1:],
    "baseline_r",
    "baseline_low",
    "baseline_high",
    "ess",
)


@dataclass(frozen=True)
class Observed:
    """What a channel read at one level: ``observe(units, swap)`` over ``n_units`` observation units.

    ``ess``: the effective sample size behind the reading (importance-weighted channels; NaN else).
    """

    n_units: int
    observe: Observe
    ess: float = math.nan


@dataclass
class RunContext:
    """Everything the single-run channels read, gathered once by :func:`prefaudit.verify.verify_run`.

    ``signal`` and ``pred_z`` cover every feature column; ``levels`` say which are evaluated.
    ``heldout`` holds the implicit rewards of the held-out pairs (empty when not scored) and
    ``held_matrix`` their window features; ``delta`` the per-sample trained − base generation
    features (raw, every column), ``dlen`` the word-length differences; ``weights_rho`` the
    log-ratio ρ of each base sample (for importance weighting; ``None`` when not read) and
    ``base_x`` the base samples' features.
    """

    session: Any
    levels: dict[str, Level]
    signal: np.ndarray
    pred_z: np.ndarray
    sd: np.ndarray
    trained_matrix: Any
    beta: float
    heldout: pd.DataFrame
    held_matrix: Any
    delta: np.ndarray
    dlen: np.ndarray
    length_column: int | None
    base_x: np.ndarray | None = None
    weights_rho: np.ndarray | None = None
    # Values several channels read at one level (held-out features, ...), computed once.
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairContext:
    """Two verified runs of one session (a: reference, b: changed) and the held-out features reader."""

    a: Any
    b: Any
    levels: dict[str, Level]
    held_matrix: Any
    extra: dict[str, Any] = field(default_factory=dict)


class Channel:
    """Base class of an observation channel (see the module docstring).

    Class attributes
    ----------------
    name : str
        The row's ``channel``.
    runs : int
        1: reads one run (:class:`RunContext`); 2: compares two (:class:`PairContext`).
    """

    name: ClassVar[str] = ""
    runs: ClassVar[int] = 1

    def observe(self, ctx: Any, level: Level) -> Observed | None:
        """The observation at ``level``; ``None`` when this run has nothing for the channel to read."""
        raise NotImplementedError

    def predict(self, ctx: Any, level: Level) -> np.ndarray:
        """The audit's prediction on the same units as :meth:`observe`."""
        raise NotImplementedError

    def baseline(self, ctx: Any, level: Level) -> Observed | float | None:
        """The label-only observation (an :class:`Observed`, a value fixed by construction, or None)."""
        return None

    def rows(self, ctx: Any, *, n_boot: int, n_null: int, seed: int) -> list[dict[str, Any]]:
        """One row per level with an observation (columns :data:`VERIFY_COLUMNS`)."""
        out = []
        for level in ctx.levels.values():
            seen = self.observe(ctx, level)
            if seen is None:
                continue
            pred = self.predict(ctx, level)
            row = agreement_row(
                self.name, seen.n_units, seen.observe, pred, n_boot=n_boot, n_null=n_null, seed=seed
            )
            fields = baseline_fields(self.baseline(ctx, level), pred, n_boot=n_boot, seed=seed)
            out.append({**row.to_dict(), "level": level.name, **fields, "ess": seen.ess})
        return out


def baseline_fields(
    base: Observed | float | None, pred: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, float]:
    """``baseline_r`` and its bootstrap CI from a label-only observation (NaN when there is none)."""
    if base is None:
        return {"baseline_r": math.nan, "baseline_low": math.nan, "baseline_high": math.nan}
    if not isinstance(base, Observed):
        value = float(base)
        return {"baseline_r": value, "baseline_low": value, "baseline_high": value}
    row = agreement_row(
        "baseline", base.n_units, base.observe, pred, n_boot=n_boot, n_null=0, n_splits=0, seed=seed
    )
    return {"baseline_r": row.r, "baseline_low": row.r_low, "baseline_high": row.r_high}


def agreement_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with :data:`VERIFY_COLUMNS` (plus any extra column a caller added, after them)."""
    df = pd.DataFrame(rows)
    if not len(df):
        return pd.DataFrame(columns=list(VERIFY_COLUMNS))
    extra = [c for c in df.columns if c not in VERIFY_COLUMNS]
    return df.reindex(columns=[*VERIFY_COLUMNS, *extra])
