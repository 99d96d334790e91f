"""The command line: ``prefaudit audit DATA --out DIR`` and ``prefaudit demo`` (slow)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from prefaudit.cli import main
from prefaudit.demo import DESIGN
from tests import tiny


def write_jsonl(path, rows) -> None:  # type: ignore[no-untyped-def]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_audit_concepts_only_writes_table_summary_and_report(tmp_path, capsys) -> None:
    rows = tiny.planted_pairs(40)
    rows[3]["chosen"] = None  # a bad row: reported, not dropped silently
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out"
    assert main(["audit", str(tmp_path / "pairs.jsonl"), "--out", str(out), "--no-sae", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "39 pairs (1 rows rejected)" in printed
    csv = pd.read_csv(out / "features.csv")
    parquet = pd.read_parquet(out / "features.parquet")
    assert list(csv.columns) == list(parquet.columns) and len(csv) == len(parquet) > 10
    assert set(csv["source"]) == {"concept"}
    pd.testing.assert_series_equal(csv["d_z"], parquet["d_z"], check_exact=False, rtol=1e-12)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_read"] == 40 and summary["n_pairs"] == 39
    assert summary["rejected_rows"] == [
        {"index": 3, "field": "chosen", "reason": summary["rejected_rows"][0]["reason"]}
    ]
    assert summary["n_significant"] == int((csv["q"] < 0.05).sum())
    assert sorted(summary["files"]) == ["features.csv", "features.parquet", "report.html", "summary.json"]
    html = (out / "report.html").read_text()
    # Standalone: no script or stylesheet fetched from anywhere.
    assert not re.search(r"<(?:script|link)[^>]+(?:src|href)=[\"']https?://", html)


def test_every_stage_after_encoding_says_what_it_does_and_how_long_it_took(tmp_path, capsys) -> None:
    write_jsonl(tmp_path / "pairs.jsonl", tiny.planted_pairs(40))
    args = ["audit", str(tmp_path / "pairs.jsonl"), "--no-sae"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    stages = re.findall(r"prefaudit: (.+?) … (\d+\.\d) s", capsys.readouterr().err)
    names = [what for what, _ in stages]
    assert names[0].startswith("testing ") and names[-1] == "writing report.html"
    assert any("topics" in n for n in names) and any("clustering" in n for n in names)
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "prefaudit: " not in capsys.readouterr().err


def test_audit_with_a_local_model_and_sae_directory(tmp_path, tiny_model_dir, tiny_sae_dir) -> None:
    write_jsonl(tmp_path / "pairs.jsonl", tiny.planted_pairs(24))
    out = tmp_path / "out"
    argv = [
        "audit",
        str(tmp_path / "pairs.jsonl"),
        "--out",
        str(out),
        "--quiet",
        "--no-cache",
        "--model",
        str(tiny_model_dir),
        "--sae",
        str(tiny_sae_dir),
        "--pooling",
        "mean",
        "--limit",
        "20",
    ]
    assert main(argv) == 0
    table = pd.read_parquet(out / "features.parquet")
    assert {"sae", "concept"} == set(table["source"])
    assert (table["source"] == "sae").sum() == 64  # the tiny SAE's d_sae
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_pairs"] == 20 and summary["pooling"] == "mean" and summary["layer"] == 2


def test_the_summary_leads_with_sentences_then_clusters_then_features(tiny_session, tmp_path, capsys) -> None:
    from prefaudit.cli import _print_summary, write_outputs
    from tests.tiny import BLOCK_A, plant_blocks

    tiny_session.encode(progress=False)
    plant_blocks(tiny_session)
    tiny_session.test(n_boot=50)
    tiny_session.groups()  # without the report, the summary reads what was computed
    summary = write_outputs(
        tiny_session, tmp_path, {"out": str(tmp_path), "n_pairs": 40, "rejected_rows": []}, report=False
    )
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert list(saved)[:2] == ["sentences", "clusters"] and saved["clusters"]["n_clusters"] >= 2
    _print_summary(summary)
    out = capsys.readouterr().out
    g_a = tiny_session.groups.of(f"sae:{BLOCK_A[0]}")
    row = tiny_session.groups().set_index("group").loc[g_a]
    assert (
        out.index("What this data teaches") < out.index("Strongest clusters") < out.index("single features")
    )
    line = next(x for x in out.splitlines() if x.strip().startswith(g_a) and "features" in x)
    assert f"{row['n_members']} features" in line and f"d_z={row['d_z']:+.2f}" in line
    assert "chosen" in line and line.rstrip().endswith(row["label"])
    assert f"[{g_a}] Chosen responses have more" in out


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "no such file"),
        ("empty.jsonl", "", "empty"),
        ("cols.csv", "a,b\n1,2\n", "missing required column"),
        ("broken.jsonl.gz", "not gzip at all", "gzip"),
    ],
)
def test_bad_input_is_a_one_line_error_not_a_traceback(tmp_path, capsys, name, content, message) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert main(["audit", str(path), "--out", str(tmp_path / "out"), "--no-sae", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prefaudit: error:") and message in err.lower(), err
    assert "Traceback" not in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_demo_on_the_embedded_default_finds_the_planted_biases(tmp_path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_pairs"] == DESIGN.n_pairs and summary["rejected_rows"] == []
    assert summary["sae"] and summary["n_significant_sae"] > 0
    top = {row["feature"] for row in summary["top_features"]}
    assert "concept:flattery" in top or summary["n_significant_concepts"] > 0
    table = pd.read_parquet(out / "features.parquet").set_index("feature")
    for concept in ("flattery", "url", "markdown_headers"):
        assert (
            table.loc[f"concept:{concept}", "q"] < 0.05
            and table.loc[f"concept:{concept}", "direction"] == "chosen"
        )
    # The topic-conditional bias: the report flags the citation concept as topic-specific,
    # significant only in the topic that holds the requests for resources.
    topics = summary["concepts"]["topics"]
    flagged = {r["id"]: r for r in topics["topic_specific_features"]}
    assert "concept:citation" in flagged, sorted(flagged)
    (where,) = flagged["concept:citation"]["significant_in"]
    assert "resources" in next(t["label"] for t in topics["topics"] if t["topic"] == where)
    html = (out / "report.html").read_text()
    assert "concept:flattery" in html and not re.search(
        r"<(?:script|link)[^>]+(?:src|href)=[\"']https?://", html
    )
