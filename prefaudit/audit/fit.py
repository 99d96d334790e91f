"""How well the SAE reconstructs *this* data: the lens's fit, on the audit's own responses.

A part owned by :class:`~prefaudit.audit.core.AuditCore` (``session.lens_fit``). An SAE trained on other text can read a data set badly;
its features then describe the SAE's error as much as the responses (``docs/DESIGN.md``: "always
report how well the SAE reconstructs this data").

The numbers are those of the SAE's model card (``prefaudit.build.sae_training.evaluate_sae``, whose
definitions :func:`reconstruction_metrics` repeats — builders sit above the runtime and are never
imported by it): explained variance ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`` over all sampled tokens (x̄
their mean), L0 = mean number of active latents per token, the dead fraction = latents that
never fire in the sample, and the MSE per token. The tokens are response tokens read after
their prompt exactly as the audit reads them (:meth:`prefaudit.backbone.Backbone.read_responses`:
the audit's chat template and truncation window); absolute position 0, the attention sink, is a
prompt token and never among them.

Example
-------
>>> fit = session.sae_fit()            # doctest: +SKIP
>>> print(fit)                         # doctest: +SKIP
SAE fit on 128 responses (10,244 tokens): explained variance 0.81, L0 48.0, dead 41.3 %
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from .versions import Memo

if TYPE_CHECKING:
    from .core import AuditCore

#: Below this explained variance the fit carries a warning.
EV_WARNING = 0.7


@dataclass(frozen=True)
class SAEFit:
    """Reconstruction quality of the session's SAE on a seeded sample of its responses.

    Attributes
    ----------
    explained_variance, l0, dead_fraction, mse_per_token : float
    n_tokens, n_responses : int
    seed : int
    sample : tuple of (position, side) — the responses read, in order (side: chosen/rejected)
    warning : str or None — set when explained variance < :data:`EV_WARNING`
    """

    explained_variance: float
    l0: float
    dead_fraction: float
    mse_per_token: float
    n_tokens: int
    n_responses: int
    seed: int
    sample: tuple[tuple[int, str], ...]
    warning: str | None = None

    def __str__(self) -> str:
        text = (
            f"SAE fit on {self.n_responses} responses ({self.n_tokens:,} tokens): explained variance "
            f"{self.explained_variance:.2f}, L0 {self.l0:.1f}, dead {100 * self.dead_fraction:.1f} %"
        )
        return text + (f"\nwarning: {self.warning}" if self.warning else "")


def reconstruction_metrics(sae: Any, acts: Any, *, batch_size: int = 4096) -> dict[str, float]:
    """``evaluate_sae``'s metrics of an :class:`~prefaudit.features.sae.SAEFeatures` on ``acts``.

    ``acts`` is ``(n_tokens, d_in)``. Encoding goes through the wrapper (its dtype and inference
    mode), decoding through the sae-lens SAE it wraps; the sums run in the same order as
    ``evaluate_sae``'s, so the two agree to float rounding.
    """
    import torch

    x_all = acts.float()
    n = int(x_all.shape[0])
    if n == 0:
        raise ConfigError("No response tokens to evaluate the SAE on.")
    mean = x_all.mean(0)
    sse = sst = l0 = 0.0
    fired = torch.zeros(int(sae.d_sae), dtype=torch.bool)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = x_all[start : start + batch_size]
            z = sae.encode(x)
            x_hat = sae.sae.decode(z)
            sse += float((x - x_hat).pow(2).sum())
            sst += float((x - mean).pow(2).sum())
            nz = z > 0
            l0 += float(nz.sum())
            fired |= nz.any(0).cpu()
    return {
        "explained_variance": 1.0 - sse / sst if sst > 0 else float("nan"),
        "l0": l0 / n,
        "dead_fraction": float((~fired).float().mean()),
        "mse_per_token": sse / n,
        "n_tokens": n,
    }


class LensFit:
    """The SAE's reconstruction of the session's own responses (``session.lens_fit``; ``session.sae_fit()`` calls it)."""

    def __init__(self, core: AuditCore) -> None:
        self.core = core
        self._fits = Memo(core.versions, "data")  # (n, seed) -> SAEFit; the model and SAE never change

    def __call__(self, n: int = 128, seed: int = 0) -> SAEFit:
        """Explained variance, L0, dead fraction and tokens of the SAE on ``n`` sampled responses.

        The sample: both responses of ⌈n/2⌉ pairs drawn without replacement by
        ``numpy.random.default_rng(seed)`` (the last pair's rejected left out when ``n`` is odd;
        every response when ``n ≥ 2 × n_pairs``), read in the audit's window; a pair's two
        responses share one prompt pass, which halves the reading on long multi-turn prompts.
        ``warning`` is set when the explained variance is below 0.7. Cached per ``(n, seed)``.
        A concepts-only session has no SAE: ConfigError.
        """
        if not self.core.uses_sae:
            raise ConfigError("This session audits concepts only (sae=False): there is no SAE to fit.")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"n must be a positive number of responses; got {n!r}.")
        return self._fits.get((int(n), int(seed)), lambda: self._measure(int(n), int(seed)))

    def measured(self) -> SAEFit | None:
        """The fit already measured (the default ``n=128, seed=0`` first, else the latest), or
        ``None``; never reads the model (the repr and the report's summary use it)."""
        fits = dict(self._fits.items())
        return fits.get((128, 0)) or next(reversed(fits.values()), None)

    def all(self) -> dict[tuple[int, int], SAEFit]:
        """Every measured fit by ``(n, seed)`` (what a saved session keeps)."""
        return dict(self._fits.items())

    def restore(self, fits: dict[tuple[int, int], SAEFit]) -> None:
        for key, fit in fits.items():
            self._fits.put(key, fit)

    def _measure(self, n: int, seed: int) -> SAEFit:
        core = self.core
        sample, acts = self.sample_activations(n, seed)
        core.status = "measuring the SAE's fit"
        try:
            metrics = reconstruction_metrics(core.sae, acts)
        finally:
            core.status = ""
        ev = float(metrics["explained_variance"])
        warning = None
        if not ev >= EV_WARNING:
            warning = (
                f"the SAE's explained variance on this data's response activations is {ev:.2f} "
                f"(below {EV_WARNING}): its features may miss what tells the responses apart, so "
                "read the effects with care (try another SAE, or one trained on similar text)."
            )
        return SAEFit(
            explained_variance=ev,
            l0=float(metrics["l0"]),
            dead_fraction=float(metrics["dead_fraction"]),
            mse_per_token=float(metrics["mse_per_token"]),
            n_tokens=int(metrics["n_tokens"]),
            n_responses=len(sample),
            seed=int(seed),
            sample=sample,
            warning=warning,
        )

    def sample_activations(self, n: int, seed: int) -> tuple[tuple[tuple[int, str], ...], Any]:
        """The seeded sample of responses and their activations, concatenated in sample order."""
        import torch

        core = self.core
        n_pairs = len(core.data)
        n_responses = min(int(n), 2 * n_pairs)
        pairs = np.random.default_rng(seed).choice(n_pairs, size=-(-n_responses // 2), replace=False)
        sample = tuple((int(p), side) for p in pairs for side in ("chosen", "rejected"))[:n_responses]
        backbone, sae = core.backbone, core.sae
        sae.check_fits(backbone)
        df = core.data.df
        prompts = [backbone.prompt_ids(core.data.messages(int(p))) for p in pairs]
        responses = [
            (
                backbone.response_ids(str(df["chosen"].iloc[p]))[0],
                backbone.response_ids(str(df["rejected"].iloc[p]))[0],
            )
            for p in pairs
        ]
        # Batches of similar length (less padding); both responses of a pair share one prompt pass
        # (read_pairs, as read_responses and the audit's encoding read them).
        order = np.argsort(
            [len(q) + max(len(c), len(r)) for q, (c, r) in zip(prompts, responses, strict=True)],
            kind="stable",
        )
        size = max(int(core.config.get("batch_size") or 8), 1)
        read: dict[tuple[int, str], Any] = {}
        core.status = "reading responses for the SAE's fit"
        try:
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                h, _ = backbone.read_pairs([prompts[i] for i in idx], [responses[i] for i in idx])
                for k, i in enumerate(idx):
                    for j, side in enumerate(("chosen", "rejected")):
                        ids_ = responses[i][j]
                        read[(int(pairs[i]), side)] = h[2 * k + j, : len(ids_)].float().cpu()
        finally:
            core.status = ""
        acts = [read[key] for key in sample]
        return sample, torch.cat(acts) if acts else torch.zeros((0, sae.d_in))
