"""Faults of training runs: names that are paths, memory kept after runs, queued copies, dead owners.

Tiny model, a few steps; every case failed on the code before issue 21 (names escaped ``runs/``;
finished runs kept trainer, reference and optimizer; queued runs held a model copy; a run whose
kernel died said "preparing" forever).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import threading
import weakref

import pytest
import torch

import prefaudit as pa
from prefaudit.training.files import (
    INTERRUPTED,
    RUN_NAME_MAX_BYTES,
    check_run_name,
    list_runs,
    process_owner,
    read_run_record,
    run_folder,
    write_run_record,
)
from prefaudit.training.policy import training_copy
from prefaudit.training.run import DPORun

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(tmp_path, **kw):
    small = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "lora_r": 4, "max_length": 96}
    return pa.DPORunConfig(**{**small, "output_dir": str(tmp_path / "run"), **kw})


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------- run names
BAD_NAMES = {
    "parent escape": "../../../x",
    "absolute": "/tmp/x",
    "separator": "a/b",
    "backslash": "a\\b",
    "empty": "",
    "blank": "   ",
    "dot": ".",
    "dotdot": "..",
    "NUL": "a\x00b",
    "newline": "a\nb",
    "over-long": "x" * (RUN_NAME_MAX_BYTES + 1),
    "lone surrogate": "run\ud800",
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_a_run_name_that_is_not_a_name_is_refused_naming_field_and_value(name):
    with pytest.raises(ValueError, match=r"^name=") as err:
        pa.DPORunConfig(name=name)
    assert repr(name) in str(err.value)


def test_a_path_as_run_name_writes_nothing_anywhere(tiny_session, tmp_path, monkeypatch):
    cache = tmp_path / "a" / "b" / "cache"
    cache.mkdir(parents=True)
    monkeypatch.setenv("PREFAUDIT_CACHE", str(cache))
    for name in ("../../../x", "../../../../x", str(tmp_path / "abs")):
        with pytest.raises(pa.ConfigError, match="is not a run name"):
            tiny_session.train(name=name, max_steps=1)
    assert _files(tmp_path) == ["a", "a/b", "a/b/cache"]
    assert tiny_session.runs == []


def test_good_names_pass_and_the_run_folder_stays_inside_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFAUDIT_CACHE", str(tmp_path))
    for name in ("margin-β0.1", "run 1", "a.b_c", "é" * 100):
        assert check_run_name(name) == name
        folder = pa.DPORunConfig(name=name).default_output_dir(f"20250101-000000-{name}")
        assert folder.parent == tmp_path / "runs"
    runs, outside = tmp_path / "runs", tmp_path / "elsewhere"
    runs.mkdir(exist_ok=True)
    outside.mkdir()
    (runs / "link").symlink_to(outside)
    with pytest.raises(pa.ConfigError, match="outside"):
        run_folder(runs, "link")
    with pytest.raises(pa.ConfigError, match="output_dir"):
        pa.DPORunConfig(output_dir="runs/a\x00b")


def test_two_runs_of_one_name_in_one_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFAUDIT_CACHE", str(tmp_path))
    config = pa.DPORunConfig(name="margin-1")
    first, second = (config.default_output_dir("20250101-000000-margin-1") for _ in range(2))
    assert first.is_dir() and second.is_dir() and first != second
    assert second.name == "20250101-000000-margin-1-2"


# ---------------------------------------------------------------------- memory after runs
def _spy(monkeypatch, refs):
    """Weak references to what a run's trainer holds, taken as it is built."""
    build = DPORun._build_trainer

    def spy(self):
        trainer = build(self)
        refs["trainer"] = weakref.ref(trainer)
        refs["policy"] = weakref.ref(trainer.model)
        if trainer.ref_model is not None:
            refs["reference"] = weakref.ref(trainer.ref_model)
        return trainer

    monkeypatch.setattr(DPORun, "_build_trainer", spy)


def _grab(refs, fail=False):
    from transformers import TrainerCallback

    class Grab(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kw):
            refs["optimizer"] = weakref.ref(optimizer)

        def on_step_end(self, args, state, control, **kw):
            if fail:
                raise RuntimeError(f"boom at step {state.global_step}")

        def on_train_end(self, args, state, control, model=None, **kw):
            refs["lora"] = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}

    return Grab()


def _dead(refs, *names):
    gc.collect()
    return {n: refs[n]() is None for n in names}


def test_a_finished_lora_run_keeps_its_adapter_not_trainer_optimizer_or_policy(
    tiny_session, tmp_path, monkeypatch
):
    from prefaudit.verify.rewards import pair_rewards

    refs = {}
    _spy(monkeypatch, refs)
    run = tiny_session.train(_cfg(tmp_path, intervention="none", holdout=6), callbacks=[_grab(refs)])
    assert run.wait(300) == "finished", run.error
    assert run.trainer is None and run.policy.held is None
    assert _dead(refs, "trainer", "optimizer", "policy") == {
        "trainer": True,
        "optimizer": True,
        "policy": True,
    }
    assert len(run.history) == 2 and (run.output_dir / "adapter_model.safetensors").is_file()

    # The trained policy comes back exactly, without touching the global RNG, and is cached.
    rng = torch.get_rng_state()
    policy = run.model
    assert torch.equal(torch.get_rng_state(), rng) and run.model is policy
    rebuilt = {k: v for k, v in policy.state_dict().items() if "lora_" in k}
    assert rebuilt.keys() == refs["lora"].keys() and any(v.abs().sum() > 0 for v in rebuilt.values())
    assert all(torch.equal(rebuilt[k], refs["lora"][k]) for k in rebuilt)
    rewards = pair_rewards(tiny_session, run)
    assert len(rewards) == 6

    held = weakref.ref(policy)
    del policy
    assert run.release() is True and _dead({"p": held}, "p") == {"p": True}
    assert run.release() is False  # nothing left to drop; the adapter stays
    again = pair_rewards(tiny_session, run)
    assert again[["reward_chosen", "reward_rejected"]].equals(rewards[["reward_chosen", "reward_rejected"]])


def test_a_full_fine_tune_lets_go_of_its_reference_copy_and_optimizer(tiny_session, tmp_path, monkeypatch):
    refs = {}
    _spy(monkeypatch, refs)
    full = {"lora": False, "precompute_ref_log_probs": False, "learning_rate": 1e-3, "save_model": False}
    cfg = _cfg(tmp_path, intervention="none", **full)
    run = tiny_session.train(cfg, callbacks=[_grab(refs)])
    assert run.wait(300) == "finished", run.error
    assert _dead(refs, "trainer", "reference", "optimizer") == {
        "trainer": True,
        "reference": True,
        "optimizer": True,
    }
    # The policy is the only copy of the trained weights: kept, trained, and without training hooks.
    assert refs["policy"]() is run.model and run.release() is False
    assert not any(m._forward_hooks for m in run.model.modules())
    base = tiny_session.backbone.model.state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in run.model.state_dict().items() if k in base)


def test_a_failed_run_keeps_its_error_text_not_its_trainer_or_model(tiny_session, tmp_path, monkeypatch):
    refs = {}
    _spy(monkeypatch, refs)
    run = tiny_session.train(_cfg(tmp_path, intervention="none"), callbacks=[_grab(refs, fail=True)])
    assert run.wait(300, raise_on_error=False) == "failed"
    assert "boom at step 1" in run.error and isinstance(run.exception, RuntimeError)
    assert _dead(refs, "trainer", "optimizer", "policy") == {
        "trainer": True,
        "optimizer": True,
        "policy": True,
    }
    assert run.model is None and run.trainer is None
    assert read_run_record(run.output_dir)["status"] == "failed"


def test_a_queued_run_holds_no_model_until_it_starts(tiny_session, tmp_path):
    from transformers import TrainerCallback

    entered, gate = threading.Event(), threading.Event()
    seen = {}

    class Hold(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            entered.set()
            gate.wait(120)

    first = tiny_session.train(_cfg(tmp_path / "a", intervention="none"), callbacks=[Hold()])
    second = tiny_session.train(_cfg(tmp_path / "b", intervention="none", max_steps=1))
    try:
        assert entered.wait(120), first.error
        seen["first"] = read_run_record(first.output_dir)
        seen["second"] = (second.status, second.policy.held, second.model, read_run_record(second.output_dir))
    finally:
        gate.set()
    assert first.wait(300) == "finished", first.error
    assert second.wait(300) == "finished", second.error
    status, held, model, record = seen["second"]
    assert (status, held, model, record["status"]) == ("queued", None, None, "queued")
    # A live run reads as what it is, owned by this process.
    assert seen["first"]["status"] == "running" and seen["first"]["owner"]["pid"] == os.getpid()
    assert second.model is not None and second.policy.trained


def test_the_training_copy_leaves_hooks_behind(tiny_session):
    model = tiny_session.backbone.model
    layer = tiny_session.backbone._layers[0]

    def stop(*_a):
        raise RuntimeError("the notebook's read hook ran in the copy")

    handle = layer.register_forward_hook(stop)
    try:
        copied = training_copy(model)
        assert layer._forward_hooks  # the original keeps the hook its reader registered
    finally:
        handle.remove()
    assert copied.dtype == torch.float32
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():  # the same weights: in the session's dtype, the same logits
        assert torch.equal(copied.to(model.dtype)(ids).logits, model(ids).logits)


# ---------------------------------------------------------------------- interrupted runs
def _dead_pid():
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


def _record(tmp_path, name, status, owner):
    record = {"name": name, "status": status, "owner": owner, "steps": 0, "error": None}
    return write_run_record(tmp_path / name / "run.json", record)


def test_a_run_whose_process_died_reads_interrupted_and_is_rewritten(tmp_path):
    live = process_owner()
    dead = {**live, "pid": _dead_pid()}
    reused = {**live, "process_started": live["process_started"] - 1000}  # this pid, another process
    _record(tmp_path, "dead", "preparing", dead)
    _record(tmp_path, "reused", "running", reused)
    _record(tmp_path, "live", "running", live)
    _record(tmp_path, "remote", "running", {**dead, "host": socket.gethostname() + "-elsewhere"})
    _record(tmp_path, "done", "finished", dead)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "run.json").write_text('{"name": "cut", "sta')

    rec = read_run_record(tmp_path / "dead")
    assert rec["status"] == INTERRUPTED and rec["interrupted"]["was"] == "preparing"
    assert f"pid {dead['pid']}" in rec["error"]
    assert json.loads((tmp_path / "dead" / "run.json").read_text())["status"] == INTERRUPTED
    assert read_run_record(tmp_path / "reused" / "run.json")["status"] == INTERRUPTED
    with pytest.raises(pa.ConfigError, match=r"cut/run\.json"):
        read_run_record(tmp_path / "cut")

    table = list_runs(tmp_path).set_index("name")
    assert table["status"].to_dict() == {
        "cut": "unreadable",
        "dead": INTERRUPTED,
        "done": "finished",
        "live": "running",
        "remote": "running",  # another host's process cannot be checked from here
        "reused": INTERRUPTED,
    }
    assert "cut/run.json" in table.loc["cut", "error"]
    assert not list(tmp_path.rglob("*.tmp"))
