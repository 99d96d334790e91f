"""A local Hugging Face causal LM as an explainer, prompted with a unit's top and contrast contexts.

Whichever model the user names — a local folder or a model already in the Hugging Face cache
(read with ``local_files_only=True``: nothing downloads), or a loaded model and tokenizer (the
session's own backbone). The prompt (:func:`explainer_prompt`) lists the ``n_top`` strongest
contexts with the peak token in brackets, the ``n_contrast`` random contexts, and the distinctive
phrases the built-in label found, and asks for a name of at most a few words. Decoding is greedy
through prefaudit's one sampler (:func:`prefaudit.generation.generate_token_ids`) and bounded by
``max_new_tokens``; the first non-empty line of the answer is the explanation. A small model's
answer is a guess to be read beside the contexts, never a statistic.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefaudit.errors import ConfigError
from prefaudit.features.labels import ConceptContexts
from prefaudit.generation import SamplingConfig, generate_token_ids

from . import Explanation, register_explainer

N_TOP = 10
N_CONTRAST = 5
MAX_NEW_TOKENS = 24

INSTRUCTION = (
    "Below are short text snippets from a dataset. In the first list, one concept inside a language "
    "model is most active; the token in [brackets] is where it peaks. The second list is random "
    "snippets for contrast. In at most eight words, name what the first list has in common that the "
    "second list lacks. Answer with the name only."
)


def explainer_prompt(contexts: ConceptContexts, *, n_top: int = N_TOP, n_contrast: int = N_CONTRAST) -> str:
    """The user message an LM explainer reads for one unit (plain text)."""
    top = [c.text() for c in contexts.top[:n_top]]
    contrast = [c.text(("", "")) for c in contexts.contrast[:n_contrast]]
    lines = [INSTRUCTION, "", "Where the concept is active:"]
    lines += [f"{k}. {t}" for k, t in enumerate(top, start=1)] or ["(none)"]
    lines += ["", "Random snippets:"]
    lines += [f"{k}. {t}" for k, t in enumerate(contrast, start=1)] or ["(none)"]
    phrases = [g.text for g in contexts.distinctive[:5] if g.low > 0]
    if phrases:
        lines += ["", "Phrases commoner where it is active: " + "; ".join(phrases)]
    return "\n".join(lines)


def _cache_kwarg(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "past_key_values" if "past_key_values" in params else "cache"


class HFModelExplainer:
    """Explanations written by a local causal LM.

    Parameters
    ----------
    model : str, Path or a loaded ``PreTrainedModel``
        A local folder or a cached model name (never downloaded), or a model object.
    tokenizer : a loaded tokenizer, optional
        Required with a model object; read from ``model`` when it is a path or name.
    max_new_tokens : int
        Bound on the tokens generated per explanation.
    n_top, n_contrast : int
        Contexts shown in the prompt.
    batch_size : int
        Prompts decoded together by :meth:`explain_many`.
    """

    name = "hf"

    def __init__(
        self,
        model: str | Path | Any,
        *,
        tokenizer: Any = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        n_top: int = N_TOP,
        n_contrast: int = N_CONTRAST,
        batch_size: int = 8,
    ):
        if isinstance(model, str | Path):
            model, tokenizer = _load(model)
        elif tokenizer is None:
            raise ConfigError("a loaded model needs its tokenizer: HFModelExplainer(model, tokenizer=...)")
        self.model, self.tokenizer = model, tokenizer
        self.sampling = SamplingConfig(
            max_new_tokens=int(max_new_tokens),
            temperature=0.0,
            repetition_penalty=1.0,
            batch_size=int(batch_size),
        )
        self.n_top, self.n_contrast = int(n_top), int(n_contrast)
        self.source = "hf:" + Path(str(getattr(model, "name_or_path", "") or type(model).__name__)).name

    def prompt_ids(self, contexts: ConceptContexts) -> list[int]:
        """The prompt as token ids: the chat template's user turn where the tokenizer has one."""
        text = explainer_prompt(contexts, n_top=self.n_top, n_contrast=self.n_contrast)
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(text + "\nAnswer:")["input_ids"])

    def generate(self, units: Sequence[ConceptContexts]) -> list[list[int]]:
        """Greedy continuations (token ids, at most ``max_new_tokens`` each) of the units' prompts."""
        import torch

        tok = self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        if eos is None:
            raise ConfigError(f"{self.source}: the tokenizer has no eos token")
        prompts = [self.prompt_ids(c) for c in units]
        out: list[list[int]] = []
        was_training = getattr(self.model, "training", False)
        self.model.eval()
        try:
            for start in range(0, len(prompts), self.sampling.batch_size):
                out += generate_token_ids(
                    self.model,
                    prompts[start : start + self.sampling.batch_size],
                    self.sampling,
                    pad_id=pad,
                    eos_id=eos,
                    generator=torch.Generator().manual_seed(0),
                    cache_kw=_cache_kwarg(self.model),
                )
        finally:
            self.model.train(was_training)
        return out

    def explain_many(self, units: Sequence[ConceptContexts]) -> list[Explanation | None]:
        """One explanation per unit (``None`` where the model said nothing), prompts batched."""
        todo = [c for c in units if c.top]
        answers = dict(zip((c.unit for c in todo), self.generate(todo), strict=True)) if todo else {}
        out: list[Explanation | None] = []
        for c in units:
            ids = answers.get(c.unit)
            text = _first_line(self.tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""
            evidence = tuple(ctx.text() for ctx in c.top[: self.n_top])
            out.append(Explanation(text, self.source, None, evidence) if text else None)
        return out

    def explain(self, contexts: ConceptContexts) -> Explanation | None:
        return self.explain_many([contexts])[0]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = " ".join(line.split()).strip("\"'` ")
        if line:
            return line
    return ""


def _load(name: str | Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(name), local_files_only=True)
    except OSError as err:
        raise ConfigError(
            f"explainer model {str(name)!r} is not a local folder or in the Hugging Face cache "
            "(nothing is downloaded at run time)"
        ) from err
    return model, tok


register_explainer("hf", HFModelExplainer)
