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


def ort_cpu_latency(path, in_shape, batch: int, threads: int = 1, warmup_s: float = 0.2,
                    duration_s: float = 1.0, min_runs: int = 20, seed: int = 0) -> dict:
    from edgeprune.export.onnx import session

    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(seed).standard_normal((batch, *in_shape)).astype(np.float32)
    times = time_callable(lambda: sess.run(None, {name: x}), warmup_s, duration_s, min_runs)
    return summarize(times, batch)
