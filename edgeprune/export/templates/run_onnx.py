#!/usr/bin/env python3
"""Portable check + benchmark of this bundle's ONNX models with onnxruntime (for devices without TensorRT).

Needs only numpy and onnxruntime (onnxruntime-gpu on a Jetson uses CUDA when it is there).
    python3 run_onnx.py [--model model.fp16.onnx] [--duration 5] [--out results/onnx.json]
Checks the model against samples.npz (inputs and the outputs recorded where the bundle was made), then
times it: p50 / p90 / p99 latency in ms. Exit code 1 when the outputs do not match.
    python3 run_onnx.py [--model model.fp16.onnx] [--top 3] IMAGE...
Classifies image files (needs Pillow): preprocess.py and preprocessing.json, shipped in the bundle of a model
trained on images, decode, resize, crop and normalise them exactly as training did; prints the top classes.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
NON_SATURATING_X86 = ("avx512_vnni", "avx_vnni", "amx_int8")  # int32-accumulating U8S8 kernels


def int8_kernels_saturate() -> bool:
    """Whether onnxruntime's CPU int8 kernels on this host saturate their 16-bit intermediate sums (x86
    without VNNI / AMX, e.g. AVX2-only AMD EPYC): their int8 outputs are then this CPU's, not what the
    bundle's target (TensorRT, or any int32-accumulating kernel) computes. Read from /proc/cpuinfo (Linux);
    elsewhere assumed not to saturate."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return False
    return flags is not None and not any(flag in flags for flag in NON_SATURATING_X86)


def main() -> int:
    with open(os.path.join(HERE, "manifest.json")) as f:
        manifest = json.load(f)
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="ONNX file in the bundle (default: every model)")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=None, help="timing batch for models with a dynamic batch")
    ap.add_argument("--out", default=None, help="write the JSON here as well as to stdout")
    ap.add_argument("--top", type=int, default=3, help="with images: how many classes to print for each")
    ap.add_argument("images", nargs="*", help="image files to classify (instead of the check and timing)")
    args = ap.parse_args()

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    if args.images:
        return classify_images(manifest, args, providers)
    models = [args.model] if args.model else [m["file"] for m in manifest["models"]]
    report = {"host": platform.node(), "machine": platform.machine(), "onnxruntime": ort.__version__,
              "providers": providers, "results": []}
    ok = True  # every model checked against samples.npz
    with np.load(os.path.join(HERE, "samples.npz"), allow_pickle=False) as z:
        x, ref_out = z["inputs"], {k: z[k] for k in z.files if k.startswith("outputs_")}
    for entry in manifest["models"]:
        if entry["file"] not in models:
            continue
        if entry["precision"] == "bsr":  # the custom op needs the TensorRT plugin, not onnxruntime
            report["results"].append({"file": entry["file"], "precision": "bsr", "skipped": "needs the TensorRT plugin"})
            continue
        opts = ort.SessionOptions()
        if args.threads:
            opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(os.path.join(HERE, entry["file"]), sess_options=opts, providers=providers)
        name = sess.get_inputs()[0].name
        batch = entry["batch"] or 1
        check, numerics = sess, "this device"
        if entry["precision"] == "int8" and sess.get_providers()[0] == "CPUExecutionProvider" \
                and int8_kernels_saturate():
            # checked with reference QDQ semantics (QDQ nodes left unfused: dequantize -> fp32 op -> quantize),
            # the numerics the recorded outputs were made with; timed with this CPU's own int8 kernels
            ref = ort.SessionOptions()
            ref.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            check = ort.InferenceSession(os.path.join(HERE, entry["file"]), sess_options=ref,
                                         providers=["CPUExecutionProvider"])
            numerics = ("reference QDQ: this CPU's onnxruntime int8 kernels saturate (x86 without VNNI / AMX), "
                        "so the check does not use them; the timing does")
        got = np.concatenate([check.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])
        want = ref_out["outputs_" + entry["precision"]]
        err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))
        agree = float((got.argmax(1) == want.argmax(1)).mean())
        passed = err <= entry["check_rtol"] and agree >= entry["check_top1"]
        ok &= passed
        timing_batch = batch if entry["batch"] else (args.batch or 1)
        feed = {name: np.resize(x, (timing_batch, *x.shape[1:]))}
        end = time.perf_counter() + args.warmup
        while time.perf_counter() < end:
            sess.run(None, feed)
        times = []
        end = time.perf_counter() + args.duration
        while time.perf_counter() < end or len(times) < 10:
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
        t = np.asarray(times)
        report["results"].append({
            "file": entry["file"], "precision": entry["precision"], "batch": timing_batch, "check_passed": passed,
            "max_rel_err": err, "top1_agreement": agree, "check_numerics": numerics, "runs": int(t.size),
            "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()),
        })
    emit(report, args.out)
    return 0 if ok else 1


def emit(report: dict, out: str | None) -> None:
    """The JSON on stdout, and in ``out`` too when given."""
    text = json.dumps(report, indent=2)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text + "\n")
    print(text)


def classify_images(manifest: dict, args, providers: list[str]) -> int:
    """Top classes of each image file, preprocessed as the model's training data was (preprocess.py)."""
    prep_file = os.path.join(HERE, "preprocessing.json")
    if not os.path.isfile(prep_file):
        print("error: this bundle's model was not trained on image files (no preprocessing.json)", file=sys.stderr)
        return 2
    with open(prep_file) as f:
        prep = json.load(f)
    sys.path.insert(0, HERE)
    from preprocess import ImageRefused, classify, preprocess_files

    entry = next((m for m in manifest["models"] if m["file"] == args.model), None) if args.model else \
        next((m for m in manifest["models"] if m["precision"] != "bsr"), None)
    if entry is None:
        print(f"error: no model {args.model!r} for onnxruntime in this bundle", file=sys.stderr)
        return 2
    try:
        x = preprocess_files(args.images, prep)
    except (ImageRefused, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sess = ort.InferenceSession(os.path.join(HERE, entry["file"]), providers=providers)
    name = sess.get_inputs()[0].name
    rows = classify(lambda b: sess.run(None, {name: b})[0], x, entry["batch"], prep.get("classes"), args.images,
                    args.top)
    out = {"model": entry["file"], "images": rows}
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
