"""``FeatureMatrix``: pooled values of every feature of an audit, and what is derived from them.

Columns are the audit's features in table order (SAE latents, then concepts); rows are pairs.
Δ = chosen − rejected (column-major, for per-feature statistics and per-feature clicks) and its
standard deviation sd(Δᶠ) (the unit of every standardised effect) and the margin scale sᶠ
(the unit of a shaping weight, :func:`prefaudit.shaping.margin_scale`) are computed once and cached here; the
state core drops the whole matrix when features or data change.

Example
-------
>>> import numpy as np, scipy.sparse as sp
>>> m = FeatureMatrix(sp.csr_matrix(np.array([[1.0, 0.0], [3.0, 1.0]])), sp.csr_matrix(np.zeros((2, 2))))
>>> m.delta.toarray().tolist(), m.column(0)[0].tolist()
([[1.0, 0.0], [3.0, 1.0]], [1.0, 3.0])
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..shaping import delta_sd, margin_scale
from .encoded import EncodedFeatures


class FeatureMatrix:
    """Pooled chosen and rejected values ``(n_pairs, n_features)`` with Δ, sd and column access cached."""

    def __init__(self, chosen: sp.csr_matrix, rejected: sp.csr_matrix, sides: tuple | None = None) -> None:
        if chosen.shape != rejected.shape:
            raise ValueError(f"chosen {chosen.shape} and rejected {rejected.shape} differ in shape.")
        self.chosen, self.rejected = chosen, rejected
        # The encoded sides (SidePooled), whose column-major copies answer column() for SAE
        # latents without converting the whole matrix to CSC.
        self._sides = sides
        self._delta: sp.csc_matrix | None = None
        self._csc: tuple[sp.csc_matrix, sp.csc_matrix] | None = None
        self._sd: np.ndarray | None = None
        self._margin_scale: np.ndarray | None = None

    @classmethod
    def from_parts(
        cls, encoded: EncodedFeatures | None, concepts_chosen: np.ndarray, concepts_rejected: np.ndarray
    ) -> FeatureMatrix:
        """SAE columns from ``encoded`` (if any), then one column per concept."""
        if encoded is None:
            return cls(sp.csr_matrix(concepts_chosen), sp.csr_matrix(concepts_rejected))
        return cls(
            sp.hstack([encoded.chosen.values, sp.csr_matrix(concepts_chosen)], format="csr"),
            sp.hstack([encoded.rejected.values, sp.csr_matrix(concepts_rejected)], format="csr"),
            sides=(encoded.chosen, encoded.rejected),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.chosen.shape

    @property
    def delta(self) -> sp.csc_matrix:
        """Δ = chosen − rejected as float64 CSC."""
        if self._delta is None:
            self._delta = sp.csc_matrix(self.chosen - self.rejected, dtype=np.float64)
        return self._delta

    @property
    def sd(self) -> np.ndarray:
        """sd(Δᶠ) (ddof=1) over all pairs, per column: the unit of standardised signals."""
        if self._sd is None:
            self._sd = delta_sd(self.delta)
        return self._sd

    @property
    def margin_scale(self) -> np.ndarray:
        """The margin scale sᶠ per column (:func:`prefaudit.shaping.margin_scale`; 0 = no contribution)."""
        if self._margin_scale is None:
            self._margin_scale = margin_scale(self.delta)
        return self._margin_scale

    def column(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Dense (chosen, rejected) values of column ``j`` (column slices of CSC are cheap)."""
        if self._sides is not None and j < self._sides[0].values.shape[1]:
            return self._sides[0].column(j), self._sides[1].column(j)
        if self._csc is None:
            self._csc = (self.chosen.tocsc(), self.rejected.tocsc())
        c, r = self._csc
        return c[:, j].toarray().ravel(), r[:, j].toarray().ravel()
