"""``AuditCore``: the state of one audit and the only writer of it.

It owns the data, the model parts (loaded lazily), the pooled features, the results table and a
person's decisions, and answers every query the views, the interventions, training,
verification and the report make. Those depend on this module; it depends on none of them
(imports point one way, ``docs/ARCHITECTURE.md``). :class:`prefaudit.session.AuditSession` is the
facade users know: this core plus the methods that open views and start runs.

Observable state (traits) — views observe these; only core methods assign them:
``selection``, ``focus``, ``weights``, ``verdicts``, ``labels``, ``notes``, ``results_version``,
``status``. Decisions are written by the intents (:mod:`prefaudit.audit.intents`); a saved
session comes back through :meth:`AuditCore.restore`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import traitlets as t

from .. import ids
from ..errors import ConfigError
from ..features.concepts import (
    DirectionConcept,
    TextConcept,
    builtin_concepts,
    check_concept_name,
    concept_values,
    make_concept,
)
from ..features.encode import check_pooling
from ..features.encoded import EncodedFeatures
from ..features.matrix import FeatureMatrix
from .drivers import DriversMixin
from .fit import FitMixin
from .group_weights import GroupWeightsMixin
from .groups import GroupsMixin
from .intents import IntentsMixin
from .queries import QueriesMixin
from .topics import TopicsMixin

Concept = TextConcept | DirectionConcept


class AuditCore(
    IntentsMixin,
    QueriesMixin,
    GroupWeightsMixin,
    GroupsMixin,
    TopicsMixin,
    DriversMixin,
    FitMixin,
    t.HasTraits,
):
    """State, queries and intents of an audit (see :class:`prefaudit.session.AuditSession` for the parameters)."""

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
        self._concept_values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.auto_labels: dict[str, str] = self._concept_auto_labels()
        self.results: pd.DataFrame | None = None
        self.runs: list[Any] = []
        self._matrix: FeatureMatrix | None = None
        self._ids: list[str] = []
        self._ids_index: dict[str, int] = {}
        self._ids_key: tuple | None = None

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
                self.data, self.backbone, self.sae, pooling=cfg["pooling"], batch_size=cfg["batch_size"],
                batch_tokens=cfg["batch_tokens"], shard_size=cfg["shard_size"], cache_dir=self.cache_dir,
                share_prompt=share_prompt, progress=progress,
            )  # fmt: skip
            labels = auto_labels(self.encoded, self.backbone.decode_tokens)
            self.auto_labels = {
                **self._concept_auto_labels(),
                **{ids.sae_id(f): s for f, s in labels.items()},
            }
        finally:
            self.status = ""
        self._invalidate()
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
        self._invalidate()
        return ids.concept_id(name)

    def concept_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Concept values ``(n_pairs, n_concepts)`` for chosen and rejected, in ``self.concepts`` order."""
        n = len(self.data)
        chosen = np.zeros((n, len(self.concepts)))
        rejected = np.zeros((n, len(self.concepts)))
        for j, concept in enumerate(self.concepts):
            if concept.name not in self._concept_values:
                mean_act: tuple[Any, Any] = (None, None)
                if isinstance(concept, DirectionConcept):
                    if self.encoded is None:
                        self.encode()
                    mean_act = (self.encoded.chosen.mean_act, self.encoded.rejected.mean_act)
                self._concept_values[concept.name] = tuple(
                    concept_values(concept, self.data.df[side].tolist(), act)
                    for side, act in zip(("chosen", "rejected"), mean_act, strict=True)
                )
            chosen[:, j], rejected[:, j] = self._concept_values[concept.name]
        return chosen, rejected

    def _concept_auto_labels(self) -> dict[str, str]:
        return {ids.concept_id(c.name): c.description for c in self.concepts}

    # ------------------------------------------------------------------ feature ids
    def sae_id(self, index: int) -> str:
        return ids.sae_id(index)

    @property
    def feature_ids(self) -> list[str]:
        """All feature ids in table order: SAE features, then concepts."""
        d_sae = self.encoded.d_sae if self.encoded is not None else 0
        key = (d_sae, tuple(c.name for c in self.concepts))
        if self._ids_key != key:
            self._ids = [ids.sae_id(i) for i in range(d_sae)] + [
                ids.concept_id(c.name) for c in self.concepts
            ]
            self._ids_index = {f: j for j, f in enumerate(self._ids)}
            self._ids_key = key
        return self._ids

    def feature_id(self, feature: int | str) -> str:
        """Normalise ``17``, ``"17"``, ``"sae:17"``, ``"length"`` or ``"concept:length"`` to an id that exists."""
        fid = ids.normalize(feature)
        kind, value = ids.parse(fid)
        if kind == "concept":
            if value not in {c.name for c in self.concepts}:
                names = ", ".join(c.name for c in self.concepts)
                raise ConfigError(f"Unknown concept {fid!r}. Known concepts: {names}.")
        else:
            d_sae = (
                self.encoded.d_sae if self.encoded is not None else (self.sae.d_sae if self.uses_sae else 0)
            )
            if not 0 <= int(value) < d_sae:
                raise ConfigError(f"Unknown SAE feature {fid!r}: the SAE has features 0..{d_sae - 1}.")
        return fid

    def label(self, feature: int | str) -> str:
        """The person's label if set, else the automatic one (a ``group:`` id: its group's)."""
        fid = self.decision_id(feature)
        return (
            self.group_label(fid)
            if ids.is_group(fid)
            else self.labels.get(fid) or self.auto_labels.get(fid, "")
        )

    def concept(self, feature: int | str) -> Concept:
        """The concept object behind a ``concept:`` id."""
        name = ids.concept_name(self.feature_id(feature))
        return next(c for c in self.concepts if c.name == name)

    # ------------------------------------------------------------------ statistics
    @property
    def matrix(self) -> FeatureMatrix:
        """Pooled values of every feature (encodes first if needed); Δ and sd cached on it."""
        if self._matrix is None:
            c_con, r_con = self.concept_values()
            if self.uses_sae and self.encoded is None:
                self.encode()
            self._matrix = FeatureMatrix.from_parts(self.encoded if self.uses_sae else None, c_con, r_con)
        return self._matrix

    def delta_matrix(self) -> sp.csc_matrix:
        """Δ = chosen − rejected, ``(n_pairs, n_features)`` CSC, columns in ``feature_ids`` order."""
        return self.matrix.delta

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Response lengths for the length control: tokens when encoded, else words.

        Tokens are those of the **whole** response, before the cut at ``max_response_tokens``
        (a cut response is longer than what was read; :meth:`truncation` says which). Data
        encoded before prefaudit recorded full lengths falls back to the tokens read.
        """
        if self.encoded is not None:
            return self.encoded.full_lengths()
        words = [
            np.array([len(s.split()) for s in self.data.df[side]], dtype=np.float64)
            for side in ("chosen", "rejected")
        ]
        return words[0], words[1]

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
        ``source`` is ``"sae"`` or ``"concept"`` and ``label`` the current label.
        """
        if by is not None:  # one row per group × feature, not stored as self.results (audit/topics.py)
            return self.test_by(
                by, test=test, n_boot=n_boot, seed=seed, length_control=length_control, alpha=alpha
            )
        from ..stats import paired_tests

        self.status = "testing"
        try:
            m = self.matrix
            fids = self.feature_ids
            table = paired_tests(
                m.chosen,
                m.rejected,
                test=test,
                lengths=self.lengths() if length_control else None,
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
        table.attrs["truncation"] = self.truncation().counts()
        self.results = table
        self._invalidate(results=False)
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

    # ------------------------------------------------------------------ shaping preview
    def predict(
        self,
        weights: dict[int | str, float] | None = None,
        *,
        features: Sequence[int | str] | None = None,
        matrix: FeatureMatrix | None = None,
    ) -> pd.DataFrame:
        """Predicted learning signal per feature before and after shaping (no training).

        Uses ``session.weights`` unless ``weights`` is given. Returns one row per feature
        (all features, or ``features``) with ``weight``, ``signal_before``, ``signal_after``
        (gradient-weighted mean Δ, raw units), their standardised versions (/sd) and ``change``.
        ``attrs`` carries the pair margins (scaled by ``matrix.margin_scale``, capped at ±``cap``;
        :mod:`prefaudit.shaping`), ``gradient_weight``, ``n_dominated`` (m ≤ −threshold), the
        threshold, ``n_capped`` (pairs whose margin hit the cap) and ``cap``. ``matrix``: predict
        from these pooled values (same columns; e.g. the trained pairs read in the training
        window) instead of the audit's. Weights and ``features`` may name groups (``group:<k>``,
        :mod:`prefaudit.audit.group_weights`): a group row is the signal of its score's Δ.
        """
        m = self.matrix if matrix is None else matrix
        w_map = (
            self.weights if weights is None else {self.decision_id(k): float(v) for k, v in weights.items()}
        )
        w_margin = self.margin_weights(w_map, m)  # each weighted group's share on its members' weights
        rows, cols, combine, row_sd = self.predict_rows(features, m)
        # Pair edits (exclude/flip) apply to the audit's own pairs, not to another matrix's rows.
        pv = self.pair_edited_preview(m, w_margin, cols, own_pairs=matrix is None)
        sd, before, after = pv.sd, pv.signal_before, pv.signal_after
        if combine is not None:  # feature rows pick their column, group rows combine their members'
            sd, before, after = row_sd, combine @ before, combine @ after
        with np.errstate(divide="ignore", invalid="ignore"):
            before_z = np.where(sd > 0, before / sd, 0.0)
            after_z = np.where(sd > 0, after / sd, 0.0)
        labels, auto = self.labels, self.auto_labels
        out = pd.DataFrame(
            {
                "feature": rows,
                "label": [
                    self.group_label(f) if ids.is_group(f) else labels.get(f) or auto.get(f, "") for f in rows
                ],
                "weight": [w_map.get(f, 0.0) for f in rows],
                "signal_before": before,
                "signal_after": after,
                "signal_before_z": before_z,
                "signal_after_z": after_z,
                "change_z": after_z - before_z,
                "sd": sd,
            }
        )
        out.attrs.update(
            margins=pv.margins,
            gradient_weight=pv.gradient_weight,
            n_dominated=pv.n_dominated,
            threshold=pv.threshold,
            n_capped=pv.n_capped,
            cap=pv.cap,
        )
        return out

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
        self._concept_values = {
            c.name: (np.asarray(vc), np.asarray(vr))
            for c, (vc, vr) in zip(concepts, concept_values, strict=True)
        }
        self.encoded = encoded
        self._invalidate()
        self.results = results
        self.auto_labels = dict(auto_labels)
        self.labels = dict(decisions["labels"])
        self.notes = dict(decisions["notes"])
        self.weights = dict(decisions["weights"])
        self.verdicts = dict(decisions["verdicts"])
        self.selection = list(decisions["selection"])
        self.focus = decisions["focus"]
        self.pair_edits = dict(decisions.get("pair_edits", {}))
        self._sae_fit_cache = dict(sae_fits) if sae_fits else None

    def _invalidate(self, results: bool = True) -> None:
        self._matrix = None
        self._groups_cache = None if results else self._groups_cache  # test() keeps the groups
        if results and self.results is not None:
            self.results = None
            self.results_version += 1

    def __repr__(self) -> str:
        sae = "concepts only" if not self.uses_sae else (self._sae.name if self._sae else "SAE (not loaded)")
        enc = "encoded" if self.encoded is not None else "not encoded"
        res = f"{len(self.results)} features tested" if self.results is not None else "not tested"
        return (
            f"{type(self).__name__}({len(self.data)} pairs, {sae}, {enc}, {res}, {len(self.weights)} weights)"
        )
