"""int8 numerics across CPUs, measured: trained models quantized to QDQ with full-range (8-bit) and reduced-range
(7-bit, ``reduce_range``) weights, uint8 and int8 activations, each computed three ways on the same test set:
reference QDQ semantics (dequantize -> fp32), this CPU's onnxruntime int8 kernels, and the numpy emulation of
onnxruntime's AVX2 U8S8 kernels (int16 pair saturation: what an AVX2-only AMD EPYC computes).

    .venv/bin/python benchmarks/int8_numerics.py [--epochs 20] [--out benchmarks/results/int8_numerics_cpu.json]

Reports per configuration: test accuracy, top-1 agreement with fp32, max |int8 - fp32| (relative to max |fp32|)
and the largest difference from the reference in output quantization steps. Not a speed benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("EDGEPRUNE_NO_PROGRESS", "1")
CASES = [("mlp", "purchase-synth:6000"), ("lenet5", "digits")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/int8_numerics_cpu.json")
    args = ap.parse_args()

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from edgeprune.api import machine
    from edgeprune.data import load_dataset, make_split
    from edgeprune.export.onnx import export_onnx, onnx_predict
    from edgeprune.models import build_model
    from edgeprune.quant.numerics import output_step, predict
    from edgeprune.quant.ptq import quantize_int8
    from edgeprune.recipe import TrainConfig
    from edgeprune.train import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in CASES:
            ds = load_dataset(data)
            split = make_split(ds, 0, 0.25)
            xm, ym = ds.x[split.members], ds.y[split.members]
            xt, yt = ds.x[split.nonmembers], ds.y[split.nonmembers]
            torch.manual_seed(0)
            model = build_model(name, ds.in_shape, ds.num_classes)
            train(model, torch.from_numpy(xm), torch.from_numpy(ym), TrainConfig(epochs=args.epochs), seed=0)
            src = export_onnx(model.eval(), ds.in_shape, Path(tmp) / f"{name}.onnx")
            f = onnx_predict(src, xt)
            scale = float(np.abs(f).max())
            for act in ("uint8", "int8"):
                for rr in (False, True):
                    q = quantize_int8(src, Path(tmp) / f"{name}-{act}-{rr}.onnx", xm[:256], activations=act,
                                      reduce_range=rr)
                    out = {k: predict(q, xt, k) for k in ("reference", "cpu", "emulated-avx2")}
                    step = output_step(q)
                    row = {"model": name, "data": data, "activations": act, "reduce_range": rr,
                           "fp32_test_accuracy": float((f.argmax(1) == yt).mean()), "output_step": step}
                    for k, v in out.items():
                        row[k] = {"test_accuracy": float((v.argmax(1) == yt).mean()),
                                  "top1_agreement_with_fp32": float((v.argmax(1) == f.argmax(1)).mean()),
                                  "max_abs_err_rel_fp32": float(np.abs(v - f).max()) / scale,
                                  "top1_agreement_with_reference": float((v.argmax(1) == out["reference"].argmax(1)).mean()),
                                  "max_diff_from_reference_steps": float(np.abs(v - out["reference"]).max()) / step}
                    rows.append(row)
    result = {"benchmark": "int8_numerics", "command": " ".join(sys.argv), "machine": machine(),
              "epochs": args.epochs, "test_samples": "the non-members of each split", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    t = Table(title=f"int8 numerics ({result['machine']['cpu']}; emulated: AVX2 U8S8)")
    for c in ("model", "act", "weights", "fp32 acc", "numerics", "acc", "top1=fp32", "max err/max|fp32|", "vs ref (steps)"):
        t.add_column(c)
    for r in rows:
        for k in ("reference", "cpu", "emulated-avx2"):
            v = r[k]
            t.add_row(r["model"], r["activations"], "7-bit" if r["reduce_range"] else "8-bit", f"{r['fp32_test_accuracy']:.4f}",
                      k, f"{v['test_accuracy']:.4f}", f"{v['top1_agreement_with_fp32']:.4f}",
                      f"{v['max_abs_err_rel_fp32']:.4f}", f"{v['max_diff_from_reference_steps']:.1f}")
    Console().print(t)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
