"""Fault injection into the encode cache and the feature store: each fault is repaired or named.

Every case damages a cache the way a crash, a full disk, a copy or a second encoder would, then
encodes again: the damaged file is named in a :class:`CacheWarning` and set aside, and the result
is equal, array for array, to a clean encode. The tiny model and SAE keep each case to seconds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import prefaudit as pa
from prefaudit.backbone import Backbone
from prefaudit.features import encode as encode_mod
from prefaudit.features import store as store_mod
from prefaudit.features.encoded import EncodedFeatures, SidePooled
from prefaudit.features.sae import load_sae
from prefaudit.features.shard_cache import read_meta, shard_record, write_meta, write_shard
from prefaudit.features.store import STORE_DIR, CacheFileError, CacheWarning, build_store, owner
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
N_PAIRS = 16


@pytest.fixture(scope="module")
def model(tiny_model_dir, tiny_sae_dir):
    return Backbone.load(tiny_model_dir, layer=2), load_sae(tiny_sae_dir)


@pytest.fixture(scope="module")
def pairs():
    return pa.load_pairs(tiny.planted_pairs(N_PAIRS))


@pytest.fixture(scope="module")
def clean(model, pairs) -> dict[int, EncodedFeatures]:
    """A clean encode, kept in memory (no cache), per shard size."""
    bb, sae = model
    return {
        size: encode_mod.encode_pairs(pairs, bb, sae, shard_size=size, cache_dir=None, progress=False)
        for size in (4, 8)
    }


@pytest.fixture()
def calls(monkeypatch) -> list[int]:
    """Counts the shards encoded (calls of ``encode_shard``)."""
    seen: list[int] = []
    real = encode_mod.encode_shard
    monkeypatch.setattr(encode_mod, "encode_shard", lambda *a, **k: seen.append(1) or real(*a, **k))
    return seen


def _encode(model, pairs, cache: Path, shard_size: int = 4) -> EncodedFeatures:
    bb, sae = model
    return encode_mod.encode_pairs(pairs, bb, sae, shard_size=shard_size, cache_dir=cache, progress=False)


def _folder(cache: Path) -> Path:
    (folder,) = (cache / "encode").iterdir()
    return folder


def _equal(a: EncodedFeatures, b: EncodedFeatures) -> None:
    x, y = a.to_arrays(), b.to_arrays()
    assert sorted(x) == sorted(y)
    for k in x:
        assert np.array_equal(x[k], y[k]), k


def _named(record: pytest.WarningsRecorder, *paths: Path) -> None:
    """Each path is named in a CacheWarning."""
    msgs = [str(w.message) for w in record if issubclass(w.category, CacheWarning)]
    for p in paths:
        assert any(str(p) in m for m in msgs), (p, msgs)


def _damaged_cache(model, pairs, cache: Path, shard_size: int = 4) -> Path:
    """A finished cache whose store is gone: the shards are read again, as after a crash before the merge."""
    _encode(model, pairs, cache, shard_size)
    folder = _folder(cache)
    shutil.rmtree(folder / STORE_DIR)
    return folder


# ---------------------------------------------------------------------------------- shards
def test_zero_byte_shard_is_set_aside_and_encoded_again(model, pairs, clean, tmp_path, calls):
    folder = _damaged_cache(model, pairs, tmp_path)
    shard = folder / "shard-00001.npz"
    shard.write_bytes(b"")
    with pytest.raises(CacheFileError, match=str(shard)):  # read directly, the error names the file
        build_store([shard], tmp_path / "direct")
    calls.clear()
    with pytest.warns(CacheWarning, match="empty file") as record:
        enc = _encode(model, pairs, tmp_path)
    _named(record, shard)
    assert len(calls) == 1 and enc.meta["shards_encoded"] == 1
    assert [p.name[:11] for p in (folder / "quarantine").iterdir()] == ["shard-00001"]
    _equal(enc, clean[4])


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_truncated_or_corrupted_shard_is_set_aside_and_encoded_again(
    model, pairs, clean, tmp_path, calls, damage
):
    folder = _damaged_cache(model, pairs, tmp_path)
    shard = folder / "shard-00002.npz"
    data = bytearray(shard.read_bytes())
    if damage == "truncated":  # a half-written file (the zip directory at its end is lost)
        shard.write_bytes(data[: len(data) // 2])
    else:  # one bit of the values rots: only the CRC-32 of its member can tell
        data[len(data) // 2] ^= 0x40
        shard.write_bytes(data)
    calls.clear()
    with pytest.warns(CacheWarning) as record:
        enc = _encode(model, pairs, tmp_path)
    _named(record, shard)
    assert len(calls) == 1
    _equal(enc, clean[4])


def test_shards_holding_each_others_pairs_are_encoded_again(model, pairs, clean, tmp_path, calls):
    folder = _damaged_cache(model, pairs, tmp_path)
    one, two = folder / "shard-00001.npz", folder / "shard-00002.npz"
    one.rename(tmp_path / "swap.npz")
    two.rename(one)
    (tmp_path / "swap.npz").rename(two)
    calls.clear()
    with pytest.warns(CacheWarning, match="its record says shard=2, start=8, stop=12") as record:
        enc = _encode(model, pairs, tmp_path)
    _named(record, one, two)
    assert len(calls) == 2
    _equal(enc, clean[4])


@pytest.mark.parametrize("source", ["other encode", "forged record"])
def test_a_16_row_shard_where_8_are_expected_is_encoded_again(model, pairs, clean, tmp_path, calls, source):
    folder = _damaged_cache(model, pairs, tmp_path / "cache", shard_size=8)
    assert _encode(model, pairs, tmp_path / "other", shard_size=16).n_pairs == 16  # one shard of 16 rows
    big, shard = _folder(tmp_path / "other") / "shard-00000.npz", folder / "shard-00000.npz"
    if source == "other encode":  # a shard copied over from another cache
        shutil.copy(big, shard)
        expect = "rows=16"
    else:  # its record claims this key and pairs 0-8: the arrays must disagree
        write_shard(EncodedFeatures.load(big), shard, shard_record(read_meta(folder), 0))
        expect = "16 pairs"
    calls.clear()
    with pytest.warns(CacheWarning, match=expect) as record:
        enc = _encode(model, pairs, tmp_path / "cache", shard_size=8)
    _named(record, shard)
    assert len(calls) == 1 and enc.n_pairs == N_PAIRS
    _equal(enc, clean[8])


# ----------------------------------------------------------------------------------- store
def test_a_cut_store_file_is_named_and_the_store_built_again(model, pairs, clean, tmp_path, calls):
    _encode(model, pairs, tmp_path)
    store = _folder(tmp_path) / STORE_DIR
    cut = store / "chosen_data.npy"
    with open(cut, "r+b") as fh:
        fh.truncate(cut.stat().st_size - 8)
    with pytest.raises(CacheFileError, match=f"{cut}: .* bytes where its header says .* cut"):
        EncodedFeatures.open(store)
    calls.clear()
    with pytest.warns(CacheWarning, match="cut") as record:
        enc = _encode(model, pairs, tmp_path)
    _named(record, cut)
    assert not calls  # the shards are sound: only the store is merged again
    _equal(enc, clean[4])
    assert EncodedFeatures.open(store).n_pairs == N_PAIRS


def test_a_store_merged_from_other_shards_is_built_again(model, pairs, clean, tmp_path, calls):
    other = pa.load_pairs(tiny.planted_pairs(N_PAIRS, seed=1))
    mine = tmp_path / "encode" / _encode(model, pairs, tmp_path).meta["key"]
    theirs = tmp_path / "encode" / _encode(model, other, tmp_path).meta["key"]
    shutil.rmtree(mine / STORE_DIR)
    shutil.copytree(theirs / STORE_DIR, mine / STORE_DIR)  # same shard count and names, other data
    calls.clear()
    with pytest.warns(CacheWarning, match="merged from other versions of shard-00000.npz") as record:
        enc = _encode(model, pairs, tmp_path)
    _named(record, mine / STORE_DIR / "store.json")
    assert not calls
    _equal(enc, clean[4])


def test_stale_temporaries_are_removed_and_live_ones_kept(model, pairs, clean, tmp_path):
    _encode(model, pairs, tmp_path)
    folder = _folder(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_owner = f"{int(dead.stdout)}@{owner().split('@')[1]}"
    stale = [
        folder / f".shard-00001.tmp-{dead_owner}-abcd1234.npz",  # its writer died
        folder / ".tmp-k3j4h5g6.npz",  # an older prefaudit's, untouched for two hours
        folder / f".{STORE_DIR}.tmp-{dead_owner}-zz99yy88",  # a store build that died
    ]
    live = [
        folder / f".shard-00002.tmp-{owner()}-live1234.npz",  # this process: alive
        folder / ".shard-00003.tmp-77@elsewhere-abcd1234.npz",  # another host, written just now
    ]
    for p in [*stale[:2], *live]:
        p.write_bytes(b"partial")
    stale[2].mkdir()
    (stale[2] / "chosen_data.npy").write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale[1], (two_hours_ago, two_hours_ago))
    with pytest.warns(CacheWarning, match="did not finish") as record:
        enc = _encode(model, pairs, tmp_path)
    _named(record, *stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)
    _equal(enc, clean[4])


# ------------------------------------------------------------------------------ concurrency
def test_two_encoders_on_one_cache_share_the_shards(
    tiny_model_dir, tiny_sae_dir, pairs, clean, tmp_path, monkeypatch
):
    """Two encoders started apart (two threads here, each with its own model) split the shards."""
    by_thread: Counter[int] = Counter()
    both_in = threading.Barrier(2)
    real = encode_mod.encode_shard

    def counted(*a, **k):
        me = threading.get_ident()
        by_thread[me] += 1
        if by_thread[me] == 1:  # both threads encode at once before either goes on
            with contextlib.suppress(threading.BrokenBarrierError):
                both_in.wait(timeout=60)
        return real(*a, **k)

    monkeypatch.setattr(encode_mod, "encode_shard", counted)
    results: dict[int, EncodedFeatures] = {}
    errors: list[BaseException] = []

    # One model each (a forward hook is registered on the model per call), loaded here: loading
    # in two threads at once races inside transformers.
    models = [(Backbone.load(tiny_model_dir, layer=2), load_sae(tiny_sae_dir)) for _ in range(2)]

    def run(i: int) -> None:
        try:
            bb, sae = models[i]
            results[i] = encode_mod.encode_pairs(
                pairs, bb, sae, shard_size=4, cache_dir=tmp_path, progress=False
            )
        except BaseException as e:  # reported by the test's own thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(by_thread.values()) == N_PAIRS // 4, by_thread  # each shard encoded once, not twice
    assert len(by_thread) == 2 and min(by_thread.values()) >= 1  # and both did some
    assert sorted(r.meta["shards_encoded"] + r.meta["shards_found"] for r in results.values()) == [4, 4]
    for enc in results.values():
        _equal(enc, clean[4])


# ------------------------------------------------------------------------------- full disk
def _synthetic_shards(folder: Path, sizes: list[int], d_sae: int = 300) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)

    def side(n: int) -> SidePooled:
        values = sp.random(n, d_sae, density=0.05, format="csr", dtype=np.float32, random_state=rng)
        zeros = np.zeros(values.nnz, np.int32)
        mean_act = rng.normal(size=(n, 8)).astype(np.float32)
        return SidePooled(values, zeros, zeros, mean_act, np.full(n, 5, np.int32), np.zeros(n, bool))

    paths = []
    for s, n in enumerate(sizes):
        paths.append(folder / f"shard-{s:05d}.npz")
        EncodedFeatures(chosen=side(n), rejected=side(n), pooling="max").save(paths[-1])
    return paths


@pytest.mark.parametrize("where", ["allocating", "writing"])
def test_disk_full_while_building_the_store_raises_naming_the_folder(tmp_path, monkeypatch, where):
    paths = _synthetic_shards(tmp_path, [40, 40])
    folder = tmp_path / STORE_DIR

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "allocating":
        monkeypatch.setattr(store_mod.os, "posix_fallocate", full)
    else:
        monkeypatch.setattr(store_mod._NpyWriter, "append", full)
    with pytest.raises(OSError) as raised:
        build_store(paths, folder)
    assert raised.value.errno == errno.ENOSPC and str(folder) in str(raised.value)
    assert not folder.exists() and not list(tmp_path.glob(f".{STORE_DIR}*"))
    monkeypatch.undo()
    assert EncodedFeatures.open(build_store(paths, folder)).n_pairs == 80  # with room again: built


def test_disk_full_on_a_real_tmpfs_is_an_oserror_not_sigbus(tmp_path):
    """A store build on a tmpfs too small for it: OSError naming the folder, nothing left (root only)."""
    paths = _synthetic_shards(tmp_path / "shards", [300, 300, 300])
    need = sum(p.stat().st_size for p in build_store(paths, tmp_path / "ref").iterdir())
    mnt = tmp_path / "small"
    mnt.mkdir()
    size = max(4096, need // 2 // 4096 * 4096)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        script = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(REPO)!r})
            from prefaudit.features.store import build_store
            try:
                build_store({[str(p) for p in paths]!r}, {str(mnt / STORE_DIR)!r})
            except OSError as e:
                print(e.errno, e)
                sys.exit(3)
            """
        )
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert child.returncode == 3, (child.returncode, child.stdout, child.stderr[-2000:])  # -7 is SIGBUS
        assert child.stdout.startswith(f"{errno.ENOSPC} ") and str(mnt / STORE_DIR) in child.stdout
        assert os.listdir(mnt) == []  # nothing half-built is left
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_meta_counts_only_sound_shards(model, pairs, tmp_path):
    folder = _damaged_cache(model, pairs, tmp_path)
    assert json.loads((folder / "meta.json").read_text())["complete"]
    (folder / "shard-00003.npz").write_bytes(b"")
    record = write_meta(folder, read_meta(folder), 4)
    assert record["n_shards_finished"] == 3 and not record["complete"]
