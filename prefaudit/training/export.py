"""Export a shaped DPO run for ``accelerate launch`` on many GPUs or nodes.

``export_training(session, dir)`` writes::

    dir/
      train.jsonl               the shaped pairs (prompt, chosen, rejected, pair_id, margin, weight)
      ablation.npy              directions to ablate (intervention="ablate" only)
      config.json               model, trl DPOConfig arguments, LoRA settings, ablation, shaping record,
                                token window and the training plan's counts
      accelerate_config.yaml    a multi-GPU starting point (edit num_processes / machines)
      train_dpo.py              the training script
      shaped_trainer.py         verbatim copy of prefaudit/training/trainer.py
      shaped_tokens.py          verbatim copy of prefaudit/training/tokens.py (the window cut it imports)
      README.md                 how to launch it

``train_dpo.py``, ``README.md`` (its ``{summary}`` filled in) and ``accelerate_config.yaml`` are
the files in ``prefaudit/training/templates/`` (``*.tmpl``), read as package data.

**Self-contained, by design.** ``shaped_trainer.py`` is a byte-for-byte copy of the module the
notebook trains with (it imports only torch, transformers and trl — no prefaudit, no sae-lens), so
the cluster needs ``trl``, ``peft`` and ``accelerate`` only, and runs the very code the fast tests
check against the hand-written loss — not a re-implementation that could drift. The trainer cuts
pairs to the token window with ``window_cut`` from ``shaped_tokens.py`` (a byte-for-byte copy of
``prefaudit/training/tokens.py``, which imports nothing from prefaudit), with ``config.json``'s ``window``; ``plan`` there records what the notebook planned (for
one process: on N processes every step draws N times as many pairs).

Example
-------
>>> path = session.export_training("shaped-run", intervention="margin", max_steps=500)  # doctest: +SKIP
>>> # accelerate launch --config_file shaped-run/accelerate_config.yaml shaped-run/train_dpo.py
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from .files import export_jsonl
from .launch import prepare_run

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

_TEMPLATES = "templates"


def _template(name: str) -> str:
    """The text of ``prefaudit/training/templates/<name>`` (read as package data, so it works from a wheel)."""
    return (resources.files("prefaudit.training") / _TEMPLATES / name).read_text(encoding="utf-8")


def _model_path(session: AuditState, directory: Path) -> tuple[str, str | None]:
    """(model path or hub name, tokenizer path or None) that the script can load."""
    spec = session.config["model"]
    tokenizer = None
    if spec is None:
        from ..default_model import default_model_dir

        path = str(default_model_dir())
    elif isinstance(spec, str):
        path = str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().is_dir() else spec
    else:
        # A model that exists only in memory: save it with the export.
        path = str(directory / "model")
        session.backbone.model.save_pretrained(path)
        session.backbone.tokenizer.save_pretrained(path)
        return path, None
    # Only a tokenizer the caller passed to the session (not the model's own) travels with the export.
    if session.tokenizer is not None:
        tokenizer = str(directory / "tokenizer")
        session.tokenizer.save_pretrained(tokenizer)
    return path, tokenizer


def export_training(session: AuditState, directory: Path, config: Any = None, **overrides: Any) -> Path:
    """Write the shaped dataset, ``train_dpo.py``, ``config.json`` and an accelerate config to ``directory``.

    Parameters
    ----------
    session : AuditSession
    directory : Path
        Created if missing; existing export files in it are overwritten.
    config : DPORunConfig or dict, optional
        As for ``session.train``; keyword ``overrides`` replace its fields.

    Returns
    -------
    Path of ``directory``.

    Example
    -------
    >>> export_training(session, Path("out"), intervention="reweight", max_steps=1000)  # doctest: +SKIP
    PosixPath('out')
    """
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory.")
    prep = prepare_run(session, config, **overrides)
    cfg = prep.config
    directory.mkdir(parents=True, exist_ok=True)
    export_jsonl(prep.shaped.dataset, directory / "train.jsonl")
    ablation = None
    if prep.ablation is not None:
        np.save(directory / "ablation.npy", prep.ablation[0].astype(np.float32))
        ablation = {
            "file": "ablation.npy",
            "layer": int(prep.ablation[1]),
            "features": prep.shaped.ablate_features,
        }
    model, tokenizer = _model_path(session, directory)
    lora = None
    if cfg.lora:
        targets = cfg.lora_target_modules
        lora = {
            "r": cfg.lora_r,
            "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout,
            "target_modules": targets if isinstance(targets, str) else list(targets),
            "task_type": "CAUSAL_LM",
        }
    record = {
        "model": model,
        "tokenizer": tokenizer,
        "data": "train.jsonl",
        "dpo": cfg.dpo_kwargs_dict(str(directory / "output"), n_train=len(prep.shaped.dataset)),
        "lora": lora,
        "ablation": ablation,
        "run_config": cfg.to_dict(),
        "shaping": prep.shaped.to_dict(),
        "train_positions": [int(x) for x in prep.train_positions],
        "heldout_positions": [int(x) for x in prep.heldout_positions],
        "window": prep.plan.window,
        "plan": prep.plan.to_dict(pairs=False),
    }
    (directory / "config.json").write_text(json.dumps(record, indent=2, default=str))
    (directory / "accelerate_config.yaml").write_text(_template("accelerate_config.yaml.tmpl"))
    (directory / "train_dpo.py").write_text(_template("train_dpo.py.tmpl"))
    shutil.copyfile(Path(__file__).with_name("trainer.py"), directory / "shaped_trainer.py")
    shutil.copyfile(Path(__file__).with_name("tokens.py"), directory / "shaped_tokens.py")
    (directory / "README.md").write_text(
        _template("README.md.tmpl").format(summary=prep.shaped.summary(), plan=prep.plan.summary())
    )
    return directory
