"""Privacy / accuracy / latency trade-off of privacy-aware compression.

On purchase-synth (MLP) and digits (LeNet-5), at sparsities 0.5 and 0.8: the dense model; undefended L1
structured pruning; the same with each defense (kl, advreg, relaxloss, dpsgd, distill) during fine-tuning;
the leakage-aware criterion; int8 and privacy-aware mixed precision; one combination. Every compressed
model is audited on its deployed artifact (int8 / mixed QDQ ONNX) with the loss attack, LiRA (online,
fixed variance, reference models through the same pipeline) and SAMIA (shadow models through the same
pipeline: an adaptive attacker); latency is onnxruntime CPU p50 at batch 1.

    .venv/bin/python benchmarks/privacy_tradeoff.py [--quick] [--datasets mlp/purchase-synth,lenet5/digits]
        [--shadows 2] [--references 4] [--out benchmarks/results/privacy_tradeoff_cpu.json]

Writes JSON (every run's numbers, the machine, the command), a plot (AUC / TPR against accuracy) and prints
the table plus, per data set and sparsity, the best configuration within 1 accuracy point of undefended
pruning and how much it lowers leakage (or that none does). The best configuration is chosen on a validation
split (members vs held-out samples the target never saw); the figures printed are the audited non-members'.
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

DATASETS = {
    "mlp/purchase-synth": {"model": "mlp", "data": "purchase-synth", "train": {"epochs": 20},
                           "finetune": {"epochs": 10, "lr": 5e-4}},
    "lenet5/digits": {"model": "lenet5", "data": "digits", "train": {"epochs": 40},
                      "finetune": {"epochs": 10, "lr": 5e-4}},
}
CONFIGS = [  # (label, prune criterion, defense, quant mode)
    ("pruned l1", "l1", "none", "int8"),
    ("+kl:4", "l1", "kl:4", "int8"),
    ("+advreg:1", "l1", "advreg:1", "int8"),
    ("+relaxloss:1", "l1", "relaxloss:1", "int8"),
    ("+dpsgd:1", "l1", "dpsgd:1", "int8"),
    ("+distill:0.9", "l1", "distill:0.9", "int8"),
    ("leakage criterion", "leakage", "none", "int8"),
    ("mixed 8/4 bits", "l1", "none", "mixed"),
    ("leakage + kl:4 + mixed", "leakage", "kl:4", "mixed"),
]
ATTACKS = ["loss", "lira-online-fixed", "samia"]


def _row(report: dict, variant: str) -> dict:
    r = next(x for x in report["rows"] if x["variant"] == variant)
    a = r["attacks"]
    out = {"variant": variant, "test_accuracy": r["test_accuracy"], "onnx_kb": r["onnx_kb"],
           "latency_b1_ms": r["latency"]["1"]["p50_ms"], "speedup_b1": r["latency"]["1"]["speedup_vs_dense"]}
    for name in ATTACKS:
        out[f"{name}_auc"] = a[name]["auc"]
        out[f"{name}_tpr@0.1%"] = a[name]["tpr@0.001fpr"]
    out["max_auc"] = max(a[n]["auc"] for n in ATTACKS)
    resolved = [a[n]["tpr@0.001fpr"] for n in ATTACKS if a[n]["tpr@0.001fpr"] is not None]
    out["max_tpr@0.1%"] = max(resolved) if resolved else None  # None: below resolution for every attack
    # what the verdicts select on: members vs a validation split of held-out samples, never the audited
    # non-members reported above (audit.json "validation")
    val = r["validation"]
    out["selection"] = {"accuracy": val["accuracy"], "max_auc": val["max_auc"], "max_tpr@0.1%": val["max_tpr@0.001fpr"]}
    return out


def _key(r: dict) -> tuple:
    s = r["selection"]
    return (1.0 if s["max_tpr@0.1%"] is None else s["max_tpr@0.1%"], s["max_auc"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny epochs and one sparsity (smoke test of the script)")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--sparsities", default="0.5,0.8")
    ap.add_argument("--shadows", type=int, default=2)
    ap.add_argument("--references", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/privacy_tradeoff_cpu.json")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edgeprune import api
    from edgeprune.defend import parse
    from edgeprune.recipe import Recipe, from_dict

    sparsities = [float(s) for s in args.sparsities.split(",")]
    if args.quick:
        sparsities = sparsities[:1]
    work = Path(tempfile.mkdtemp())
    results, t_start = [], time.perf_counter()
    try:
        for name in args.datasets.split(","):
            cfg = DATASETS[name]
            base = {"model": cfg["model"], "data": cfg["data"], "train": dict(cfg["train"]),
                    "finetune": dict(cfg["finetune"]),
                    "audit": {"attacks": ATTACKS, "shadows": args.shadows, "references": args.references},
                    "bench": {"batches": [1], "duration_s": 0.5, "threads": 1}}
            if args.quick:
                base["train"]["epochs"], base["finetune"]["epochs"] = 3, 1
                base["data"] = "purchase-synth:4000" if cfg["data"] == "purchase-synth" else cfg["data"]
            dense_dir = work / f"{cfg['model']}-dense"
            api.compress(from_dict(Recipe, base).validate(), dense_dir, stages=["train"], log=lambda m: None)
            weights = str(dense_dir / api.DENSE_WEIGHTS)
            for sparsity in sparsities:
                for label, criterion, defense, quant in CONFIGS:
                    d = json.loads(json.dumps(base))
                    d["weights"] = weights
                    d["prune"] = {"sparsity": sparsity, "criterion": criterion}
                    dname, strength = parse(defense)
                    d["defense"] = {"name": dname, "strength": strength}
                    d["quant"] = {"mode": quant}
                    recipe = from_dict(Recipe, d).validate()
                    t0 = time.perf_counter()
                    run_dir = api.compress(recipe, work / f"{cfg['model']}-{sparsity}-{len(results)}",
                                           log=lambda m: None)
                    report = api.load_report(run_dir)
                    manifest = json.loads((run_dir / "manifest.json").read_text())
                    deployed = report["rows"][-1]["variant"]
                    entry = {"dataset": name, "sparsity": sparsity, "config": label, "criterion": criterion,
                             "defense": defense, "quant": quant, "seconds": time.perf_counter() - t0,
                             "dense": _row(report, "dense"), "pruned_fp32": _row(report, "pruned"),
                             "deployed": _row(report, deployed),
                             "defense_info": manifest["stages"]["finetune"]["results"].get("defense"),
                             "quant_info": {k: v for k, v in manifest["stages"]["quantize"]["results"].items()
                                            if k != "mixed"} | ({"mixed": {
                                 k: v for k, v in manifest["stages"]["quantize"]["results"]["mixed"].items()
                                 if k != "probes"}} if quant == "mixed" else {})}
                    results.append(entry)
                    print(f"{name} s={sparsity} {label}: acc {entry['deployed']['test_accuracy']:.3f} "
                          f"max AUC {entry['deployed']['max_auc']:.3f} ({entry['seconds']:.0f}s)", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    verdicts = _verdicts(results)
    doc = {"benchmark": "privacy_tradeoff", "command": " ".join(sys.argv), "machine": api.machine(),
           "attacks": ATTACKS, "shadows": args.shadows, "references": args.references,
           "total_seconds": time.perf_counter() - t_start, "results": results, "verdicts": verdicts}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    _plot(results, out.with_suffix(".png"))

    con = Console(width=200)
    t = Table("data", "s", "config", "acc", "loss AUC", "loss TPR", "LiRA AUC", "LiRA TPR", "SAMIA AUC",
              "SAMIA TPR", "ms b1", title="privacy trade-off (deployed artifact; TPR at 0.1% FPR)")
    for ds in dict.fromkeys(r["dataset"] for r in results):
        first = next(r for r in results if r["dataset"] == ds)
        t.add_row(ds, "-", "dense", *_cells(first["dense"]))
        for r in results:
            if r["dataset"] == ds:
                t.add_row("", str(r["sparsity"]), r["config"], *_cells(r["deployed"]))
    con.print(t)
    for v in verdicts:
        con.print(v["text"])
    con.print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _f(v) -> str:
    return "below res." if v is None else f"{v:.3f}"


def _cells(r: dict) -> list[str]:
    return [f"{r['test_accuracy']:.3f}", f"{r['loss_auc']:.3f}", _f(r["loss_tpr@0.1%"]),
            f"{r['lira-online-fixed_auc']:.3f}", _f(r["lira-online-fixed_tpr@0.1%"]), f"{r['samia_auc']:.3f}",
            _f(r["samia_tpr@0.1%"]), f"{r['latency_b1_ms']:.3f}"]


def _verdicts(results: list[dict]) -> list[dict]:
    """Per data set and sparsity: the configuration with the lowest strongest-attack TPR@0.1% among those
    within 1 accuracy point of undefended pruning, against undefended pruning. The choice (accuracy and
    leakage) is made on the validation split; the figures it prints are the audited non-members'."""
    out = []
    for key in dict.fromkeys((r["dataset"], r["sparsity"]) for r in results):
        group = [r for r in results if (r["dataset"], r["sparsity"]) == key]
        base = next(r for r in group if r["config"] == "pruned l1")["deployed"]
        ok = [r for r in group if r["config"] != "pruned l1"
              and r["deployed"]["selection"]["accuracy"] >= base["selection"]["accuracy"] - 0.01]
        best = min(ok, key=lambda r: _key(r["deployed"])) if ok else None
        v = {"dataset": key[0], "sparsity": key[1], "undefended": base, "best": best and best["config"]}
        if best is None:
            v["text"] = f"{key[0]} s={key[1]}: no configuration stays within 1 point of undefended pruning's accuracy"
        else:
            b = best["deployed"]
            bt, ut = b["max_tpr@0.1%"], base["max_tpr@0.1%"]  # reported on the audited non-members
            v["beats_undefended"] = (bt is not None and ut is not None and bt < ut) or (
                bt == ut and b["max_auc"] < base["max_auc"])
            v["text"] = (f"{key[0]} s={key[1]}: best within 1 point = {best['config']} (acc {b['test_accuracy']:.3f} vs "
                         f"{base['test_accuracy']:.3f}); strongest-attack TPR@0.1% {_f(bt)} vs "
                         f"{_f(ut)}, AUC {b['max_auc']:.3f} vs {base['max_auc']:.3f}"
                         + ("" if v["beats_undefended"] else " - does NOT beat undefended pruning"))
        out.append(v)
    return out


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["dataset"], r["sparsity"]) for r in results))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4.2), squeeze=False)
    for ax, key in zip(axes[0], groups, strict=True):
        group = [r for r in results if (r["dataset"], r["sparsity"]) == key]
        d = group[0]["dense"]
        ax.scatter([d["test_accuracy"]], [d["max_tpr@0.1%"] or np.nan], marker="s", c="black", label="dense")
        for r in group:
            x, y = r["deployed"]["test_accuracy"], r["deployed"]["max_tpr@0.1%"]
            if y is None:  # below resolution: not plotted as a number
                continue
            ax.scatter([x], [y], marker="*" if r["config"] == "pruned l1" else "o", s=70)
            ax.annotate(r["config"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(f"{key[0]}, sparsity {key[1]}")
        ax.set_xlabel("test accuracy (deployed artifact)")
        ax.set_ylabel("strongest attack TPR @ 0.1% FPR")
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
