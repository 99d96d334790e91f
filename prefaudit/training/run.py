"""``DPORun``: one shaped DPO run training in a background thread, observable and cancellable.

``start_run`` does everything that can fail fast on the calling thread — validate the config (the
run name is a name, never a path), resolve weights, split off the held-out pairs, shape the dataset,
plan the token window and the pairs drawn (``run.plan``, :mod:`prefaudit.training.plan`), collect
ablation directions, write ``run.json`` — and then trains in a daemon thread, so a notebook stays
usable. Runs queue on one lock: two runs never train at once (they would share two CPU cores and
trl's global seeding).

Whatever happens in the thread ends on the run: ``status`` becomes ``finished``, ``cancelled`` or
``failed``; a failure keeps the exception on ``run.exception`` and its traceback text on
``run.error`` (and in the panel) — nothing is lost in the thread.

Memory: a queued run holds no model — it copies the session's model when its turn comes. A run
that ends lets go of its trainer, optimizer and reference copy; a finished LoRA run keeps only its
adapter (on CPU) and rebuilds the policy on the session's model when ``run.model`` is first used
(``run.release()`` drops it again); a failed run, or one stopped before training, keeps no model.
``run.json`` names the process that owns the run: when that process has died (a kernel restart)
:func:`~prefaudit.training.files.read_run_record` and ``list_runs`` report it ``interrupted``
(:mod:`prefaudit.training.policy`, :mod:`prefaudit.training.files`).

Example
-------
>>> run = session.train(pa.DPORunConfig(intervention="margin", max_steps=30))  # doctest: +SKIP
>>> run                      # live panel: loss, reward margins, accuracy, time left, Stop  # doctest: +SKIP
>>> run.wait()                                                                 # doctest: +SKIP
'finished'
>>> run.history[["step", "loss", "rewards/margins"]].tail(3)                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .config import DPORunConfig
from .files import process_owner, write_run_record
from .plan import TrainingPlan
from .policy import PolicyStore, clear_frames, free_memory

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

__all__ = ["DONE", "STATUSES", "TRAIN_LOCK", "DPORun"]

STATUSES = ("queued", "preparing", "running", "finished", "cancelled", "failed")
DONE = ("finished", "cancelled", "failed")
#: One run trains at a time; a new run's config is checked outside it (training/launch.py).
TRAIN_LOCK = threading.Lock()


class DPORun:
    """A DPO run in the background. Create it with :func:`start_run` / ``session.train``.

    Attributes
    ----------
    name : str
    config : DPORunConfig
    shaped : ShapedPairs
        The training set and what the intervention did to it.
    weights : dict[str, float]
        The weights the run was shaped with (a copy; later slider moves do not change it).
    train_positions, heldout_positions : ndarray[int]
        Rows of ``session.data.df`` trained on (before filtering) and held out for verification.
    plan : TrainingPlan
        Per pair: trained, held out, dropped by length or not sampled, and the tokens the window
        keeps (``run.plan.summary()``, ``run.plan.table``); the run trains exactly this.
    status : str
        ``queued``, ``preparing`` (tokenising, reference log-probs), ``running``, ``finished``,
        ``cancelled`` or ``failed``.
    error : str or None
        Traceback text of the exception that ended the run.
    model : PreTrainedModel or PeftModel or None
        The policy (trained once the run is done); ``output_dir`` holds its saved copy. ``None``
        while queued, after a failure and when stopped before training. A done LoRA run keeps its
        adapter only and rebuilds this on first use (:meth:`release` drops it again).
    owner : dict
        The process that runs it (pid, host, start time), recorded in ``run.json``.
    trainer : ShapedDPOTrainer or None
        Set while the run prepares and trains; ``None`` once it ends (optimizer and reference go).
    window_dropped : list[int]
        ``pair_id`` of the pairs the trainer dropped for leaving no response token in the window.

    Example
    -------
    >>> run.cancel(); run.wait(); run.status      # doctest: +SKIP
    'cancelled'
    """

    def __init__(
        self,
        *,
        name: str,
        config: DPORunConfig,
        shaped: Any,
        model: Any = None,
        tokenizer: Any,
        output_dir: Path,
        train_positions: np.ndarray,
        heldout_positions: np.ndarray,
        ablation: tuple[np.ndarray, int] | None = None,
        callbacks: Sequence[Any] = (),
        source: dict[str, Any] | None = None,
        session: AuditState = None,
        plan: TrainingPlan | None = None,
        base: Any = None,
    ) -> None:
        """``base``: the model the run copies when it starts; ``model``: a policy to train as given."""
        self.name = name
        self.plan = plan
        self.session = session
        self.config = config
        self.shaped = shaped
        self.weights = dict(shaped.weights)
        self.policy = PolicyStore(name, model=model, base=base)
        self.owner = process_owner()
        self.tokenizer = tokenizer
        self.output_dir = Path(output_dir)
        self.train_positions = np.asarray(train_positions, dtype=np.int64)
        self.heldout_positions = np.asarray(heldout_positions, dtype=np.int64)
        self.ablation = ablation
        self.source = dict(source or {})
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.step = 0
        self.max_steps = int(config.max_steps)
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.verification: Any = None
        self.trainer: Any = None
        self.window_dropped: list[int] = []
        self.train_summary: dict[str, Any] = {}
        self._status = "queued"
        self._logs: list[dict[str, Any]] = []
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._observers: list[Callable[[dict[str, Any]], None]] = []
        self._callbacks = list(callbacks)
        self._thread: threading.Thread | None = None
        self._panel: Any = None
        self.observer_errors: list[str] = []

    # ------------------------------------------------------------------ public state
    @property
    def status(self) -> str:
        return self._status

    @property
    def model(self) -> Any:
        return self.policy.model

    @model.setter
    def model(self, value: Any) -> None:
        self.policy.model = value

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def history(self) -> pd.DataFrame:
        """Every logged metric, one row per log event (``step`` first)."""
        with self._lock:
            rows = list(self._logs)
        if not rows:
            return pd.DataFrame({"step": pd.Series(dtype="int64")})
        df = pd.DataFrame(rows)
        return df[["step", *[c for c in df.columns if c != "step"]]]

    @property
    def elapsed(self) -> float:
        """Seconds since training began (0 before)."""
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    @property
    def remaining(self) -> float | None:
        """Estimated seconds left (from the mean step time so far), ``None`` before the first step."""
        if self.done:
            return 0.0
        if self.step < 1 or self.started_at is None:
            return None
        return self.elapsed / self.step * max(0, self.max_steps - self.step)

    def latest(self) -> dict[str, Any]:
        """The last logged value of each metric."""
        out: dict[str, Any] = {}
        with self._lock:
            for row in self._logs:
                out.update(row)
        return out

    # ------------------------------------------------------------------ control
    def start(self) -> DPORun:
        if self._thread is not None:
            raise ConfigError(f"Run {self.name!r} was already started.")
        self._write_record()  # on the calling thread: an unwritable output_dir fails here, loudly
        self._thread = threading.Thread(target=self._main, name=f"prefaudit-dpo-{self.name}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop; training ends cleanly after the step in progress."""
        self._cancel.set()
        self._emit({"type": "cancel"})

    def wait(self, timeout: float | None = None, *, raise_on_error: bool = True) -> str:
        """Block until the run ends (or ``timeout`` seconds pass); return the status.

        A failed run raises ``RuntimeError`` carrying the training traceback unless
        ``raise_on_error=False``.
        """
        self._done.wait(timeout)
        if raise_on_error and self._status == "failed":
            raise RuntimeError(f"DPO run {self.name!r} failed:\n{self.error}") from self.exception
        return self._status

    def release(self) -> bool:
        """Drop the in-memory policy of a done LoRA run; ``run.model`` rebuilds it from the adapter.

        Returns whether a policy was dropped: a full fine-tune's policy is its only in-memory copy
        of the trained weights and is kept (load them from ``output_dir`` to save memory).
        """
        if not self.done:
            raise ConfigError(f"Run {self.name!r} is {self._status}; release it once it is done.")
        return self.policy.release()

    def observe(self, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``fn(event)`` on every event (from the training thread); returns an unsubscribe function."""
        with self._lock:
            self._observers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._observers:
                    self._observers.remove(fn)

        return unsubscribe

    def record(self) -> dict[str, Any]:
        """What the run was, JSON-able: config, weights, shaping summary, which pairs trained and status."""
        return {
            "name": self.name,
            "status": self._status,
            "config": self.config.to_dict(),
            "weights": dict(self.weights),
            "shaping": self.shaped.to_dict(),
            "train_positions": [int(x) for x in self.train_positions],
            "heldout_positions": [int(x) for x in self.heldout_positions],
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "steps": self.step,
            "elapsed_s": round(self.elapsed, 2),
            "error": self.error,
            "source": self.source,
            "owner": dict(self.owner),
        }

    # ------------------------------------------------------------------ display
    def panel(self) -> Any:
        """The live panel (built once; every display shows the same widget)."""
        if self._panel is None:
            from ..views.run_panel import RunPanel

            self._panel = RunPanel(self)
        return self._panel

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.panel()._repr_mimebundle_(include=include, exclude=exclude)

    def __repr__(self) -> str:
        loss = self.latest().get("loss")
        loss_s = f", loss {loss:.4f}" if isinstance(loss, float) else ""
        return f"DPORun({self.name!r}, {self.config.intervention}, {self._status}, step {self.step}/{self.max_steps}{loss_s})"

    # ------------------------------------------------------------------ events (training thread)
    def _emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            observers = list(self._observers)
        for fn in observers:
            try:
                fn(event)
            except Exception:  # a broken view must not stop training; keep what it said
                self.observer_errors.append(traceback.format_exc())

    def _set_status(self, status: str) -> None:
        self._status = status
        if status in ("preparing", "running"):  # the end is written by _main, after letting go
            self._write_record()
        self._emit({"type": "status", "status": status})

    def record_train_begin(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self.started_at = time.monotonic()
        self._emit({"type": "begin", "max_steps": max_steps})

    def record_step(self, step: int) -> None:
        self.step = step
        self._emit({"type": "step", "step": step})

    def record_log(self, step: int, logs: dict[str, Any]) -> None:
        row = {"step": step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        if "train_runtime" in row:  # the trainer's closing summary, not a training step
            self.train_summary = row
            return
        with self._lock:
            self._logs.append(row)
        self._emit({"type": "log", "step": step, "logs": row})

    def record_train_end(self, step: int) -> None:
        self.step = step

    # ------------------------------------------------------------------ the thread
    def _main(self) -> None:
        try:
            with TRAIN_LOCK:
                self._train()
        except BaseException as err:  # everything, even a KeyboardInterrupt, must reach run.error
            self.exception = err
            self.error = traceback.format_exc()
            # The text keeps the traceback; its frames' locals (trainer, optimizer, model) go.
            clear_frames(err)
            self._set_status("failed")
        finally:
            self.ended_at = time.monotonic() if self.started_at is not None else None
            self._let_go()
            try:
                self._write_record()
            except Exception as err:  # the outcome is on the run; say its file is stale (err names it)
                warnings.warn(f"Run {self.name!r}: run.json not updated: {err}", stacklevel=1)
            self._done.set()
            self._emit({"type": "end", "status": self._status})

    def _train(self) -> None:
        """Load, train, save (the body of the thread; its locals die with its frame)."""
        if self._cancel.is_set():
            self._set_status("cancelled")
            return
        self._set_status("preparing")
        self.policy.load()  # now, not when queued: a queued run holds no copy of the model
        trainer = self.trainer = self._build_trainer()
        self.window_dropped = list(trainer.window_dropped)
        if self._cancel.is_set():
            self._set_status("cancelled")
            return
        self._set_status("running")
        trainer.train()
        trainer.remove_ablation()
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.eval()
        if self.config.save_model:
            trainer.save_model(str(self.output_dir))
        self.policy.keep(model, lora=self.config.lora)
        self._set_status("cancelled" if self._cancel.is_set() else "finished")

    def _let_go(self) -> None:
        """Drop the trainer (optimizer, reference copy); without a trained policy, the model too."""
        trainer, self.trainer = self.trainer, None
        if trainer is not None:
            try:
                trainer.release()
            except Exception as err:  # the references below go anyway; say why the hooks may stay
                warnings.warn(f"Run {self.name!r}: releasing its trainer failed: {err}", stacklevel=1)
        if not self.policy.trained:  # failed, or stopped before training: nothing to keep
            self.policy.drop()
        del trainer
        free_memory()

    def _build_trainer(self) -> Any:
        import torch
        from transformers.trainer_callback import PrinterCallback

        from .callbacks import RunProgressCallback
        from .trainer import ShapedDPOTrainer

        cfg = self.config
        n_train = len(self.shaped.dataset)
        args = cfg.dpo_config(self.output_dir, n_train=n_train)
        ref_model = None
        if not cfg.lora and not cfg.precompute_for(n_train):
            # The policy exists only in memory: trl would reload the reference from _name_or_path.
            ref_model = copy.deepcopy(self.policy.held).eval()
        directions, layer = (None, None)
        if self.ablation is not None:
            directions, layer = torch.as_tensor(self.ablation[0], dtype=torch.float32), int(self.ablation[1])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(deprecated|tokenized prompt is not a prefix).*")
            trainer = ShapedDPOTrainer(
                self.policy.held,
                ref_model=ref_model,
                args=args,
                train_dataset=self.shaped.dataset,
                processing_class=self.tokenizer,
                peft_config=cfg.peft_config(),
                callbacks=[RunProgressCallback(self), *self._callbacks],
                ablation_directions=directions,
                ablation_layer=layer,
                window=self.plan.window if self.plan is not None else cfg.window(),
            )
        if self.plan is not None:  # the run trains the plan, or it fails here, loudly
            self.plan.check_dataset(trainer.train_dataset)
        # With tqdm disabled, Trainer prints every log dict; the panel and run.history show them instead.
        trainer.remove_callback(PrinterCallback)
        return trainer

    def _write_record(self) -> None:
        write_run_record(self.output_dir / "run.json", self.record())
