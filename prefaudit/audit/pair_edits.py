"""Pairs training leaves out or flips (``session.edits``), and what that does to the signal.

A part owned by :class:`~prefaudit.audit.core.AuditCore`; it is the only writer of the trait
``pair_edits`` (``pair_id -> "exclude" | "flip"``).

Training edits
--------------
``session.exclude_pairs(ids)`` (= ``session.edits.exclude``) leaves pairs out of every run (the
training plan lists them with the reason); ``session.flip_pairs(ids)`` trains them with chosen
and rejected swapped (their margin is read from the swapped sides, so a shaping weight sees them
as the run does). ``session.edits.restore(ids)`` undoes both for those pairs,
``session.edits.clear()`` for all. The audit itself (``test()``, the volcano, the drill-down)
still describes the data as it is: edits change what DPO is taught, and ``predict()`` says what
that is.

With edits, the predicted learning signal of feature f is ``Σᵢ gᵢ·sᵢ·Δᵢᶠ / Σᵢ gᵢ`` with sᵢ = −1
for a flipped pair (else 1), gᵢ = σ(mᵢ) computed from the pair's sides as trained, and gᵢ = 0 for
an excluded pair (:meth:`prefaudit.audit.shaping.Shaping.preview`).

Example
-------
>>> d = session.drivers("concept:length")                          # doctest: +SKIP
>>> top = d["pair_id"].head(5).tolist()                          # doctest: +SKIP
>>> session.edits.preview("concept:length", top)     # signal as is / without / flipped  # doctest: +SKIP
>>> session.exclude_pairs(top)                                      # doctest: +SKIP
>>> session.plan_training().table.query("status == 'excluded'")     # doctest: +SKIP
>>> session.edits.export("drivers.jsonl", top, feature="concept:length")   # doctest: +SKIP

Exports: :mod:`prefaudit.audit.exports` says where they may write.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConfigError
from ..shaping import gradient_weights
from .exports import export_root, export_target, write_export

if TYPE_CHECKING:
    from .core import AuditCore

#: The edits a pair can carry, and what each one does to training.
PAIR_EDITS = ("exclude", "flip")
EXCLUDED_REASON = "excluded by a person (session.exclude_pairs)"


class PairEdits:
    """Training edits on single pairs and what they do to a feature's signal (``session.edits``)."""

    def __init__(self, core: AuditCore) -> None:
        self.core = core

    # ------------------------------------------------------------------ intents
    def exclude(self, pair_ids: Iterable[Any]) -> None:
        """Leave these pairs (values of ``data.df["pair_id"]``) out of training; replaces a flip."""
        self._set(pair_ids, "exclude")

    def flip(self, pair_ids: Iterable[Any]) -> None:
        """Train these pairs with chosen and rejected swapped; replaces an exclusion."""
        self._set(pair_ids, "flip")

    def restore(self, pair_ids: Iterable[Any]) -> None:
        """Undo any edit of these pairs (pairs without one are accepted and stay as they are)."""
        drop = set(self.checked_ids(pair_ids))
        self.core.pair_edits = {k: v for k, v in self.core.pair_edits.items() if k not in drop}

    def clear(self) -> None:
        """Undo every pair edit."""
        self.core.pair_edits = {}

    # ------------------------------------------------------------------ queries
    def signs(self, edits: dict[Any, str] | None = None) -> np.ndarray:
        """Per pair, in session order: 1 (as labelled), −1 (flipped) or 0 (excluded).

        ``edits`` defaults to ``session.pair_edits``.
        """
        edits = self.core.pair_edits if edits is None else edits
        signs = np.ones(len(self.core.data))
        if edits:
            where = pd.Index(self.core.data.df["pair_id"]).get_indexer(list(edits))
            kinds = np.array(list(edits.values()), dtype=object)
            signs[where[kinds == "flip"]] = -1.0
            signs[where[kinds == "exclude"]] = 0.0
        return signs

    def table(self) -> pd.DataFrame:
        """One row per edited pair: ``position, pair_id, edit`` (session order)."""
        pid = self.core.data.df["pair_id"]
        edited = pid.isin(list(self.core.pair_edits)).to_numpy()
        positions = np.flatnonzero(edited)
        return pd.DataFrame(
            {
                "position": positions,
                "pair_id": pid.to_numpy()[positions],
                "edit": [self.core.pair_edits[p] for p in pid.to_numpy()[positions].tolist()],
            }
        )

    def reasons(self) -> dict[Any, str]:
        """``pair_id -> reason`` of the pairs a person excluded (the training plan's "why not trained")."""
        return {p: EXCLUDED_REASON for p, e in self.core.pair_edits.items() if e == "exclude"}

    def preview(
        self,
        feature: int | str,
        pair_ids: Iterable[Any],
        *,
        weights: dict[int | str, float] | None = None,
    ) -> dict[str, Any]:
        """What excluding or flipping ``pair_ids`` would do to ``feature``'s predicted learning signal.

        Returns ``feature``, ``n_pairs`` (how many ids), and the signal Σ g·s·Δ / Σ g (raw units,
        with ``_z`` = ÷ sd(Δ) over all pairs) three ways: ``signal`` with the current edits,
        ``signal_excluded`` with these pairs excluded too and ``signal_flipped`` with them flipped
        (other pairs keep their current edits), plus ``signal_unedited`` with no edit at all.
        Margins follow ``weights`` (default ``session.weights``); a flipped pair's margin changes
        sign with its sides. ``feature`` may be a ``group:`` id.
        """
        shaping = self.core.shaping
        fid, delta = shaping.delta_of(feature)
        ids = self.checked_ids(pair_ids)
        margins = shaping.unedited_margins(weights)
        sd = float(np.std(delta, ddof=1)) if delta.size > 1 else 0.0
        current = dict(self.core.pair_edits)
        cases = {
            "signal": current,
            "signal_excluded": {**current, **dict.fromkeys(ids, "exclude")},
            "signal_flipped": {**current, **dict.fromkeys(ids, "flip")},
            "signal_unedited": {},
        }
        out: dict[str, Any] = {"feature": fid, "n_pairs": len(ids)}
        for name, edits in cases.items():
            value = edited_signal(delta[:, None], margins, self.signs(edits))[0]
            out[name] = float(value)
            out[f"{name}_z"] = float(value / sd) if sd > 0 and np.isfinite(value) else 0.0
        return out

    def export(
        self,
        path: str | Path,
        pair_ids: Iterable[Any],
        *,
        feature: int | str | None = None,
        overwrite: bool = False,
        root: str | Path | None = None,
    ) -> Path:
        """Write these pairs as data: ``.jsonl`` (one JSON object a line) or ``.csv``.

        Columns: ``pair_id``, ``position``, ``prompt`` (a chat prompt as its JSON list of
        messages in a CSV), ``chosen``, ``rejected``, ``edit`` (the pair's current edit or "");
        with ``feature`` also its ``delta``. Rows in the order of ``pair_ids``.

        Parameters
        ----------
        overwrite : bool
            Replace an existing file (atomically); by default an existing file is an error.
        root : str or Path, optional
            Write only inside this folder (a relative ``path`` is taken inside it). Default:
            ``$PREFAUDIT_EXPORT_DIR`` (set by ``prefaudit app``), else anywhere.

        Returns
        -------
        Path
            The file written (links resolved).

        Raises
        ------
        ConfigError
            Not a ``.jsonl``/``.csv`` name, a path outside ``root`` (``..``, absolute, a link out),
            or the audited dataset's own file.
        FileExistsError
            The file exists and ``overwrite`` is False (the message names it).
        """
        core = self.core
        target = export_target(path, export_root(root), protected=[core.data.report.source])
        ids = self.checked_ids(pair_ids)
        df = core.data.df
        positions = pd.Index(df["pair_id"]).get_indexer(ids)
        out = pd.DataFrame(
            {
                "pair_id": df["pair_id"].to_numpy()[positions],
                "position": positions,
                "prompt": df["prompt"].to_numpy()[positions],
                "chosen": df["chosen"].to_numpy()[positions],
                "rejected": df["rejected"].to_numpy()[positions],
                "edit": [core.pair_edits.get(p, "") for p in ids],
            }
        )
        if feature is not None:
            out["delta"] = core.shaping.delta_of(feature)[1][positions]
        if target.suffix.lower() == ".csv":
            out["prompt"] = [
                p if isinstance(p, str) else json.dumps(p, ensure_ascii=False) for p in out["prompt"]
            ]
            text = out.to_csv(index=False)
        else:
            text = out.to_json(orient="records", lines=True, force_ascii=False)
        write_export(target, text, overwrite=overwrite)
        return target

    # ------------------------------------------------------------------ helpers
    def _set(self, pair_ids: Iterable[Any], edit: str) -> None:
        ids = self.checked_ids(pair_ids)
        self.core.pair_edits = {**self.core.pair_edits, **dict.fromkeys(ids, edit)}

    def checked_ids(self, pair_ids: Iterable[Any]) -> list[Any]:
        """The ids as ``data.df["pair_id"]`` holds them, in order, repeats removed; unknown ones: an error."""
        if isinstance(pair_ids, (str, bytes)) or not isinstance(pair_ids, Iterable):
            raise ConfigError(
                f"Pass a list of pair ids (values of session.data.df['pair_id']), not {pair_ids!r}."
            )
        wanted = list(dict.fromkeys(_plain(p) for p in pair_ids))
        known = self.core.data.df["pair_id"]
        where = pd.Index(known).get_indexer(wanted) if wanted else np.empty(0, dtype=int)
        missing = [p for p, k in zip(wanted, where, strict=True) if k < 0]
        if missing:
            raise ConfigError(
                f"{len(missing)} unknown pair_id(s), e.g. {missing[:5]}: pass values of session.data.df['pair_id']."
            )
        return [_plain(p) for p in known.to_numpy()[where]]


def flip_rows(shaped: Any, edits: dict[Any, str]) -> Any:
    """A shaped training set (``ShapedPairs``) with the person-flipped pairs' chosen and rejected swapped.

    The training plan calls this after the intervention built its rows; ``shaped.flipped`` becomes
    the pairs trained swapped: flipped by the person or by the intervention, not by both (two
    swaps cancel). The dataset's record (``info.description``) says the same.
    """
    flip = {p for p, e in edits.items() if e == "flip"}
    ids = [_plain(p) for p in np.asarray(shaped.pair_ids).tolist()]
    rows = [k for k, p in enumerate(ids) if p in flip]
    if not rows:
        return shaped
    ds = shaped.dataset
    columns = ds.to_dict()  # plain lists (a datasets Column is read-only)
    for k in rows:
        columns["chosen"][k], columns["rejected"][k] = columns["rejected"][k], columns["chosen"][k]
    dataset = type(ds).from_dict(columns, features=ds.features, info=ds.info.copy())
    by_intervention = {_plain(p) for p in shaped.flipped}
    swapped = by_intervention.symmetric_difference(ids[k] for k in rows)
    out = dataclasses.replace(shaped, dataset=dataset, flipped=[p for p in ids if p in swapped])
    try:  # keep the record that travels with the dataset in step
        record = json.loads(dataset.info.description or "{}")
        record.setdefault("prefaudit", {})["flipped"] = out.flipped
        record["prefaudit"]["flipped_by_person"] = [ids[k] for k in rows]
        dataset.info.description = json.dumps(record)
    except (TypeError, ValueError):  # a description that is not prefaudit's JSON: leave it
        pass
    return out


def edited_signal(delta: Any, margins: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Σᵢ gᵢ·sᵢ·Δᵢ / Σᵢ gᵢ per column, gᵢ = σ(sᵢ·mᵢ)·[sᵢ ≠ 0] (``margins`` as labelled; NaN with no pair left)."""
    signs = np.asarray(signs, dtype=np.float64)
    g = gradient_weights(np.where(signs < 0, -margins, margins)) * (signs != 0)
    total = g.sum()
    n_cols = delta.shape[1]
    if total == 0:
        return np.full(n_cols, np.nan)
    v = g * signs
    if sp.issparse(delta):
        return np.asarray(delta.T @ v).ravel() / total
    return (v @ np.asarray(delta, dtype=np.float64)) / total


def _columns(delta: Any, cols: np.ndarray) -> Any:
    return sp.csc_matrix(delta)[:, cols] if sp.issparse(delta) else np.asarray(delta)[:, cols]


def _plain(x: Any) -> Any:
    """numpy scalars as Python ones, so ids compare and serialise the same."""
    return x.item() if isinstance(x, np.generic) else x
