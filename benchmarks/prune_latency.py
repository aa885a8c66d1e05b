"""Structured pruning, measured: params, MACs and onnxruntime CPU latency of resnet18, vgg16 and mobilenetv2
(CIFAR shapes) at structured sparsity 0.3 / 0.5 / 0.7, against the dense model measured in the same run,
and the ratio of measured speedup to MAC reduction.

    .venv/bin/python benchmarks/prune_latency.py [--models resnet18,vgg16,mobilenetv2] [--duration 2]

Weights are random (latency does not depend on their values); pruning uses the L1 criterion with
round_to=8. Latency: median (p50) of >= --duration seconds of runs, 1 intra-op thread, batch 1 and 32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("EDGEPRUNE_NO_PROGRESS", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet18,vgg16,mobilenetv2")
    ap.add_argument("--sparsities", default="0.3,0.5,0.7")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/prune_latency_cpu.json")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from edgeprune.api import machine
    from edgeprune.bench.backends import BACKENDS, Settings, Target
    from edgeprune.export.onnx import export_onnx, verify_onnx
    from edgeprune.models import build_model, count_macs, count_params
    from edgeprune.prune.structured import make_plan

    shape = (3, 32, 32)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            dense = build_model(name, shape, 10).eval()
            variants = [("dense", 0.0, dense)]
            for s in (float(v) for v in args.sparsities.split(",")):
                torch.manual_seed(0)
                m = build_model(name, shape, 10)
                m.load_state_dict(dense.state_dict())
                make_plan(m, shape, s)
                variants.append((f"structured {s:g}", s, m.eval()))
            base = {}
            for label, s, m in variants:
                path = export_onnx(m, shape, Path(tmp) / f"{name}_{s}.onnx")
                verify_onnx(m, path, torch.randn(4, *shape).numpy())
                row = {"model": name, "variant": label, "sparsity": s, "params": count_params(m),
                       "macs": count_macs(m, shape), "latency": {}}
                ort = BACKENDS.get("ort-cpu")
                settings = Settings(threads=args.threads, warmup_s=0.3, duration_s=args.duration, min_runs=20)
                for b in batches:
                    row["latency"][str(b)] = ort.measure(Target(label, shape, str(path)), b, settings)
                if s == 0.0:
                    base = row
                row["mac_reduction"] = base["macs"] / row["macs"]
                for b in batches:
                    sp = base["latency"][str(b)]["p50_ms"] / row["latency"][str(b)]["p50_ms"]
                    row["latency"][str(b)]["speedup_vs_dense"] = sp
                    row["latency"][str(b)]["speedup_over_mac_reduction"] = sp / row["mac_reduction"]
                rows.append(row)
    result = {"machine": machine(), "threads": args.threads, "duration_s": args.duration, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    t = Table(title=f"structured pruning, onnxruntime CPU ({result['machine']['cpu']}, {args.threads} thread)")
    for c in ["model", "variant", "params", "MACs", "MAC red."] + [f"p50 b{b} ms" for b in batches] + \
             [f"speedup b{b}" for b in batches] + [f"speedup/MACred b{b}" for b in batches]:
        t.add_column(c, justify="left" if c in ("model", "variant") else "right")
    for r in rows:
        t.add_row(r["model"], r["variant"], f"{r['params']:,}", f"{r['macs']:,}", f"{r['mac_reduction']:.2f}x",
                  *[f"{r['latency'][str(b)]['p50_ms']:.3f}" for b in batches],
                  *[f"{r['latency'][str(b)]['speedup_vs_dense']:.2f}x" for b in batches],
                  *[f"{r['latency'][str(b)]['speedup_over_mac_reduction']:.2f}" for b in batches])
    Console(width=220).print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
