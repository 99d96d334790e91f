"""The training plan: before a DPO run starts, which pairs it trains on and which of their tokens.

``docs/DESIGN.md`` ("One token window"): the audit, the prediction, trl's tokenisation and the
verification read the same tokens of the same pairs, and whatever is cut or left out is counted
and shown. :func:`plan_training` decides it per pair, before training, with the code that training
then runs: trl's own tokenisation (``trl.data_utils._tokenize`` and ``common_prefix_length``, as in
``DPOTrainer._prepare_dataset``) followed by :func:`~prefaudit.training.tokens.window_cut`, which ``ShapedDPOTrainer`` calls
on the same token ids.

The window rule
---------------
trl (1.16, ``max_length``, ``truncation_mode="keep_start"``) drops every pair whose prompt alone
fills ``max_length`` and its collator keeps the *start* of prompt+response: on the HH-RLHF slice at
256 tokens that silently dropped 14.7 % of the pairs and cut a response in 13.0 %. The window
instead keeps the **end of the prompt** (the last turns are what the response answers; the audit
keeps the end too) and the **start of each response**, and the prompt never takes the whole
window::

    longest     = max(len(chosen), len(rejected))
    prompt_kept = min(len(prompt), max(max_prompt_length, max_length − longest))   # its last tokens
    kept        = max_length − prompt_kept                                         # per response, first tokens

With ``max_prompt_length < max_length`` (default ``max_length // 2``) every response keeps at least
one token, so nothing is dropped; a short pair is never cut, and a long prompt gives way to the
responses only down to ``max_prompt_length`` tokens. A pair whose response would keep no token
(only possible with ``max_prompt_length == max_length``, or an empty tokenised response) is
``dropped_length``: left out of the dataset by the trainer and listed here, never silently.
The collator's own truncation then has nothing left to cut (prompt + response ≤ ``max_length``).

Which pairs are drawn
---------------------
transformers' ``Trainer`` builds the train dataloader with a ``RandomSampler`` that accelerate
(``use_seedable_sampler``, on by default) replaces by a ``SeedableRandomSampler``: epoch ``e`` is
``torch.randperm(n, generator=manual_seed(data_seed + e))`` with ``data_seed`` defaulting to
``seed`` (``torch.random.initial_seed()`` after ``set_seed(seed)``; ``DPORunConfig`` sets
``data_seed`` explicitly so nothing else can move it). Batches of ``batch_size`` (last one smaller
unless ``dataloader_drop_last``), ``gradient_accumulation_steps`` batches an optimiser step, and the
run stops after ``max_steps`` steps. ``reweight`` samples with ``ShapedDPOTrainer``'s
``WeightedRandomSampler`` (one generator seeded with ``seed``, ``n`` draws with replacement per
epoch). Both orders are reproduced exactly (one process; ``tests/test_training_plan.py`` checks
them against a real run), so ``not_sampled`` lists exactly the pairs no step will see. Another
``train_sampling_strategy`` is not reproduced: the plan then says so (``exact_sampling`` false)
and reports ``expected_not_sampled`` instead.

Example
-------
>>> plan = session.plan_training(max_steps=40)        # HH slice, SmolLM2 tokenizer   # doctest: +SKIP
>>> plan.summary()                                                                    # doctest: +SKIP
'trained 160 · held out 199 · dropped by length 0 · not sampled 638 · responses cut 6 · prompts cut 40 (...)'
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..audit.pair_edits import flip_rows
from .tokens import trl_token_ids, window_cut

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

STATUSES = ("trained", "held_out", "dropped_length", "not_sampled", "excluded")
_TOKEN_COLUMNS = (
    "prompt_tokens",
    "prompt_kept",
    "chosen_tokens",
    "chosen_kept",
    "rejected_tokens",
    "rejected_kept",
)


# ---------------------------------------------------------------------- the sampler
def sampler_draws(n: int, config: Any, weights: np.ndarray | None = None) -> tuple[np.ndarray | None, str]:
    """How often the trainer's sampler draws each of ``n`` dataset rows in ``config.max_steps`` steps.

    Returns ``(draws, description)``; ``draws`` is ``None`` when the order is not reproduced.
    ``weights``: the ``weight`` column (a ``WeightedRandomSampler`` when they are not all equal).
    """
    import torch

    kw = config.dpo_kwargs
    bs, accum, steps = int(config.batch_size), int(config.gradient_accumulation_steps), int(config.max_steps)
    seed = int(config.seed)
    data_seed = kw.get("data_seed", seed)
    data_seed = seed if data_seed is None else int(data_seed)
    strategy = kw.get("train_sampling_strategy", "random")
    weighted = weights is not None and len(weights) > 0 and not bool(np.all(weights == weights[0]))
    if not weighted and strategy not in ("random", "sequential"):
        return None, f"train_sampling_strategy={strategy!r} (order not reproduced)"
    drop_last = bool(kw.get("dataloader_drop_last", False))
    per_epoch = n // bs if drop_last else math.ceil(n / bs)  # batches
    if per_epoch < 1:
        return np.zeros(n, dtype=np.int64), "no full batch"
    updates = max(math.ceil(per_epoch / accum), 1)
    full_epochs, rest = divmod(steps, updates)
    draws = np.zeros(n, dtype=np.int64)
    gen = torch.Generator().manual_seed(seed) if weighted else None
    w = torch.as_tensor(weights, dtype=torch.float64) if weighted else None
    for epoch in range(full_epochs + (rest > 0)):
        if weighted:
            order = torch.multinomial(w, n, True, generator=gen).numpy()
        elif strategy == "sequential":
            order = np.arange(n)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(data_seed + epoch)).numpy()
        batches = per_epoch if epoch < full_epochs else rest * accum
        np.add.at(draws, order[: min(len(order), batches * bs)], 1)
    if weighted:
        kind = f"weighted with replacement (seed {seed})"
    elif strategy == "sequential":
        kind = "sequential"
    else:
        kind = f"random without replacement (data_seed {data_seed})"
    return draws, f"{kind}: {steps} steps × {bs} × {accum}"


# ---------------------------------------------------------------------- the split and the shaped set
def split_positions(n_pairs: int, config: Any) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) rows: a seeded permutation; the first ``n_holdout`` are held out."""
    k = config.n_holdout(n_pairs)
    perm = np.random.default_rng(config.seed).permutation(n_pairs)
    held, train = np.sort(perm[:k]), perm[k:]
    if config.max_train_pairs is not None:
        train = train[: config.max_train_pairs]
    return np.sort(train), held


def shape_training_set(core: AuditState, config: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """(shaped pairs, train positions, held-out positions) of a run with ``config``."""
    from ..interventions import resolve_weights, shape_pairs

    weights = {} if config.intervention == "none" else resolve_weights(core, config.weights)
    train, held = split_positions(len(core.data), config)
    signs = core.edits.signs()  # a person's pair edits (audit/pair_edits.py): 0 excluded, -1 flipped
    train = train[signs[train] != 0]
    margins = None
    if weights:
        # The margins of the text the run will see: its pairs read in its token window.
        from .window import window_matrix

        matrix = window_matrix(core, config.window(), train)
        margins = np.asarray(
            core.shaping.preview(weights, features=[], matrix=matrix).margins, dtype=np.float64
        )
        margins = margins * signs[train]  # a flipped pair's margin, read from its swapped sides
    shaped = shape_pairs(
        core,
        config.intervention,
        weights=weights,
        positions=train,
        threshold=config.filter_threshold,
        margins=margins,
    )
    return flip_rows(shaped, core.pair_edits), train, held


# ---------------------------------------------------------------------- the plan
@dataclasses.dataclass
class TrainingPlan:
    """What a run will train on, per pair, decided before training (see the module docstring).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per pair of the session, in session order: ``position``, ``pair_id``, ``status``
        (``trained``, ``held_out``, ``dropped_length``, ``not_sampled``, ``excluded`` — the
        intervention's filter or ``max_train_pairs`` left it out), ``reason``, ``draws`` (times the
        sampler draws it; ``-1`` when the order is not reproduced), ``flipped``, and
        ``prompt_tokens``/``prompt_kept``, ``chosen_tokens``/``chosen_kept``,
        ``rejected_tokens``/``rejected_kept``: trl's token counts of the row and what the window
        keeps (held-out and excluded pairs: their unshaped row, as if trained).
    window : dict
        ``{"max_length", "max_prompt_length"}``: the ``window=`` of ``ShapedDPOTrainer``.
    sampler : str
        The sampler and the number of draws.
    exact_sampling : bool
        Whether the sampler's order was reproduced (else ``expected_not_sampled`` estimates).
    expected_not_sampled : float or None
    """

    table: pd.DataFrame
    window: dict[str, int]
    sampler: str
    exact_sampling: bool = True
    expected_not_sampled: float | None = None

    @property
    def trained_positions(self) -> np.ndarray:
        """Rows of ``session.data.df`` the run trains on (drawn at least once)."""
        return self.table.loc[self.table["status"] == "trained", "position"].to_numpy(np.int64)

    def pair_ids(self, status: str) -> list[int]:
        """``pair_id`` of the pairs with ``status``."""
        return [int(x) for x in self.table.loc[self.table["status"] == status, "pair_id"]]

    def counts(self) -> dict[str, int]:
        """Pairs per status, and of the *trained* pairs how many had a response / the prompt cut.

        (Cuts over any other set of pairs: the table's ``*_kept < *_tokens``.)
        """
        t = self.table
        trained = t[t["status"] == "trained"]
        out = {"n_pairs": len(t), **{s: int((t["status"] == s).sum()) for s in STATUSES}}
        out["responses_cut"] = int(
            (
                (trained["chosen_kept"] < trained["chosen_tokens"])
                | (trained["rejected_kept"] < trained["rejected_tokens"])
            ).sum()
        )
        out["prompts_cut"] = int((trained["prompt_kept"] < trained["prompt_tokens"]).sum())
        return out

    def summary(self) -> str:
        """One line a person reads: how many pairs train, what is left out and what is cut."""
        c = self.counts()
        parts = [
            f"trained {c['trained']}",
            f"held out {c['held_out']}",
            f"dropped by length {c['dropped_length']}",
        ]
        if self.exact_sampling:
            parts.append(f"not sampled {c['not_sampled']}")
        else:
            parts.append(f"not sampled ≈{self.expected_not_sampled:.0f} (expected; order not reproduced)")
        if c["excluded"]:
            parts.append(f"excluded {c['excluded']}")
        parts += [f"responses cut {c['responses_cut']}", f"prompts cut {c['prompts_cut']}"]
        w = self.window
        return (
            " · ".join(parts)
            + f" (window {w['max_length']} tokens; a long prompt keeps ≥ {w['max_prompt_length']})"
        )

    def to_dict(self, pairs: bool = True) -> dict[str, Any]:
        """JSON-able record (``pairs=False``: without the per-pair table)."""
        out: dict[str, Any] = {
            "window": dict(self.window),
            "counts": self.counts(),
            "summary": self.summary(),
            "sampler": self.sampler,
            "exact_sampling": self.exact_sampling,
            "expected_not_sampled": self.expected_not_sampled,
            "dropped_length": self.pair_ids("dropped_length"),
        }
        if pairs:
            out["pairs"] = json.loads(self.table.to_json(orient="records"))
        return out

    def check_dataset(self, dataset: Any) -> None:
        """Raise if a prepared train dataset holds other pairs or other token counts than planned."""
        t = self.table[self.table["status"].isin(["trained", "not_sampled"])]
        want = t[["pair_id", "prompt_kept", "chosen_kept", "rejected_kept"]].to_numpy(np.int64)
        got = np.array(
            [
                dataset["pair_id"],
                *([len(x) for x in dataset[k]] for k in ("prompt_ids", "chosen_ids", "rejected_ids")),
            ],
            dtype=np.int64,
        ).T.reshape(-1, 4)
        if got.shape != want.shape or not np.array_equal(got, want):
            diff = [
                (a.tolist(), b.tolist()) for a, b in zip(got, want, strict=False) if not np.array_equal(a, b)
            ]
            raise RuntimeError(
                f"The trainer's dataset differs from the training plan: {len(got)} rows, {len(want)} planned; "
                f"first difference (pair_id, prompt, chosen, rejected) got/planned: {diff[:1]}."
            )


def plan_training(core: AuditState, config: Any = None, **overrides: Any) -> TrainingPlan:
    """The plan of a run with ``config`` on ``core``'s pairs (see the module docstring).

    Parameters
    ----------
    core : AuditSession or AuditCore
    config : DPORunConfig or dict, optional
        Keyword ``overrides`` replace its fields, as for ``session.train``.

    Example
    -------
    >>> plan = plan_training(session, DPORunConfig(max_steps=40))    # doctest: +SKIP
    >>> plan.counts()["dropped_length"]                              # doctest: +SKIP
    0
    """
    from .config import resolve_config

    cfg = resolve_config(config, overrides)
    shaped, _train, held = shape_training_set(core, cfg)
    return build_plan(core, cfg, shaped, held)


def build_plan(core: AuditState, config: Any, shaped: Any, heldout_positions: np.ndarray) -> TrainingPlan:
    """The plan of an already shaped training set (``prepare_run`` calls this)."""
    from ..interventions import shape_pairs

    tok = core.backbone.tokenizer
    window = config.window()
    n = len(core.data)
    pair_ids = core.data.df["pair_id"].to_numpy()
    status = np.array(["excluded"] * n, dtype=object)
    reason = np.array([""] * n, dtype=object)
    tokens = np.zeros((n, 6), dtype=np.int64)
    draws = np.zeros(n, dtype=np.int64)
    flipped = np.isin(pair_ids, np.asarray(shaped.flipped, dtype=pair_ids.dtype))

    def measure(positions: np.ndarray, dataset: Any) -> np.ndarray:
        """Per row: whether the window leaves both responses a token; fills ``tokens``."""
        ok = np.zeros(len(positions), dtype=bool)
        for k, (i, row) in enumerate(zip(positions, dataset, strict=True)):
            ids = trl_token_ids(row, tok)
            kept = window_cut(*ids, window["max_length"], window["max_prompt_length"])
            tokens[i] = [len(ids[0]), len(kept[0]), len(ids[1]), len(kept[1]), len(ids[2]), len(kept[2])]
            ok[k] = len(kept[1]) >= 1 and len(kept[2]) >= 1
        return ok

    pos = np.asarray(shaped.positions, dtype=np.int64)
    ok = measure(pos, shaped.dataset)
    status[pos[~ok]] = "dropped_length"
    reason[pos[~ok]] = "no response token left in the window: left out of the dataset"
    kept_pos = pos[ok]
    weights = np.asarray(shaped.sample_weights, dtype=np.float64)[ok]
    counts, sampler = sampler_draws(len(kept_pos), config, weights)
    expected = None
    if counts is None:
        status[kept_pos], draws[kept_pos] = "trained", -1
        reason[kept_pos] = "in the dataset (order not reproduced)"
        total = config.max_steps * config.batch_size * config.gradient_accumulation_steps
        expected = float(len(kept_pos) * (1 - min(1.0, total / max(1, len(kept_pos)))))
    else:
        draws[kept_pos] = counts
        status[kept_pos] = np.where(counts > 0, "trained", "not_sampled")
        reason[kept_pos] = [f"drawn {c}×" if c else f"not drawn ({sampler})" for c in counts]
    held = np.asarray(heldout_positions, dtype=np.int64)
    status[held], reason[held] = "held_out", "held out for verification"
    rest = np.setdiff1d(np.arange(n), np.concatenate([pos, held]))
    by_intervention, by_person = set(shaped.dropped), core.edits.reasons()
    for i in rest:
        left_out = int(pair_ids[i]) in by_intervention
        reason[i] = f"left out by {shaped.intervention}" if left_out else "beyond max_train_pairs"
        reason[i] = by_person.get(pair_ids[i].item(), reason[i])
    others = np.concatenate([held, rest]).astype(np.int64)
    if len(others):
        # Held-out and excluded pairs: their unshaped rows, counted as the window would keep them.
        measure(others, shape_pairs(core, "none", positions=others).dataset)
    table = pd.DataFrame(
        {
            "position": np.arange(n),
            "pair_id": pair_ids,
            "status": status,
            "reason": reason,
            "draws": draws,
            "flipped": flipped,
        }
    )
    for j, name in enumerate(_TOKEN_COLUMNS):
        table[name] = tokens[:, j]
    return TrainingPlan(
        table, window, sampler, exact_sampling=counts is not None, expected_not_sampled=expected
    )
