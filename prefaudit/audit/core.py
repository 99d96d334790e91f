"""``AuditCore``: the state of one audit, and the parts that compute from it.

It owns the data, the model parts (loaded lazily), the pooled features, the results table and a
person's decisions; composed parts answer every query the views, the interventions, training,
verification and the report make (``docs/ARCHITECTURE.md`` draws them). Those depend on this
package; it depends on none of them (imports point one way).
:class:`prefaudit.session.AuditSession` is the facade users know: this core plus the verbs that
open views and start runs.

Observable state (traits) — views observe these; only the core and its parts assign them:
``selection``, ``focus``, ``weights``, ``verdicts``, ``labels``, ``notes``, ``results_version``,
``status``, ``pair_edits``, ``topic_filter``. Decisions are written by the intents
(:mod:`prefaudit.audit.decisions`), pair edits by :mod:`prefaudit.audit.pair_edits`, the topic
filter by :mod:`prefaudit.audit.topics`; a saved session comes back through
:meth:`AuditCore.restore`. Caches live in the parts (:mod:`prefaudit.audit.versions`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import traitlets as t

from .. import ids
from ..errors import ConfigError
from ..features.concepts import (
    DirectionConcept,
    TextConcept,
    builtin_concepts,
    check_concept_name,
    make_concept,
)
from ..features.encode import check_pooling
from ..features.encoded import EncodedFeatures
from ..features.matrix import FeatureMatrix
from .decisions import Decisions
from .drivers import Drivers
from .fit import LensFit
from .groups import Groups
from .pair_edits import PairEdits
from .shaping import Shaping
from .space import FeatureSpace
from .topics import Topics
from .versions import Memo, Versions

Concept = TextConcept | DirectionConcept


class AuditCore(t.HasTraits):
    """State of an audit and the parts that compute from it (see :class:`prefaudit.session.AuditSession` for the parameters).

    Parts (each owns its caches; one :class:`~prefaudit.audit.versions.Versions` counter per
    input empties them): ``space`` (:class:`FeatureSpace`), ``groups`` (:class:`Groups`),
    ``topics`` (:class:`Topics`), ``shaping`` (:class:`Shaping`), ``drivers`` (:class:`Drivers`),
    ``edits`` (:class:`PairEdits`), ``lens_fit`` (:class:`LensFit`) and ``decisions``
    (:class:`Decisions`, the intents).
    """

    selection = t.List(t.Unicode(), help="features selected for shaping, in selection order")
    focus = t.Unicode(None, allow_none=True, help="the feature the drill-down shows")
    weights = t.Dict(help="feature id -> reward weight in standardised units")
    verdicts = t.Dict(help="feature id -> 'allow' | 'suppress' | 'amplify'")
    labels = t.Dict(help="feature id -> label set by a person (overrides the automatic one)")
    notes = t.Dict(help="feature id -> free-text note")
    results_version = t.Int(0, help="increments whenever the results table changes")
    status = t.Unicode("", help="what the session is doing, for views")
    pair_edits = t.Dict(help="pair_id -> 'exclude' | 'flip' for training (audit/pair_edits.py)")
    topic_filter = t.Int(None, allow_none=True, help="the topic whose pairs the drill-down shows (None: all)")

    def __init__(
        self,
        pairs: Any,
        *,
        model: Any = None,
        tokenizer: Any = None,
        sae: Any = None,
        layer: int | None = None,
        pooling: str = "max",
        concepts: bool = True,
        cache_dir: str | Path | bool | None = None,
        batch_size: int | None = 8,
        batch_tokens: int | None = None,
        shard_size: int = 128,
        dtype: str | None = None,
        device: str = "auto",
        max_prompt_tokens: int = 384,
        max_response_tokens: int = 256,
    ) -> None:
        super().__init__()
        from ..pairs import PreferencePairs, load_pairs

        self.data: PreferencePairs = pairs if isinstance(pairs, PreferencePairs) else load_pairs(pairs)
        if len(self.data) < 2:
            raise ConfigError(f"An audit needs at least 2 pairs; the dataset has {len(self.data)}.")
        self.config: dict[str, Any] = {
            "model": None if model is None else (str(model) if isinstance(model, (str, Path)) else model),
            "sae": sae if not isinstance(sae, Path) else str(sae),
            "layer": layer,
            "pooling": check_pooling(pooling),
            "batch_size": None if batch_size is None else int(batch_size),
            "batch_tokens": None if batch_tokens is None else int(batch_tokens),
            "shard_size": int(shard_size),
            "dtype": dtype,
            "device": device,
            "max_prompt_tokens": int(max_prompt_tokens),
            "max_response_tokens": int(max_response_tokens),
        }
        if cache_dir is None:
            from ..default_model import cache_root

            cache_dir = cache_root()
        self.cache_dir: Path | None = None if cache_dir is False else Path(cache_dir).expanduser()
        self._tokenizer = tokenizer
        self._backbone: Any = None
        self._sae: Any = None
        self.encoded: EncodedFeatures | None = None
        self.concepts: list[Concept] = builtin_concepts() if concepts else []
        self.auto_labels: dict[str, str] = self._concept_auto_labels()
        self.results: pd.DataFrame | None = None
        self.runs: list[Any] = []
        self.versions = Versions()
        self.observe(lambda _: self.versions.bump("weights"), "weights")
        self.observe(lambda _: self.versions.bump("edits"), "pair_edits")
        self.space = FeatureSpace(self)
        self.groups = Groups(self)
        self.topics = Topics(self)
        self.shaping = Shaping(self)
        self.drivers = Drivers(self)
        self.edits = PairEdits(self)
        self.lens_fit = LensFit(self)
        self.decisions = Decisions(self)
        self._stages = Memo(self.versions, "data", "features")  # stage name -> its dict

    # ------------------------------------------------------------------ model parts (lazy)
    @property
    def uses_sae(self) -> bool:
        return self.config["sae"] is not False

    @property
    def tokenizer(self) -> Any:
        """The tokenizer passed to the constructor (``None``: the model's own, from ``backbone``)."""
        return self._tokenizer

    @property
    def backbone(self) -> Any:
        """The causal LM and read layer (loaded on first use)."""
        if self._backbone is None:
            from ..backbone import Backbone

            self.status = "loading model"
            layer = self.config["layer"]
            if layer is None and self.uses_sae:
                layer = self.sae.layer
            self._backbone = Backbone.load(
                self.config["model"],
                tokenizer=self._tokenizer,
                layer=layer,
                dtype=self.config["dtype"],
                device=self.config["device"],
                max_prompt_tokens=self.config["max_prompt_tokens"],
                max_response_tokens=self.config["max_response_tokens"],
            )
            self.status = ""
        return self._backbone

    @property
    def sae(self) -> Any:
        """The SAE feature source (loaded on first use); ``None`` for a concepts-only audit."""
        if not self.uses_sae:
            return None
        if self._sae is None:
            from ..features.sae import load_sae

            self._sae = load_sae(self.config["sae"], device=self.config["device"])
        return self._sae

    # ------------------------------------------------------------------ encode
    def encode(self, *, progress: bool = True, share_prompt: bool = True) -> EncodedFeatures | None:
        """Read every response through the model and SAE (cached on disk, resumable).

        Returns the pooled features (also stored on ``session.encoded``); ``None`` for a
        concepts-only session.
        """
        if not self.uses_sae:
            return None
        from ..features.encode import encode_pairs
        from ..features.labels import auto_labels

        self.status = "encoding"
        try:
            cfg = self.config
            self.encoded = encode_pairs(
                self.data,
                self.backbone,
                self.sae,
                pooling=cfg["pooling"],
                batch_size=cfg["batch_size"],
                batch_tokens=cfg["batch_tokens"],
                shard_size=cfg["shard_size"],
                cache_dir=self.cache_dir,
                share_prompt=share_prompt,
                progress=progress,
            )
            labels = auto_labels(self.encoded, self.backbone.decode_tokens)
            self.auto_labels = {
                **self._concept_auto_labels(),
                **{ids.sae_id(f): s for f, s in labels.items()},
            }
        finally:
            self.status = ""
        self._features_changed()
        return self.encoded

    # ------------------------------------------------------------------ concepts
    def add_concept(
        self,
        name: str,
        spec: str | Callable[[str], float] | None = None,
        *,
        direction: Any = None,
        description: str = "",
    ) -> str:
        """Add a text concept tested like any feature; returns its feature id.

        ``spec`` is a regex (value = number of matches in the response) or a callable
        ``text -> float``. Alternatively pass ``direction=`` (a vector of the model's hidden size):
        the concept is the projection of the response's mean activation onto it.
        """
        check_concept_name(name, [c.name for c in self.concepts])
        if direction is not None:
            vec = np.asarray(direction, dtype=np.float64).ravel()
            if not np.all(np.isfinite(vec)) or not np.linalg.norm(vec) > 0:
                raise ConfigError(f"Concept {name!r}: direction must be a finite, non-zero vector.")
            concept: Concept = DirectionConcept(
                name, description or "projection on a direction", vec / np.linalg.norm(vec)
            )
        else:
            concept = make_concept(name, spec, description)
        self.concepts.append(concept)
        self.auto_labels[ids.concept_id(name)] = concept.description
        self._features_changed()
        return ids.concept_id(name)

    def concept(self, feature: int | str) -> Concept:
        """The concept object behind a ``concept:`` id."""
        name = ids.concept_name(self.space.feature_id(feature))
        return next(c for c in self.concepts if c.name == name)

    def _concept_auto_labels(self) -> dict[str, str]:
        return {ids.concept_id(c.name): c.description for c in self.concepts}

    def label(self, feature: int | str) -> str:
        """The person's label if set, else the automatic one (a ``group:`` id: its group's)."""
        fid = self.space.decision_id(feature)
        if ids.is_group(fid):
            return self.groups.label(fid)
        return self.labels.get(fid) or self.auto_labels.get(fid, "")

    # ------------------------------------------------------------------ features (the space's, for short)
    @property
    def feature_ids(self) -> list[str]:
        """All feature ids in table order: SAE features, then concepts."""
        return self.space.feature_ids

    @property
    def matrix(self) -> FeatureMatrix:
        """Pooled values of every feature (encodes first if needed)."""
        return self.space.matrix

    # ------------------------------------------------------------------ statistics
    def test(
        self,
        test: str = "wilcoxon",
        *,
        n_boot: int = 1000,
        seed: int = 0,
        length_control: bool = True,
        alpha: float = ids.ALPHA,
        by: str | None = None,
    ) -> pd.DataFrame:
        """Test every feature chosen vs rejected; returns (and stores) one row per feature.

        Columns are those of :func:`prefaudit.stats.paired_tests`; ``feature`` is the feature id,
        ``source`` is ``"sae"`` or ``"concept"`` and ``label`` the current label. ``by``
        ("topic" or a metadata column): one row per group × feature instead, kept by the topics
        part and not stored as ``results`` (:meth:`prefaudit.audit.topics.Topics.test`).
        """
        if by is not None:
            return self.topics.test(
                by, test=test, n_boot=n_boot, seed=seed, length_control=length_control, alpha=alpha
            )
        from ..stats import paired_tests

        self.status = "testing"
        try:
            m = self.space.matrix
            fids = self.space.feature_ids
            table = paired_tests(
                m.chosen,
                m.rejected,
                test=test,
                lengths=self.space.lengths() if length_control else None,
                n_boot=n_boot,
                seed=seed,
                names=fids,
                source=[ids.parse(f)[0] for f in fids],
                labels=[self.labels.get(f) or self.auto_labels.get(f, "") for f in fids],
                alpha=alpha,
            )
        finally:
            self.status = ""
        table.attrs["test"] = test
        table.attrs["truncation"] = self.space.truncation().counts()
        self.results = table
        self.results_version += 1
        return table

    def significant(self, q: float = ids.ALPHA) -> pd.DataFrame:
        """Rows of the results with ``q`` below the threshold, strongest |d_z| first."""
        res = self.require_results()
        out = res[res["q"] < q]
        return out.reindex(out["d_z"].abs().sort_values(ascending=False).index)

    def require_results(self) -> pd.DataFrame:
        """The results table, or a ConfigError that says to run ``test()`` first."""
        if self.results is None:
            raise ConfigError("No results yet: call session.test() first.")
        return self.results

    # ------------------------------------------------------------------ caches of the stages above the core
    def stage_cache(self, name: str) -> dict[str, Any]:
        """A dict a stage (training window, verification) keeps its per-session values in.

        Emptied whenever the data or the features change, and never saved: a stage keys its
        entries by whatever else they depend on (a config, a run).
        """
        return self._stages.get(name, dict)

    # ------------------------------------------------------------------ persistence and bookkeeping
    def restore(
        self,
        *,
        concepts: Sequence[Concept],
        concept_values: Sequence[tuple[np.ndarray, np.ndarray]],
        encoded: EncodedFeatures | None,
        results: pd.DataFrame | None,
        auto_labels: dict[str, str],
        decisions: dict[str, Any],
        sae_fits: dict[tuple[int, int], Any] | None = None,
    ) -> None:
        """Put back a saved audit (:mod:`prefaudit.audit.persist`): concepts with their values, features, results, decisions.

        ``decisions`` holds ``labels``, ``notes``, ``weights``, ``verdicts``, ``selection`` and
        ``focus`` exactly as saved, and ``pair_edits``; ``sae_fits`` the measured lens fits.
        """
        self.concepts = list(concepts)
        self.encoded = encoded
        self.versions.bump("data")
        self._features_changed()
        self.space.restore_concept_values({c.name: v for c, v in zip(concepts, concept_values, strict=True)})
        self.results = results
        self.auto_labels = dict(auto_labels)
        self.labels = dict(decisions["labels"])
        self.notes = dict(decisions["notes"])
        self.weights = dict(decisions["weights"])
        self.verdicts = dict(decisions["verdicts"])
        self.selection = list(decisions["selection"])
        self.focus = decisions["focus"]
        self.pair_edits = dict(decisions.get("pair_edits", {}))
        if sae_fits:
            self.lens_fit.restore(dict(sae_fits))

    def _features_changed(self) -> None:
        """The pooled features changed: every cache that read them empties, and the results go."""
        self.versions.bump("features")
        if self.results is not None:
            self.results = None
            self.results_version += 1

    def __repr__(self) -> str:
        sae = "concepts only" if not self.uses_sae else (self._sae.name if self._sae else "SAE (not loaded)")
        enc = "encoded" if self.encoded is not None else "not encoded"
        res = f"{len(self.results)} features tested" if self.results is not None else "not tested"
        return (
            f"{type(self).__name__}({len(self.data)} pairs, {sae}, {enc}, {res}, {len(self.weights)} weights)"
        )
