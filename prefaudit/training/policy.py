"""What a run holds of its policy, and when: nothing while queued, the adapter once done.

A :class:`~prefaudit.training.run.DPORun` keeps its model in a :class:`PolicyStore`:

* **queued** — nothing; the run copies the session's model when its turn comes (:meth:`PolicyStore.load`,
  with :func:`training_copy`), so runs waiting in the queue hold no model copies.
* **trained** — a LoRA run keeps only its adapter weights, on CPU (megabytes), and rebuilds the
  policy on a fresh copy of the session's model on first use (:attr:`PolicyStore.model`, cached until
  :meth:`PolicyStore.release`). The rebuild sets the kept tensors exactly (no random init, the
  global RNG untouched), so the policy is the trained one. A full fine-tune keeps its policy: it is
  the only in-memory copy of the trained weights.
* **failed, or stopped before training** — nothing (:meth:`PolicyStore.drop`).

The trainer — optimizer, scheduler, reference copy, accelerate's lists — is let go by the run
(``ShapedDPOTrainer.release``); a failure's traceback keeps its text, not its frames' locals
(:func:`clear_frames`).

Example
-------
>>> run.wait(); run.model           # rebuilt from the adapter on first use    # doctest: +SKIP
>>> run.release()                   # drops it again; the adapter stays        # doctest: +SKIP
True
"""

from __future__ import annotations

import copy
import gc
import threading
import traceback
from typing import Any

from ..errors import ModelError

__all__ = ["PolicyStore", "clear_frames", "free_memory", "training_copy"]

# Hook dicts of a torch module: a training copy starts without any (see training_copy).
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


class PolicyStore:
    """The policy of one run: given, copied from ``base`` at start, kept as an adapter once trained.

    Parameters
    ----------
    name : str
        The run's name (for messages).
    model : torch.nn.Module, optional
        A policy to train as given (no copy).
    base : torch.nn.Module, optional
        The model to copy when the run starts, and to rebuild a LoRA policy on.
    """

    def __init__(self, name: str, model: Any = None, base: Any = None) -> None:
        if model is None and base is None:
            raise ModelError(f"Run {name!r} needs a model to train or a base model to copy.")
        self.name = name
        self.base = base
        self._model = model
        self._lock = threading.Lock()
        # A trained LoRA run's adapter (CPU tensors), its peft config and the policy's device.
        self.adapter: dict[str, Any] | None = None
        self._adapter_config: Any = None
        self._device: Any = None
        self.trained = False

    @property
    def model(self) -> Any:
        """The policy; a kept adapter is rebuilt into one here (once, until :meth:`release`)."""
        with self._lock:
            if self._model is None and self.adapter is not None:
                self._model = self._rebuild()
            return self._model

    @model.setter
    def model(self, value: Any) -> None:
        with self._lock:
            self._model = value

    @property
    def held(self) -> Any:
        """The policy in memory now, or ``None`` (never rebuilds)."""
        return self._model

    def load(self) -> Any:
        """The model to train: as given, or a copy of ``base`` taken now."""
        with self._lock:
            if self._model is None:
                self._model = training_copy(self.base)
            return self._model

    def keep(self, model: Any, lora: bool) -> None:
        """Training is over: a LoRA policy is reduced to its adapter; any other policy is kept."""
        self.trained = True
        if lora and self.base is not None and hasattr(model, "peft_config"):
            from peft import get_peft_model_state_dict

            state = get_peft_model_state_dict(model)
            adapter = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            config = copy.deepcopy(model.peft_config["default"])
            device = next(model.parameters()).device
            with self._lock:
                self.adapter, self._adapter_config, self._device = adapter, config, device
                self._model = None
        else:
            self.model = model

    def drop(self) -> None:
        """Nothing was trained (failure, or stopped before training): keep no model."""
        with self._lock:
            self._model = None

    def release(self) -> bool:
        """Drop a rebuilt LoRA policy (the adapter stays); ``False`` when there is none to drop."""
        with self._lock:
            if self.adapter is None or self._model is None:
                return False
            self._model = None
        free_memory()
        return True

    def _rebuild(self) -> Any:
        """A fresh copy of the base with the kept adapter set exactly (adapters made on meta, no init)."""
        from peft import get_peft_model, set_peft_model_state_dict

        model = get_peft_model(
            training_copy(self.base), copy.deepcopy(self._adapter_config), low_cpu_mem_usage=True
        )
        state = {k: v.clone() for k, v in self.adapter.items()}  # the kept tensors stay the run's
        loaded = set_peft_model_state_dict(model, state, low_cpu_mem_usage=True)
        missing = [n for n, p in model.named_parameters() if p.is_meta]
        if loaded.unexpected_keys or missing:
            raise ModelError(
                f"Run {self.name!r}: its adapter does not fit the session's model "
                f"(unexpected {list(loaded.unexpected_keys)[:3]}, missing {missing[:3]})."
            )
        return model.to(self._device).eval()


def training_copy(model: Any) -> Any:
    """A float32 deep copy of ``model`` without its forward and backward hooks.

    Runs copy the session's model on the training thread, while the notebook may be reading
    through it: the backbone's read hook (registered for one forward, it stops the pass at the read
    layer) must not land in the copy, and the hook dicts it changes must not be iterated meanwhile.
    The memo maps each hook dict to a new empty one, so deepcopy never reads them.
    """
    if model is None:
        raise ModelError("No base model to copy for training.")
    memo: dict[int, Any] = {}
    for module in model.modules():
        for attr in _HOOK_DICTS:
            hooks = module.__dict__.get(attr)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(model, memo).float()


def clear_frames(err: BaseException) -> None:
    """Clear the locals of every finished frame in ``err``'s tracebacks (and its causes')."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo += [e.__cause__, e.__context__]


def free_memory() -> None:
    """Collect what was let go (cycles through callbacks) and return cached GPU blocks."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
