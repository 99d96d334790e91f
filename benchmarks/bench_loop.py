"""The whole loop, timed: run notebooks/03_dpo_and_verify.ipynb in a kernel and print its numbers.

    .venv/bin/python benchmarks/bench_loop.py                  # the notebook as shipped (~15 min, 2 cores)
    .venv/bin/python benchmarks/bench_loop.py --set SEED=1     # another seed (split, LoRA init, data order)
    .venv/bin/python benchmarks/bench_loop.py --set STEPS=2 --set N_PROMPTS=4   # a smoke run
    .venv/bin/python benchmarks/bench_loop.py --save out.ipynb --json out.json

``--set NAME=VALUE`` overrides one of the notebook's knobs (a cell inserted right after the knob
cell; the notebook file is not changed). Prints, per run (vanilla, shaped): the flattery rate in
held-out generations (base -> trained) and its standardised shift ± standard error; on held-out
pairs that differ in quality but not in flattery, how often the implicit reward prefers the direct
answer and its mean margin toward it; the held-out accuracy against the labels; r / R² / sign
agreement of observed vs predicted shift; and the wall time. Then every planted concept's rate in
the generations by detector (pattern, cluster, either) with the rise's standard error, the drift
(ρ on held-out responses, KL on held-out prompts, the importance weights' ESS), and the agreement
table of every channel (reward, reward within pair, generation, length-adjusted generation,
importance-weighted generation where the drift allows it, shaping change) at both levels (single
features, feature clusters): r with its bootstrap 95% CI, R² through the origin, the null
interval, the split-half ceiling, the label-only baseline with its CI and the ESS.

``--json PATH`` writes, per run (``runs``), the flattery and quality fields, ``planted`` (one
record per concept and detector: ``concept, detector, unit, base, trained, rise, rise_se, n``
and the detector's check ``audit_tpr, audit_fpr, audit_auc``) and ``drift`` (``rho_mean, rho_sd,
rho_min, rho_max, kl, kl_se, ess, ess_fraction, n_samples``); per agreement row (``agreement``)
``run`` and exactly :data:`AGREEMENT` — ``channel, level, r, r_low, r_high, r2, null_low,
null_high, ceiling, n_features, n_units, baseline_r, baseline_low, baseline_high, ess`` (NaN
where a figure does not apply) — and ``notebook_wall_s``.

The knobs of the observation (``N_PROMPTS, SAMPLES, NEW_TOKENS``; the notebook's defaults read all
160 held-out prompts twice, in the training window) decide the generation rows; the runs before
this observation read 48 prompts × 16 tokens once: ``--set N_PROMPTS=48 --set SAMPLES=1 --set
NEW_TOKENS=16`` reproduces them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from prefaudit.verify.channel_base import VERIFY_COLUMNS

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_dpo_and_verify.ipynb"
KNOB_MARKER = "STEPS, BATCH, LEARNING_RATE"
COLUMNS = [
    ("flattery_base", "{:.2f}"),
    ("flattery_trained", "{:.2f}"),
    ("flattery_shift_z", "{:+.2f}"),
    ("flattery_shift_se_z", "{:.2f}"),
    ("quality_pairs", "{:d}"),
    ("quality_accuracy", "{:.2f}"),
    ("quality_margin", "{:+.2f}"),
    ("heldout_accuracy", "{:.2f}"),
    ("r", "{:+.2f}"),
    ("r2", "{:.2f}"),
    ("sign_agreement", "{:.2f}"),
]


# The fields of an agreement row in --json, in order (issue 23's list).
AGREEMENT = [c for c in VERIFY_COLUMNS if c != "scale"]  # every column but the scatters' fitted slope
PLANTED = [
    "concept",
    "detector",
    "unit",
    "base",
    "trained",
    "rise",
    "rise_se",
    "n",
    "audit_tpr",
    "audit_fpr",
    "audit_auc",
]
DRIFT = ["rho_mean", "rho_sd", "rho_min", "rho_max", "kl", "kl_se", "ess", "ess_fraction", "n_samples"]


def nan(x):
    """JSON's null (and a missing field) read back as NaN."""
    return float("nan") if x is None else x


def shaped_output(out: dict) -> dict:
    """The notebook's numbers with every agreement row reduced to ``run`` + :data:`AGREEMENT` (NaN if absent)."""
    rows = [
        {"run": a.get("run", ""), **{k: nan(a.get(k)) for k in AGREEMENT}} for a in out.get("agreement", [])
    ]
    runs = []
    for r in out["runs"]:
        planted = [{k: nan(p.get(k)) for k in PLANTED} for p in r.get("planted", [])]
        drift = {k: nan(r.get("drift", {}).get(k)) for k in DRIFT}
        runs.append({**r, "planted": planted, "drift": drift})
    return {**out, "runs": runs, "agreement": rows}


def with_overrides(nb, overrides: list[str]):
    """Insert ``NAME = VALUE`` lines in a cell right after the knob cell."""
    if not overrides:
        return nb
    import nbformat

    for o in overrides:
        name, sep, _value = o.partition("=")
        if not sep or not name.strip().isidentifier():
            raise SystemExit(f"--set needs NAME=VALUE, got {o!r}")
    index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and KNOB_MARKER in c.source)
    source = "\n".join(f"{o.partition('=')[0].strip()} = {o.partition('=')[2].strip()}" for o in overrides)
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return nb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a knob")
    ap.add_argument("--save", help="write the executed notebook here")
    ap.add_argument("--json", help="write the notebook's numbers (and the wall time) here")
    args = ap.parse_args()
    import nbformat
    from nbclient import NotebookClient

    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    results = tmp / "loop.json"
    nb = with_overrides(nbformat.read(NOTEBOOK, as_version=4), args.set)
    os.environ["PREFAUDIT_LOOP_RESULTS"] = str(results)
    # The kernel's OpenMP threads sleep instead of spinning while they wait: on a CPU shared with other
    # jobs, spinning threads measured up to 15x slower for small matmuls (read when torch loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.time()
    NotebookClient(
        nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(tmp)}}
    ).execute()
    wall = time.time() - t0
    if args.save:
        nbformat.write(nb, args.save)
    out = shaped_output(json.loads(results.read_text()))
    out["notebook_wall_s"] = wall
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(
        f"seed {out['seed']}, {out['steps']} steps per run; notebook wall time {wall / 60:.1f} min "
        f"(training done at {out['train_s'] / 60:.1f} min){'; overrides: ' + ' '.join(args.set) if args.set else ''}"
    )
    print("run      " + " ".join(f"{c:>19}" for c, _ in COLUMNS))
    for row in out["runs"]:
        print(f"{row['run']:<8} " + " ".join(f"{fmt.format(row[c]):>19}" for c, fmt in COLUMNS))
    print("\nplanted concepts in the generations: rate base -> trained (rise ± s.e.), by detector")
    for row in out["runs"]:
        for p in row["planted"]:
            print(
                f"{row['run']:<8} {p['concept']:<10} {p['detector']:<8} {p['base']:.2f} -> {p['trained']:.2f} "
                f"({p['rise']:+.2f} ± {p['rise_se']:.2f}, n {p['n']})  {p['unit']}"
            )
    print("\ndrift: ρ on held-out responses, KL on held-out prompts (nats per sample), ESS of base samples")
    for row in out["runs"]:
        d = row["drift"]
        print(
            f"{row['run']:<8} ρ mean {d['rho_mean']:.1f} sd {d['rho_sd']:.1f} [{d['rho_min']:.0f}, {d['rho_max']:.0f}]; "
            f"KL {d['kl']:.2f} ± {d['kl_se']:.2f}; ESS {d['ess']:.1f} of {d['n_samples']:.0f}"
        )
    print(
        "\nagreement (prefaudit.verify.channels): r [95% CI], R² through the origin, null, ceiling, baseline"
    )
    shown = AGREEMENT[2:]
    print(f"{'run':<28} {'channel':<32} {'level':<8} " + " ".join(f"{c[:9]:>9}" for c in shown))
    for row in out["agreement"]:
        cells = " ".join(f"{row[c]:>9.3f}" if isinstance(row[c], float) else f"{row[c]:>9}" for c in shown)
        print(f"{row['run']:<28} {row['channel']:<32} {row['level']:<8} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
