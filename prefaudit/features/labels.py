"""Labels of features and clusters: what they fire on, read from their contexts (no LLM needed).

Two kinds of label live here.

* :func:`auto_labels` — the old, cheap label: the most frequent *peak tokens* of a feature's
  strongest responses, from what the encode stored (``top_token``), e.g. ``"sorry · apolog"``.
  Fast, but a token that is everywhere (``.``, ``!``, ``?``) labels nothing: on the demo nine of the
  ten strongest features were labelled by punctuation.
* :func:`concept_contexts` — labels from **distinctive contexts**: for a unit (one feature, or a
  cluster of them) the ``n_top`` responses where it is strongest, the token where it peaks in each
  with ``window`` tokens either side (a :class:`Context`), and the n-grams of those contexts that
  are over-represented against **background contexts**: windows of the same width cut from a
  seeded random sample of all responses. What is everywhere scores about zero.

How distinctive is measured
---------------------------
Each context is a set of n-grams (1 to ``ngram`` = 5 consecutive tokens, rendered as text, compared
lower-cased; an n-gram counts once per context). For n-gram w held by y₁ of the N₁ top contexts
and y₀ of the N₀ background contexts, the **log odds ratio** of holding it, with the
Haldane–Anscombe ½ added to each cell, and its Woolf standard error::

    δ = ln[(y₁ + ½) / (N₁ − y₁ + ½)] − ln[(y₀ + ½) / (N₀ − y₀ + ½)]
    se = sqrt(Σ 1 / (cell + ½))          (without the ½: scipy's ``odds_ratio(kind="sample")``)

N-grams are ranked by the **lower 95% bound** δ − 1.96·se: "at least this many times the odds
of a random context", which puts an n-gram in all 20 top contexts above one in 12 (a ranking by
z = δ/se would not: the empty cell inflates se) and one seen in 2 contexts below both. A token
that is everywhere has δ ≈ 0 however often it is a peak. Why not TF-IDF: it has no notion of
evidence (one context is not), and why not the informative-prior log-odds of Monroe et al.
(2008): with 20 top contexts against thousands of background ones the pooled prior swamps the
small set (a phrase in all 20 top contexts and in 1% of the background got δ 0.46, z 3.1, on
the synthetic corpus of ``tests/test_labels_contexts.py``: tried once, then replaced). The **label** joins the ``n_words`` n-grams of largest bound
among those in at least 2 top contexts whose bound is above 0 (z ≥ 1.96; fixed before any label
was read), skipping one that shares a word (or a punctuation mark) with an n-gram already
taken, so one phrase is not repeated as its sub-phrases; n-grams go up to 5 tokens so that a
phrase of a few words can come out whole (with 3, the synthetic "what a great question!" came
out as "great question! · question · a"). If none passes, the label is the strongest context itself and
:attr:`ConceptContexts.label_kind` says so. Labels never enter a statistic.

Where the token activations come from: a ``read(rows, features)`` callable (the session passes
one that runs the model and the SAE) that returns, for each response row, its token strings and
an array ``(n_tokens, len(features))``; with ``features=[]`` it only tokenises (the background).
Rows are the stacked responses: chosen 0…n−1, then rejected n…2n−1.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import scipy.sparse as sp

from prefaudit.errors import ConfigError

from .encoded import EncodedFeatures

N_TOP = 20
WINDOW = 3
NGRAM = 5
N_WORDS = 3
Z_95 = 1.959963984540054
N_BACKGROUND = 400
N_CONTRAST = 5
READ_CHUNK = 32
_WORD = re.compile(r"\w+|[^\w\s]")  # the words of an n-gram and its punctuation marks


def top_token_ids(enc: EncodedFeatures, *, n_top: int = 30) -> dict[int, list[tuple[int, float]]]:
    """For each active feature, ``[(token_id, value), ...]`` of its ``n_top`` strongest responses."""
    feats, vals, toks = [], [], []
    for side in (enc.chosen, enc.rejected):
        coo = side.values.tocoo()
        feats.append(coo.col)
        vals.append(coo.data)
        # tocoo keeps CSR storage order, so top_token stays aligned with the data.
        toks.append(side.top_token)
    f = np.concatenate(feats)
    v = np.concatenate(vals)
    t = np.concatenate(toks)
    order = np.lexsort((-v, f))
    f, v, t = f[order], v[order], t[order]
    starts = np.flatnonzero(np.r_[True, f[1:] != f[:-1]])
    ends = np.r_[starts[1:], len(f)]
    out: dict[int, list[tuple[int, float]]] = {}
    for s, e in zip(starts, ends, strict=True):
        e = min(e, s + n_top)
        out[int(f[s])] = list(zip(t[s:e].tolist(), v[s:e].tolist(), strict=True))
    return out


def auto_labels(
    enc: EncodedFeatures,
    decode: Callable[[Sequence[int]], list[str]],
    *,
    n_top: int = 30,
    n_words: int = 3,
) -> dict[int, str]:
    """Label every active feature with its most frequent peak tokens, most frequent first."""
    tops = top_token_ids(enc, n_top=n_top)
    vocab = sorted({tok for pairs in tops.values() for tok, _ in pairs})
    text = dict(zip(vocab, decode(vocab), strict=True))
    labels = {}
    for feat, pairs in tops.items():
        counts = Counter(_clean(text[tok]) for tok, _ in pairs)
        counts.pop("", None)
        words = [w for w, _ in counts.most_common(n_words)]
        labels[feat] = " · ".join(words) if words else "(whitespace)"
    return labels


def _clean(token: str) -> str:
    s = token.strip()
    if not s:
        return "⏎" if "\n" in token else ""
    return s


# ---------------------------------------------------------------------- distinctive contexts
class TokenReader(Protocol):
    """``read(rows, features) -> [(tokens, activations), ...]``, one item per row, in order.

    ``tokens``: the response's token strings (decoded, spaces kept); ``activations``: float array
    ``(len(tokens), len(features))``, column j for ``features[j]``. ``features=[]``: tokens only.
    """

    def __call__(
        self, rows: Sequence[int], features: Sequence[int]
    ) -> Sequence[tuple[Sequence[str], np.ndarray]]: ...


def show(text: str) -> str:
    """Dataset text on one line: newlines as ``⏎``, runs of whitespace as one space."""
    return " ".join(text.replace("\n", " ⏎ ").split())


@dataclass(frozen=True)
class Context:
    """A window of tokens around where a unit peaks in one response (or a background window).

    Attributes
    ----------
    row : int
        The response (stacked rows: chosen 0…n−1, rejected n…2n−1).
    position : int
        Token index of the peak in the response (of the window's centre for background).
    tokens : tuple of str
        The window's tokens, spaces kept.
    peak : int
        Index of the peak within ``tokens``.
    value : float
        Activation at the peak (for a cluster, the weighted sum of its members); NaN for background.
    """

    row: int
    position: int
    tokens: tuple[str, ...]
    peak: int
    value: float

    def text(self, mark: tuple[str, str] = ("[", "]")) -> str:
        """The window as one line of plain text, the peak token between ``mark`` (``("", "")``: none)."""
        tok = self.tokens[self.peak] if self.tokens else ""
        core = tok.strip()
        lead, tail = tok[: len(tok) - len(tok.lstrip())], tok[len(tok.rstrip()) :]
        left, right = "".join(self.tokens[: self.peak]), "".join(self.tokens[self.peak + 1 :])
        middle = f"{mark[0]}{core}{mark[1]}" if core else lead.replace("\n", "⏎")
        return show(f"{left}{lead}{middle}{tail}{right}")


class Ngram(NamedTuple):
    """A distinctive n-gram: its text, the top and background contexts holding it, δ and se of its log odds ratio."""

    text: str
    n_top: int
    n_background: int
    log_odds: float
    se: float

    @property
    def low(self) -> float:
        """Lower 95% bound of the log odds ratio, what n-grams are ranked by."""
        return self.log_odds - Z_95 * self.se


@dataclass(frozen=True)
class ConceptContexts:
    """What a unit (a feature or a cluster) is read from: the input of every explainer.

    Attributes
    ----------
    unit : str
        Its id, ``sae:12`` or ``cluster:3``.
    features : tuple of int
        Its SAE features (a cluster's members, in the order given).
    top : tuple of Context
        One context per top response where the unit's tokens were read, strongest first.
    contrast : tuple of Context
        Background windows from random responses, for explainers that contrast.
    distinctive : tuple of Ngram
        Every n-gram in ≥ 2 top contexts with log odds ratio > 0, largest lower bound first.
    label : str
        The built-in label (module docstring).
    label_kind : str
        ``"distinctive"`` (n-grams whose lower bound is > 0), ``"strongest context"`` (none passed: the
        strongest context's text) or ``"no context"`` (no top response had a positive activation).
    n_unread : int
        Top responses in which the read activations of its features were all ≤ 0 (tokenised
        differently than at encode time, or a stale reader): no context, counted here.
    """

    unit: str
    features: tuple[int, ...]
    top: tuple[Context, ...]
    contrast: tuple[Context, ...]
    distinctive: tuple[Ngram, ...]
    label: str
    label_kind: str
    n_unread: int = 0


def top_rows(scores: np.ndarray, n_top: int = N_TOP) -> np.ndarray:
    """The ``n_top`` rows of largest positive score, strongest first (ties: lower row first)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.flatnonzero(s > 0)
    return pos[np.lexsort((pos, -s[pos]))][:n_top]


def peak_contexts(
    tokens: Sequence[str], activation: np.ndarray, *, row: int, window: int = WINDOW, n_peaks: int = 1
) -> list[Context]:
    """Up to ``n_peaks`` contexts at the largest positive ``activation`` (one per token), windows apart.

    After a peak is taken, the tokens within ``window`` of it are not peaks again, so two contexts
    of one response overlap by at most ``window`` tokens.
    """
    act = np.asarray(activation, dtype=np.float64).ravel()
    if len(act) != len(tokens):
        raise ConfigError(f"row {row}: {len(tokens)} tokens but {len(act)} activations")
    act = act.copy()
    out = []
    for _ in range(n_peaks):
        if not len(act) or not np.nanmax(act) > 0:
            break
        p = int(np.nanargmax(act))  # first of equal maxima
        lo, hi = max(0, p - window), min(len(tokens), p + window + 1)
        out.append(Context(int(row), p, tuple(tokens[lo:hi]), p - lo, float(act[p])))
        act[lo:hi] = -np.inf
    return out


def window_contexts(tokens: Sequence[str], *, row: int, window: int = WINDOW) -> list[Context]:
    """A response cut into disjoint windows of ``2·window + 1`` tokens (the last may be shorter)."""
    width = 2 * window + 1
    out = []
    for lo in range(0, len(tokens), width):
        part = tuple(tokens[lo : lo + width])
        out.append(Context(int(row), lo + len(part) // 2, part, len(part) // 2, math.nan))
    return out


def context_ngrams(tokens: Sequence[str], ngram: int = NGRAM) -> dict[str, str]:
    """The n-grams (1…``ngram`` tokens) of one context: lower-cased key → text as first seen."""
    out: dict[str, str] = {}
    for size in range(ngram, 0, -1):
        for s in range(len(tokens) - size + 1):
            text = show("".join(tokens[s : s + size]))
            if text:
                out.setdefault(text.lower(), text)
    return out


def count_ngrams(contexts: Sequence[Context], ngram: int = NGRAM) -> tuple[Counter[str], dict[str, str]]:
    """How many of ``contexts`` hold each n-gram, and its text as first seen (in ``contexts`` order)."""
    counts: Counter[str] = Counter()
    surface: dict[str, str] = {}
    for c in contexts:
        grams = context_ngrams(c.tokens, ngram)
        counts.update(grams.keys())
        for k, v in grams.items():
            surface.setdefault(k, v)
    return counts, surface


def log_odds_ratio(
    y1: np.ndarray, n1: float, y0: np.ndarray, n0: float, *, correction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """δ and se of the log odds ratio (module docstring), element-wise: y₁ of n₁ against y₀ of n₀."""
    y1, y0 = np.asarray(y1, dtype=np.float64), np.asarray(y0, dtype=np.float64)
    cells = [y1 + correction, n1 - y1 + correction, y0 + correction, n0 - y0 + correction]
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.log(cells[0] / cells[1]) - np.log(cells[2] / cells[3])
        se = np.sqrt(sum(1.0 / c for c in cells))
    return delta, se


def distinctive_ngrams(
    top: Sequence[Context],
    background: tuple[Counter[str], int],
    *,
    ngram: int = NGRAM,
) -> list[Ngram]:
    """N-grams in ≥ 2 of the ``top`` contexts with log odds ratio > 0 against ``background``.

    ``background``: ``(counts, n_contexts)`` — :func:`count_ngrams` of the background contexts and
    how many there were. Largest lower bound first; ties: longer, then first seen in a stronger
    context.
    """
    counts, surface = count_ngrams(top, ngram)
    bg, n_bg = background
    keys = [k for k, c in counts.items() if c >= 2]
    if not keys:
        return []
    y1 = np.array([counts[k] for k in keys], dtype=np.float64)
    y0 = np.array([bg.get(k, 0) for k in keys], dtype=np.float64)
    delta, se = log_odds_ratio(y1, float(len(top)), y0, float(n_bg))
    low = delta - Z_95 * se
    first = {k: j for j, k in enumerate(surface)}
    order = sorted(range(len(keys)), key=lambda j: (-low[j], -len(keys[j]), first[keys[j]]))
    return [
        Ngram(surface[keys[j]], int(y1[j]), int(y0[j]), float(delta[j]), float(se[j]))
        for j in order
        if delta[j] > 0
    ]


def label_from(ngrams: Sequence[Ngram], top: Sequence[Context], *, n_words: int = N_WORDS) -> tuple[str, str]:
    """``(label, label_kind)`` from the ranked ``ngrams`` (rule in the module docstring)."""
    taken: list[str] = []
    words: set[str] = set()
    for g in ngrams:
        if len(taken) == n_words or not g.low > 0:
            break
        mine = set(_WORD.findall(g.text.lower()))
        if not mine & words:
            taken.append(g.text)
            words |= mine
    if taken:
        return " · ".join(taken), "distinctive"
    if top:
        return top[0].text(("", "")), "strongest context"
    return "(no context)", "no context"


def _rows_needed(tops: list[np.ndarray]) -> dict[int, list[int]]:
    """Row → the units that have it among their top rows, for every such row (sorted)."""
    need: dict[int, list[int]] = {}
    for j, rows in enumerate(tops):
        for r in rows.tolist():
            need.setdefault(r, []).append(j)
    return {r: need[r] for r in sorted(need)}


def _read_checked(
    read: TokenReader, rows: list[int], feats: list[int]
) -> list[tuple[tuple[str, ...], np.ndarray]]:
    out = list(read(rows, feats))
    if len(out) != len(rows):
        raise ConfigError(f"read() returned {len(out)} items for {len(rows)} rows")
    checked = []
    for r, (tokens, acts) in zip(rows, out, strict=True):
        a = np.asarray(acts, dtype=np.float64) if len(feats) else None
        if a is not None and a.shape != (len(tokens), len(feats)):
            raise ConfigError(
                f"read() row {r}: activations of shape {np.shape(acts)}, expected ({len(tokens)}, {len(feats)})"
            )
        checked.append((tuple(str(t) for t in tokens), a))
    return checked


def concept_contexts(
    scores: Any,
    units: Sequence[Sequence[int]],
    read: TokenReader,
    *,
    unit_ids: Sequence[str] | None = None,
    weights: np.ndarray | None = None,
    n_top: int = N_TOP,
    window: int = WINDOW,
    n_peaks: int = 1,
    ngram: int = NGRAM,
    n_words: int = N_WORDS,
    n_background: int = N_BACKGROUND,
    n_contrast: int = N_CONTRAST,
    seed: int = 0,
    chunk: int = READ_CHUNK,
) -> list[ConceptContexts]:
    """Top contexts, distinctive n-grams and the built-in label of every unit.

    Parameters
    ----------
    scores : array or sparse matrix, shape (n_responses, n_units)
        Column j ranks the responses for unit j: a feature's pooled values over the stacked
        responses, or a cluster's score (:func:`prefaudit.features.cluster_stats.score_matrices`,
        chosen rows stacked over rejected rows).
    units : sequence of sequences of int
        The SAE features of each unit (``[f]`` for a feature, the members for a cluster).
    read : TokenReader
        Token strings and per-token activations of rows (see :class:`TokenReader`).
    unit_ids : sequence of str, optional
        Ids of the units (default ``unit:0 …``).
    weights : array, shape (n_features,), optional
        Per-feature weight of a member's activation when a cluster's per-token activation is
        summed (the session passes 1/sd, as the cluster score does); default 1.
    n_top, window, n_peaks, ngram, n_words
        Top responses per unit, tokens either side of a peak, contexts per response, longest
        n-gram, n-grams in a label.
    n_background, seed
        Background: this many responses drawn without replacement (``numpy`` seeded), each cut
        into windows of ``2·window + 1`` tokens. ``n_contrast`` of them per unit (seeded by
        ``[seed, j]``) go to :attr:`ConceptContexts.contrast`.
    chunk
        Rows per ``read`` call (with the union of the features those rows need).
    """
    x = sp.csc_matrix(scores, dtype=np.float64)
    n_rows, n_units = x.shape
    if len(units) != n_units:
        raise ConfigError(f"scores has {n_units} columns but {len(units)} units were given")
    if min(n_top, window + 1, n_peaks, ngram, n_words, chunk) < 1 or n_background < 0 or n_contrast < 0:
        raise ConfigError("n_top, n_peaks, ngram, n_words, chunk must be ≥ 1 and window, n_background ≥ 0")
    if any(len(u) == 0 for u in units):
        raise ConfigError(f"unit {[len(u) for u in units].index(0)} has no features")
    ids = [f"unit:{j}" for j in range(n_units)] if unit_ids is None else [str(u) for u in unit_ids]
    if len(ids) != n_units:
        raise ConfigError(f"{len(ids)} unit_ids for {n_units} units")
    tops = [top_rows(x[:, [j]].toarray(), n_top) for j in range(n_units)]
    need = _rows_needed(tops)
    contexts: dict[tuple[int, int], list[Context]] = {}
    rows = list(need)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        feats = sorted({int(f) for r in part for j in need[r] for f in units[j]})
        col = {f: k for k, f in enumerate(feats)}
        for r, (tokens, acts) in zip(part, _read_checked(read, part, feats), strict=True):
            for j in need[r]:
                members = [int(f) for f in units[j]]
                w = (
                    np.ones(len(members))
                    if weights is None
                    else np.asarray(weights, dtype=np.float64)[members]
                )
                combined = acts[:, [col[f] for f in members]] @ w if len(tokens) else np.zeros(0)
                contexts[(j, r)] = peak_contexts(tokens, combined, row=r, window=window, n_peaks=n_peaks)
    rng = np.random.default_rng(seed)
    bg_rows = np.sort(rng.choice(n_rows, size=min(n_background, n_rows), replace=False)).tolist()
    background: list[Context] = []
    for start in range(0, len(bg_rows), chunk):
        part = bg_rows[start : start + chunk]
        for r, (tokens, _) in zip(part, _read_checked(read, part, []), strict=True):
            background += window_contexts(tokens, row=r, window=window)
    bg_counts = (count_ngrams(background, ngram)[0], len(background))
    out = []
    for j in range(n_units):
        top = [c for r in tops[j].tolist() for c in contexts.get((j, r), [])]
        unread = sum(1 for r in tops[j].tolist() if not contexts.get((j, r)))
        grams = distinctive_ngrams(top, bg_counts, ngram=ngram)
        label, kind = label_from(grams, top, n_words=n_words)
        pick = np.random.default_rng([seed, j]).permutation(len(background))[:n_contrast]
        out.append(
            ConceptContexts(
                unit=ids[j],
                features=tuple(int(f) for f in units[j]),
                top=tuple(top),
                contrast=tuple(background[k] for k in sorted(pick.tolist())),
                distinctive=tuple(grams),
                label=label,
                label_kind=kind,
                n_unread=unread,
            )
        )
    return out
