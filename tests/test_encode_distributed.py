"""``prefaudit encode`` alone and on 2 CPU processes (gloo): the shards it writes are the ones the audit reads.

The launched tests start real launchers: ``accelerate launch --multi_gpu --num_processes 2`` (on a
machine without CUDA that is torchrun with 2 gloo processes; ``--cpu`` would start one process,
since accelerate runs several CPU processes only through mpirun) and ``torchrun --standalone``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import prefaudit as pa
from prefaudit.backbone import Backbone
from prefaudit.cli import main
from prefaudit.features import distributed
from prefaudit.features import encode as encode_mod
from prefaudit.features.sae import load_sae
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_PAIRS, SHARD = 24, 4  # 6 shards
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    # The in-process CLI creates accelerate's PartialState singleton; later tests must not inherit it.
    yield
    from accelerate.state import PartialState

    PartialState._reset_state()


@pytest.fixture()
def data(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tiny.planted_pairs(N_PAIRS)))
    return path


def _encode_args(data, model, sae, cache) -> list[str]:
    return [
        "encode",
        str(data),
        "--cache-dir",
        str(cache),
        "--model",
        str(model),
        "--sae",
        str(sae),
        "--shard-size",
        str(SHARD),
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]


def _reference(data, model, sae):
    pairs = pa.load_pairs(data)
    bb = Backbone.load(model, layer=2, device="cpu")
    return encode_mod.encode_pairs(
        pairs, bb, load_sae(sae, device="cpu"), shard_size=SHARD, batch_size=4, cache_dir=None, progress=False
    )


def _folder(cache: Path) -> Path:
    (folder,) = (cache / "encode").iterdir()
    return folder


def _assert_same(a, b) -> None:
    x, y = a.to_arrays(), b.to_arrays()
    assert sorted(x) == sorted(y)
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _accelerate(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    with socket.socket() as sock:  # parallel test runs must not share a port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        str(BIN / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        "-m",
        "prefaudit.cli",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _rank_lines(text: str) -> list[str]:
    # Each rank's summary line, wherever another process's output lands around it.
    pattern = r"rank \d+/\d+: \d+ shards in all, \d+ found finished, encoding \d+ of the \d+ left(?: \(shards [^)]*\))?"
    return sorted(re.findall(pattern, text))


def test_alone_it_encodes_every_shard_and_the_audit_then_encodes_nothing(
    data, tiny_model_dir, tiny_sae_dir, tmp_path, capsys, monkeypatch
):
    cache = tmp_path / "cache"
    assert main(_encode_args(data, tiny_model_dir, tiny_sae_dir, cache)) == 0
    out = capsys.readouterr()
    assert _rank_lines(out.err) == [
        "rank 0/1: 6 shards in all, 0 found finished, encoding 6 of the 6 left (shards 0, 1, 2, 3, 4, 5)"
    ]
    assert (
        "24 pairs (0 rows rejected) in 6 shards of 4, 1 process(es): 0 found finished, 6 encoded" in out.out
    )
    folder = _folder(cache)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["complete"] and meta["n_shards"] == meta["n_shards_finished"] == 6

    # The session (device "auto" is the CPU here) computes the same key and reads every shard.
    session = pa.AuditSession(data, model=tiny_model_dir, sae=tiny_sae_dir, cache_dir=cache, shard_size=SHARD)
    enc = session.encode(progress=False)
    assert enc.meta["key"] == folder.name
    run = (enc.meta["shards_found"], enc.meta["shards_encoded"], enc.meta["tokens_processed_this_run"])
    assert run == (6, 0, 0)
    _assert_same(enc, _reference(data, tiny_model_dir, tiny_sae_dir))

    # Again: everything is found, nothing encoded.
    assert main(_encode_args(data, tiny_model_dir, tiny_sae_dir, cache)) == 0
    assert "6 found finished, encoding 0 of the 0 left" in capsys.readouterr().err


def test_each_rank_encodes_its_share_and_the_main_one_checks(data, tiny_model_dir, tiny_sae_dir, tmp_path):
    pairs = pa.load_pairs(data)
    bb, sae = Backbone.load(tiny_model_dir, layer=2, device="cpu"), load_sae(tiny_sae_dir, device="cpu")
    cache = tmp_path / "cache"
    logs: list[str] = []

    def state(rank: int) -> SimpleNamespace:
        return SimpleNamespace(
            process_index=rank, num_processes=2, is_main_process=rank == 0, wait_for_everyone=lambda: None
        )

    kw = {"cache_dir": cache, "shard_size": SHARD, "progress": False, "log": logs.append}
    assert distributed.encode_distributed(pairs, bb, sae, state=state(1), **kw) is None
    folder = _folder(cache)
    assert sorted(p.name for p in folder.glob("shard-*")) == [f"shard-0000{s}.npz" for s in (1, 3, 5)]
    # The main process alone (rank 1 has already written its shards) finds its own missing ones.
    with pytest.raises(pa.ConfigError, match=r"1 of 6 shards are missing .* \(shards 2\)"):
        distributed.encode_distributed(pairs, bb, sae, state=state(0), **kw)
    assert logs == [
        "rank 1/2: 6 shards in all, 0 found finished, encoding 3 of the 6 left (shards 1, 3, 5)",
        "rank 0/2: 6 shards in all, 3 found finished, encoding 2 of the 3 left (shards 0, 4)",
    ]
    # Shard 0 was written, and the main rank wrote meta before encoding: not complete.
    assert not json.loads((folder / "meta.json").read_text())["complete"]
    with pytest.raises(pa.ConfigError, match="shards \\[6\\] do not exist"):
        distributed.encode_shards(pairs, bb, sae, [6], cache_dir=cache, shard_size=SHARD, progress=False)


def test_device_of_a_rank():
    import torch

    two_gpus = SimpleNamespace(num_processes=2, device=torch.device("cuda", 1))
    assert distributed.rank_device("auto", two_gpus) == distributed.rank_device("CUDA", two_gpus) == "cuda:1"
    assert distributed.rank_device("cuda:0", two_gpus) == "cuda:0"  # asked for explicitly: kept
    gloo = SimpleNamespace(num_processes=2, device=torch.device("cpu", 0))  # what accelerate says under gloo
    assert distributed.rank_device("auto", gloo) == "cpu"
    assert distributed.rank_device("auto", SimpleNamespace(num_processes=1)) == "auto"


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_equal_one(
    data, tiny_model_dir, tiny_sae_dir, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    proc = _accelerate(_encode_args(data, tiny_model_dir, tiny_sae_dir, cache), tmp_path)
    assert _rank_lines(proc.stderr) == [
        "rank 0/2: 6 shards in all, 0 found finished, encoding 3 of the 6 left (shards 0, 2, 4)",
        "rank 1/2: 6 shards in all, 0 found finished, encoding 3 of the 6 left (shards 1, 3, 5)",
    ]
    assert "2 process(es): 0 found finished, 6 encoded this run (rank 0: 3, rank 1: 3;" in proc.stdout
    folder = _folder(cache)
    assert json.loads((folder / "meta.json").read_text())["complete"]
    reference = _reference(data, tiny_model_dir, tiny_sae_dir)
    assert reference.meta["key"] == folder.name  # the same key as one process (and the audit) computes
    shards = [encode_mod.EncodedFeatures.load(p) for p in sorted(folder.glob("shard-*.npz"))]
    _assert_same(encode_mod.EncodedFeatures.concat(shards), reference)  # same dtype (float32): exact

    # `prefaudit audit` with the same settings reads the cache: encoding anything would raise.
    def boom(*a, **k):
        raise AssertionError("prefaudit audit encoded a shard that prefaudit encode had written")

    monkeypatch.setattr(encode_mod, "encode_shard", boom)
    argv = [
        "audit",
        str(data),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--cache-dir",
        str(cache),
        "--model",
        str(tiny_model_dir),
        "--sae",
        str(tiny_sae_dir),
        "--shard-size",
        str(SHARD),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_pairs"] == N_PAIRS


# Each rank encodes its first shard, then holds still after the first batch of its second one, so
# the parent's kill -9 lands mid-shard with exactly one finished shard per rank.
HOLD_SECOND_SHARD = """
import sys, threading
from prefaudit.features import encode as enc
real, calls = enc.encode_shard, []
def encode_shard(*a, on_batch=None, **k):
    calls.append(1)
    def hold(n, used):
        on_batch(n, used)
        if len(calls) > 1:
            threading.Event().wait()
    return real(*a, on_batch=hold, **k)
enc.encode_shard = encode_shard
from prefaudit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _kill_running(script: Path) -> None:
    """SIGKILL every process whose command line runs ``script``; wait until none is left."""
    deadline = time.monotonic() + 30
    while True:
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and str(script).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue  # exited meanwhile
        if not pids:
            return
        assert time.monotonic() < deadline, f"ranks {pids} survived SIGKILL"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@pytest.mark.slow
def test_kill_9_of_a_torchrun_encode_resumes_only_the_unfinished_shards(
    data, tiny_model_dir, tiny_sae_dir, tmp_path
):
    cache = tmp_path / "cache"
    script = tmp_path / "hold.py"
    script.write_text(textwrap.dedent(HOLD_SECOND_SHARD))
    log = (tmp_path / "killed.log").open("w")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        *_encode_args(data, tiny_model_dir, tiny_sae_dir, cache),
    ]
    child = subprocess.Popen(
        cmd, cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(cache.glob("encode/*/shard-*.npz"))) < 2:
            assert child.poll() is None, (tmp_path / "killed.log").read_text()[-5000:]
            assert time.monotonic() < deadline, "no shard written in 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the launcher
        child.wait()
        log.close()
        # torchrun's agent starts each rank in a session of its own: kill -9 them by their script.
        _kill_running(script)
    folder = _folder(cache)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "shard-00000.npz", "shard-00001.npz"]
    assert not json.loads((folder / "meta.json").read_text())["complete"]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("shard-*.npz")}

    proc = _accelerate(_encode_args(data, tiny_model_dir, tiny_sae_dir, cache), tmp_path)
    # The unfinished shards are dealt out again over both ranks; the finished ones are not touched.
    assert _rank_lines(proc.stderr) == [
        "rank 0/2: 6 shards in all, 2 found finished, encoding 2 of the 4 left (shards 2, 4)",
        "rank 1/2: 6 shards in all, 2 found finished, encoding 2 of the 4 left (shards 3, 5)",
    ]
    assert {n: (folder / n).stat().st_ino for n in before} == {n: v[0] for n, v in before.items()}
    assert {n: (folder / n).stat().st_mtime_ns for n in before} == {n: v[1] for n, v in before.items()}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["complete"] and meta["n_shards_finished"] == 6

    session = pa.AuditSession(
        data, model=tiny_model_dir, sae=tiny_sae_dir, cache_dir=cache, shard_size=SHARD, device="cpu"
    )
    enc = session.encode(progress=False)
    assert enc.meta["tokens_processed_this_run"] == 0 and enc.meta["shards_found"] == 6
    _assert_same(enc, _reference(data, tiny_model_dir, tiny_sae_dir))
