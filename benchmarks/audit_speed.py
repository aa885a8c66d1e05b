"""Wall time of a full audit (all attacks, 8 references, 4 shadows) on purchase-synth, split into training
the attacker's models and attacking, and the cost of re-auditing from the signal cache.

    .venv/bin/python benchmarks/audit_speed.py [--data purchase-synth] [--out benchmarks/results/audit_speed_cpu.json]

Prints a table and writes JSON (with the machine) that also holds every attack's AUC / TPR@0.1%FPR on the
dense and the 50%-pruned model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGEPRUNE_NO_PROGRESS", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="purchase-synth")
    ap.add_argument("--shadows", type=int, default=4)
    ap.add_argument("--references", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/audit_speed_cpu.json")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edgeprune import api
    from edgeprune.recipe import Recipe

    recipe = Recipe(model="mlp", data=args.data)
    recipe.audit.attacks = ["loss"]  # the compress run itself audits cheaply; the full audit is timed below
    recipe.bench.batches = [1]
    tmp = Path(tempfile.mkdtemp())
    try:
        t0 = time.perf_counter()
        run = api.compress(recipe, tmp / "run", log=lambda m: None)
        compress_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        full = api.audit_run(run, ["all"], args.shadows, args.references, "onnx", log=lambda m: None)
        full_s = time.perf_counter() - t0

        subset = ["loss", "mentr", "lira-online-fixed", "lira-offline", "rmia"]
        t0 = time.perf_counter()
        again = api.audit_run(run, subset, args.shadows, args.references, "onnx", log=lambda m: None)
        again_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        again_all = api.audit_run(run, ["all"], args.shadows, args.references, "onnx", log=lambda m: None)
        again_all_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "machine": api.machine(),
        "data": args.data,
        "model": "mlp",
        "shadows": args.shadows,
        "references": args.references,
        "compress_s": round(compress_s, 2),
        "full_audit": {"wall_s": round(full_s, 2), **full["timing"], "cache": full["cache"]},
        "reaudit_subset": {"attacks": subset, "wall_s": round(again_s, 2), "fraction_of_first": again_s / full_s,
                           "trained_now": again["shadows"]["trained_now"] + again["references"]["trained_now"],
                           "cache": again["cache"]},
        "reaudit_all": {"wall_s": round(again_all_s, 2), "fraction_of_first": again_all_s / full_s,
                        "trained_now": again_all["shadows"]["trained_now"] + again_all["references"]["trained_now"]},
        "leakage": {
            v: {"test_accuracy": info["test_accuracy"], "train_accuracy": info["train_accuracy"],
                "attacks": {k: {"auc": r["auc"], "tpr@0.001fpr": r["tpr@0.001fpr"], "tpr@0.01fpr": r["tpr@0.01fpr"]}
                            for k, r in info["attacks"].items()}}
            for v, info in full["variants"].items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    con = Console()
    t = Table(title=f"audit wall time, {args.data}, {args.shadows} shadows + {args.references} references "
                    f"({result['machine']['cores']} cores)")
    t.add_column("step")
    t.add_column("seconds", justify="right")
    t.add_column("of first audit", justify="right")
    t.add_row("compress run (train, prune, export, int8)", f"{compress_s:.1f}", "")
    t.add_row("full audit: train shadows + references", f"{full['timing']['shadow_and_reference_training_s']:.1f}", "")
    t.add_row("full audit: signals", f"{full['timing']['signals_s']:.1f}", "")
    t.add_row("full audit: attacks + bootstrap", f"{full['timing']['attacks_s']:.1f}", "")
    t.add_row("full audit (wall)", f"{full_s:.1f}", "100%")
    t.add_row(f"re-audit, {len(subset)} other attacks (cached)", f"{again_s:.1f}", f"{100 * again_s / full_s:.1f}%")
    t.add_row("re-audit, all attacks (cached)", f"{again_all_s:.1f}", f"{100 * again_all_s / full_s:.1f}%")
    con.print(t)
    lt = Table(title="leakage of every attack: dense vs 50%-pruned (+int8), audited on the ONNX artifacts")
    lt.add_column("attack")
    variants = list(result["leakage"])
    for v in variants:
        lt.add_column(f"{v} AUC", justify="right")
        lt.add_column(f"{v} TPR@0.1%", justify="right")
    names = sorted({k for v in variants for k in result["leakage"][v]["attacks"]})
    for name in names:
        cells = []
        for v in variants:
            r = result["leakage"][v]["attacks"].get(name)
            tpr = "below res." if r and r["tpr@0.001fpr"] is None else (r and f"{r['tpr@0.001fpr']:.3f}")
            cells += [f"{r['auc']:.3f}", tpr] if r else ["-", "-"]
        lt.add_row(name, *cells)
    lt.add_row("test accuracy", *[x for v in variants for x in (f"{result['leakage'][v]['test_accuracy']:.3f}", "")])
    con.print(lt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
