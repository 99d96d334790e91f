"""``AuditSession``: the one object a user holds — the audit's state plus the doors to every stage.

The state, its queries and the intents live in :class:`prefaudit.audit.core.AuditCore` (the only
writer of state); this facade adds the methods that open views, write the report, shape, train,
verify, export and persist. Each is a one-line hand-off to the module that does the work, so the
session imports those stages and none of them imports the session.

Example
-------
>>> import prefaudit as pa
>>> session = pa.AuditSession(pa.load_pairs("pairs.jsonl"))    # doctest: +SKIP
>>> session.encode()                                            # doctest: +SKIP
>>> table = session.test()                                      # doctest: +SKIP
>>> table.sort_values("q").head()                               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .audit.core import AuditCore
from .deprecated import moved_attribute
from .ids import CONCEPT_PREFIX, SAE_PREFIX
from .shaping import VERDICTS

if TYPE_CHECKING:
    from .audit.fit import SAEFit
    from .training.plan import TrainingPlan
    from .training.run import DPORun
    from .verify.result import RunComparison, VerifyResult
    from .views.dashboard import Dashboard
    from .views.drilldown import PairsView
    from .views.drivers_view import DriversView
    from .views.heatmap import TopicHeatmapView
    from .views.shaper import ShaperView
    from .views.volcano import VolcanoView

# Kept importable from here for users of 0.1 (``from prefaudit.session import VERDICTS``).
__all__ = ["CONCEPT_PREFIX", "SAE_PREFIX", "VERDICTS", "AuditSession"]


class AuditSession(AuditCore):
    """Audit a preference dataset through an interpreted model.

    Parameters
    ----------
    pairs : PreferencePairs or anything :func:`prefaudit.load_pairs` accepts
    model : str, Path, PreTrainedModel or None
        Hub name or local directory of a causal LM; ``None`` is the embedded SmolLM2-135M-Instruct.
    sae : None, str, Path, (release, sae_id), sae_lens.SAE, or False
        ``None`` is the embedded default SAE (for the default model). ``False`` audits text
        concepts only, without any model.
    layer : int, optional
        Block whose output is read (default: the SAE's layer, else the middle block).
    pooling : {"max", "mean", "sum"}
        How a response's token activations become one value per feature.
    concepts : bool
        Include the built-in text concepts (length, markdown, flattery, refusal, ...).
    cache_dir : path, optional
        Where encoded shards are cached (default ``~/.cache/prefaudit``); ``False`` disables it.
    """

    # ------------------------------------------------------------------ views (prefaudit.views)
    def volcano(self, **kwargs: Any) -> VolcanoView:
        """Volcano plot of effect size against −log10 q; clicks and lassos select features."""
        from .views.volcano import VolcanoView

        return VolcanoView(self, **kwargs)

    def drilldown(self, feature: int | str | None = None, **kwargs: Any) -> PairsView:
        """Drill-down into the pairs where ``feature`` (default: the focus) fires most."""
        from .views.drilldown import PairsView

        return PairsView(self, feature=feature, **kwargs)

    def shaper(self, **kwargs: Any) -> ShaperView:
        """Reward-weight sliders and verdicts for the selection, with a live shaping preview."""
        from .views.shaper import ShaperView

        return ShaperView(self, **kwargs)

    def topic_heatmap(self, **kwargs: Any) -> TopicHeatmapView:
        """Per-topic effects of the strongest features; a click filters the drill-down to that topic."""
        from .views.heatmap import TopicHeatmapView

        return TopicHeatmapView(self, **kwargs)

    def drivers_view(self, feature: int | str | None = None, **kwargs: Any) -> DriversView:
        """The pairs that drive a feature's signal, with exclude / flip / export and a what-if preview."""
        from .views.drivers_view import DriversView

        return DriversView(self, feature=feature, **kwargs)

    def dashboard(self, **kwargs: Any) -> Dashboard:
        """Volcano, drill-down and sliders, linked through this session."""
        from .views.dashboard import Dashboard

        return Dashboard(self, **kwargs)

    def report(self, path: str | Path, **kwargs: Any) -> Path:
        """Write a standalone HTML report (opens offline)."""
        from .report import write_report

        return write_report(self, Path(path), **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Names of 0.1 that moved into the parts: they still work for one release, with a warning.
        return moved_attribute(self, name)

    def __repr__(self) -> str:
        from .report.concepts import fit_line

        line = fit_line(self)  # the cached fit only: a repr never reads the model
        return super().__repr__() + (f"\n{line}" if line else "")

    def _repr_html_(self) -> str:
        from .report.concepts import repr_html

        return repr_html(self)

    # ------------------------------------------------------------------ decisions (prefaudit.audit.decisions)
    def select_feature(self, feature: int | str, *, focus: bool = True) -> None:
        """Add a feature or group to the selection and make a feature the drill-down's focus."""
        self.decisions.select(feature, focus=focus)

    def set_focus(self, feature: int | str | None) -> None:
        """The feature the drill-down shows (``None``: none)."""
        self.decisions.set_focus(feature)

    def set_weight(self, feature: int | str, weight: float) -> None:
        """Reward weight of a feature or group (0 removes it); negative suppresses, positive amplifies."""
        self.decisions.set_weight(feature, weight)

    def set_verdict(self, feature: int | str, verdict: str | None) -> None:
        """``allow`` / ``suppress`` / ``amplify`` (or ``None``); a weight still at zero follows it."""
        self.decisions.set_verdict(feature, verdict)

    def set_label(self, feature: int | str, text: str) -> None:
        """A person's label for a feature or group (replaces the automatic one; "" clears it)."""
        self.decisions.set_label(feature, text)

    def set_note(self, feature: int | str, text: str) -> None:
        """A free-text note on a feature or group ("" clears it)."""
        self.decisions.set_note(feature, text)

    def exclude_pairs(self, pair_ids: Any) -> None:
        """Leave these pairs out of training (:mod:`prefaudit.audit.pair_edits`; ``session.edits`` has the rest)."""
        self.edits.exclude(pair_ids)

    def flip_pairs(self, pair_ids: Any) -> None:
        """Train these pairs with chosen and rejected swapped."""
        self.edits.flip(pair_ids)

    def explain(self, explainer: Any = "contexts", **options: Any) -> pd.DataFrame:
        """A text for each feature cluster from an explainer (built-in contexts, a Neuronpedia
        export, a local HF model, a callable): :mod:`prefaudit.features.explainers`. Labels
        never enter a statistic."""
        return self.groups.explain(explainer, **options)

    def sae_fit(self, n: int = 128, seed: int = 0) -> SAEFit:
        """How well the SAE reconstructs this data's responses (:class:`prefaudit.audit.fit.SAEFit`)."""
        return self.lens_fit(n, seed)

    # ------------------------------------------------------------------ shaping, training, verification
    def predict(
        self,
        weights: dict[int | str, float] | None = None,
        *,
        features: Any = None,
        config: Any = None,
    ) -> pd.DataFrame:
        """Predicted learning signal per feature before and after shaping (no training).

        Uses ``session.weights`` unless ``weights`` is given; one row per feature (or ``features``,
        which may name groups): ``weight``, ``signal_before``, ``signal_after`` (gradient-weighted
        mean Δ), their standardised versions (/sd) and ``change_z``. The margins behind it are
        ``session.shaping.preview(...)`` (a typed :class:`prefaudit.audit.shaping.Preview`).
        With ``config`` (a ``DPORunConfig`` or dict): over the pairs that run would train on, read
        in its token window (:func:`prefaudit.training.prediction.predict_in_window`).
        """
        if config is None:
            return self.shaping.preview(weights, features=features).table
        from .training.prediction import predict_in_window

        return predict_in_window(self, config, weights, features=features)

    def train(self, config: Any = None, **kwargs: Any) -> DPORun:
        """Start a DPO run (trl) in the background with the current shaping; returns a ``DPORun``."""
        from .training import start_run

        run = start_run(self, config, **kwargs)
        self.runs.append(run)
        return run

    def plan_training(self, config: Any = None, **overrides: Any) -> TrainingPlan:
        """What a run with this config would train on, per pair and token (a ``TrainingPlan``); trains nothing."""
        from .training.plan import plan_training

        return plan_training(self, config, **overrides)

    def verify(self, run: DPORun, prompts: Any = None, **kwargs: Any) -> VerifyResult:
        """Generate from base and trained policies and compare observed with predicted shifts."""
        from .verify import verify_run

        return verify_run(self, run, prompts=prompts, **kwargs)

    def compare(
        self, run_a: DPORun | VerifyResult, run_b: DPORun | VerifyResult, **kwargs: Any
    ) -> RunComparison:
        """Two verified runs side by side."""
        from .verify import compare_runs

        return compare_runs(self, run_a, run_b, **kwargs)

    def export_training(self, directory: str | Path, **kwargs: Any) -> Path:
        """Write the shaped dataset plus a script and config for ``accelerate launch`` on many GPUs."""
        from .training.export import export_training

        return export_training(self, Path(directory), **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save data, pooled features, results, labels, notes and decisions to a directory."""
        from .audit.persist import save_session

        return save_session(self, Path(path))

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> AuditSession:
        """Open a saved session; the model and SAE load lazily when first needed."""
        from .audit.persist import load_session

        return load_session(cls, Path(path), **overrides)
