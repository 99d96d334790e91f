"""The feature gallery's selection rule and its markdown escaping (tiny model; the demo run is slow)."""

from __future__ import annotations

import pytest

from prefaudit.build.gallery import MARKERS, md_escape, pick_features, splice_section

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_picks_top_dz_then_frequent_without_planted_truth(tiny_session) -> None:  # type: ignore[no-untyped-def]
    tiny_session.encode(progress=False)
    res = tiny_session.test()
    picks = pick_features(tiny_session, n_dz=3, n_freq=2)
    assert len({f for f, _ in picks}) == len(picks) == 5
    sig = res[(res["source"] == "sae") & (res["q"] < 0.05)].copy()
    assert len(sig) >= 3
    expected = sig.reindex(sig["d_z"].abs().sort_values(ascending=False).index)["feature"].head(3)
    assert [f"sae:{f}" for f, why in picks[:3]] == list(expected)
    assert [why for _, why in picks] == ["top |d_z|"] * 3 + ["frequent"] * 2


def test_markdown_escape_shows_dataset_text_as_text() -> None:
    out = md_escape("<script>alert(1)</script> **bold** [x](y)\nnext")
    assert "<" not in out.replace("\\<", "") and "*" not in out.replace("\\*", "")
    assert "⏎" in out and "\n" not in out


def test_splice_replaces_only_the_marked_section() -> None:
    start, end = MARKERS
    readme = f"intro\n{start}\nold\n{end}\noutro\n"
    assert splice_section(readme, "new") == f"intro\n{start}\nnew\n{end}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        splice_section("no markers here", "new")
