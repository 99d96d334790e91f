"""``session.export_training``: files, a standalone trainer, and a real ``accelerate launch`` on 2 CPU processes."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import prefaudit as pa

FILES = {
    "train.jsonl",
    "config.json",
    "accelerate_config.yaml",
    "train_dpo.py",
    "shaped_trainer.py",
    "README.md",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_export_writes_dataset_config_script_and_a_verbatim_trainer(tiny_session, tmp_path):
    tiny_session.set_weight("flattery", -2.0)
    out = tiny_session.export_training(tmp_path / "export", intervention="margin", max_steps=5, holdout=0.25)
    assert {p.name for p in out.iterdir()} >= FILES
    cfg = json.loads((out / "config.json").read_text())
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 30 == len(cfg["train_positions"]) and len(cfg["heldout_positions"]) == 10
    assert np.allclose(
        [r["margin"] for r in rows],
        np.asarray(tiny_session.shaping.preview().margins)[cfg["train_positions"]],
    )
    assert cfg["dpo"]["max_steps"] == 5 and cfg["dpo"]["loss_type"] == ["sigmoid"] and cfg["lora"]["r"] == 16
    assert cfg["shaping"]["weights"] == {"concept:flattery": -2.0}
    assert Path(cfg["model"]).is_dir()
    src = Path(pa.__file__).parent / "training" / "trainer.py"
    assert (out / "shaped_trainer.py").read_text() == src.read_text()
    # The copy needs trl, not prefaudit (nor sae-lens): the cluster installs only the training stack.
    # shaped_tokens is the verbatim copy of prefaudit/training/tokens.py (the window cut) written beside it.
    assert _imports(out / "shaped_trainer.py") <= {
        "__future__",
        "contextlib",
        "collections",
        "typing",
        "torch",
        "trl",
        "shaped_tokens",
    }
    tokens_src = Path(pa.__file__).parent / "training" / "tokens.py"
    assert (out / "shaped_tokens.py").read_text() == tokens_src.read_text()
    assert _imports(out / "shaped_tokens.py") <= {"__future__", "json", "collections", "typing", "trl"}
    assert "prefaudit" not in _imports(out / "train_dpo.py")
    assert "MULTI_GPU" in (out / "accelerate_config.yaml").read_text()
    # README.md is the package-data template (prefaudit/training/templates) with the summary filled in.
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Shaped DPO run exported by prefaudit\n\nmargin: 30 pairs")


def test_export_ablation_writes_directions(tiny_session, tmp_path):
    tiny_session.encode(progress=False)
    out = tiny_session.export_training(tmp_path / "abl", intervention="ablate", weights={"sae:7": -1.0})
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["ablation"]["layer"] == 2 and cfg["ablation"]["features"] == ["sae:7"]
    d = np.load(out / cfg["ablation"]["file"])
    assert np.allclose(d, tiny_session.sae.sae.W_dec.detach().numpy()[[7]])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_exported_script_runs_on_two_cpu_processes(tiny_session, tmp_path):
    """Two gloo processes, 2 steps of the tiny model: 15 s on a quiet machine, 70 s on a busy one."""
    tiny_session.set_weight("flattery", -2.0)
    out = tiny_session.export_training(
        tmp_path / "export",
        intervention="reweight",
        max_steps=2,
        batch_size=2,
        max_length=96,
        learning_rate=1e-2,
        lora_r=4,
    )
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless mpirun is present;
    # torchrun starts two gloo ranks (what accelerate launch runs on a multi-GPU node).
    torchrun = Path(sys.executable).with_name("torchrun")
    result_dir = tmp_path / "trained"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_CACHE": str(tmp_path / "hf"),
    }
    proc = subprocess.run(
        [
            str(torchrun),
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),  # parallel test runs must not collide
            str(out / "train_dpo.py"),
            "--output_dir",
            str(result_dir),
        ],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    history = json.loads((result_dir / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in history)
    assert json.loads((result_dir / "run_info.json").read_text())["num_processes"] == 2
    assert (result_dir / "adapter_config.json").is_file() and (
        result_dir / "adapter_model.safetensors"
    ).is_file()
