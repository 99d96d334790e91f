"""``RunProgressCallback``: feeds a :class:`~prefaudit.training.run.DPORun` from inside trl's loop.

Shaped like trl's ``RichProgressCallback``: it holds no widgets, only forwards what the trainer
reports (``on_train_begin``, ``on_step_end``, ``on_log``, ``on_train_end``) to the run, which keeps
the history and notifies its observers (the live panel). It is also where cancellation takes
effect: when the run was asked to stop, ``on_step_end`` sets ``control.should_training_stop`` so
the trainer ends cleanly after the step in progress.

Example
-------
>>> cb = RunProgressCallback(run)                                  # doctest: +SKIP
>>> ShapedDPOTrainer(model, args=cfg, callbacks=[cb], ...).train()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class RunProgressCallback(TrainerCallback):
    """Forward trainer events to ``run`` (its ``record_*`` methods) and honour ``run.cancel()``."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.run.record_train_begin(int(state.max_steps))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run.cancel_requested:
            control.should_training_stop = True
        if state.is_world_process_zero:
            self.run.record_step(int(state.global_step))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero and logs:
            self.run.record_log(int(state.global_step), dict(logs))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.run.record_train_end(int(state.global_step))
