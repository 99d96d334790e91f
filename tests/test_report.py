"""Standalone HTML report: offline (no http(s) resource loads), escaped, complete."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import prefaudit as pa
from prefaudit.report import write_report
from tests import tiny

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
HOSTILE = f"{SCRIPT} {IMG} **md** &amp;"


class _Resources(HTMLParser):
    """Collects every element and the URLs it would load, and the text of <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.loads: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        for key in ("src", "href", "data", "poster", "srcset"):
            if a.get(key):
                self.loads.append(f"{tag}[{key}]={a[key]}")
        self.handlers += [f"{tag}[{k}]" for k in a if k.startswith("on")]


def parse(text: str) -> _Resources:
    p = _Resources()
    p.feed(text)
    return p


@pytest.fixture(scope="module")
def hostile_session():
    rows = tiny.planted_pairs(40)
    for r in rows[:8]:
        r["prompt"] = f"prompt {HOSTILE}"
        r["chosen"] = f"What a great question! {HOSTILE} See http://www.example.com/{SCRIPT}"
        r["rejected"] = f"Sorry, I cannot help. {HOSTILE}"
    s = pa.AuditSession(pa.load_pairs(rows), sae=False, cache_dir=False)
    s.test(n_boot=50)
    s.set_label("concept:url", f"links {SCRIPT}")
    s.set_weight("concept:url", -1.5)
    s.set_verdict("concept:apology", "allow")
    s.set_note("concept:url", f"note {IMG}")
    return s


@pytest.fixture(scope="module")
def report_text(hostile_session, tmp_path_factory):
    path = hostile_session.report(tmp_path_factory.mktemp("report") / "audit.html")
    assert path.name == "audit.html" and path.is_file()
    return path.read_text(encoding="utf-8")


def test_report_loads_nothing_from_the_network(report_text):
    res = parse(report_text)
    assert res.loads == []  # no <script src>, <link href>, <img src>, ...
    assert [t for t, a in res.tags if t == "link"] == []
    # Outside the inline scripts (plotly.js holds URL strings it never loads here), no URL at all.
    markup = re.sub(r"<script[^>]*>.*?</script>", "", report_text, flags=re.S)
    assert not re.search(r"https?://(?!www\.example\.com)", markup)
    # plotly.js itself is inline (several MB), and the figure is drawn with it.
    assert len(report_text) > 1_000_000 and "Plotly.newPlot" in report_text


def test_report_escapes_all_dataset_text(report_text):
    res = parse(report_text)
    assert res.handlers == []  # no element with an on* attribute: <img onerror> stayed text
    assert [t for t, _ in res.tags].count("img") == 0
    # Only the two scripts the report writes (plotly.js and the figure): none from the data.
    assert [t for t, _ in res.tags].count("script") == 2
    assert "alert(1)" not in report_text.replace("&lt;script&gt;alert(1)&lt;/script&gt;", "").replace(
        "\\u003cscript\\u003ealert(1)\\u003c\\u002fscript\\u003e", ""
    ).replace("&lt;script&gt;alert(1)&lt;\\u002fscript&gt;", "")
    assert "&lt;img src=x onerror=alert(2)&gt;" in report_text
    assert "**md** &amp;amp;" in report_text  # markdown and entities stay literal


def test_report_lists_top_features_examples_and_decisions(report_text, hostile_session):
    for fid in ("concept:url", "concept:flattery", "concept:apology"):
        assert f"<code>{fid}</code>" in report_text
    assert "more present in chosen" in report_text and "more present in rejected" in report_text
    assert "<mark>http://www.example.com" in report_text  # the regex match is marked
    assert "-1.50" in report_text or "−1.50" in report_text
    assert "note &lt;img" in report_text and ">allow<" in report_text
    n_dom = hostile_session.shaping.preview().n_dominated
    assert f"{n_dom} of 40 pairs" in report_text


def test_report_needs_results(tmp_path):
    s = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(10)), sae=False, cache_dir=False)
    with pytest.raises(pa.ConfigError, match=r"session\.test\(\)"):
        write_report(s, tmp_path / "r.html")


def test_report_of_an_sae_session_marks_peak_tokens(tiny_session, tmp_path):
    tiny_session.encode(progress=False)
    tiny_session.test(n_boot=50)
    res = tiny_session.results
    sae = res[(res["source"] == "sae") & (res["n_active"] > 0)].sort_values("q")["feature"].iloc[0]
    text = write_report(tiny_session, tmp_path / "sae.html", examples=[sae, "concept:url"]).read_text()
    example = re.search(rf"<h3><code>{sae}</code>(.*?)(?=<h3>|<h2>)", text, re.S)
    assert example, "the SAE feature has no examples"
    assert "<mark>" in example.group(1)  # its peak token is marked
    assert parse(text).loads == []


def test_report_opens_with_sentences_and_clusters_all_escaped(
    tiny_model_dir, tiny_sae_dir, tiny_cache_dir, tmp_path
):
    from tests.tiny import BLOCK_A, plant_blocks

    rows = tiny.planted_pairs(40)
    for r in rows[:8]:
        r["chosen"] = f"What a great question! {HOSTILE} {r['chosen']}"
        r["rejected"] = f"{HOSTILE} {r['rejected']}"
    s = pa.AuditSession(
        pa.load_pairs(rows), model=tiny_model_dir, sae=tiny_sae_dir, cache_dir=tiny_cache_dir, batch_size=4
    )
    s.encode(progress=False)
    plant_blocks(s)
    s.test(n_boot=50)
    g_a = s.groups.of(f"sae:{BLOCK_A[0]}")
    s.set_label(g_a, f"links {SCRIPT} {IMG}")
    text = write_report(s, tmp_path / "r.html").read_text(encoding="utf-8")
    res = parse(text)
    assert res.handlers == [] and [t for t, _ in res.tags].count("script") == 2
    assert [t for t, _ in res.tags].count("img") == 0
    assert res.loads and all(x.startswith("a[href]=#group:") for x in res.loads)  # in-page links only
    first = text[text.index("<h2>What this data teaches</h2>") : text.index("<h2>How well the SAE")]
    label = "links &lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(2)&gt;"
    assert f"“{label}”" in first  # the sentence names the cluster by its (escaped) label …
    assert f"<tr id='{g_a}'><td><code>{g_a}</code></td><td>{label}</td>" in first  # … and so does its row
    assert "<dt>d_z</dt>" in first  # the glossary explains the numbers


def test_report_examples_start_with_the_selection(tmp_path):
    s = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(40)), sae=False, cache_dir=False)
    s.test(n_boot=50)
    weakest = s.results.sort_values("q")["feature"].iloc[-1]  # never among the top features
    top = write_report(s, tmp_path / "a.html", example_features=1).read_text()
    assert f"<h3><code>{weakest}</code>" not in top
    s.select_feature(weakest)
    text = write_report(s, tmp_path / "b.html", example_features=1).read_text()
    examples = re.findall(r"<h3><code>([^<]+)</code>", text)
    assert examples[0] == weakest and len(examples) == len(set(examples)) >= 2


def test_report_needs_no_widget_library(tmp_path):
    # The report draws with the pure prefaudit.views.figures: no notebook, no widget module.
    code = f"""
import sys
import prefaudit as pa
import prefaudit.report
from tests import tiny
s = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(20)), sae=False, cache_dir=False)
s.test(n_boot=20)
s.set_weight("concept:url", -1.0)
prefaudit.report.write_report(s, {str(tmp_path / "r.html")!r})
print(sorted(m for m in ("ipywidgets", "anywidget") if m in sys.modules))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "Plotly.newPlot" in (tmp_path / "r.html").read_text(encoding="utf-8")
