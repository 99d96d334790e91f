"""``RunPanel``: the live view of a :class:`~prefaudit.training.run.DPORun`.

Shows status, the training plan's counts line (``run.plan.summary()``: pairs trained, held out,
dropped by length, not sampled, responses and prompts cut), progress (step, elapsed, estimated
time left), the latest loss, reward margin and accuracy (unshaped, plus the shaped margin when a margin is trained), a sparkline of loss and
reward margin, and a Stop button. It observes the run (events arrive from the training thread)
and sends one intent up: ``run.cancel()``. A failed run shows its traceback here and on
``run.error``.

Example
-------
>>> run = session.train(max_steps=20)   # doctest: +SKIP
>>> run                                 # displays RunPanel(run)   # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from .base import SessionView
from .figures import fmt_seconds, sparkline_svg

_COLORS = {
    "queued": "#777",
    "preparing": "#b58900",
    "running": "#268bd2",
    "finished": "#2aa198",
    "cancelled": "#cb4b16",
    "failed": "#dc322f",
}
_METRICS = (
    ("loss", "loss", "{:.4f}"),
    ("rewards/margins", "reward margin", "{:+.4f}"),
    ("rewards/accuracies", "accuracy", "{:.0%}"),
    ("rewards/shaped_margins", "shaped margin β·h − m", "{:+.4f}"),
    ("shaping/margin", "mean m (batch)", "{:+.3f}"),
)


class RunPanel(SessionView):
    """Live panel of one DPO run: progress, metrics, sparkline, Stop.

    Parameters
    ----------
    run : DPORun
    """

    css_class = "prefaudit-run-panel"

    def __init__(self, run: Any, **kwargs: Any) -> None:
        super().__init__(run.session, **kwargs)
        self.run = run
        self.title = w.HTML()
        self.shaping = w.HTML(f"<small>{html.escape(run.shaped.summary())}</small>")
        plan = getattr(run, "plan", None)
        self.plan = w.HTML(f"<small>{html.escape(plan.summary())}</small>" if plan is not None else "")
        self.plan.add_class("pa-run-plan")
        self.progress = w.IntProgress(
            value=0, min=0, max=max(1, run.max_steps), layout=w.Layout(width="320px")
        )
        self.timing = w.HTML()
        self.metrics = w.HTML()
        self.chart = w.HTML()
        self.error = w.HTML()
        self.stop = w.Button(
            description="Stop", icon="stop", button_style="warning", tooltip="stop after the current step"
        )
        self.stop.add_class("pa-run-stop")
        self.stop.on_click(self.guard(lambda _b: self.run.cancel()))
        self.set_body(
            self.title,
            self.shaping,
            self.plan,
            w.HBox([self.progress, self.timing, self.stop]),
            w.HBox([self.metrics, self.chart]),
            self.error,
        )
        self._unsubscribe = run.observe(self.guard(self._on_event))
        self.redraw()

    def _on_event(self, event: dict[str, Any]) -> None:
        # Metrics change on log events; the rest on any event. Cheap enough to redraw everything.
        self.redraw(metrics=event.get("type") in ("log", "end", "status"))

    def redraw(self, metrics: bool = True) -> None:
        run = self.run
        color = _COLORS.get(run.status, "#777")
        self.title.value = (
            f"<b>{html.escape(run.name)}</b> · {html.escape(run.config.intervention)} · "
            f'<span style="color:{color};font-weight:600">{html.escape(run.status)}</span>'
            + (" · stopping after this step" if run.cancel_requested and not run.done else "")
        )
        self.progress.max = max(1, run.max_steps)
        self.progress.value = min(run.step, self.progress.max)
        self.timing.value = (
            f"&nbsp;step {run.step}/{run.max_steps} · {fmt_seconds(run.elapsed)} elapsed · "
            f"{fmt_seconds(run.remaining)} left&nbsp;"
        )
        self.stop.disabled = run.done or run.cancel_requested
        if metrics:
            latest = run.latest()
            rows = "".join(
                f"<tr><td>{label}</td><td style='text-align:right'>{fmt.format(latest[key])}</td></tr>"
                for key, label, fmt in _METRICS
                if isinstance(latest.get(key), (int, float))
                and (key != "rewards/shaped_margins" or run.shaped.margin_in_loss)
                and (key != "shaping/margin" or run.shaped.margin_in_loss)
            )
            self.metrics.value = (
                f"<table class='pa-run-metrics'>{rows}</table>" if rows else "<i>no metrics yet</i>"
            )
            hist = run.history
            series = {k: hist[k].tolist() for k in ("loss", "rewards/margins") if k in hist.columns}
            self.chart.value = sparkline_svg(series) if series else ""
        if run.status == "failed" and run.error:
            self.error.value = (
                f"<div class='pa-error'><b>training failed</b>: {html.escape(str(run.exception))}"
                f"<details open><summary>traceback</summary><pre>{html.escape(run.error)}</pre></details></div>"
            )

    def close(self) -> None:
        unsubscribe = getattr(self, "_unsubscribe", None)  # absent when __init__ failed early
        if unsubscribe is not None:
            unsubscribe()
        super().close()
