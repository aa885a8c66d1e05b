"""Is the audit believable? Three measurements on purchase-synth (MLP, 50% structured pruning + int8):

(a) LiRA online with per-example variance vs fixed (global) variance vs the default (per-example only from
    ``lira.MIN_PER_SIDE`` references per side) at 4 / 8 / 16 / 32 reference models: AUC and TPR@0.1%FPR;
(b) the kl defense under both threat models: the loss attack's accuracy at the attacker's shadow-chosen
    threshold and its AUC, adaptive (shadows through the defense) vs non-adaptive (plain shadows);
(c) the spread across training seeds: AUC and TPR@0.1%FPR of the dense and the 50%-pruned model over 3 seeds.

    .venv/bin/python benchmarks/audit_validity.py [--data purchase-synth] [--references 4,8,16,32]
        [--seeds 3] [--shadows 2] [--epochs 40] [--finetune-epochs 10]
        [--out benchmarks/results/audit_validity_cpu.json]

The 32 reference models are trained once; the smaller reference counts reuse the first ones from the signal
cache (the same models a smaller audit would train). Writes JSON (with the machine and the command) and
prints the three tables.
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

VARIANTS = ("dense", "pruned", "pruned+int8")


def _fig(r: dict) -> dict:
    return {"auc": r["auc"], "tpr@0.1%": r["tpr@0.001fpr"], "tpr@1%": r["tpr@0.01fpr"],
            "attack_accuracy": r.get("attack_accuracy"), "note": r.get("note")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="purchase-synth")
    ap.add_argument("--references", default="4,8,16,32")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shadows", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40, help="training epochs of the target and every attacker model")
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/audit_validity_cpu.json")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edgeprune import api
    from edgeprune.attack import lira
    from edgeprune.recipe import Recipe, from_dict

    refs = [int(r) for r in args.references.split(",")]
    base = Recipe(model="mlp", data=args.data)
    base.train.epochs, base.finetune.epochs = args.epochs, args.finetune_epochs
    base.audit.attacks = ["loss"]
    base.audit.bootstrap = args.bootstrap
    base.bench.batches, base.bench.duration_s, base.bench.warmup_s = [1], 0.1, 0.0
    doc: dict = {"benchmark": "audit_validity", "command": " ".join(sys.argv), "machine": api.machine(),
                 "data": args.data, "model": "mlp", "sparsity": base.prune.sparsity, "quant": base.quant.mode,
                 "epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "lira_min_per_side": lira.MIN_PER_SIDE}
    tmp = Path(tempfile.mkdtemp())
    quiet = lambda m: None  # noqa: E731
    t_start = time.perf_counter()
    try:
        run = api.compress(base, tmp / "run", log=quiet)
        # (a) LiRA online: per-example (forced), fixed, and the default rule ------------------------
        default_min = lira.MIN_PER_SIDE
        a_rows = []
        for r in sorted(refs, reverse=True):  # the largest first: it trains every reference model
            t0 = time.perf_counter()
            row = {"references": r, "per_side": r // 2}
            for label, min_per_side in (("per-example", 0), ("default", default_min)):
                lira.MIN_PER_SIDE = min_per_side
                try:
                    audit = api.audit_run(run, ["lira-online", "lira-online-fixed"], 0, r, log=quiet)
                finally:
                    lira.MIN_PER_SIDE = default_min
                for v in VARIANTS:
                    row.setdefault(v, {})[label] = _fig(audit["variants"][v]["attacks"]["lira-online"])
                    row[v]["fixed"] = _fig(audit["variants"][v]["attacks"]["lira-online-fixed"])
            row["seconds"] = round(time.perf_counter() - t0, 1)
            row["n_nonmembers"] = audit["candidates"]["nonmembers"]
            a_rows.append(row)
            print(f"(a) {r} references done ({row['seconds']}s)", file=sys.stderr)
        doc["lira_references"] = sorted(a_rows, key=lambda x: x["references"])

        # (c) across seeds (undefended run; its reference models are cached) ---------------------------
        t0 = time.perf_counter()
        audit = api.audit_run(run, ["loss", "lira-online"], 0, max(r for r in refs if r <= 16), seeds=args.seeds,
                              log=quiet)
        doc["seeds"] = {"count": args.seeds, "training_seeds": audit["seeds"]["training_seeds"],
                        "references": audit["references"]["used"], "seconds": round(time.perf_counter() - t0, 1),
                        "variants": {v: {n: {k: audit["variants"][v]["attacks"][n]["across_seeds"][k]
                                             for k in ("auc", "tpr@0.001fpr", "attack_accuracy")}
                                         for n in ("loss", "lira-online")} for v in VARIANTS},
                        "pruned_vs_dense": audit["variants"]["pruned"]["vs_dense"],
                        "test_accuracy": {v: audit["variants"][v]["test_accuracy"] for v in VARIANTS}}
        print(f"(c) seeds done ({doc['seeds']['seconds']}s)", file=sys.stderr)

        # (b) the kl defense under both threat models ------------------------------------------------
        t0 = time.perf_counter()
        kl = from_dict(Recipe, base.to_dict())
        kl.defense.name = "kl"
        kl_run = api.compress(kl, tmp / "kl", log=quiet)
        audit = api.audit_run(kl_run, ["loss", "nn"], args.shadows, 0, threat="both", log=quiet)
        doc["kl_threats"] = {
            "defense": "kl (default strength)", "shadows": args.shadows, "seconds": round(time.perf_counter() - t0, 1),
            "variants": {v: {t: {n: _fig(audit["threats"][t][v]["attacks"][n]) for n in ("loss", "nn")}
                             for t in ("adaptive", "non-adaptive")} for v in VARIANTS},
            "test_accuracy": {v: audit["variants"][v]["test_accuracy"] for v in VARIANTS},
        }
        undefended = api.audit_run(run, ["loss", "nn"], args.shadows, 0, threat="adaptive", log=quiet)
        doc["kl_threats"]["undefended"] = {v: {n: _fig(undefended["variants"][v]["attacks"][n]) for n in ("loss", "nn")}
                                           for v in VARIANTS}
        print(f"(b) kl done ({doc['kl_threats']['seconds']}s)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc["total_seconds"] = round(time.perf_counter() - t_start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    _print(doc, Console(width=160), Table)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _f(v, digits: int = 3) -> str:
    return "below res." if v is None else f"{v:.{digits}f}"


def _print(doc: dict, con, Table) -> None:
    t = Table("refs (per side)", "variant", "per-example AUC / TPR@0.1%", "fixed AUC / TPR@0.1%",
              "default AUC / TPR@0.1%", "default uses",
              title=f"(a) LiRA online on {doc['data']} ({doc['lira_references'][0]['n_nonmembers']} non-members)")
    for row in doc["lira_references"]:
        for v in ("dense", "pruned+int8"):
            c = row[v]
            t.add_row(f"{row['references']} ({row['per_side']})", v,
                      *[f"{c[k]['auc']:.3f} / {_f(c[k]['tpr@0.1%'])}" for k in ("per-example", "fixed", "default")],
                      c["default"]["note"] or "")
    con.print(t)
    s = doc["seeds"]
    t = Table("variant", "attack", "AUC mean ± sd", "TPR@0.1% mean ± sd", "attack acc mean ± sd",
              title=f"(c) across {s['count']} training seeds ({s['references']} references)")
    for v, attacks in s["variants"].items():
        for n, m in attacks.items():
            t.add_row(v, n, *[("-" if m[k]["mean"] is None else f"{m[k]['mean']:.3f} ± {m[k]['sd']:.3f}")
                              for k in ("auc", "tpr@0.001fpr", "attack_accuracy")])
    con.print(t)
    k = doc["kl_threats"]
    t = Table("variant", "attack", "undefended acc / AUC", "kl adaptive acc / AUC", "kl non-adaptive acc / AUC",
              title=f"(b) kl defense: attack accuracy at the shadow-chosen threshold, and AUC ({k['shadows']} shadows)")
    for v in ("pruned", "pruned+int8"):
        for n in ("loss", "nn"):
            cells = [k["undefended"][v][n], k["variants"][v]["adaptive"][n], k["variants"][v]["non-adaptive"][n]]
            t.add_row(v, n, *[f"{_f(c['attack_accuracy'])} / {c['auc']:.3f}" for c in cells])
    con.print(t)


if __name__ == "__main__":
    sys.exit(main())
