"""The interpreted model: a Hugging Face causal LM, its tokenizer and the layer prefaudit reads.

Responses are always read **in the context of their prompt**: the prompt is rendered with the
model's chat template (when it has one) and the response follows as the assistant turn. Only
the response tokens are pooled later, and never absolute position 0, whose activation is a
massive-norm attention sink.

The forward pass is **stopped at the read layer** (a hook raises once that layer has run), which
measured 2.3x faster than a full forward that returns all hidden states. Both responses of a
pair share one prompt pass: the prompt's key/value cache is computed once and reused for the
chosen and the rejected response (:meth:`Backbone.read_pairs`).

Example
-------
>>> from prefaudit.backbone import Backbone
>>> bb = Backbone.load()  # the embedded SmolLM2          # doctest: +SKIP
>>> ids = bb.prompt_ids([{"role": "user", "content": "Hi"}])  # doctest: +SKIP

Model families and the read layer
---------------------------------
``layer=L`` (0-based) reads the **output of decoder block L**: the residual stream after it,
before any final norm (``docs/MODELS_AND_SAES.md`` has the worked examples).

=========================  ================================  ====================================
family (HF class)          block L (``Backbone.hook_name``)  SAE hook names of the same tensor
=========================  ================================  ====================================
Llama, SmolLM2, Mistral    ``model.model.layers[L]``         ``blocks.L.hook_resid_post`` and
Gemma 2, Gemma 3 (text)    (``model.layers.L``)              ``blocks.(L+1).hook_resid_pre``
Qwen2, Qwen3                                                 (TransformerLens), or the HF module
GPT-2                      ``model.transformer.h[L]``        path of the second column
                           (``transformer.h.L``)
=========================  ================================  ====================================

In a plain forward with ``output_hidden_states=True`` this is ``hidden_states[L+1]`` for
``L < n_layers - 1`` (``hidden_states[0]`` is the embedding output). The last entry,
``hidden_states[n_layers]``, is after the final norm (``model.norm``, ``transformer.ln_f``), so for
the last block ``norm(h) == hidden_states[-1]``; TransformerLens's ``blocks.{n-1}.hook_resid_post``
is before ``ln_final`` too. ``blocks.L.hook_resid_pre`` is the *input* of block L, the output of
block L-1: an SAE with that hook is read at ``layer=L-1``; ``blocks.0.hook_resid_pre`` (and
``hook_embed``) is the embedding output, no block's output, and is refused. Gemma's sqrt(d_model)
embedding scale is inside the model and so part of every block output, as in TransformerLens.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import pair_layouts
from .devices import default_dtype_name, resolve_device
from .errors import ModelError

Message = dict[str, str]
__all__ = ["Backbone", "ResponseBatch", "default_dtype_name", "resolve_device"]


class _StopForward(Exception):
    """Raised by the read hook so layers above the read layer never run."""


_LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Gemma / Gemma 2 / Gemma 3 text, Qwen2 / Qwen3, SmolLM2, Phi-3, OLMo
    "transformer.h",  # GPT-2, GPT-J, Falcon, BLOOM
    "model.language_model.layers",  # multimodal wrappers (Gemma 3 4B+) in transformers >= 4.52: untested
    "gpt_neox.layers",  # Pythia / GPT-NeoX
    "model.decoder.layers",  # OPT
)


_text_config = pair_layouts.text_config


def _find_layers(model: Any) -> tuple[str, Any]:
    """Locate the list of decoder blocks: ``(module path, ModuleList)``, e.g. ``("model.layers", ...)``."""
    import torch

    n = getattr(_text_config(model.config), "num_hidden_layers", None)
    for path in _LAYER_PATHS:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return path, module
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and n:
            return name, module
    raise ModelError(
        f"Could not find the list of {n} transformer layers in {type(model).__name__}; "
        "prefaudit supports decoder-only causal LMs with a ModuleList of blocks."
    )


def _fold_system(messages: list[Message]) -> list[Message]:
    """``[system, user, ...]`` as ``[user (system text + blank line + user text), ...]``."""
    system, rest = messages[0]["content"], messages[1:]
    if rest and rest[0].get("role") == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


@dataclass
class ResponseBatch:
    """Layer activations of the response tokens of a batch of pairs.

    Attributes
    ----------
    acts : torch.Tensor, shape (n_tokens, d_model), float32
        Activations of every kept response token, chosen and rejected interleaved by sequence.
    seq : numpy.ndarray[int], shape (n_tokens,)
        For each token, its sequence: ``2*k`` is pair k's chosen response, ``2*k+1`` the rejected.
    token_ids, positions : numpy.ndarray[int], shape (n_tokens,)
        The token id and its position inside the response (0-based).
    n_tokens : numpy.ndarray[int], shape (2*n_pairs,)
        Response tokens per sequence after truncation.
    truncated : numpy.ndarray[bool], shape (2*n_pairs,)
        Whether the response was cut at ``max_response_tokens``.
    """

    acts: Any
    seq: np.ndarray
    token_ids: np.ndarray
    positions: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray
    tokens_processed: int = 0


@dataclass
class Backbone:
    """A causal LM with the layer whose residual stream prefaudit reads.

    Use :meth:`load` rather than the constructor. ``layer`` indexes the transformer blocks
    (0-based); the activation read is the block's output (the residual stream after it),
    which is what sae-lens calls ``blocks.{layer}.hook_resid_post`` for TransformerLens models
    and ``model.layers.{layer}`` (GPT-2: ``transformer.h.{layer}``) for Hugging Face ones (the
    table in the module docstring). ``device`` is the resolved device (never ``"auto"``).
    """

    model: Any
    tokenizer: Any
    layer: int
    name: str
    dtype: str
    device: str = "cpu"
    max_prompt_tokens: int = 384
    max_response_tokens: int = 256
    #: ``False`` keeps the prompt-cache layout even where packing applies (benchmarks, debugging).
    pair_packing: bool = True
    _layers: Any = field(default=None, repr=False)
    _layers_name: str = field(default="", repr=False)
    _cache_kw: str = field(default="past_key_values", repr=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        model: str | Path | Any | None = None,
        *,
        tokenizer: Any | None = None,
        layer: int | None = None,
        dtype: str | None = None,
        device: str = "auto",
        max_prompt_tokens: int = 384,
        max_response_tokens: int = 256,
    ) -> Backbone:
        """Load a causal LM by hub name or local directory (``None``: the embedded SmolLM2).

        ``model`` may also be an already loaded ``PreTrainedModel`` (then pass ``tokenizer``);
        ``device="auto"`` then keeps it where it is. ``layer`` defaults to the middle block.
        ``device="auto"`` is CUDA when available, else the CPU (:func:`resolve_device`); ``dtype``
        defaults to what runs fast there (:func:`default_dtype_name`): bfloat16 on GPUs and CPUs
        that run it natively, else float16 (GPU) or float32 (CPU).
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # An already loaded model: "auto" keeps it where it is, and its dtype is its own.
        param = None if model is None or isinstance(model, (str, Path)) else next(model.parameters(), None)
        if param is not None and str(device).strip().lower() == "auto":
            device = str(param.device)
        else:
            device = resolve_device(device)
        if dtype is None and param is not None:
            dtype = str(param.dtype).removeprefix("torch.")
        dtype = dtype or default_dtype_name(device)
        if not hasattr(torch, dtype):
            raise ModelError(f"Unknown dtype {dtype!r}; use 'float32', 'bfloat16' or 'float16'.")
        if model is None:
            from .default_model import DEFAULT_MODEL_NAME, default_model_dir

            path, name = str(default_model_dir()), DEFAULT_MODEL_NAME
        elif isinstance(model, (str, Path)):
            path = (
                str(Path(model).expanduser())
                if isinstance(model, Path) or str(model).startswith(("/", ".", "~"))
                else str(model)
            )
            looks_local = isinstance(model, Path) or path.startswith(("/", ".")) or Path(path).exists()
            if looks_local and not Path(path).is_dir():
                raise ModelError(f"Model directory {path} does not exist (or is not a directory).")
            name = Path(path).name if looks_local else path
        else:
            path, name = None, getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)
        if path is not None:
            try:
                tok = tokenizer or AutoTokenizer.from_pretrained(path)
                lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
            except OSError as err:
                where = "local directory" if Path(path).exists() else "Hugging Face hub name (no network?)"
                raise ModelError(f"Could not load the model {path!r} as a {where}: {err}") from err
        else:
            if tokenizer is None:
                raise ModelError("Pass tokenizer= together with an already loaded model.")
            lm, tok = model, tokenizer
        if param is None or str(param.device) != device:
            lm.to(device)
        lm.eval()
        n_layers = _text_config(lm.config).num_hidden_layers
        if layer is None:
            layer = n_layers // 2
        if not 0 <= layer < n_layers:
            raise ModelError(f"layer={layer} is out of range: {name} has layers 0..{n_layers - 1}.")
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        layers_name, layers = _find_layers(lm)
        params = inspect.signature(lm.forward).parameters
        cache_kw = "cache" if "cache" in params else "past_key_values"
        return cls(
            model=lm,
            tokenizer=tok,
            layer=layer,
            name=str(name),
            dtype=dtype,
            device=device,
            max_prompt_tokens=max_prompt_tokens,
            max_response_tokens=max_response_tokens,
            _layers=layers,
            _layers_name=layers_name,
            _cache_kw=cache_kw,
        )

    # ------------------------------------------------------------------ identity
    @property
    def d_model(self) -> int:
        return int(_text_config(self.model.config).hidden_size)

    @property
    def n_layers(self) -> int:
        return int(_text_config(self.model.config).num_hidden_layers)

    @property
    def hook_name(self) -> str:
        """Module path of the read layer, e.g. ``model.layers.15`` (GPT-2: ``transformer.h.15``)."""
        return f"{self._layers_name}.{self.layer}"

    @property
    def tl_hook_name(self) -> str:
        """The TransformerLens name of the same activation: ``blocks.{layer}.hook_resid_post``."""
        return f"blocks.{self.layer}.hook_resid_post"

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def cache_kwarg(self) -> str:
        """Name of the model's key/value-cache argument (``past_key_values`` or ``cache``)."""
        return self._cache_kw

    def fingerprint(self) -> str:
        """Stable hash of what changes activations: config, read layer, dtype, lengths, weights sample."""
        import torch

        h = hashlib.sha256()
        h.update(json.dumps(self.model.config.to_dict(), sort_keys=True, default=str).encode())
        h.update(f"{self.layer}|{self.dtype}|{self.max_prompt_tokens}|{self.max_response_tokens}".encode())
        h.update(str(getattr(self.tokenizer, "chat_template", "")).encode())
        # Hash the embedding and the read layer's weights: a different fine-tune of the same
        # architecture must not reuse cached activations.
        with torch.no_grad():
            tensors = [self.model.get_input_embeddings().weight, *self._layers[self.layer].parameters()]
            for t in tensors:
                # The first 4 MiB of float32 bytes, as always; sliced before the copy to the host so
                # a 1 GB embedding on a GPU is not brought over whole.
                h.update(t.detach().flatten()[: 1 << 20].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ tokenising
    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The text that precedes the response: the chat-templated prompt with the assistant header."""
        if self.has_chat_template:
            from jinja2 import TemplateError

            msgs = list(messages) or [{"role": "user", "content": ""}]
            try:
                return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            except TemplateError as err:
                # Templates without a system role (Gemma 2) refuse one: its text then opens the
                # first user turn, as Gemma 3's own template does.
                if msgs[0].get("role") != "system" or "system" not in str(err).lower():
                    raise
                return self.tokenizer.apply_chat_template(
                    _fold_system(msgs), tokenize=False, add_generation_prompt=True
                )
        # No template (base models): a plain transcript that ends where the answer starts.
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return ("\n\n".join(lines) + "\n\nAssistant: ") if lines else ""

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the rendered prompt, left-truncated to ``max_prompt_tokens``."""
        text = self.render_prompt(messages)
        ids = self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"] if text else []
        if not ids:
            # Every response needs a context token: position 0 is an attention sink whose
            # activation is never pooled, so a response must not start there.
            start = self.tokenizer.bos_token_id
            ids = [start if start is not None else self.tokenizer.eos_token_id]
        # Keep the end of long prompts: the last turns are what the response answers.
        return ids[-self.max_prompt_tokens :]

    def response_ids(self, text: str) -> tuple[list[int], bool]:
        """Token ids of a response (no special tokens), cut to ``max_response_tokens``."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[: self.max_response_tokens], len(ids) > self.max_response_tokens

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        """Each token as the text it contributes (so the pieces concatenate to the decoded text)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    # ------------------------------------------------------------------ forward
    def _forward_to_layer(self, input_ids, attention_mask, position_ids, cache=None, use_cache=False):
        """Run the model up to and including the read layer; return that layer's output."""
        captured: dict[str, Any] = {}

        def hook(_module, _args, output):
            captured["h"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward

        handle = self._layers[self.layer].register_forward_hook(hook)
        kwargs = {self._cache_kw: cache} if cache is not None else {}
        try:
            # base_model is the decoder without the LM head (model.model, transformer, ...).
            self.model.base_model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
                **kwargs,
            )
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "h" not in captured:
            raise ModelError(f"The read layer {self.hook_name} did not run during the forward pass.")
        return captured["h"]

    def read_responses(self, messages: Sequence[Sequence[Message]], responses: Sequence[str]) -> list[Any]:
        """Activations ``(n_tokens, d_model)`` (float32) of each response read after its prompt.

        The same tokenisation, truncation and layer as the audit, one response per prompt — the
        path SAE training uses so that the SAE sees exactly what the audit will encode.
        """
        prompts = [self.prompt_ids(m) for m in messages]
        ids = [self.response_ids(r)[0] for r in responses]
        # read_pairs wants pairs; the second slot is a one-token dummy whose output is discarded.
        h, _ = self.read_pairs(prompts, [(i, i[:1]) for i in ids], share_prompt=True)
        return [h[2 * k, : len(i)].float() for k, i in enumerate(ids)]

    @property
    def packs_pairs(self) -> bool:
        """Whether :meth:`read_pairs` reads each pair as one packed row (:func:`pair_layouts.packs_pairs`)."""
        longest = self.max_prompt_tokens + 2 * self.max_response_tokens
        return self.pair_packing and pair_layouts.packs_pairs(self.model.config, self.layer, longest)

    @property
    def default_batch_tokens(self) -> int:
        """Padded tokens per forward pass when none is asked for (``pair_layouts.BATCH_TOKENS``)."""
        import torch

        budget = pair_layouts.BATCH_TOKENS
        return budget.get(torch.device(self.device).type, budget["cpu"])

    def read_pairs(
        self,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[tuple[Sequence[int], Sequence[int]]],
        *,
        share_prompt: bool = True,
    ) -> Any:
        """Layer activations of both responses of each pair, in the context of its prompt.

        Parameters
        ----------
        prompts : list of token-id lists, one per pair
        responses : list of ``(chosen_ids, rejected_ids)``, one per pair
        share_prompt : bool
            ``True`` reads each prompt once for both responses: one packed row per pair
            (prompt, chosen, rejected; a block mask keeps rejected tokens from seeing chosen ones)
            where :attr:`packs_pairs`, else the prompt's key/value cache reused for both.
            ``False`` runs ``prompt + response`` twice (the reference path, used by tests).
            The layouts are described in :mod:`prefaudit.pair_layouts`.

        Returns
        -------
        acts : torch.Tensor, shape (2 * n_pairs, max_response_len, d_model), on the CPU
            Response-token activations in the model's dtype (copied to the host when the model
            runs on a GPU); sequence ``2k`` is pair k's chosen, ``2k+1`` its rejected.
        tokens_processed : int
            Tokens that went through the model (excluding padding), for throughput accounting.
        """
        import torch

        fwd, pad, dev = self._forward_to_layer, self.tokenizer.pad_token_id, self.device
        with torch.inference_mode():
            if not share_prompt:
                h, processed = pair_layouts.read_separate(fwd, pad, dev, prompts, responses)
            elif self.packs_pairs:
                h, processed = pair_layouts.read_packed(fwd, self.model, pad, dev, prompts, responses)
            else:
                h, processed = pair_layouts.read_prompt_cache(fwd, self.model, pad, dev, prompts, responses)
        # Callers pool and convert to numpy: hand them host memory (a no-op on the CPU).
        return h.cpu(), processed
