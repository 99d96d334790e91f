"""Export a shaped DPO run for ``accelerate launch`` on many GPUs or nodes.

``export_training(session, dir)`` writes::

    dir/
      train.jsonl               the shaped pairs (prompt, chosen, rejected, pair_id, margin, weight)
      ablation.npy              directions to ablate (intervention="ablate" only)
      config.json               model, trl DPOConfig arguments, LoRA settings, ablation, shaping record
      accelerate_config.yaml    a multi-GPU starting point (edit num_processes / machines)
      train_dpo.py              the training script
      shaped_trainer.py         verbatim copy of prefaudit/training/trainer.py
      README.md                 how to launch it

**Self-contained, by design.** ``shaped_trainer.py`` is a byte-for-byte copy of the module the
notebook trains with (it imports only torch, transformers and trl — no prefaudit, no sae-lens), so
the cluster needs ``trl``, ``peft`` and ``accelerate`` only, and runs the very code the fast tests
check against the hand-written loss — not a re-implementation that could drift.

Example
-------
>>> path = session.export_training("shaped-run", intervention="margin", max_steps=500)  # doctest: +SKIP
>>> # accelerate launch --config_file shaped-run/accelerate_config.yaml shaped-run/train_dpo.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..interventions import export_jsonl
from .run import prepare_run

_SCRIPT = '''#!/usr/bin/env python
"""Shaped DPO exported by prefaudit: trl DPOTrainer with the audit's shaping (see README.md).

    accelerate launch --config_file accelerate_config.yaml train_dpo.py [--model PATH] [--max_steps N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig

from shaped_trainer import ShapedDPOTrainer

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(HERE / "config.json"))
    parser.add_argument("--model", help="model directory or hub name (default: config.json's)")
    parser.add_argument("--output_dir", help="where the trained adapter/model goes")
    parser.add_argument("--max_steps", type=int)
    parser.add_argument("--per_device_train_batch_size", type=int)
    parser.add_argument("--learning_rate", type=float)
    args = parser.parse_args()

    cfg = json.loads(Path(args.config).read_text())
    dpo = dict(cfg["dpo"])
    for key in ("output_dir", "max_steps", "per_device_train_batch_size", "learning_rate"):
        if getattr(args, key) is not None:
            dpo[key] = getattr(args, key)
    dpo.setdefault("use_cpu", not torch.cuda.is_available())
    model_path = args.model or cfg["model"]
    tokenizer = AutoTokenizer.from_pretrained(cfg.get("tokenizer") or model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    data = load_dataset("json", data_files=str(HERE / cfg["data"]), split="train")

    peft_config = None
    if cfg.get("lora"):
        from peft import LoraConfig

        peft_config = LoraConfig(**cfg["lora"])
    directions, layer = None, None
    if cfg.get("ablation"):
        directions = torch.from_numpy(np.load(HERE / cfg["ablation"]["file"])).float()
        layer = int(cfg["ablation"]["layer"])

    # With a full fine-tune and no precomputed reference, trl loads the reference from model_path.
    trainer = ShapedDPOTrainer(
        model,
        args=DPOConfig(**dpo),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
        ablation_directions=directions,
        ablation_layer=layer,
    )
    trainer.train()
    trainer.remove_ablation()  # CAFT: the trained policy runs without the ablation
    trainer.save_model(dpo["output_dir"])
    if trainer.accelerator.is_main_process:
        history = [h for h in trainer.state.log_history if "loss" in h]
        (Path(dpo["output_dir"]) / "history.json").write_text(json.dumps(history, indent=1))


if __name__ == "__main__":
    main()
'''

_ACCELERATE = """# accelerate config for train_dpo.py: one machine, 8 GPUs. Edit num_processes (GPUs in total),
# num_machines / machine_rank / main_process_ip for several nodes. On CPU (for a smoke test):
#   accelerate launch --cpu --num_processes 2 train_dpo.py --max_steps 2
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
machine_rank: 0
num_processes: 8
gpu_ids: all
mixed_precision: bf16
main_training_function: main
same_network: true
rdzv_backend: static
use_cpu: false
"""

_README = """# Shaped DPO run exported by prefaudit

{summary}

Launch (one node, 8 GPUs as in accelerate_config.yaml):

    accelerate launch --config_file accelerate_config.yaml train_dpo.py

Several nodes: set `num_machines`, `num_processes` (all GPUs), `machine_rank`, `main_process_ip`
in accelerate_config.yaml (or pass `--num_machines/--machine_rank/--main_process_ip`) and run the
same command on every node. Smoke test on a CPU:

    accelerate launch --cpu --num_processes 2 train_dpo.py --max_steps 2 --output_dir /tmp/smoke

Needs `trl`, `peft`, `accelerate`, `datasets` (not prefaudit). `shaped_trainer.py` is a verbatim
copy of `prefaudit/training/trainer.py`: the margin mᵢ enters trl's sigmoid loss as
−log σ(β·hᵢ − mᵢ) through the reference log-probs (see its docstring). `config.json` records the
trl `DPOConfig` arguments, the LoRA settings, the model and the shaping (weights, dropped/flipped
pairs). Per-device batch size × processes × gradient accumulation is the global batch: scale
`max_steps` or the learning rate when you change it.
"""


def _model_path(session: Any, directory: Path) -> tuple[str, str | None]:
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
    if session._tokenizer is not None:
        tokenizer = str(directory / "tokenizer")
        session._tokenizer.save_pretrained(tokenizer)
    return path, tokenizer


def export_training(session: Any, directory: Path, config: Any = None, **overrides: Any) -> Path:
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
        lora = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                "target_modules": targets if isinstance(targets, str) else list(targets), "task_type": "CAUSAL_LM"}  # fmt: skip
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
    }
    (directory / "config.json").write_text(json.dumps(record, indent=2, default=str))
    (directory / "accelerate_config.yaml").write_text(_ACCELERATE)
    (directory / "train_dpo.py").write_text(_SCRIPT)
    shutil.copyfile(Path(__file__).with_name("trainer.py"), directory / "shaped_trainer.py")
    (directory / "README.md").write_text(_README.format(summary=prep.shaped.summary()))
    return directory
