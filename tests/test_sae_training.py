"""SAE training through sae-lens (tiny, random activations) and the shipped default SAE's card."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sae_lens")

from prefaudit.build.sae_training import (  # noqa: E402
    DEFAULT_OUT,
    SAETrainingRecipe,
    activation_batches,
    evaluate_sae,
    save_sae,
    train_topk_sae,
)

TINY = SAETrainingRecipe(
    d_sae=64,
    k=6,
    lr=1e-2,
    lr_end=1e-3,
    epochs=6,
    batch_size=256,
    dead_feature_window=10,
    feature_sampling_window=20,
    n_batches_for_norm_estimate=4,
    lr_warm_up_steps=5,
)


def sparse_activations(n: int = 2048, d_in: int = 16, n_dirs: int = 32, seed: int = 0) -> torch.Tensor:
    """Sparse combinations of fixed directions, at a large norm like real residual streams."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_dirs, d_in, generator=g)
    on = torch.rand(n, n_dirs, generator=g) < 3 / n_dirs
    codes = on * (1 + 4 * torch.rand(n, n_dirs, generator=g))
    return 40 * (codes @ dirs) + torch.randn(n, d_in, generator=g)


def test_batches_are_shuffled_full_and_endless() -> None:
    acts = torch.arange(10, dtype=torch.float32)[:, None]
    it = activation_batches(acts, 4, seed=0)
    batches = [next(it) for _ in range(6)]  # 2 full batches per epoch, 3 epochs
    assert all(b.shape == (4, 1) for b in batches)
    assert len(set(batches[0].ravel().tolist())) == 4
    assert batches[0].ravel().tolist() != batches[2].ravel().tolist()  # a new permutation per epoch


def test_train_reduces_loss_folds_scaling_and_round_trips(tmp_path) -> None:
    acts = sparse_activations()
    torch.manual_seed(TINY.seed)
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    untrained = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=16, d_sae=64, k=4))
    sae, losses = train_topk_sae(acts, TINY, metadata={"hook_name": "model.layers.15", "note": "tiny"})
    assert len(losses) == int(TINY.epochs * (2048 // 256))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    # The activation-norm factor is folded into the weights: the SAE reads raw activations.
    assert sae.cfg.normalize_activations == "none"
    before, after = evaluate_sae(untrained, acts), evaluate_sae(sae, acts)
    assert after["explained_variance"] > 0.5 > before["explained_variance"]
    assert after["l0"] <= TINY.k
    save_sae(sae, tmp_path / "sae", check=acts[:512])
    from sae_lens import SAE

    loaded = SAE.load_from_disk(tmp_path / "sae", dtype="float32")
    assert loaded.cfg.metadata.hook_name == "model.layers.15"
    assert loaded.cfg.metadata.note == "tiny"
    assert evaluate_sae(loaded, acts)["explained_variance"] == pytest.approx(
        after["explained_variance"], abs=1e-4
    )


def test_save_sae_refuses_a_directory_that_does_not_reproduce(tmp_path, monkeypatch) -> None:
    acts = sparse_activations(n=1024)
    sae, _ = train_topk_sae(
        acts, SAETrainingRecipe(d_sae=32, k=4, epochs=1, batch_size=256, n_batches_for_norm_estimate=2)
    )
    original = sae.save_inference_model

    def corrupt(path):  # type: ignore[no-untyped-def]
        out = original(path)
        with torch.no_grad():
            sae.W_enc.mul_(2)  # the in-memory SAE now differs from what was written
        return out

    monkeypatch.setattr(sae, "save_inference_model", corrupt)
    with pytest.raises(RuntimeError, match="does not reproduce"):
        save_sae(sae, tmp_path / "bad", check=acts[:256])


def test_recipe_validation() -> None:
    with pytest.raises(ValueError):
        SAETrainingRecipe(d_sae=8, k=16)
    with pytest.raises(ValueError):
        train_topk_sae(torch.zeros(10, 4), SAETrainingRecipe(d_sae=8, k=2, batch_size=64))


def test_shipped_default_sae_card() -> None:
    """The embedded SAE loads and its recorded, measured metrics meet the targets."""
    from prefaudit.features.sae import load_sae

    cfg = json.loads((DEFAULT_OUT / "cfg.json").read_text())
    size = (DEFAULT_OUT / "sae_weights.safetensors").stat().st_size
    assert size <= 20e6
    feats = load_sae(None)
    assert feats.hook_name == "model.layers.15" and feats.layer == 15
    assert feats.d_sae >= 4096 and feats.d_in == 576
    meta = cfg["metadata"]["prefaudit"]
    held = meta["metrics"]["heldout"]
    assert held["explained_variance"] >= 0.80
    assert held["l0"] <= 64
    assert held["dead_fraction"] < 0.10
    assert meta["training"]["seed"] == 0 and meta["corpus"]["n_train_tokens"] > 100_000
    assert cfg["normalize_activations"] == "none"  # folded: encodes raw activations


@pytest.mark.slow
def test_shipped_sae_measured_again_on_demo_responses() -> None:
    """Re-measure (not just read back) the card's numbers on demo responses the SAE never trained on."""
    from prefaudit.backbone import Backbone
    from prefaudit.build.sae_training import read_activations
    from prefaudit.demo import load_demo_pairs
    from prefaudit.features.sae import load_sae

    df = load_demo_pairs(limit=60).df
    backbone = Backbone.load(dtype="float32")
    acts = read_activations(
        backbone, list(df["prompt"]) * 2, list(df["chosen"]) + list(df["rejected"]), progress=False
    )
    metrics = evaluate_sae(load_sae(None).sae, acts)
    assert metrics["explained_variance"] >= 0.80
    assert metrics["l0"] <= 64


def test_response_store_reads_each_response_once(tiny_model_dir, tmp_path, monkeypatch) -> None:
    """A changed corpus re-reads only the changed responses; the stored reading equals a fresh one."""
    from prefaudit.backbone import Backbone
    from prefaudit.build.sae_training import cached_response_activations, read_activations

    monkeypatch.setenv("PREFAUDIT_CACHE", str(tmp_path))
    torch.set_num_threads(1)
    bb = Backbone.load(tiny_model_dir, layer=2)
    prompts = ["what is the sea", "tell me of the sun", "what is the sea"]
    responses = ["it is a lot of water", "the sun is a star and it is hot", "it is a lot of water"]
    acts, n_read, _ = cached_response_activations(bb, prompts, responses, progress=False)
    assert n_read == 2  # the repeated (prompt, response) is read once
    fresh = read_activations(bb, prompts, responses, progress=False)
    assert acts.dtype == torch.float16 and torch.equal(acts, fresh)
    again, n_read, _ = cached_response_activations(bb, prompts, responses, progress=False)
    assert n_read == 0 and torch.equal(again, acts)
    changed = [*responses[:2], "it is the sea"]
    acts3, n_read, _ = cached_response_activations(bb, prompts, changed, progress=False)
    assert n_read == 1
    assert torch.equal(acts3, read_activations(bb, prompts, changed, progress=False))
