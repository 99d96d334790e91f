"""Notebooks run in a real kernel (nbclient) and save their widget state.

The two shipped notebooks load the embedded model and SAE on the demo set (``slow``); a small
generated notebook checks every view's saved state with a concepts-only session (``kernel``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
STATE_KEY = "application/vnd.jupyter.widget-state+json"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"


def run(nb_or_path, cwd: Path, timeout: int = 900):
    """Execute a notebook in a fresh python3 kernel with widget state stored; errors raise."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(nb_or_path, as_version=4) if isinstance(nb_or_path, Path) else nb_or_path
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def widget_state(nb) -> dict:
    return nb.metadata["widgets"][STATE_KEY]["state"]


def models_with_class(state: dict, css: str) -> list[dict]:
    return [m for m in state.values() if css in m.get("state", {}).get("_dom_classes", [])]


def anywidgets(state: dict, name: str) -> list[dict]:
    return [m for m in state.values() if m.get("state", {}).get("_anywidget_id", "").endswith(name)]


def assert_clean(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.get("execution_count"), f"cell not run: {cell.source[:60]}"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{out.get('ename')}: {out.get('evalue')}"
            text = out.get("text", "") if out.get("name") == "stderr" else ""
            assert "Traceback" not in text, text


def views_in_outputs(nb) -> int:
    return sum(
        VIEW_MIME in out.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for out in c.get("outputs", [])
    )


# ---------------------------------------------------------------------- the shipped notebooks
@pytest.mark.kernel
@pytest.mark.slow
def test_quickstart_notebook_runs_and_saves_widget_state(tmp_path):
    nb = run(NOTEBOOKS / "01_quickstart_audit.ipynb", tmp_path)
    assert_clean(nb)
    state = widget_state(nb)
    assert (
        models_with_class(state, "prefaudit-volcano")
        and len(models_with_class(state, "prefaudit-pairs")) == 2
    )
    pairs = anywidgets(state, "PairsWidget")
    assert all(m["state"]["pairs"] for m in pairs)
    assert "sae" in {m["state"]["legend"]["kind"] for m in pairs}
    assert views_in_outputs(nb) >= 3
    report = (tmp_path / "quickstart-report.html").read_text()
    assert "<code>concept:flattery</code>" in report  # the selected feature's examples
    # Offline: no script, stylesheet or image is loaded from the network (plotly.js itself
    # mentions CDN URLs in its source; what matters is that nothing references one to load).
    assert not re.search(r"<(?:script|link|img)[^>]+(?:src|href)=[\"']?https?://", report)


@pytest.mark.kernel
@pytest.mark.slow
def test_what_if_notebook_runs_and_saves_widget_state(tmp_path):
    nb = run(NOTEBOOKS / "02_what_if_shaping.ipynb", tmp_path)
    assert_clean(nb)
    state = widget_state(nb)
    assert models_with_class(state, "prefaudit-shaper") and models_with_class(state, "prefaudit-dashboard")
    rows = models_with_class(state, "pa-weight-row")
    assert len(rows) >= 6  # 3 features, in the shaper and in the dashboard
    previews = anywidgets(state, "ShaperPreview")
    assert previews and all(m["state"]["n_dominated"] > 0 for m in previews)
    assert {m["state"]["feature"] for m in anywidgets(state, "PairsWidget")} == {"concept:flattery"}
    sliders = [m for m in state.values() if m["model_name"] == "FloatSliderModel"]
    assert -2.0 in {m["state"]["value"] for m in sliders}  # the flattery weight reached the slider


# ---------------------------------------------------------------------- every view, saved state
VIEWS_NOTEBOOK = [
    """import prefaudit as pa
H = "<script>alert(1)</script> <img src=x onerror=alert(2)>"
rows = [{"prompt": f"q{i} " + (H if i == 0 else ""),
         "chosen": ("What a great question! " if i % 3 else "") + f"answer {i} " + (H if i == 0 else "") + (" see http://x.example" if i % 2 else ""),
         "rejected": ("Sorry, I cannot help. " if i % 4 == 0 else "") + f"other {i}"} for i in range(30)]
session = pa.AuditSession(pa.load_pairs(rows), sae=False, cache_dir=False)
session.test(n_boot=50)
session.set_label("concept:url", "links " + H)""",
    "session.select_feature('concept:url'); session.set_weight('concept:url', -1.5); session.volcano()",
    "session.drilldown()",
    "session.shaper()",
    "dash = session.dashboard(); dash",
    "dash.volcano.search.value = 'flattery'; session.focus, session.selection",
]


@pytest.mark.kernel
def test_every_view_saves_its_widget_state(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(src) for src in VIEWS_NOTEBOOK])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = run(nb, tmp_path, timeout=300)
    assert_clean(nb)
    state = widget_state(nb)
    for css in (
        "prefaudit-volcano",
        "prefaudit-pairs",
        "prefaudit-shaper",
        "prefaudit-dashboard",
        "pa-search",
    ):
        assert models_with_class(state, css), css
    assert views_in_outputs(nb) == 4
    # The volcano's points are in the saved state, as binary buffers (typed arrays), not lists.
    figures = [m for m in state.values() if "_widget_data" in m["state"]]
    assert len(figures) == 2
    paths = [b["path"] for f in figures for b in f.get("buffers", [])]
    assert ["_widget_data", 2, "x", "buffer"] in paths and ["_widget_data", 2, "y", "buffer"] in paths
    # The anywidgets carry their ES module (drop_defaults would lose it) and their data.
    pairs = anywidgets(state, "PairsWidget")
    assert pairs and all(
        "_esm" in m["state"] and m["state"]["feature"] == "concept:flattery" for m in pairs
    )  # followed the search
    assert all(m["state"]["pairs"] for m in pairs)
    previews = anywidgets(state, "ShaperPreview")
    assert previews and all(m["state"]["version"] >= 1 and m["state"]["features"] for m in previews)
    tags = anywidgets(state, "RowTag")
    assert {m["state"]["feature"] for m in tags} >= {"concept:url"}
    last = nb.cells[-1].outputs[0]["data"]["text/plain"]
    assert "concept:flattery" in last
    nbformat.validate(nb)
