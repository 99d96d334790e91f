"""Pair-level state a person sets: pairs training leaves out or flips, and the topic the drill-down shows.

Mixed into :class:`~prefaudit.audit.core.AuditCore` (through ``DriversMixin``), which provides
``data``, ``matrix``, ``feature_ids``, ``checked_weights``, ``weights`` and the traits
``pair_edits`` (``pair_id -> "exclude" | "flip"``) and ``topic_filter`` (a topic number or
``None``). The intents below are the only writers of those traits.

Training edits
--------------
``exclude_pairs(ids)`` leaves pairs out of every run (the training plan lists them with the
reason); ``flip_pairs(ids)`` trains them with chosen and rejected swapped (their margin is read
from the swapped sides, so a shaping weight sees them as the run does). ``restore_pairs(ids)``
undoes both for those pairs, ``clear_pair_edits()`` for all. The audit itself (``test()``, the
volcano, the drill-down) still describes the data as it is: edits change what DPO is taught,
and ``predict()`` says what that is.

With edits, the predicted learning signal of feature f is ``Σᵢ gᵢ·sᵢ·Δᵢᶠ / Σᵢ gᵢ`` with sᵢ = −1
for a flipped pair (else 1), gᵢ = σ(mᵢ) computed from the pair's sides as trained, and gᵢ = 0 for
an excluded pair (:meth:`PairEditsMixin.pair_edited_preview`).

Example
-------
>>> d = session.drivers("concept:length")                          # doctest: +SKIP
>>> top = d["pair_id"].head(5).tolist()                          # doctest: +SKIP
>>> session.pair_edit_preview("concept:length", top)                # signal as is / without / flipped  # doctest: +SKIP
>>> session.exclude_pairs(top)                                      # doctest: +SKIP
>>> session.plan_training().table.query("status == 'excluded'")     # doctest: +SKIP
>>> session.export_pairs("drivers.jsonl", top, feature="concept:length")   # doctest: +SKIP

Exports never replace a file unless asked (``overwrite=True``), never the audited dataset's own
file, and, under ``prefaudit app`` (which sets ``PREFAUDIT_EXPORT_DIR``) or with ``root=``, write
only inside that folder: a page visitor types the path, and it must not reach the rest of the disk.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConfigError
from ..shaping import dominated, gradient_weights, preview
from .topics import _DEFAULT_TOPICS

#: The edits a pair can carry, and what each one does to training.
PAIR_EDITS = ("exclude", "flip")
EXCLUDED_REASON = "excluded by a person (session.exclude_pairs)"
EXPORT_FORMATS = (".jsonl", ".csv")
#: Set by ``prefaudit app`` in its kernels' environment: the one folder exports may write into.
EXPORT_DIR_ENV = "PREFAUDIT_EXPORT_DIR"


class PairEditsMixin:
    """Training edits on single pairs, their effect on the predicted signal, and the topic filter."""

    data: Any
    pair_edits: dict[Any, str]
    topic_filter: int | None

    # ------------------------------------------------------------------ intents
    def exclude_pairs(self, pair_ids: Iterable[Any]) -> None:
        """Leave these pairs (values of ``data.df["pair_id"]``) out of training; replaces a flip."""
        self._set_edits(pair_ids, "exclude")

    def flip_pairs(self, pair_ids: Iterable[Any]) -> None:
        """Train these pairs with chosen and rejected swapped; replaces an exclusion."""
        self._set_edits(pair_ids, "flip")

    def restore_pairs(self, pair_ids: Iterable[Any]) -> None:
        """Undo any edit of these pairs (pairs without one are accepted and stay as they are)."""
        drop = set(self._checked_pair_ids(pair_ids))
        self.pair_edits = {k: v for k, v in self.pair_edits.items() if k not in drop}

    def clear_pair_edits(self) -> None:
        """Undo every pair edit."""
        self.pair_edits = {}

    def set_topic_filter(self, topic: int | None) -> None:
        """Show only this topic's pairs in the drill-down (``None``: every pair).

        ``topic`` is a topic number of the current topics (``session.topics()`` /
        ``session.topic_labels()``). :meth:`filtered_positions` is what queries read.
        """
        if topic is None:
            self.topic_filter = None
            return
        if isinstance(topic, bool) or not isinstance(topic, (int, np.integer)):
            raise ConfigError(f"topic must be a topic number or None, not {topic!r}.")
        n_topics = len(self.topic_labels())
        if not 0 <= int(topic) < n_topics:
            raise ConfigError(f"Unknown topic {topic!r}: the current topics are 0..{n_topics - 1}.")
        self.topic_filter = int(topic)

    # ------------------------------------------------------------------ queries
    def filtered_positions(self) -> np.ndarray:
        """Rows of ``data.df`` the drill-down shows: the topic filter's pairs, else every pair."""
        if self.topic_filter is None:
            return np.arange(len(self.data))
        # The current topics (cached; topics() itself would also reset which settings are current).
        topics = self._prompt_topics(self._topics_current or _DEFAULT_TOPICS)
        return np.flatnonzero(topics.assignment == self.topic_filter)

    def pair_edit_signs(self, edits: dict[Any, str] | None = None) -> np.ndarray:
        """Per pair, in session order: 1 (as labelled), −1 (flipped) or 0 (excluded).

        ``edits`` defaults to ``session.pair_edits``.
        """
        edits = self.pair_edits if edits is None else edits
        signs = np.ones(len(self.data))
        if edits:
            where = pd.Index(self.data.df["pair_id"]).get_indexer(list(edits))
            kinds = np.array(list(edits.values()), dtype=object)
            signs[where[kinds == "flip"]] = -1.0
            signs[where[kinds == "exclude"]] = 0.0
        return signs

    def pair_edits_table(self) -> pd.DataFrame:
        """One row per edited pair: ``position, pair_id, edit`` (session order)."""
        pid = self.data.df["pair_id"]
        edited = pid.isin(list(self.pair_edits)).to_numpy()
        positions = np.flatnonzero(edited)
        return pd.DataFrame(
            {
                "position": positions,
                "pair_id": pid.to_numpy()[positions],
                "edit": [self.pair_edits[p] for p in pid.to_numpy()[positions].tolist()],
            }
        )

    def pair_edit_reasons(self) -> dict[Any, str]:
        """``pair_id -> reason`` of the pairs a person excluded (the training plan's "why not trained")."""
        return {p: EXCLUDED_REASON for p, e in self.pair_edits.items() if e == "exclude"}

    def pair_edit_preview(
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
        sign with its sides. ``feature`` may be a ``group:`` id when the session has groups.
        """
        fid, delta = self._signal_delta(feature)
        ids = self._checked_pair_ids(pair_ids)
        margins = self._unedited_margins(weights)
        sd = float(np.std(delta, ddof=1)) if delta.size > 1 else 0.0
        current = dict(self.pair_edits)
        cases = {
            "signal": current,
            "signal_excluded": {**current, **dict.fromkeys(ids, "exclude")},
            "signal_flipped": {**current, **dict.fromkeys(ids, "flip")},
            "signal_unedited": {},
        }
        out: dict[str, Any] = {"feature": fid, "n_pairs": len(ids)}
        for name, edits in cases.items():
            value = edited_signal(delta[:, None], margins, self.pair_edit_signs(edits))[0]
            out[name] = float(value)
            out[f"{name}_z"] = float(value / sd) if sd > 0 and np.isfinite(value) else 0.0
        return out

    def export_pairs(
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
        target = export_target(path, export_root(root), protected=[self.data.report.source])
        ids = self._checked_pair_ids(pair_ids)
        df = self.data.df
        positions = pd.Index(df["pair_id"]).get_indexer(ids)
        out = pd.DataFrame(
            {
                "pair_id": df["pair_id"].to_numpy()[positions],
                "position": positions,
                "prompt": df["prompt"].to_numpy()[positions],
                "chosen": df["chosen"].to_numpy()[positions],
                "rejected": df["rejected"].to_numpy()[positions],
                "edit": [self.pair_edits.get(p, "") for p in ids],
            }
        )
        if feature is not None:
            out["delta"] = self._signal_delta(feature)[1][positions]
        if target.suffix.lower() == ".csv":
            out["prompt"] = [
                p if isinstance(p, str) else json.dumps(p, ensure_ascii=False) for p in out["prompt"]
            ]
            text = out.to_csv(index=False)
        else:
            text = out.to_json(orient="records", lines=True, force_ascii=False)
        write_export(target, text, overwrite=overwrite)
        return target

    def pair_edited_preview(
        self,
        matrix: Any,
        w: np.ndarray,
        columns: np.ndarray | None = None,
        *,
        own_pairs: bool = True,
        edits: dict[Any, str] | None = None,
    ) -> Any:
        """:func:`prefaudit.shaping.preview` of ``matrix`` (a ``FeatureMatrix``) as training sees the pairs.

        ``predict`` calls this. ``edits`` default to ``session.pair_edits``; with ``{}``, no edit,
        or ``own_pairs=False`` (the rows are not the session's pairs in order, e.g. a training
        window's) it is the plain preview. A flipped pair's margin changes sign (m is linear in
        Δ and the cap is symmetric); an excluded pair gets gradient weight 0 and leaves every sum
        and count.
        """
        delta = matrix.delta
        pv = preview(delta, w, sd=matrix.sd, scale=matrix.margin_scale, columns=columns)
        edits = self.pair_edits if edits is None else edits
        if not edits or not own_pairs:
            return pv
        signs = self.pair_edit_signs(edits)
        kept = signs != 0
        margins = np.where(signs < 0, -pv.margins, pv.margins)
        cols = delta if columns is None else _columns(delta, columns)
        before = edited_signal(cols, np.zeros_like(margins), signs)
        return dataclasses.replace(
            pv,
            margins=margins,
            gradient_weight=gradient_weights(margins) * kept,
            signal_before=before,
            signal_after=edited_signal(cols, pv.margins, signs),
            n_dominated=int((dominated(margins, pv.threshold) & kept).sum()),
        )

    # ------------------------------------------------------------------ helpers
    def _set_edits(self, pair_ids: Iterable[Any], edit: str) -> None:
        ids = self._checked_pair_ids(pair_ids)
        self.pair_edits = {**self.pair_edits, **dict.fromkeys(ids, edit)}

    def _checked_pair_ids(self, pair_ids: Iterable[Any]) -> list[Any]:
        """The ids as ``data.df["pair_id"]`` holds them, in order, repeats removed; unknown ones: an error."""
        if isinstance(pair_ids, (str, bytes)) or not isinstance(pair_ids, Iterable):
            raise ConfigError(
                f"Pass a list of pair ids (values of session.data.df['pair_id']), not {pair_ids!r}."
            )
        wanted = list(dict.fromkeys(_plain(p) for p in pair_ids))
        known = self.data.df["pair_id"]
        where = pd.Index(known).get_indexer(wanted) if wanted else np.empty(0, dtype=int)
        missing = [p for p, k in zip(wanted, where, strict=True) if k < 0]
        if missing:
            raise ConfigError(
                f"{len(missing)} unknown pair_id(s), e.g. {missing[:5]}: pass values of session.data.df['pair_id']."
            )
        return [_plain(p) for p in known.to_numpy()[where]]

    def _unedited_margins(self, weights: dict[int | str, float] | None) -> np.ndarray:
        """mᵢ of every pair as labelled, under ``weights`` (default ``session.weights``)."""
        # predict() turns weights into margins as shaping and training do (with the current
        # edits, under which a flipped pair's margin has the opposite sign; an excluded one keeps its own).
        m = np.asarray(self.predict(weights, features=[]).attrs["margins"], dtype=np.float64)
        return np.where(self.pair_edit_signs() < 0, -m, m)


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


# ---------------------------------------------------------------------- where exports may go
def export_root(root: str | Path | None = None) -> Path | None:
    """The folder exports are confined to: ``root``, else ``$PREFAUDIT_EXPORT_DIR``, else None (anywhere).

    In a notebook the person who types the path runs the kernel and can write any file anyway,
    so nothing is confined there; ``prefaudit app`` sets the variable for its page visitors.
    """
    if root is None:
        root = os.environ.get(EXPORT_DIR_ENV) or None
    return None if root is None else Path(root).expanduser().resolve()


def export_target(path: str | Path, root: Path | None, protected: Iterable[Any] = ()) -> Path:
    """The file an export of ``path`` writes (links resolved), or a ``ConfigError`` saying why not.

    A relative ``path`` is taken inside ``root`` when there is one. Refused: a name that is not
    ``.jsonl``/``.csv`` (before or after links), anything that resolves outside ``root``, a
    folder, and any of the ``protected`` files (the audited dataset).
    """
    given = Path(path).expanduser()
    if given.suffix.lower() not in EXPORT_FORMATS:
        raise ConfigError(f"export_pairs: {given.name!r}; name a {' or '.join(EXPORT_FORMATS)} file.")
    target = ((root / given) if root is not None else given).resolve()
    if root is not None and not target.is_relative_to(root):
        raise ConfigError(
            f"export_pairs: {str(path)!r} leads to {target}, outside the export folder {root}; "
            f"name a file in that folder (e.g. 'drivers{given.suffix}')."
        )
    if target.suffix.lower() not in EXPORT_FORMATS:
        raise ConfigError(
            f"export_pairs: {str(path)!r} links to {target}, not a {' or '.join(EXPORT_FORMATS)} file."
        )
    if target.is_dir():
        raise ConfigError(f"export_pairs: {target} is a folder; name a file.")
    for p in protected:
        if isinstance(p, (str, os.PathLike)) and str(p) and _same_file(target, Path(p).expanduser()):
            raise ConfigError(f"export_pairs: {target} is the audited dataset's own file; name another file.")
    return target


def write_export(target: Path, text: str, *, overwrite: bool) -> None:
    """Write ``text`` (UTF-8) to ``target``: a new file, or with ``overwrite`` an atomic replacement.

    Without ``overwrite`` the file is created exclusively (``O_EXCL``), so a file (or link) that
    appears meanwhile is not clobbered either.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        try:
            f = open(target, "x", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
        except FileExistsError:
            raise FileExistsError(
                errno.EEXIST, "export_pairs: the file exists; pass overwrite=True to replace it", str(target)
            ) from None
        try:
            with f:
                f.write(text)
        except BaseException as err:
            target.unlink(missing_ok=True)  # a full disk leaves no half-written export behind
            raise _write_error(err, target) from err
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if target.exists():
            shutil.copymode(target, tmp)  # the replaced file keeps its permissions
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)  # the old file stays as it was
        raise _write_error(err, target) from err


def _write_error(err: BaseException, target: Path) -> BaseException:
    """An ``OSError`` naming ``target`` (the OS names no file for a failed write); others as they are."""
    if not isinstance(err, OSError):
        return err
    return type(err)(err.errno, f"export_pairs: could not write the file ({err.strerror})", str(target))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.is_file() and (a.resolve() == b.resolve() or (a.exists() and os.path.samefile(a, b)))
    except OSError:
        return False
