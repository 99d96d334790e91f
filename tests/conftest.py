"""Shared fixtures: tiny real models for the fast layer, and the paths of the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import tiny

_HH_NAME = "hh-rlhf-harmless-base-test-first1000.jsonl.gz"
# The shared data sits beside the repository; a clone elsewhere finds it through the env var or
# the workspace's fixed location.
_HH_CANDIDATES = [
    *(
        [Path(os.environ["PREFAUDIT_SHARED_DATA"]) / _HH_NAME]
        if os.environ.get("PREFAUDIT_SHARED_DATA")
        else []
    ),
    Path(__file__).resolve().parents[2] / "shared" / "data" / _HH_NAME,
    Path("/work/shared/data") / _HH_NAME,
]
HH_PATH = next((p for p in _HH_CANDIDATES if p.is_file()), _HH_CANDIDATES[0])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny.build_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_sae_dir(tmp_path_factory) -> Path:
    return tiny.build_sae(tmp_path_factory.mktemp("tiny-sae"))


@pytest.fixture(scope="session")
def hh_path() -> Path:
    if not HH_PATH.is_file():
        pytest.skip(f"shared HH data not found at {HH_PATH}")
    return HH_PATH


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory) -> Path:
    # Shared across tests: encoding the same tiny pairs again is answered from the shard cache.
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture()
def tiny_session(tiny_model_dir, tiny_sae_dir, tiny_cache_dir):
    import prefaudit as pa

    pairs = pa.load_pairs(tiny.planted_pairs(40))
    return pa.AuditSession(
        pairs, model=tiny_model_dir, sae=tiny_sae_dir, cache_dir=tiny_cache_dir, batch_size=4, shard_size=16
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny-model tests: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    # Tiny matrices gain nothing from a second thread, and OpenMP barriers cost 10x on a busy CPU.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _offline_env():
    # Nothing may reach the network at run time; make transformers/datasets fail fast if tried.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


@pytest.fixture(scope="session")
def playwright_sync():
    """One sync Playwright for the whole session: a second one in the same thread fails."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()
