"""Faults of saved sessions: re-saves, damaged, foreign, missing or unlisted artefacts, hostile JSON, crashes.

Every case ends in the previous session intact, or a ``SessionFileError`` (a ``ValueError``) naming
the file (and the field, or both fingerprints) — never a session that silently holds another
session's data. Sessions are built once per module: a 40-pair SAE session on the tiny model and two
concepts-only sessions (30 and 40 pairs, no model).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import prefaudit as pa
from prefaudit.audit import fingerprint as fp_mod
from prefaudit.audit import persist_schema
from prefaudit.audit.fingerprint import SessionFileError
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL = ["concepts.safetensors", "encoded.safetensors", "pairs.parquet", "report.json", "results.parquet"]
CONCEPTS_ONLY = ["concepts.safetensors", "pairs.parquet", "report.json", "results.parquet"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir, tiny_sae_dir, tiny_cache_dir) -> dict[str, Any]:
    """Saved folders (read-only masters) and the sessions they were saved from."""
    root = tmp_path_factory.mktemp("saved")
    sae40 = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(40)),
        model=tiny_model_dir,
        sae=tiny_sae_dir,
        cache_dir=tiny_cache_dir,
        batch_size=4,
        shard_size=16,
    )
    sae40.encode(progress=False)
    sae40.test(n_boot=20)
    out: dict[str, Any] = {"sae40": sae40}
    for name, n in (("c30", 30), ("c40", 40)):
        s = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(n, seed=n)), sae=False, cache_dir=False)
        s.test(n_boot=20)
        out[name] = s
    for name in ("sae40", "c30", "c40"):
        out[f"{name}_dir"] = out[name].save(root / name)
    return out


def copy(built: dict[str, Any], name: str, dest: Path) -> Path:
    shutil.copytree(built[f"{name}_dir"], dest)
    return dest


def state_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "session.json").read_text())


def refused(folder: Path, *needles: str) -> SessionFileError:
    with pytest.raises(SessionFileError) as info:
        pa.AuditSession.load(folder)
    assert isinstance(info.value, ValueError)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    return info.value


# ---------------------------------------------------------------------------- re-save, crash
def test_resave_over_another_session_holds_only_the_new_session(built, tmp_path):
    # The scenario: 30 concepts-only pairs saved over a 40-pair SAE session.
    target = copy(built, "sae40", tmp_path / "s")
    built["c30"].save(target)
    assert sorted(os.listdir(target)) == sorted([*CONCEPTS_ONLY, "session.json"])
    assert sorted(os.listdir(tmp_path)) == ["s"]  # no temporary or old folder left beside it
    back = pa.AuditSession.load(target)
    assert back.encoded is None and len(back.data) == 30
    pd.testing.assert_frame_equal(back.results, built["c30"].results)
    # And back again: the SAE session over the concepts-only one.
    built["sae40"].save(target)
    back = pa.AuditSession.load(target)
    assert back.encoded.n_pairs == 40
    pd.testing.assert_frame_equal(back.results, built["sae40"].results)


def _half_then_full_disk(real: Callable[..., Any]) -> Callable[..., Any]:
    def save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # a partial file, as a full disk leaves it
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    return save_file


def test_a_crash_mid_save_leaves_the_previous_session_intact(built, tmp_path, monkeypatch):
    import safetensors.numpy

    target = copy(built, "sae40", tmp_path / "s")
    before = {n: (target / n).read_bytes() for n in os.listdir(target)}
    monkeypatch.setattr(safetensors.numpy, "save_file", _half_then_full_disk(safetensors.numpy.save_file))
    with pytest.raises(OSError, match="No space left"):
        built["c30"].save(target)
    assert sorted(os.listdir(tmp_path)) == ["s"]  # the half-written temporary folder is gone
    assert {n: (target / n).read_bytes() for n in os.listdir(target)} == before
    back = pa.AuditSession.load(target)
    assert back.encoded.n_pairs == 40
    pd.testing.assert_frame_equal(back.results, built["sae40"].results)


def test_a_failed_rename_puts_the_previous_session_back(built, tmp_path, monkeypatch):
    target = copy(built, "sae40", tmp_path / "s")
    real, calls = os.rename, []

    def rename(src: Any, dst: Any) -> None:
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder into place, after the old one was moved aside
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="I/O error"):
        built["c30"].save(target)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["s"]
    assert pa.AuditSession.load(target).encoded.n_pairs == 40


def test_save_refuses_to_replace_a_folder_that_is_not_a_session(built, tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(pa.ConfigError, match="not a saved prefaudit session"):
        built["c30"].save(folder)
    assert os.listdir(folder) == ["thesis.tex"]


# ---------------------------------------------------------------------------- artefacts on load
@pytest.mark.parametrize("name", ALL)
def test_a_changed_byte_is_refused_naming_the_file(built, tmp_path, name):
    target = copy(built, "sae40", tmp_path / "s")
    data = bytearray((target / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit changed
    (target / name).write_bytes(bytes(data))
    err = refused(target, str(target / name), "sha256 expected")
    assert err.file == target / name


@pytest.mark.parametrize("name", CONCEPTS_ONLY)
def test_an_artefact_of_another_session_is_refused_with_both_fingerprints(built, tmp_path, name):
    target = copy(built, "c30", tmp_path / "s")
    shutil.copyfile(built["c40_dir"] / name, target / name)
    expected = state_of(built["c30_dir"])["manifest"][name]["fingerprint"]
    found = state_of(built["c40_dir"])["manifest"][name]["fingerprint"]
    assert expected != found
    err = refused(target, str(target / name), f"expected {expected}", f"found {found}")
    assert (err.expected, err.found) == (expected, found)


def test_a_swapped_file_with_an_edited_manifest_is_refused_by_its_data(built, tmp_path):
    target = copy(built, "c30", tmp_path / "s")
    shutil.copyfile(built["c40_dir"] / "pairs.parquet", target / "pairs.parquet")
    state = state_of(target)
    state["manifest"]["pairs.parquet"] = state_of(built["c40_dir"])["manifest"]["pairs.parquet"]
    (target / "session.json").write_text(json.dumps(state))
    want = state["fingerprint"]["data"]
    err = refused(target, "pairs.parquet", f"expected {want}")
    assert err.found == state_of(built["c40_dir"])["fingerprint"]["data"]


@pytest.mark.parametrize("name", ALL)
def test_a_missing_artefact_is_refused(built, tmp_path, name):
    target = copy(built, "sae40", tmp_path / "s")
    (target / name).unlink()
    refused(target, str(target / name), "missing")


@pytest.mark.parametrize("stray", ["encoded.safetensors", "notes.txt"])
def test_a_file_the_manifest_does_not_list_is_refused(built, tmp_path, stray):
    # encoded.safetensors of the 40-pair SAE session in the 30-pair concepts-only one is exactly
    # what an in-place re-save used to leave behind.
    target = copy(built, "c30", tmp_path / "s")
    src = built["sae40_dir"] / "encoded.safetensors"
    (target / stray).write_bytes(src.read_bytes() if stray.endswith("safetensors") else b"hi")
    (target / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # what a file browser drops
    (target / ".ipynb_checkpoints").mkdir()
    refused(target, str(target / stray), "not listed")
    (target / stray).unlink()
    assert len(pa.AuditSession.load(target).data) == 30  # the browser's litter is never read


def test_a_link_in_the_folder_is_not_followed(built, tmp_path):
    target = copy(built, "c30", tmp_path / "s")
    outside = tmp_path / "outside.safetensors"
    shutil.move(target / "concepts.safetensors", outside)  # the same bytes: the checksum would pass
    (target / "concepts.safetensors").symlink_to(outside)
    refused(target, str(target / "concepts.safetensors"))


def test_a_session_saved_before_the_manifest_opens_with_a_warning_and_checked_rows(built, tmp_path):
    def as_format_1(folder: Path) -> None:
        state = state_of(folder)
        state["format_version"] = 1
        del state["manifest"], state["fingerprint"]
        (folder / "session.json").write_text(json.dumps(state))

    old = copy(built, "sae40", tmp_path / "old")
    as_format_1(old)
    with pytest.warns(UserWarning, match="older prefaudit without a manifest"):
        back = pa.AuditSession.load(old)
    pd.testing.assert_frame_equal(back.results, built["sae40"].results)
    # What the old in-place save left: a 30-pair session beside the 40-pair session's features.
    stale = copy(built, "c30", tmp_path / "stale")
    as_format_1(stale)
    shutil.copyfile(old / "encoded.safetensors", stale / "encoded.safetensors")
    with pytest.warns(UserWarning, match="older prefaudit"):
        refused(stale, str(stale / "encoded.safetensors"), "left by another session")


# ---------------------------------------------------------------------------- hostile session.json
def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        d = state
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


def _nested(depth: int) -> Any:
    v: Any = 0
    for _ in range(depth):
        v = {"a": v}
    return v


HOSTILE: dict[str, tuple[Any, str]] = {
    "wrong type of labels": (_set("labels", value=[1, 2]), "'labels'"),
    "wrong type of a setting": (_set("config", "shard_size", value="big"), "'config.shard_size'"),
    "a weight as text": (_set("weights", value={"concept:url": "1"}), "'weights.concept:url'"),
    "a boolean count": (_set("config", "max_prompt_tokens", value=True), "'config.max_prompt_tokens'"),
    "absurd token limit": (
        _set("config", "max_response_tokens", value=10**30),
        "'config.max_response_tokens'",
    ),
    "absurd artefact size": (
        _set("manifest", "pairs.parquet", "size", value=10**30),
        "'manifest.pairs.parquet.size'",
    ),
    "negative artefact size": (
        _set("manifest", "report.json", "size", value=-1),
        "'manifest.report.json.size'",
    ),
    "unknown top-level key": (_set("evil", value=1), "'evil'"),
    "unknown setting": (_set("config", "trust_remote_code", value=True), "'config.trust_remote_code'"),
    "unknown manifest field": (
        _set("manifest", "pairs.parquet", "path", value="/etc/passwd"),
        "'manifest.pairs.parquet.path'",
    ),
    "relative path in the manifest": (
        _set("manifest", "../../etc/passwd", value={"fingerprint": "0" * 16, "size": 1, "sha256": "0" * 64}),
        "'manifest.../../etc/passwd'",
    ),
    "absolute path in the manifest": (
        _set("manifest", "/etc/passwd", value={"fingerprint": "0" * 16, "size": 1, "sha256": "0" * 64}),
        "'manifest./etc/passwd'",
    ),
    "deep nesting in a free field": (_set("encoded_meta", value=_nested(40)), "'encoded_meta.a.a"),
    "format version as text": (_set("format_version", value="2"), "'format_version'"),
    "unknown format version": (_set("format_version", value=99), "format 99"),
    "pair edit that is a command": (_set("pair_edits", value=[[0, "rm -rf /"]]), "'pair_edits[0][1]'"),
    "concept of unknown kind": (
        _set("concepts", value=[{"name": "x", "kind": "python", "code": "import os"}]),
        "'concepts[0].code'",
    ),
    "broken regex": (
        _set("concepts", value=[{"name": "x", "kind": "regex", "pattern": "("}]),
        "'concepts[0].pattern'",
    ),
    "sae true": (_set("config", "sae", value=True), "'config.sae'"),
    "a weight that is NaN": (_set("weights", value={"concept:url": float("nan")}), "'weights.concept:url'"),
    "a token limit as text": (
        _set("encoded_meta", value={"max_prompt_tokens": "all"}),
        "'encoded_meta.max_prompt_tokens'",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_session_json_is_refused_naming_the_field(built, tmp_path, case):
    edit, needle = HOSTILE[case]
    target = copy(built, "c30", tmp_path / "s")
    state = state_of(target)
    edit(state)
    (target / "session.json").write_text(json.dumps(state))
    with pytest.raises(pa.ConfigError) as info:  # SessionFileError, or "incompatible" for a version
        pa.AuditSession.load(target)
    assert str(target / "session.json") in str(info.value) and needle in str(info.value), str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["s"]  # nothing written beside it


RAW: dict[str, tuple[Callable[[str], str], str]] = {
    "invalid JSON": (lambda text: text[: len(text) // 2], "not valid JSON"),
    "nesting bomb": (lambda _text: "[" * 200_000 + "]" * 200_000, "nests deeper"),
    "duplicate key": (lambda text: text.replace('"labels":', '"labels": {}, "labels":', 1), "appears twice"),
    "huge integer": (
        lambda text: text.replace('"format_version": 2', '"format_version": ' + "9" * 5000),
        "JSON",
    ),
    "not UTF-8": (lambda text: text.replace('"labels"', '"lab\udcffels"'), "UTF-8"),
}


@pytest.mark.parametrize("case", list(RAW))
def test_a_hostile_session_json_text_is_refused_naming_the_file(built, tmp_path, case):
    change, needle = RAW[case]
    target = copy(built, "c30", tmp_path / "s")
    text = change((target / "session.json").read_text())
    (target / "session.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    refused(target, str(target / "session.json"), needle)


def test_an_oversized_session_json_is_refused_before_it_is_read(built, tmp_path, monkeypatch):
    target = copy(built, "c30", tmp_path / "s")
    monkeypatch.setattr(persist_schema, "MAX_JSON_BYTES", 100)
    refused(target, str(target / "session.json"), "at most 100")


def test_a_linked_session_json_is_refused(built, tmp_path):
    target = copy(built, "c30", tmp_path / "s")
    shutil.move(target / "session.json", tmp_path / "elsewhere.json")
    (target / "session.json").symlink_to(tmp_path / "elsewhere.json")
    refused(target, str(target / "session.json"))


def test_a_cache_dir_that_is_not_yours_is_not_used(built, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFAUDIT_CACHE", str(tmp_path / "my-cache"))
    target = copy(built, "c30", tmp_path / "s")
    state = state_of(target)
    for planted in (str(tmp_path / "someone-else" / "cache"), "../../etc"):
        state["cache_dir"] = planted
        (target / "session.json").write_text(json.dumps(state))
        with pytest.warns(UserWarning, match="'cache_dir'"):
            back = pa.AuditSession.load(target)
        assert back.cache_dir == tmp_path / "my-cache"
    assert not (tmp_path / "someone-else").exists()
    # A cache folder given to load is used as given, with no warning.
    back = pa.AuditSession.load(target, cache_dir=tmp_path / "chosen")
    assert back.cache_dir == tmp_path / "chosen"


def test_a_killed_saves_leftovers_are_removed_by_the_next_save(built, tmp_path):
    dead = tmp_path / ".s.saving-999999999-0badf00d"  # above any pid_max: no such process
    live = tmp_path / f".s.saving-{os.getpid()}-0badf00d"  # a save in progress: left alone
    for d in (dead, live):
        shutil.copytree(built["c40_dir"], d)
    built["c30"].save(tmp_path / "s")
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, "s"])


def test_a_save_interrupted_between_its_renames_says_where_the_previous_session_is(built, tmp_path):
    shutil.copytree(built["c40_dir"], tmp_path / ".s.old-999999999-0badf00d")
    with pytest.raises(pa.ConfigError, match=r"interrupted; the previous session is in .*\.s\.old-"):
        pa.AuditSession.load(tmp_path / "s")


def test_the_loader_never_unpickles_or_evaluates():
    for mod in (fp_mod, persist_schema, pa.audit.persist):
        source = Path(mod.__file__).read_text()
        for banned in ("import pickle", "allow_pickle=True", "torch.load", "eval(", "exec(", "literal_eval"):
            assert banned not in source, (mod.__name__, banned)
