"""``AuditSession``: the one object that owns an audit's data, features, results and decisions.

The session is the **only writer of state**. Views (volcano, drill-down, sliders, run panel)
observe its traits (``selection``, ``focus``, ``weights``, ``verdicts``, ``labels``, ``notes``,
``results_version``) and send intents up by calling its methods (``select_feature``,
``set_weight``, ...); they compute nothing themselves. Heavy parts (the model, the SAE) load
lazily on first use, so a saved session opens instantly.

Example
-------
>>> import prefaudit as pa
>>> session = pa.AuditSession(pa.load_pairs("pairs.jsonl"))    # doctest: +SKIP
>>> session.encode()                                            # doctest: +SKIP
>>> table = session.test()                                      # doctest: +SKIP
>>> table.sort_values("q").head()                               # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import traitlets as t

from .errors import ConfigError
from .features.concepts import (
    DirectionConcept,
    TextConcept,
    builtin_concepts,
    check_concept_name,
    concept_matrix,
    make_concept,
)
from .features.encode import check_pooling
from .features.encoded import EncodedFeatures

VERDICTS = ("allow", "suppress", "amplify")
SAE_PREFIX, CONCEPT_PREFIX = "sae:", "concept:"


class AuditSession(t.HasTraits):
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

    # Observable state: views observe these; only session methods assign them.
    selection = t.List(t.Unicode(), help="features selected for shaping, in selection order")
    focus = t.Unicode(None, allow_none=True, help="the feature the drill-down shows")
    weights = t.Dict(help="feature id -> reward weight in standardised units")
    verdicts = t.Dict(help="feature id -> 'allow' | 'suppress' | 'amplify'")
    labels = t.Dict(help="feature id -> label set by a person (overrides the automatic one)")
    notes = t.Dict(help="feature id -> free-text note")
    results_version = t.Int(0, help="increments whenever the results table changes")
    status = t.Unicode("", help="what the session is doing, for views")

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
        batch_size: int = 8,
        shard_size: int = 128,
        dtype: str | None = None,
        device: str = "cpu",
        max_prompt_tokens: int = 384,
        max_response_tokens: int = 256,
    ) -> None:
        super().__init__()
        from .pairs import PreferencePairs, load_pairs

        self.data: PreferencePairs = pairs if isinstance(pairs, PreferencePairs) else load_pairs(pairs)
        if len(self.data) < 2:
            raise ConfigError(f"An audit needs at least 2 pairs; the dataset has {len(self.data)}.")
        self.config: dict[str, Any] = {
            "model": None if model is None else (str(model) if isinstance(model, (str, Path)) else model),
            "sae": sae if not isinstance(sae, Path) else str(sae),
            "layer": layer,
            "pooling": check_pooling(pooling),
            "batch_size": int(batch_size),
            "shard_size": int(shard_size),
            "dtype": dtype,
            "device": device,
            "max_prompt_tokens": int(max_prompt_tokens),
            "max_response_tokens": int(max_response_tokens),
        }
        if cache_dir is None:
            from .default_model import cache_root

            cache_dir = cache_root()
        self.cache_dir: Path | None = None if cache_dir is False else Path(cache_dir).expanduser()
        self._tokenizer = tokenizer
        self._backbone: Any = None
        self._sae: Any = None
        self.encoded: EncodedFeatures | None = None
        self.concepts: list[TextConcept | DirectionConcept] = builtin_concepts() if concepts else []
        self._concept_values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.auto_labels: dict[str, str] = self._concept_auto_labels()
        self.results: pd.DataFrame | None = None
        self.runs: list[Any] = []
        self._delta: sp.csc_matrix | None = None
        self._pooled_csc: tuple[sp.csc_matrix, sp.csc_matrix] | None = None
        self._sd: np.ndarray | None = None
        self._ids: list[str] = []
        self._ids_index: dict[str, int] = {}
        self._ids_key: tuple | None = None

    # ------------------------------------------------------------------ model parts (lazy)
    @property
    def uses_sae(self) -> bool:
        return self.config["sae"] is not False

    @property
    def backbone(self) -> Any:
        """The causal LM and read layer (loaded on first use)."""
        if self._backbone is None:
            from .backbone import Backbone

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
            from .features.sae import load_sae

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
        from .features.encode import encode_pairs
        from .features.labels import auto_labels

        self.status = "encoding"
        try:
            self.encoded = encode_pairs(
                self.data,
                self.backbone,
                self.sae,
                pooling=self.config["pooling"],
                batch_size=self.config["batch_size"],
                shard_size=self.config["shard_size"],
                cache_dir=self.cache_dir,
                share_prompt=share_prompt,
                progress=progress,
            )
            labels = auto_labels(self.encoded, self.backbone.decode_tokens)
            self.auto_labels = {
                **self._concept_auto_labels(),
                **{self.sae_id(f): s for f, s in labels.items()},
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
            concept: TextConcept | DirectionConcept = DirectionConcept(
                name, description or "projection on a direction", vec / np.linalg.norm(vec)
            )
        else:
            concept = make_concept(name, spec, description)
        self.concepts.append(concept)
        self.auto_labels[CONCEPT_PREFIX + name] = concept.description
        self._invalidate()
        return CONCEPT_PREFIX + name

    def concept_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Concept values ``(n_pairs, n_concepts)`` for chosen and rejected, in ``self.concepts`` order."""
        n = len(self.data)
        chosen = np.zeros((n, len(self.concepts)))
        rejected = np.zeros((n, len(self.concepts)))
        texts_c = self.data.df["chosen"].tolist()
        texts_r = self.data.df["rejected"].tolist()
        for j, concept in enumerate(self.concepts):
            if concept.name not in self._concept_values:
                if isinstance(concept, DirectionConcept):
                    if self.encoded is None:
                        self.encode()
                    enc = self.encoded
                    if enc.chosen.mean_act.shape[1] != concept.direction.shape[0]:
                        raise ConfigError(
                            f"Concept {concept.name!r}: direction has {concept.direction.shape[0]} "
                            f"dimensions, the model's activations {enc.chosen.mean_act.shape[1]}."
                        )
                    vals = (
                        enc.chosen.mean_act @ concept.direction,
                        enc.rejected.mean_act @ concept.direction,
                    )
                else:
                    vals = (
                        concept_matrix(texts_c, [concept])[:, 0],
                        concept_matrix(texts_r, [concept])[:, 0],
                    )
                self._concept_values[concept.name] = vals
            chosen[:, j], rejected[:, j] = self._concept_values[concept.name]
        return chosen, rejected

    def _concept_auto_labels(self) -> dict[str, str]:
        return {CONCEPT_PREFIX + c.name: c.description for c in self.concepts}

    # ------------------------------------------------------------------ feature ids
    def sae_id(self, index: int) -> str:
        return f"{SAE_PREFIX}{int(index)}"

    @property
    def feature_ids(self) -> list[str]:
        """All feature ids in table order: SAE features, then concepts."""
        d_sae = self.encoded.d_sae if self.encoded is not None else 0
        key = (d_sae, tuple(c.name for c in self.concepts))
        if self._ids_key != key:
            self._ids = [self.sae_id(i) for i in range(d_sae)] + [
                CONCEPT_PREFIX + c.name for c in self.concepts
            ]
            self._ids_index = {f: j for j, f in enumerate(self._ids)}
            self._ids_key = key
        return self._ids

    def feature_id(self, feature: int | str) -> str:
        """Normalise ``17``, ``"17"``, ``"sae:17"``, ``"length"`` or ``"concept:length"`` to an id."""
        if isinstance(feature, (int, np.integer)) and not isinstance(feature, bool):
            fid = self.sae_id(int(feature))
        elif isinstance(feature, str):
            if feature.startswith((SAE_PREFIX, CONCEPT_PREFIX)):
                fid = feature
            elif feature.isdigit():
                fid = SAE_PREFIX + feature
            else:
                fid = CONCEPT_PREFIX + feature
        else:
            raise ConfigError(f"A feature is an SAE index or a concept name, not {feature!r}.")
        if fid.startswith(CONCEPT_PREFIX):
            if fid[len(CONCEPT_PREFIX) :] not in {c.name for c in self.concepts}:
                names = ", ".join(c.name for c in self.concepts)
                raise ConfigError(f"Unknown concept {fid!r}. Known concepts: {names}.")
        else:
            idx = int(fid[len(SAE_PREFIX) :])
            d_sae = (
                self.encoded.d_sae if self.encoded is not None else (self.sae.d_sae if self.uses_sae else 0)
            )
            if not 0 <= idx < d_sae:
                raise ConfigError(f"Unknown SAE feature {fid!r}: the SAE has features 0..{d_sae - 1}.")
        return fid

    def label(self, feature: int | str) -> str:
        """The person's label if set, else the automatic one."""
        fid = self.feature_id(feature)
        return self.labels.get(fid) or self.auto_labels.get(fid, "")

    # ------------------------------------------------------------------ statistics
    def _pooled_matrices(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        c_con, r_con = self.concept_values()
        if self.uses_sae:
            if self.encoded is None:
                self.encode()
            c = sp.hstack([self.encoded.chosen.values, sp.csr_matrix(c_con)], format="csr")
            r = sp.hstack([self.encoded.rejected.values, sp.csr_matrix(r_con)], format="csr")
            return c, r
        return sp.csr_matrix(c_con), sp.csr_matrix(r_con)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Response lengths for the length control: tokens when encoded, else words."""
        if self.encoded is not None:
            return self.encoded.lengths()
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
        alpha: float = 0.05,
    ) -> pd.DataFrame:
        """Test every feature chosen vs rejected; returns (and stores) one row per feature.

        Columns are those of :func:`prefaudit.stats.paired_tests`; ``feature`` is the feature id,
        ``source`` is ``"sae"`` or ``"concept"`` and ``label`` the current label.
        """
        from .stats import paired_tests

        self.status = "testing"
        try:
            chosen, rejected = self._pooled_matrices()
            ids = self.feature_ids
            sources = ["sae" if f.startswith(SAE_PREFIX) else "concept" for f in ids]
            table = paired_tests(
                chosen,
                rejected,
                test=test,
                lengths=self.lengths() if length_control else None,
                n_boot=n_boot,
                seed=seed,
                names=ids,
                source=sources,
                labels=[self.labels.get(f) or self.auto_labels.get(f, "") for f in ids],
                alpha=alpha,
            )
        finally:
            self.status = ""
        table.attrs["test"] = test
        self.results = table
        self._invalidate(results=False)
        self.results_version += 1
        return table

    def significant(self, q: float = 0.05) -> pd.DataFrame:
        """Rows of the results with ``q`` below the threshold, strongest |d_z| first."""
        res = self._require_results()
        out = res[res["q"] < q]
        return out.reindex(out["d_z"].abs().sort_values(ascending=False).index)

    def _require_results(self) -> pd.DataFrame:
        if self.results is None:
            raise ConfigError("No results yet: call session.test() first.")
        return self.results

    # ------------------------------------------------------------------ per-pair values
    def _delta_matrix(self) -> sp.csc_matrix:
        if self._delta is None:
            chosen, rejected = self._pooled_matrices()
            self._delta = sp.csc_matrix(chosen - rejected, dtype=np.float64)
        return self._delta

    def column(self, feature: int | str) -> int:
        """Column of a feature in the pooled matrices (and row in ``results``)."""
        _ = self.feature_ids  # refreshes the index when features changed
        return self._ids_index[self.feature_id(feature)]

    def values(self, feature: int | str) -> pd.DataFrame:
        """Per-pair pooled values of one feature: columns ``pair_id, chosen, rejected, delta``."""
        j = self.column(feature)
        if self._pooled_csc is None:  # column slices of CSC are cheap; views call this per click
            self._pooled_csc = tuple(m.tocsc() for m in self._pooled_matrices())
        chosen, rejected = self._pooled_csc
        c = chosen[:, j].toarray().ravel()
        r = rejected[:, j].toarray().ravel()
        return pd.DataFrame(
            {"pair_id": self.data.df["pair_id"].to_numpy(), "chosen": c, "rejected": r, "delta": c - r}
        )

    def top_pairs(
        self, feature: int | str, *, by: str = "delta", n: int = 10, offset: int = 0
    ) -> pd.DataFrame:
        """Pairs where the feature fires most: sorted by ``by`` ∈ {"delta", "chosen", "rejected", "abs_delta"}.

        Returns ``position`` (row in ``session.data.df``), ``pair_id``, pooled values and Δ, with
        the prompt and both responses.
        """
        if by not in ("delta", "chosen", "rejected", "abs_delta"):
            raise ConfigError(f"by={by!r}; choose delta, chosen, rejected or abs_delta.")
        vals = self.values(feature)
        key = vals["delta"].abs() if by == "abs_delta" else vals[by]
        order = np.argsort(-key.to_numpy(), kind="stable")[offset : offset + n]
        out = vals.iloc[order].copy()
        out.insert(0, "position", order)
        df = self.data.df.iloc[order]
        out["prompt"] = df["prompt"].to_numpy()
        out["chosen_text"] = df["chosen"].to_numpy()
        out["rejected_text"] = df["rejected"].to_numpy()
        return out.reset_index(drop=True)

    def token_activations(self, position: int, feature: int | str) -> dict[str, tuple[list[str], np.ndarray]]:
        """Per-token activation of an SAE feature in both responses of the pair at ``position``.

        Returns ``{"chosen": (tokens, values), "rejected": (tokens, values)}``. Concepts have no
        token-level activation: for them the values are all zero.
        """
        fid = self.feature_id(feature)
        row = self.data.df.iloc[int(position)]
        sides = ("chosen", "rejected")
        if fid.startswith(SAE_PREFIX) and self.uses_sae:
            from .features.encode import token_activations

            read = token_activations(
                self.backbone,
                self.sae,
                self.data.messages(int(position)),
                [row[s] for s in sides],
                [int(fid[4:])],
            )
            return {side: (toks, vals[:, 0]) for side, (toks, vals) in zip(sides, read, strict=True)}
        out = {}
        for side in sides:
            words = row[side].split(" ")
            toks = [w + (" " if k < len(words) - 1 else "") for k, w in enumerate(words)]
            out[side] = (toks, np.zeros(len(toks)))
        return out

    # ------------------------------------------------------------------ intents from views
    def select_feature(self, feature: int | str, *, focus: bool = True) -> None:
        """Add a feature to the selection (if new) and make it the drill-down's focus."""
        fid = self.feature_id(feature)
        if fid not in self.selection:
            self.selection = [*self.selection, fid]
        if focus:
            self.focus = fid

    def set_selection(self, features: Iterable[int | str]) -> None:
        ids = list(dict.fromkeys(self.feature_id(f) for f in features))
        self.selection = ids
        if ids and self.focus not in ids:
            self.focus = ids[0]

    def deselect_feature(self, feature: int | str) -> None:
        fid = self.feature_id(feature)
        self.selection = [f for f in self.selection if f != fid]
        if self.focus == fid:
            self.focus = self.selection[0] if self.selection else None

    def set_focus(self, feature: int | str | None) -> None:
        self.focus = None if feature is None else self.feature_id(feature)

    def set_weight(self, feature: int | str, weight: float) -> None:
        """Reward weight in standardised units (0 removes it). Negative suppresses, positive amplifies."""
        fid = self.feature_id(feature)
        w = float(weight)
        if not math.isfinite(w):
            raise ConfigError(f"Weight for {fid} must be a finite number, got {weight!r}.")
        weights = {k: v for k, v in self.weights.items() if k != fid}
        if w != 0.0:
            weights[fid] = w
        self.weights = weights

    def checked_weights(self, weights: dict[int | str, float]) -> dict[str, float]:
        """Feature id -> finite non-zero weight (zeros dropped; a non-finite weight is an error)."""
        new = {}
        for f, w in weights.items():
            fid, w = self.feature_id(f), float(w)
            if not math.isfinite(w):
                raise ConfigError(f"Weight for {fid} must be a finite number, got {w!r}.")
            if w != 0.0:
                new[fid] = w
        return new

    def set_weights(self, weights: dict[int | str, float]) -> None:
        self.weights = self.checked_weights(weights)

    def set_verdict(self, feature: int | str, verdict: str | None) -> None:
        """Record a person's verdict; a weight still at zero (or of the opposite sign) follows it.

        ``suppress`` sets weight −1 and ``amplify`` +1 unless a weight of that sign is already
        set; ``allow`` sets the weight to 0 (the preference is legitimate); ``None`` clears.
        """
        fid = self.feature_id(feature)
        if verdict is not None and verdict not in VERDICTS:
            raise ConfigError(f"Verdict {verdict!r} for {fid}; choose one of {', '.join(VERDICTS)} or None.")
        self.verdicts = {
            **{k: v for k, v in self.verdicts.items() if k != fid},
            **({fid: verdict} if verdict else {}),
        }
        w = self.weights.get(fid, 0.0)
        if verdict == "suppress" and not w < 0:
            self.set_weight(fid, -1.0)
        elif verdict == "amplify" and not w > 0:
            self.set_weight(fid, 1.0)
        elif verdict == "allow":
            self.set_weight(fid, 0.0)

    def set_label(self, feature: int | str, text: str) -> None:
        fid = self.feature_id(feature)
        labels = {k: v for k, v in self.labels.items() if k != fid}
        if text:
            labels[fid] = str(text)
        self.labels = labels
        if self.results is not None:
            self.results.loc[self.results["feature"] == fid, "label"] = self.label(fid)
            self.results_version += 1

    def set_note(self, feature: int | str, text: str) -> None:
        fid = self.feature_id(feature)
        notes = {k: v for k, v in self.notes.items() if k != fid}
        if text:
            notes[fid] = str(text)
        self.notes = notes

    # ------------------------------------------------------------------ shaping preview
    def predict(
        self, weights: dict[int | str, float] | None = None, *, features: Sequence[int | str] | None = None
    ) -> pd.DataFrame:
        """Predicted learning signal per feature before and after shaping (no training).

        Uses ``session.weights`` unless ``weights`` is given. Returns one row per feature
        (all features, or ``features``) with ``weight``, ``signal_before``, ``signal_after``
        (gradient-weighted mean Δ, raw units), their standardised versions (/sd) and ``change``.
        ``attrs`` carries the pair margins, ``n_dominated`` and the threshold.
        """
        from .shaping import preview

        delta = self._delta_matrix()
        ids = self.feature_ids
        w_map = (
            self.weights if weights is None else {self.feature_id(k): float(v) for k, v in weights.items()}
        )
        w = np.zeros(len(ids))
        index = self._ids_index
        for f, v in w_map.items():
            w[index[f]] = v
        if self._sd is None:
            from .shaping import delta_sd

            self._sd = delta_sd(delta)
        cols = (
            np.arange(len(ids))
            if features is None
            else np.array([index[self.feature_id(f)] for f in features], dtype=int)
        )
        pv = preview(delta, w, sd=self._sd, columns=None if features is None else cols)
        sd = pv.sd
        with np.errstate(divide="ignore", invalid="ignore"):
            before_z = np.where(sd > 0, pv.signal_before / sd, 0.0)
            after_z = np.where(sd > 0, pv.signal_after / sd, 0.0)
        out = pd.DataFrame(
            {
                "feature": [ids[j] for j in cols],
                "label": [self.labels.get(ids[j]) or self.auto_labels.get(ids[j], "") for j in cols],
                "weight": w[cols],
                "signal_before": pv.signal_before,
                "signal_after": pv.signal_after,
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
        )
        return out

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

    def dashboard(self, **kwargs: Any) -> Any:
        """Volcano, drill-down and sliders, linked through this session."""
        from .views.dashboard import Dashboard

        return Dashboard(self, **kwargs)

    def report(self, path: str | Path, **kwargs: Any) -> Path:
        """Write a standalone HTML report (opens offline)."""
        from .report import write_report

        return write_report(self, Path(path), **kwargs)

    # ------------------------------------------------------------------ training (prefaudit.training)
    def shaped_pairs(self, intervention: str = "margin", **kwargs: Any) -> Any:
        """The dataset trl trains on, with this session's shaping applied (a ``datasets.Dataset``)."""
        from .interventions import shaped_dataset

        return shaped_dataset(self, intervention=intervention, **kwargs)

    def train(self, config: Any = None, **kwargs: Any) -> Any:
        """Start a DPO run (trl) in the background with the current shaping; returns a ``DPORun``."""
        from .training import start_run

        run = start_run(self, config, **kwargs)
        self.runs.append(run)
        return run

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

    # ------------------------------------------------------------------ bookkeeping
    def _invalidate(self, results: bool = True) -> None:
        self._delta = None
        self._pooled_csc = None
        self._sd = None
        if results and self.results is not None:
            self.results = None
            self.results_version += 1

    def __repr__(self) -> str:
        sae = "concepts only" if not self.uses_sae else (self._sae.name if self._sae else "SAE (not loaded)")
        enc = "encoded" if self.encoded is not None else "not encoded"
        res = f"{len(self.results)} features tested" if self.results is not None else "not tested"
        return f"AuditSession({len(self.data)} pairs, {sae}, {enc}, {res}, {len(self.weights)} weights)"

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save data, pooled features, results, labels, notes and decisions to a directory."""
        from .persist import save_session

        return save_session(self, Path(path))

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> AuditSession:
        """Open a saved session; the model and SAE load lazily when first needed."""
        from .persist import load_session

        return load_session(cls, Path(path), **overrides)
