"""What verification returns: one run's observed vs predicted shifts, and two runs side by side."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import ids
from ..errors import ConfigError
from ..generation import SamplingConfig


@dataclass
class VerifyResult:
    """What one run learned, observed three ways, against what the audit predicted.

    Attributes
    ----------
    agreement : DataFrame
        One row per observation channel and level (:data:`~prefaudit.verify.channel_base.VERIFY_COLUMNS`):
        ``channel`` (``reward``, ``reward, within pair``, ``generation``, ``generation,
        length-adjusted``, ``generation, importance-weighted`` where the drift allows it),
        ``level`` (``feature`` | ``cluster``), ``r``, its bootstrap CI ``r_low``/``r_high``,
        ``r2`` (through the origin), the null interval ``null_low``/``null_high``, the
        split-half ``ceiling``, ``n_features`` (units compared), ``n_units`` (observation
        units), the fitted ``scale``, the label-only baseline ``baseline_r`` with its CI
        ``baseline_low``/``baseline_high`` (reward rows; NaN elsewhere) and ``ess``
        (importance-weighted rows) — :mod:`prefaudit.verify.channels`.
    table : DataFrame
        The evaluated feature set F (fixed from the audit before anything was observed):
        ``feature``, ``label``, ``weight``, ``predicted_z``, ``observed_z``, ``observed_se_z``,
        ``base_mean``, ``trained_mean``, ``agree`` (signs agree, both non-zero), and the reward
        channel's ``predicted_loading`` / ``observed_loading``.
    features : DataFrame
        The generation columns for every feature (``predicted``/``observed`` in raw units too).
    r, r2 : float
        The headline: the reward channel's r and origin R² (the generation channel's when no
        held-out rewards were scored).
    sign_agreement, n_sign : float, int
        Over F, the fraction of features with both predicted and observed shift non-zero whose
        signs agree, and how many that is; ``summary()["sign_chance"]`` is what independent signs
        would give (:func:`sign_chance`).
    generations : DataFrame
        ``prompt``, ``base``, ``trained`` for each generated sample.
    heldout : DataFrame
        Implicit rewards on the run's held-out pairs (:func:`~prefaudit.verify.rewards.pair_rewards`).
    clusters : DataFrame
        One row per feature cluster: ``cluster``, ``label`` (its member with the largest
        predicted shift), ``n_members``, ``predicted_z`` / ``observed_z`` / ``observed_se_z``
        (generation shift: mean of the members'), reward ``predicted_loading`` / ``observed_loading``.
    planted : DataFrame
        Every planted concept's rate in base and trained samples by detector (pattern, cluster,
        either), its rise ± s.e. and the detector's check on the audit responses
        (:mod:`prefaudit.verify.planted`).
    drift : dict
        ρ on held-out responses (mean, sd, min, max), the KL estimate on the verification prompts
        (± s.e.) and the effective sample size of importance weights (:mod:`prefaudit.verify.drift`).
    levels : dict
        The :class:`~prefaudit.verify.levels.Level` of each level reported.
    signal, trained, trained_matrix, window, columns
        The predicted learning signal (raw, every feature) over the pairs the run trained on, read
        in its window; those pairs, their window features, the window, and the columns of F —
        what a comparison of two runs needs.
    """

    run_name: str
    intervention: str
    table: pd.DataFrame
    features: pd.DataFrame
    r: float
    r2: float
    sign_agreement: float
    n_features: int
    n_sign: int
    n_prompts: int
    generations: pd.DataFrame
    settings: SamplingConfig
    weights: dict[str, float] = field(default_factory=dict)
    heldout: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    beta: float = math.nan
    signal: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    trained: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    trained_matrix: Any = field(default=None, repr=False)
    window: dict[str, int] = field(default_factory=dict)
    columns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    session: Any = field(default=None, repr=False)
    levels: dict[str, Any] = field(default_factory=dict, repr=False)
    clusters: pd.DataFrame = field(default_factory=pd.DataFrame)
    planted: pd.DataFrame = field(default_factory=pd.DataFrame)
    drift: dict[str, float] = field(default_factory=dict)

    def _row(self, feature: str) -> pd.Series:
        fids = self.features["feature"]
        for fid in ids.candidates(feature):
            hit = self.features[fids == fid]
            if len(hit):
                return hit.iloc[0]
        raise ConfigError(f"Unknown feature {feature!r} in the verification of {self.run_name!r}.")

    def shift(self, feature: str | int) -> float:
        """Observed standardised shift (trained − base) of one feature (``"flattery"``, ``"sae:12"``, 12)."""
        return float(self._row(str(feature))["observed_z"])

    def means(self, feature: str | int) -> tuple[float, float]:
        """Mean pooled value of a feature in (base, trained) generations — e.g. the flattery rate."""
        row = self._row(str(feature))
        return float(row["base_mean"]), float(row["trained_mean"])

    def headline(self) -> dict[str, Any]:
        """The feature-level row behind ``r``/``r2`` (reward, else generation), as a dict; empty if none."""
        ag = self.agreement
        if not len(ag):
            return {}
        level = ag["level"] if "level" in ag.columns else pd.Series("feature", index=ag.index)
        for channel in ("reward", "generation"):
            hit = ag[(ag["channel"] == channel) & (level == "feature")]
            if len(hit):
                return hit.iloc[0].to_dict()
        return {}

    def row(self, channel: str, level: str = "feature") -> dict[str, Any]:
        """One agreement row as a dict (a ConfigError names the rows there are)."""
        ag = self.agreement
        hit = ag[(ag["channel"] == channel) & (ag["level"] == level)] if len(ag) else ag
        if not len(hit):
            have = ", ".join(
                f"{c} ({lv})" for c, lv in zip(ag.get("channel", []), ag.get("level", []), strict=True)
            )
            raise ConfigError(
                f"No agreement row {channel!r} at level {level!r} for {self.run_name!r}; rows: {have}."
            )
        return hit.iloc[0].to_dict()

    def summary(self) -> dict[str, Any]:
        head = self.headline()
        return {
            "run": self.run_name,
            "intervention": self.intervention,
            "channel": head.get("channel", ""),
            "r": self.r,
            "r_low": head.get("r_low", math.nan),
            "r_high": head.get("r_high", math.nan),
            "null_low": head.get("null_low", math.nan),
            "null_high": head.get("null_high", math.nan),
            "ceiling": head.get("ceiling", math.nan),
            "r2": self.r2,
            "sign_agreement": self.sign_agreement,
            "sign_chance": sign_chance(self.table["predicted_z"], self.table["observed_z"]),
            "n_features": self.n_features,
            "n_prompts": self.n_prompts,
            "heldout_accuracy": float(self.heldout["correct"].mean()) if len(self.heldout) else math.nan,
            "heldout_margin": float(self.heldout["margin"].mean()) if len(self.heldout) else math.nan,
        }

    def view(self, **kwargs: Any) -> Any:
        from ..views.verify_view import VerifyView

        return VerifyView(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.view()._repr_mimebundle_(include=include, exclude=exclude)


def sign_agreement(pred: np.ndarray, obs: np.ndarray) -> tuple[float, int]:
    """(fraction of features whose signs agree, how many) over features where both are non-zero.

    A prediction of 0 next to an observation of 0 is not counted as agreement. Compare the
    fraction with :func:`sign_chance`, not with 0.5: signs that lean one way agree more by chance.
    """
    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    both = (pred != 0) & (obs != 0) & np.isfinite(pred) & np.isfinite(obs)
    sign = float(np.mean(np.sign(pred[both]) == np.sign(obs[both]))) if both.any() else math.nan
    return sign, int(both.sum())


def sign_chance(pred: np.ndarray, obs: np.ndarray) -> float:
    """Sign agreement expected if predicted and observed signs were independent: p₊q₊ + p₋q₋."""
    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    both = (pred != 0) & (obs != 0) & np.isfinite(pred) & np.isfinite(obs)
    if not both.any():
        return math.nan
    p, q = float(np.mean(pred[both] > 0)), float(np.mean(obs[both] > 0))
    return p * q + (1 - p) * (1 - q)


@dataclass
class RunComparison:
    """Two verified runs side by side.

    Attributes
    ----------
    summary : DataFrame
        One row per run: intervention, r, R², sign agreement, n features, n prompts.
    agreement : DataFrame
        Both runs' channel rows (column ``run``) plus the ``shaping change`` row (b − a).
    table : DataFrame
        Features analysed in either run: predicted and observed z of both and ``difference``
        (observed b − observed a).
    a, b : VerifyResult
    same_prompts : bool
        Whether both were generated on the same prompts with the same settings.
    """

    summary: pd.DataFrame
    table: pd.DataFrame
    a: VerifyResult
    b: VerifyResult
    same_prompts: bool
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)

    def view(self, **kwargs: Any) -> Any:
        from ..views.verify_view import CompareView

        return CompareView(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.view()._repr_mimebundle_(include=include, exclude=exclude)
