"""The shard cache: resumes after kill -9 without recomputing finished shards, keyed by content."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import prefaudit as pa
from prefaudit.backbone import Backbone
from prefaudit.features import encode as encode_mod
from prefaudit.features.sae import load_sae
from tests import tiny

REPO = Path(__file__).resolve().parents[1]


def _shards(cache: Path) -> list[Path]:
    return sorted(cache.glob("encode/*/shard-*.npz"))


def _same(a, b) -> None:
    for side in ("chosen", "rejected"):
        x, y = a.side(side), b.side(side)
        assert (x.values != y.values).nnz == 0
        np.testing.assert_array_equal(x.top_pos, y.top_pos)
        np.testing.assert_array_equal(x.n_tokens, y.n_tokens)


def test_kill_9_mid_encode_resumes_without_recomputing(tiny_model_dir, tiny_sae_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        import prefaudit as pa
        from prefaudit.backbone import Backbone
        from prefaudit.features import encode as enc
        from prefaudit.features.sae import load_sae
        from tests import tiny
        slow = enc.encode_shard
        def encode_shard(*a, **k):  # slow the child down so the parent can kill it mid-way
            time.sleep(0.4)
            return slow(*a, **k)
        enc.encode_shard = encode_shard
        pairs = pa.load_pairs(tiny.planted_pairs(40))
        bb = Backbone.load({str(tiny_model_dir)!r}, layer=2)
        enc.encode_pairs(pairs, bb, load_sae({str(tiny_sae_dir)!r}), shard_size=4, cache_dir={str(cache)!r}, progress=False)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.time() + 120
    while len(_shards(cache)) < 3 and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = len(_shards(cache))
    assert 3 <= done < 10, f"the child should have been killed mid-way ({done} shards written)"
    # No temporary file is mistaken for a shard.
    assert all(p.name.startswith("shard-") for p in _shards(cache))

    pairs = pa.load_pairs(tiny.planted_pairs(40))
    bb = Backbone.load(tiny_model_dir, layer=2)
    sae = load_sae(tiny_sae_dir)
    calls = []
    real = encode_mod.encode_shard
    monkeypatch.setattr(encode_mod, "encode_shard", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = encode_mod.encode_pairs(pairs, bb, sae, shard_size=4, cache_dir=cache, progress=False)
    assert len(calls) == 10 - done
    monkeypatch.setattr(encode_mod, "encode_shard", real)
    fresh = encode_mod.encode_pairs(pairs, bb, sae, shard_size=4, cache_dir=None, progress=False)
    _same(resumed, fresh)


def test_cache_key_changes_with_data_pooling_and_layer(tiny_model_dir, tiny_sae_dir, tmp_path):
    cache = tmp_path / "c"
    sae = load_sae(tiny_sae_dir)
    bb = Backbone.load(tiny_model_dir, layer=2)
    pairs = pa.load_pairs(tiny.planted_pairs(8))
    encode_mod.encode_pairs(pairs, bb, sae, cache_dir=cache, progress=False)
    keys = {p.name for p in (cache / "encode").iterdir()}
    encode_mod.encode_pairs(pairs, bb, sae, pooling="mean", cache_dir=cache, progress=False)
    encode_mod.encode_pairs(
        pa.load_pairs(tiny.planted_pairs(8, seed=1)), bb, sae, cache_dir=cache, progress=False
    )
    assert len({p.name for p in (cache / "encode").iterdir()} - keys) == 2
    # A different layer of the same model reads different activations: different fingerprint.
    assert Backbone.load(tiny_model_dir, layer=1).fingerprint() != bb.fingerprint()


def test_cached_shard_is_reused(tiny_model_dir, tiny_sae_dir, tmp_path, monkeypatch):
    sae = load_sae(tiny_sae_dir)
    bb = Backbone.load(tiny_model_dir, layer=2)
    pairs = pa.load_pairs(tiny.planted_pairs(10))
    first = encode_mod.encode_pairs(pairs, bb, sae, shard_size=4, cache_dir=tmp_path, progress=False)

    def boom(*a, **k):
        raise AssertionError("a cached shard was recomputed")

    monkeypatch.setattr(encode_mod, "encode_shard", boom)
    again = encode_mod.encode_pairs(pairs, bb, sae, shard_size=4, cache_dir=tmp_path, progress=False)
    _same(first, again)


@pytest.mark.parametrize("pooling", ["median", ""])
def test_bad_pooling_is_a_config_error(pooling):
    with pytest.raises(pa.ConfigError, match="pooling"):
        encode_mod.check_pooling(pooling)
