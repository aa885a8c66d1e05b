"""End-to-end compress sweep: dense vs structured 0.5 / 0.7, each fp32 and int8, with accuracy, leakage
and onnxruntime CPU latency at batch 1 and 32, on purchase-synth (MLP) and CIFAR shapes (ResNet-18 on
cifar-synth: CIFAR-10-shaped synthetic images, since data sets cannot be downloaded here).

    .venv/bin/python benchmarks/compress_sweep.py [--quick] [--out benchmarks/results/compress_sweep_cpu.json]

Each configuration's dense model is trained once and reused (--weights) so the sparsities share it. Writes
JSON and an HTML report (benchmarks/results/compress_sweep_cpu.html) and prints the table.
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

CONFIGS = {
    "mlp/purchase-synth": {"model": "mlp", "data": "purchase-synth", "train": {"epochs": 40},
                           "finetune": {"epochs": 10, "lr": 5e-4}},
    "resnet18/cifar-synth": {"model": "resnet18", "data": "cifar-synth:3000",
                             "train": {"epochs": 4, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4,
                                       "batch_size": 64},
                             "finetune": {"epochs": 2, "optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4,
                                          "batch_size": 64}},
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer epochs (smoke test of the script)")
    ap.add_argument("--out", default="benchmarks/results/compress_sweep_cpu.json")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from edgeprune import api
    from edgeprune.recipe import Recipe, from_dict
    from edgeprune.report.html import write_report

    work = Path(tempfile.mkdtemp())
    rows, runs = [], []
    try:
        for name in args.configs.split(","):
            cfg = CONFIGS[name]
            dense_weights = None
            for sparsity in (0.5, 0.7):
                d = {"model": cfg["model"], "data": cfg["data"], "train": dict(cfg["train"]),
                     "finetune": dict(cfg["finetune"]), "prune": {"sparsity": sparsity},
                     "audit": {"attacks": ["loss", "confidence", "entropy"]},
                     "bench": {"batches": [1, 32], "duration_s": 1.0, "threads": 1}}
                if args.quick:
                    d["train"]["epochs"], d["finetune"]["epochs"] = 1, 1
                    d["bench"]["duration_s"] = 0.1
                recipe = from_dict(Recipe, d).validate()
                if dense_weights:
                    recipe.weights = str(dense_weights)
                out = work / f"{name.replace('/', '_')}_s{sparsity}"
                t0 = time.perf_counter()
                api.compress(recipe, out, log=lambda m: None)
                wall = time.perf_counter() - t0
                dense_weights = dense_weights or _keep(out / "dense" / "model.safetensors", work / f"{cfg['model']}.dense.safetensors")
                runs.append(out)
                rep = api.load_report(out)
                for r in rep["rows"]:
                    if r["variant"] == "dense" and sparsity != 0.5:
                        continue  # the same dense model in every run of a configuration
                    rows.append({
                        "config": name, "variant": "dense" if r["variant"] == "dense" else f"{r['variant']} s={sparsity}",
                        "params": r["params"], "onnx_kb": r["onnx_kb"], "test_accuracy": r["test_accuracy"],
                        "loss_auc": r["attacks"]["loss"]["auc"], "strongest_auc": r["strongest_auc"],
                        # the strongest attack's own TPR (None: below resolution)
                        "tpr@0.001fpr": r["strongest_tpr@0.001fpr"],
                        "p50_ms_b1": r["latency"]["1"]["p50_ms"], "p50_ms_b32": r["latency"]["32"]["p50_ms"],
                        "speedup_b1": r["latency"]["1"]["speedup_vs_dense"],
                        "speedup_b32": r["latency"]["32"]["speedup_vs_dense"], "run_wall_s": round(wall, 1),
                    })
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        html = Path(args.out).with_suffix(".html")
        write_report(runs, html)
        result = {"machine": api.machine(), "quick": args.quick, "rows": rows,
                  "note": "latency: onnxruntime CPU, 1 thread, p50 of >= 1 s of runs; dense measured in the same run"}
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    t = Table(title=f"compress sweep ({result['machine']['cpu']}, onnxruntime CPU, 1 thread)")
    for c in ("config", "variant", "params", "ONNX KB", "test acc", "loss AUC", "strongest TPR@0.1%", "p50 b1 ms",
              "p50 b32 ms", "speedup b1", "speedup b32"):
        t.add_column(c, justify="left" if c in ("config", "variant") else "right")
    for r in rows:
        t.add_row(r["config"], r["variant"], f"{r['params']:,}", f"{r['onnx_kb']:.0f}", f"{r['test_accuracy']:.3f}",
                  f"{r['loss_auc']:.3f}", "below res." if r["tpr@0.001fpr"] is None else f"{r['tpr@0.001fpr']:.3f}",
                  f"{r['p50_ms_b1']:.3f}", f"{r['p50_ms_b32']:.3f}",
                  f"{r['speedup_b1']:.2f}x", f"{r['speedup_b32']:.2f}x")
    Console(width=200).print(t)
    return 0


def _keep(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


if __name__ == "__main__":
    sys.exit(main())
