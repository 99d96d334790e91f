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
from typing import Any

from .audit.core import AuditCore
from .ids import CONCEPT_PREFIX, SAE_PREFIX
from .shaping import VERDICTS

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
    def volcano(self, **kwargs: Any) -> Any:
        """Volcano plot of effect size against −log10 q; clicks and lassos select features."""
        from .views.volcano import VolcanoView

        return VolcanoView(self, **kwargs)

    def pairs(self, feature: int | str | None = None, **kwargs: Any) -> Any:
        """Drill-down into the pairs where ``feature`` (default: the focus) fires most."""
        from .views.drilldown import PairsView

        return PairsView(self, feature=feature, **kwargs)

    def shaper(self, **kwargs: Any) -> Any:
        """Reward-weight sliders and verdicts for the selection, with a live shaping preview."""
        from .views.shaper import ShaperView

        return ShaperView(self, **kwargs)

    def topic_heatmap(self, **kwargs: Any) -> Any:
        """Per-topic effects of the strongest features; a click filters the drill-down to that topic."""
        from .views.heatmap import TopicHeatmapView

        return TopicHeatmapView(self, **kwargs)

    def drivers_view(self, feature: int | str | None = None, **kwargs: Any) -> Any:
        """The pairs that drive a feature's signal, with exclude / flip / export and a what-if preview."""
        from .views.drivers_view import DriversView

        return DriversView(self, feature=feature, **kwargs)

    def dashboard(self, **kwargs: Any) -> Any:
        """Volcano, drill-down and sliders, linked through this session."""
        from .views.dashboard import Dashboard

        return Dashboard(self, **kwargs)

    def report(self, path: str | Path, **kwargs: Any) -> Path:
        """Write a standalone HTML report (opens offline)."""
        from .report import write_report

        return write_report(self, Path(path), **kwargs)

    def __repr__(self) -> str:
        from .report.concepts import fit_line

        line = fit_line(self)  # the cached fit only: a repr never reads the model
        return super().__repr__() + (f"\n{line}" if line else "")

    def _repr_html_(self) -> str:
        from .report.concepts import repr_html

        return repr_html(self)

    # ------------------------------------------------------------------ shaping, training, verification
    def predict(
        self,
        weights: dict[int | str, float] | None = None,
        *,
        features: Any = None,
        config: Any = None,
        matrix: Any = None,
    ) -> Any:
        """Predicted learning signal per feature (see :meth:`AuditCore.predict`).

        With ``config`` (a ``DPORunConfig`` or dict): over the pairs that run would train on, read
        in its token window (:func:`prefaudit.training.prediction.predict_in_window`).
        """
        if config is None:
            return super().predict(weights, features=features, matrix=matrix)
        from .training.prediction import predict_in_window

        return predict_in_window(self, config, weights, features=features)

    def shaped_pairs(self, intervention: str = "margin", **kwargs: Any) -> Any:
        """The ``datasets.Dataset`` trl trains on, with this session's shaping applied.

        (The full record, with what was dropped or flipped, is
        :func:`prefaudit.interventions.shape_pairs`.)
        """
        from .interventions import shape_pairs

        return shape_pairs(self, intervention, **kwargs).dataset

    def train(self, config: Any = None, **kwargs: Any) -> Any:
        """Start a DPO run (trl) in the background with the current shaping; returns a ``DPORun``."""
        from .training import start_run

        run = start_run(self, config, **kwargs)
        self.runs.append(run)
        return run

    def plan_training(self, config: Any = None, **overrides: Any) -> Any:
        """What a run with this config would train on, per pair and token (a ``TrainingPlan``); trains nothing."""
        from .training.plan import plan_training

        return plan_training(self, config, **overrides)

    def verify(self, run: Any, prompts: Any = None, **kwargs: Any) -> Any:
        """Generate from base and trained policies and compare observed with predicted shifts."""
        from .verify import verify_run

        return verify_run(self, run, prompts=prompts, **kwargs)

    def compare(self, run_a: Any, run_b: Any, **kwargs: Any) -> Any:
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
