"""The three layouts in which a batch of preference pairs goes through the model.

:meth:`Backbone.read_pairs <prefaudit.backbone.Backbone.read_pairs>` picks one; each returns the
read layer's activations of both responses of every pair, ``(2 * n_pairs, max_response_len,
d_model)`` (sequence ``2k`` is pair k's chosen, ``2k+1`` its rejected), and the tokens that went
through the model, padding excluded.

* **packed** (the default where the model allows it): one row per pair, ``prompt | chosen |
  rejected``, under a block-causal 4D mask. The prompt is read once, no cache is copied, and a
  row's cost is its own length, so batches sorted by it barely pad.
* **prompt cache**: the prompt run once, its key/value cache copied for both responses. For
  models whose sliding windows (Gemma 2/3) or attention kernels cannot take the packed mask.
* **separate**: ``prompt + response`` twice per pair; the reference the others are tested against.

``forward`` is ``Backbone._forward_to_layer``: ``(ids, mask, positions, cache, use_cache)`` to the
read layer's output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Ids = Sequence[Sequence[int]]
Pairs = Sequence[tuple[Sequence[int], Sequence[int]]]

#: Padded tokens per forward pass by device type, when ``batch_tokens`` is not given. CPU: the
#: per-token speed of the packed layout is flat from a few hundred tokens up (bench_encode.py), and
#: smaller batches pad less. CUDA: enough rows to keep a GPU busy with a small model, little enough
#: for a 2B model on a 16 GB card (chosen, not measured on a GPU).
BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}
# Attention implementations that take a custom 4D mask.
_PACKING_ATTENTION = ("sdpa", "eager")


def text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def packs_pairs(config: Any, layer: int, longest_row: int) -> bool:
    """Whether the packed layout reads the same activations as separate passes for this model.

    It needs an attention that takes a custom 4D mask (``sdpa``, ``eager``), and every block up
    to the read ``layer`` attending to the whole row: the custom mask replaces a sliding window,
    so a window shorter than ``longest_row`` (prompt + both responses at their limits) would be
    lost. Such models (Gemma 3: 512, tiny test Gemmas: 8) use the prompt cache, which keeps it.
    """
    cfg = text_config(config)
    if getattr(cfg, "_attn_implementation", None) not in _PACKING_ATTENTION:
        return False
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types is None:
        windowed = window is not None and getattr(cfg, "use_sliding_window", True)
        types = ["sliding_attention" if windowed else "full_attention"] * (layer + 1)
    for kind in types[: layer + 1]:
        if kind == "sliding_attention" and (window is None or window < longest_row):
            return False
        if kind not in ("full_attention", "sliding_attention"):
            return False  # chunked or linear attention: not a plain causal mask
    return True


def read_packed(
    forward: Callable[..., Any], model: Any, pad_id: int, device: str, prompts: Ids, responses: Pairs
):
    """One row per pair, right-padded; rejected tokens never see chosen ones.

    Rejected tokens attend to the prompt and to themselves, and their positions restart where
    the prompt ends, so each response sees exactly what it sees after its prompt alone.
    """
    import torch

    n = len(prompts)
    lens = [(len(p), len(c), len(r)) for p, (c, r) in zip(prompts, responses, strict=True)]
    t_max = max(p + c + r for p, c, r in lens)
    ids = torch.full((n, t_max), pad_id, dtype=torch.long)
    pos = torch.zeros((n, t_max), dtype=torch.long)
    seg = torch.full((n, t_max), -1, dtype=torch.long)  # 0 prompt, 1 chosen, 2 rejected, -1 padding
    for i, (prompt, (c, r)) in enumerate(zip(prompts, responses, strict=True)):
        p, row = len(prompt), [*prompt, *c, *r]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        pos[i, : p + len(c)] = torch.arange(p + len(c))
        pos[i, p + len(c) : len(row)] = torch.arange(p, p + len(r))
        seg[i, :p], seg[i, p : p + len(c)], seg[i, p + len(c) : len(row)] = 0, 1, 2
    seg = seg.to(device)
    slot = torch.arange(t_max, device=device)
    q, k = seg[:, :, None], seg[:, None, :]
    allowed = (slot[None, None, :] <= slot[None, :, None]) & (k >= 0) & ~((q == 2) & (k == 1))
    # A padding slot attends to itself only: no row of the mask is empty (a NaN-free softmax).
    allowed |= (slot[:, None] == slot[None, :])[None] & (q < 0)
    mask = allowed[:, None]
    if text_config(model.config)._attn_implementation != "sdpa":  # noqa: SLF001 - transformers keeps the choice only here
        # Eager attention adds the mask to the scores: 0 where allowed, the dtype's minimum elsewhere.
        dt = model.get_input_embeddings().weight.dtype
        mask = torch.zeros(mask.shape, dtype=dt, device=device).masked_fill_(~mask, torch.finfo(dt).min)
    hf = forward(ids.to(device), mask, pos.to(device))
    # Gather the response slots: chosen starts at p, rejected at p + c.
    r_max = max(1, max(max(c, r) for _, c, r in lens))
    start = torch.tensor([s for p, c, _ in lens for s in (p, p + c)], device=device)
    n_tok = torch.tensor([x for _, c, r in lens for x in (c, r)], device=device)
    offs = torch.arange(r_max, device=device)
    rows = torch.arange(n, device=device).repeat_interleave(2)
    flat = rows[:, None] * t_max + (start[:, None] + offs[None, :]).clamp(max=t_max - 1)
    h = hf.reshape(n * t_max, -1)[flat.reshape(-1)].reshape(2 * n, r_max, -1)
    h = h * (offs[None, :] < n_tok[:, None])[:, :, None].to(h.dtype)  # zero the padding
    return h, int(sum(p + c + r for p, c, r in lens))


def read_prompt_cache(
    forward: Callable[..., Any], model: Any, pad_id: int, device: str, prompts: Ids, responses: Pairs
):
    """The prompt run once; its key/value cache copied for the chosen and the rejected response."""
    import torch
    from transformers import DynamicCache

    n = len(prompts)
    seqs = [r for pair in responses for r in pair]
    r_len = torch.tensor([len(s) for s in seqs])
    r_max = max(1, int(r_len.max()))
    p_len = torch.tensor([len(p) for p in prompts])
    p_max = int(p_len.max())
    # Prompts are LEFT-padded so that, in every row, the prompt's last token and the response are
    # adjacent cache slots: a slot distance is then the true token distance, which sliding-window
    # attention (Gemma 2/3) and its cache rely on.
    p_ids = torch.full((n, p_max), pad_id, dtype=torch.long)
    p_mask = torch.zeros((n, p_max), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            p_ids[i, p_max - len(p) :] = torch.tensor(p, dtype=torch.long)
            p_mask[i, p_max - len(p) :] = 1
    cache = DynamicCache(config=model.config)
    pos = (torch.arange(p_max)[None, :] - (p_max - p_len)[:, None]).clamp(min=0)
    forward(p_ids.to(device), p_mask.to(device), pos.to(device), cache, use_cache=True)
    cache.batch_repeat_interleave(2)
    r_ids = torch.full((2 * n, r_max), pad_id, dtype=torch.long)
    r_mask = torch.zeros((2 * n, r_max), dtype=torch.long)
    for j, s in enumerate(seqs):
        r_ids[j, : len(s)] = torch.tensor(s, dtype=torch.long)
        r_mask[j, : len(s)] = 1
    # Explicit positions: each response token sits right after its own prompt.
    pos = p_len.repeat_interleave(2)[:, None] + torch.arange(r_max)[None, :]
    mask = torch.cat([p_mask.repeat_interleave(2, dim=0), r_mask], dim=1)
    h = forward(r_ids.to(device), mask.to(device), pos.to(device), cache, use_cache=True)
    return h, int(p_len.sum() + r_len.sum())


def read_separate(forward: Callable[..., Any], pad_id: int, device: str, prompts: Ids, responses: Pairs):
    """``prompt + response`` as its own right-padded row, twice per pair."""
    import torch

    n = len(prompts)
    seqs = [r for pair in responses for r in pair]
    r_max = max(1, max(len(s) for s in seqs))
    full = [list(prompts[k // 2]) + list(s) for k, s in enumerate(seqs)]
    t_max = max(len(f) for f in full)
    ids = torch.full((2 * n, t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((2 * n, t_max), dtype=torch.long)
    for j, f in enumerate(full):
        ids[j, : len(f)] = torch.tensor(f, dtype=torch.long)
        mask[j, : len(f)] = 1
    pos = torch.arange(t_max).expand(2 * n, t_max)
    hf = forward(ids.to(device), mask.to(device), pos.to(device))
    h = hf.new_zeros((2 * n, r_max, hf.shape[-1]))
    for j in range(2 * n):
        p = len(prompts[j // 2])
        h[j, : len(seqs[j])] = hf[j, p : p + len(seqs[j])]
    return h, int(sum(len(f) for f in full))
