"""Explainers behind one interface: registry, Neuronpedia exports, a local LM (tiny model), callables."""

from __future__ import annotations

import gzip
import json

import pytest

from prefaudit.errors import ConfigError
from prefaudit.features import explainers as ex
from prefaudit.features.explainers.hf_model import HFModelExplainer, explainer_prompt
from prefaudit.features.explainers.neuronpedia import NeuronpediaExplainer, neuronpedia_id_of
from prefaudit.features.labels import ConceptContexts, Context, Ngram


def unit(unit_id: str = "sae:3", features=(3,)) -> ConceptContexts:
    top = tuple(Context(k, 4, (" what", " a", " great", " question", "!"), 4, 3.0) for k in range(3))
    contrast = (Context(9, 1, (" the", " oil", " day"), 1, float("nan")),)
    grams = (Ngram("great question!", 3, 0, 4.0, 1.0),)
    return ConceptContexts(unit_id, tuple(features), top, contrast, grams, "great question!", "distinctive")


# ---------------------------------------------------------------------- registry
def test_builtins_are_registered_and_unknown_names_are_listed():
    assert ex.explainer_names()[:4] == ("contexts", "neuronpedia", "hf", "callable")
    with pytest.raises(ConfigError, match="choose one of contexts, neuronpedia, hf, callable"):
        ex.get_explainer("gpt-9")
    with pytest.raises(ConfigError, match="already registered"):
        ex.register_explainer("contexts", lambda: None)


def test_a_new_explainer_is_one_registration(monkeypatch):
    # A registry of this test's own: the process-wide one keeps only the built-ins.
    from prefaudit.features import explainers as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Shout:
        name = "shout"

        def __init__(self, suffix: str = "!"):
            self.suffix = suffix

        def explain(self, contexts):
            return ex.Explanation(contexts.label.upper() + self.suffix, "shout")

    ex.register_explainer("shout", Shout)
    e = ex.get_explainer("shout", suffix="?")
    assert isinstance(e, ex.Explainer)
    assert e.explain(unit()).text == "GREAT QUESTION!?"
    assert ex.explainer_names()[-1] == "shout"


def test_resolve_accepts_names_objects_and_functions():
    assert ex.resolve_explainer("contexts").name == "contexts"
    f = ex.resolve_explainer(lambda c: f"{c.unit} has {len(c.top)} contexts")
    assert f.explain(unit()) == ex.Explanation("sae:3 has 3 contexts", "<lambda>")
    obj = ex.get_explainer("contexts")
    assert ex.resolve_explainer(obj) is obj
    with pytest.raises(ConfigError, match="only for an explainer given by name"):
        ex.resolve_explainer(obj, x=1)
    with pytest.raises(ConfigError, match="give a registered name"):
        ex.resolve_explainer(3)


def test_callable_results_are_checked():
    assert ex.get_explainer("callable", fn=lambda c: None).explain(unit()) is None
    assert ex.get_explainer("callable", fn=lambda c: "  two\nlines ").explain(unit()).text == "two lines"
    with pytest.raises(ConfigError, match="returned int for sae:3"):
        ex.get_explainer("callable", fn=lambda c: 3).explain(unit())
    out = ex.explain_all(ex.get_explainer("contexts"), [unit(), unit("cluster:0", (1, 2))])
    assert [e.text for e in out] == ["great question!", "great question!"]
    assert out[0].source == "contexts (distinctive)" and out[0].evidence == (
        "great question! (3 of 3 top contexts)",
    )


# ---------------------------------------------------------------------- neuronpedia
def record(index, description, *, model="gemma-2-2b", layer="20-gemmascope-res-16k", by="gpt-4o-mini", at=""):
    return {
        "modelId": model,
        "layer": layer,
        "index": str(index),
        "description": description,
        "explanationModelName": by,
        "typeName": "oai_token-act-pair",
        "createdAt": at,
    }


@pytest.fixture()
def export(tmp_path):
    folder = tmp_path / "explanations"
    folder.mkdir()
    rows = [
        record(3, "praise of the question", at="2024-08-01T00:00:00.000Z"),
        record(3, "compliments", by="claude-3-5-haiku", at="2024-07-01T00:00:00.000Z"),
        record(3, "flattery (newest)", at="2024-09-01T00:00:00.000Z"),
        record(1, "markdown headings"),
        record(2, "Markdown headings."),
        record(5, "links"),
        record(7, ""),
        record(3, "other layer", layer="12-gemmascope-res-16k"),
    ]
    with gzip.open(folder / "batch-0.jsonl.gz", "wt", encoding="utf-8") as fh:
        for r in rows[:4]:
            fh.write(json.dumps(r) + "\n")
    (folder / "batch-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:]), encoding="utf-8")
    return folder


def test_neuronpedia_export_is_matched_by_the_saes_id_and_one_explanation_is_chosen(export):
    npx = ex.get_explainer("neuronpedia", paths=export, neuronpedia_id="gemma-2-2b/20-gemmascope-res-16k")
    # Rule: preferred explainer model first (none given), then the newest createdAt.
    assert npx.describe(3) == "flattery (newest)"
    assert npx.counts == {"records": 8, "empty_description": 1, "kept": 6, "other_sources": 1, "features": 4}
    e = npx.explain(unit())
    assert (
        e.text == "flattery (newest)"
        and e.source == "neuronpedia:gemma-2-2b/20-gemmascope-res-16k (gpt-4o-mini)"
    )
    preferred = NeuronpediaExplainer(
        export, neuronpedia_id="gemma-2-2b/20-gemmascope-res-16k", prefer=["claude-3-5-haiku"]
    )
    assert preferred.describe(3) == "compliments"
    assert npx.explain(unit("sae:9", (9,))) is None


def test_a_cluster_is_labelled_from_its_members_explanations(export):
    npx = NeuronpediaExplainer(export, neuronpedia_id="gemma-2-2b/20-gemmascope-res-16k", n_members=2)
    e = npx.explain(unit("cluster:0", (5, 1, 2, 8)))
    # "markdown headings" is shared by two members (case and period ignored): it comes first.
    assert e.text == "markdown headings · links"
    assert e.source.endswith("3 of 4 members explained")
    assert e.evidence == ("sae:5: links", "sae:1: markdown headings", "sae:2: Markdown headings.")


def test_a_mismatched_or_ambiguous_export_is_refused(export, tmp_path):
    with pytest.raises(ConfigError, match="holds 2 SAEs"):
        NeuronpediaExplainer(export)
    with pytest.raises(ConfigError, match="no explanation of gpt2-small/6-res-jb; it holds gemma-2-2b/12"):
        NeuronpediaExplainer(export, neuronpedia_id="gpt2-small/6-res-jb")
    with pytest.raises(ConfigError, match="explains feature 5 but the SAE has 4 features"):
        NeuronpediaExplainer(export, neuronpedia_id="gemma-2-2b/20-gemmascope-res-16k", d_sae=4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(record(1, "x")) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl line 2"):
        NeuronpediaExplainer(bad)
    arr = tmp_path / "api.json"
    arr.write_text(json.dumps([record(4, "an API export")]), encoding="utf-8")
    assert NeuronpediaExplainer(arr).describe(4) == "an API export"  # one SAE: no id needed


def test_the_neuronpedia_id_is_read_from_sae_lens_metadata(tiny_sae_dir):
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(tiny_sae_dir))
    assert neuronpedia_id_of(sae) is None  # a local SAE has none
    sae.cfg.metadata.neuronpedia_id = "gemma-2-2b/20-gemmascope-res-16k"
    assert neuronpedia_id_of(sae) == "gemma-2-2b/20-gemmascope-res-16k"


# ---------------------------------------------------------------------- a local LM
def test_prompt_holds_top_and_contrast_contexts_and_the_phrases():
    p = explainer_prompt(unit())
    assert "1. what a great question[!]" in p
    assert "Random snippets:\n1. the oil day" in p
    assert "Phrases commoner where it is active: great question!" in p


@pytest.mark.usefixtures("one_torch_thread")
def test_a_local_lm_explains_offline_with_bounded_generation(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = ex.get_explainer("hf", model=tiny_model_dir, max_new_tokens=5)
    prompt = lm.tokenizer.decode(lm.prompt_ids(unit()))
    assert "<|im_start|>user" in prompt and "what a great question[!]" in prompt
    outs = lm.generate([unit(), unit("cluster:1", (1, 2))])
    assert len(outs) == 2 and all(0 < len(o) <= 5 for o in outs)
    assert outs == lm.generate([unit(), unit("cluster:1", (1, 2))])  # greedy: deterministic
    got = ex.explain_all(lm, [unit(), unit("sae:8", (8,))])
    for e in got:
        assert e is None or (e.source == f"hf:{tiny_model_dir.name}" and "\n" not in e.text)
    empty = ConceptContexts("sae:0", (0,), (), (), (), "(no context)", "no context", 3)
    assert lm.explain(empty) is None
    with pytest.raises(ConfigError, match="not a local folder or in the Hugging Face cache"):
        HFModelExplainer("nobody/no-such-model-here")
    with pytest.raises(ConfigError, match="needs its tokenizer"):
        HFModelExplainer(lm.model)


def test_an_explainer_returning_the_wrong_count_is_named():
    class Bad:
        name = "bad"

        def explain(self, contexts):
            return None

        def explain_many(self, units):
            return []

    with pytest.raises(ConfigError, match="gave 0 explanations for 1 units"):
        ex.explain_all(Bad(), [unit()])
