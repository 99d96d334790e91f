"""The memory-mapped feature store: merged once from the shards, equal to them, read without copying."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from prefaudit.features import store as store_mod
from prefaudit.features.encoded import EncodedFeatures, SidePooled
from prefaudit.features.labels import top_token_ids
from prefaudit.features.matrix import FeatureMatrix
from prefaudit.features.store import STORE_DIR, build_store, is_store
from prefaudit.stats import paired_tests

D_SAE, D_MODEL = 300, 6


def _side(rng: np.random.Generator, n: int, full: bool) -> SidePooled:
    values = sp.random(n, D_SAE, density=0.04, format="csr", dtype=np.float32, random_state=rng)
    values.data += 0.1  # no stored zeros
    n_tok = rng.integers(1, 40, n).astype(np.int32)
    return SidePooled(
        values=values,
        top_token=rng.integers(0, 500, values.nnz).astype(np.int32),
        top_pos=rng.integers(0, 40, values.nnz).astype(np.int32),
        mean_act=rng.normal(size=(n, D_MODEL)).astype(np.float32),
        n_tokens=n_tok,
        truncated=rng.random(n) < 0.2,
        full_length=(n_tok + rng.integers(0, 5, n)).astype(np.int32) if full else None,
    )


def _shards(folder: Path, sizes: list[int], *, old: bool = False, seed: int = 0) -> list[Path]:
    """Shards as encode_pairs writes them; ``old``: without the fields added later (full lengths, prompt)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, n in enumerate(sizes):
        enc = EncodedFeatures(
            chosen=_side(rng, n, not old),
            rejected=_side(rng, n, not old),
            pooling="max",
            prompt_length=None if old else rng.integers(1, 400, n).astype(np.int32),
            prompt_cut=None if old else rng.random(n) < 0.1,
        )
        paths.append(folder / f"shard-{s:05d}.npz")
        enc.save(paths[-1])
    return paths


def _in_ram(paths: list[Path]) -> EncodedFeatures:
    return EncodedFeatures.concat([EncodedFeatures.load(p) for p in paths])


def _mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of a memory-mapped file (not a copy in RAM)."""
    while a is not None and not isinstance(a, mmap.mmap):
        a = getattr(a, "base", None)
    return isinstance(a, mmap.mmap)


def _assert_equal(a: EncodedFeatures, b: EncodedFeatures) -> None:
    assert a.pooling == b.pooling and a.n_pairs == b.n_pairs and a.d_sae == b.d_sae
    for name in ("chosen", "rejected"):
        x, y = a.side(name), b.side(name)
        assert x.values.shape == y.values.shape and (x.values != y.values).nnz == 0
        for f in ("top_token", "top_pos", "mean_act", "n_tokens", "truncated"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f), err_msg=f)
        assert (x.full_length is None) == (y.full_length is None)
        if x.full_length is not None:
            np.testing.assert_array_equal(x.full_length, y.full_length)
    for f in ("prompt_length", "prompt_cut"):
        assert (getattr(a, f) is None) == (getattr(b, f) is None)
        if getattr(a, f) is not None:
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_store_equals_the_concatenated_shards_and_is_memory_mapped(tmp_path: Path) -> None:
    paths = _shards(tmp_path, [50, 50, 50, 17])
    opened = EncodedFeatures.from_shards(paths, tmp_path, meta={"key": "k"})
    ram = _in_ram(paths)
    _assert_equal(opened, ram)
    assert opened.meta == {"key": "k", "store": str(tmp_path / STORE_DIR)}
    for side in (opened.chosen, opened.rejected):
        # The values and the large per-response arrays are views of the files, not copies.
        for arr in (
            side.values.data,
            side.values.indices,
            side.mean_act,
            side.top_token,
            side.by_column.data,
        ):
            assert _mapped(arr) and not arr.flags.writeable
    # load() of the folder opens the same store.
    _assert_equal(EncodedFeatures.load(tmp_path / STORE_DIR), ram)


def test_column_reads_equal_the_dense_columns(tmp_path: Path) -> None:
    paths = _shards(tmp_path, [40, 33])
    opened = EncodedFeatures.from_shards(paths, tmp_path)
    ram = _in_ram(paths)
    dense = ram.chosen.values.toarray()
    empty = int(np.flatnonzero(dense.sum(axis=0) == 0)[0]) if (dense.sum(axis=0) == 0).any() else None
    for j in [0, 7, D_SAE - 1, *([empty] if empty is not None else [])]:
        np.testing.assert_array_equal(opened.chosen.column(j), dense[:, j])
        np.testing.assert_array_equal(ram.chosen.column(j), dense[:, j])  # the fallback without by_column
    by_col = opened.rejected.by_column
    assert by_col.has_sorted_indices and (by_col != ram.rejected.values.tocsc()).nnz == 0


def test_statistics_and_labels_read_the_store_as_they_read_ram(tmp_path: Path) -> None:
    paths = _shards(tmp_path, [60, 60, 30], seed=3)
    opened, ram = EncodedFeatures.from_shards(paths, tmp_path), _in_ram(paths)
    concepts = np.random.default_rng(1).random((150, 2))
    tables = []
    for enc in (opened, ram):
        m = FeatureMatrix.from_parts(enc, concepts, concepts[::-1].copy())
        tables.append(paired_tests(m.chosen, m.rejected, lengths=enc.full_lengths(), n_boot=50, n_splits=4))
        np.testing.assert_array_equal(m.column(5)[0], enc.chosen.column(5))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert top_token_ids(opened) == top_token_ids(ram)
    # Reading never wrote into the mapped files (they are opened read-only).
    _assert_equal(EncodedFeatures.load(tmp_path / STORE_DIR), ram)


def test_old_shards_without_later_fields_give_a_store_without_them(tmp_path: Path) -> None:
    paths = _shards(tmp_path, [20, 20], old=True)
    opened = EncodedFeatures.from_shards(paths, tmp_path)
    assert opened.chosen.full_length is None and opened.prompt_cut is None
    _assert_equal(opened, _in_ram(paths))
    # One old shard among new ones: the field is unknown for all, as concat has it.
    mixed = [*_shards(tmp_path / "new", [10]), *_shards(tmp_path / "old", [10], old=True)]
    merged = EncodedFeatures.from_shards(mixed, tmp_path / "mixed")
    assert merged.chosen.full_length is None and merged.prompt_length is None
    _assert_equal(merged, _in_ram(mixed))


def test_an_interrupted_build_leaves_no_store_and_a_rebuild_replaces_a_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _shards(tmp_path, [30, 30, 30])
    folder = tmp_path / STORE_DIR

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(store_mod, "_fill_part", crash)
        with pytest.raises(KeyboardInterrupt):
            build_store(paths, folder)
    assert not is_store(folder) and not list(tmp_path.glob(f".{STORE_DIR}*"))
    build_store(paths[:2], folder)  # e.g. built while a third shard was still missing
    assert EncodedFeatures.open(folder).n_pairs == 60
    _assert_equal(EncodedFeatures.from_shards(paths, tmp_path), _in_ram(paths))


def test_shards_that_disagree_are_refused(tmp_path: Path) -> None:
    a = _shards(tmp_path / "a", [5])
    rng = np.random.default_rng(0)
    wide = EncodedFeatures(chosen=_side(rng, 5, True), rejected=_side(rng, 5, True), pooling="max")
    wide.chosen.values = sp.csr_matrix((5, D_SAE + 1), dtype=np.float32)
    wide.rejected.values = sp.csr_matrix((5, D_SAE + 1), dtype=np.float32)
    wide.chosen.top_token = wide.chosen.top_pos = np.zeros(0, np.int32)
    wide.rejected.top_token = wide.rejected.top_pos = np.zeros(0, np.int32)
    with pytest.raises(ValueError, match="shard 1 has 301 features, shard 0 has 300"):
        build_store([*a, wide.to_arrays()], tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="no complete feature store"):
        EncodedFeatures.open(tmp_path / "s")


def test_a_session_audits_from_the_store_as_from_ram(
    tiny_model_dir: Path, tiny_sae_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """encode_pairs' shards merged into the store: test(), top_pairs() and labels read it unchanged."""
    import prefaudit as pa
    from prefaudit.features import encode as encode_mod
    from tests import tiny

    pairs = pa.load_pairs(tiny.planted_pairs(24))

    def session() -> pa.AuditSession:
        kw = {"cache_dir": tmp_path, "batch_size": 4, "shard_size": 8}
        return pa.AuditSession(pairs, model=tiny_model_dir, sae=tiny_sae_dir, **kw)

    ram = session()
    expected = ram.test(n_boot=50)
    real = encode_mod.encode_pairs

    def via_store(*args: object, **kw: object) -> EncodedFeatures:  # what encode_pairs would return
        enc = real(*args, **kw)
        folder = Path(str(kw["cache_dir"])) / "encode" / enc.meta["key"]
        return EncodedFeatures.from_shards(sorted(folder.glob("shard-*.npz")), folder, enc.meta)

    monkeypatch.setattr(encode_mod, "encode_pairs", via_store)
    mapped = session()
    got = mapped.test(n_boot=50)
    assert _mapped(mapped.encoded.chosen.values.data)
    _assert_equal(mapped.encoded, ram.encoded)
    pd.testing.assert_frame_equal(got, expected)
    fid = expected.loc[expected["source"] == "sae"].sort_values("p")["feature"].iloc[0]
    pd.testing.assert_frame_equal(mapped.space.top_pairs(fid, n=5), ram.space.top_pairs(fid, n=5))
    assert mapped.auto_labels == ram.auto_labels
