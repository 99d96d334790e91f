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
    """Observed vs predicted shift of one run.

    Attributes
    ----------
    table : DataFrame
        The analysed features (weighted/ablated first, then by |predicted_z|): ``feature``,
        ``label``, ``weight``, ``predicted_z``, ``observed_z``, ``observed_se_z``, ``base_mean``,
        ``trained_mean``, ``agree`` (signs agree).
    features : DataFrame
        The same columns for every feature (``predicted``/``observed`` in raw units too).
    r, r2, sign_agreement : float
        Pearson r, its square, and the fraction of analysed features (both non-zero) whose signs agree.
    generations : DataFrame
        ``prompt``, ``base``, ``trained`` for each generated sample.
    heldout : DataFrame
        Implicit rewards on the run's held-out pairs (:func:`pair_rewards`): does the policy prefer
        the held-out chosen responses?
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
    session: Any = field(default=None, repr=False)

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

    def summary(self) -> dict[str, Any]:
        return {
            "run": self.run_name,
            "intervention": self.intervention,
            "r": self.r,
            "r2": self.r2,
            "sign_agreement": self.sign_agreement,
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


def agreement(pred: np.ndarray, obs: np.ndarray) -> tuple[float, float, float, int]:
    """(Pearson r, R² = r², sign agreement, n for the sign) of two aligned vectors; NaN when undefined."""
    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    if len(pred) >= 2 and np.std(pred) > 0 and np.std(obs) > 0:
        r = float(np.corrcoef(pred, obs)[0, 1])
    else:
        r = math.nan
    both = (pred != 0) & (obs != 0)
    sign = float(np.mean(np.sign(pred[both]) == np.sign(obs[both]))) if both.any() else math.nan
    return r, r * r if math.isfinite(r) else math.nan, sign, int(both.sum())


@dataclass
class RunComparison:
    """Two verified runs side by side.

    Attributes
    ----------
    summary : DataFrame
        One row per run: intervention, r, R², sign agreement, n features, n prompts.
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

    def view(self, **kwargs: Any) -> Any:
        from ..views.verify_view import CompareView

        return CompareView(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.view()._repr_mimebundle_(include=include, exclude=exclude)
