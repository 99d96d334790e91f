"""Shaped DPO training: a config, a plan, a background run with a live panel, and a cluster export.

``trl`` is imported only when a run starts (``from trl import DPOTrainer`` costs ~6 s), so
``import prefaudit.training`` stays fast.

Example
-------
>>> import prefaudit as pa
>>> run = session.train(pa.DPORunConfig(intervention="margin", max_steps=30))  # doctest: +SKIP
>>> run.wait()                                                                 # doctest: +SKIP
'finished'
"""

from __future__ import annotations

from .config import DPORunConfig
from .files import list_runs, read_run_record
from .launch import start_run
from .plan import TrainingPlan, plan_training
from .run import DPORun

__all__ = [
    "DPORun",
    "DPORunConfig",
    "TrainingPlan",
    "list_runs",
    "plan_training",
    "read_run_record",
    "start_run",
]
