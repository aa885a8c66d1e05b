"""onnxruntime CPU latency: warm-up, then timed runs until a minimum duration and count."""

from __future__ import annotations

import time

import numpy as np


def summarize(times_s: list[float] | np.ndarray, batch: int) -> dict:
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    return {
        "batch": batch,
        "runs": int(t.size),
        "p50_ms": float(np.percentile(t, 50)),
        "p90_ms": float(np.percentile(t, 90)),
        "p99_ms": float(np.percentile(t, 99)),
        "mean_ms": float(t.mean()),
        "throughput_per_s": float(batch * 1e3 / t.mean()),
    }


def time_callable(fn, warmup_s: float, duration_s: float, min_runs: int) -> list[float]:
    end = time.perf_counter() + warmup_s
    fn()
    while time.perf_counter() < end:
        fn()
    times: list[float] = []
    end = time.perf_counter() + duration_s
    while len(times) < min_runs or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_targets(targets, backends: list[str], batches: list[int], settings, baseline: str | None = None,
                  log=print) -> list[dict]:
    """Time every target on every backend; returns one bench.json entry per backend that could run.

    ``baseline`` names the target (the dense model) that every other target is compared with, measured in
    the same invocation.
    """
    import time as _time

    from edgeprune.bench.backends import BACKENDS
    from edgeprune.progress import progress

    entries = []
    with progress() as bar:
        for name in backends:
            be = BACKENDS.get(name)
            reasons = {t.label: be.unavailable(t) for t in targets}
            runnable = [t for t in targets if reasons[t.label] is None]
            if not runnable:
                log(f"[yellow]backend {name}: skipped ({next(iter(reasons.values()))})[/yellow]")
                continue
            task = bar.add_task(f"latency {name}", total=len(runnable) * len(batches))
            entry = {"time": _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime()), "backend": name,
                     "threads": settings.threads, "warmup_s": settings.warmup_s, "duration_s": settings.duration_s,
                     "variants": {}, "skipped": {k: v for k, v in reasons.items() if v}}
            for t in runnable:
                rows = []
                for b in batches:
                    rows.append(be.measure(t, b, settings))
                    bar.advance(task)
                entry["variants"][t.label] = {"artifact": t.onnx, "latency": rows}
            base = entry["variants"].get(baseline) if baseline else None
            if base:
                ref = {r["batch"]: r.get("p50_ms") for r in base["latency"]}
                for v in entry["variants"].values():
                    for r in v["latency"]:
                        if r.get("p50_ms") and ref.get(r["batch"]):
                            r["speedup_vs_dense"] = ref[r["batch"]] / r["p50_ms"]
            entries.append(entry)
    return entries
