"""Latency backends (registry). Each says whether it can run here; one that cannot is skipped, never faked."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeprune.bench.latency import summarize, time_callable
from edgeprune.registry import Registry

BACKENDS: Registry = Registry("backend")


@dataclass
class Target:
    """One thing to time: an ONNX file and / or a torch module with its input shape."""

    label: str
    in_shape: tuple
    onnx: str | None = None
    module: object | None = None  # torch.nn.Module


@dataclass
class Settings:
    threads: int = 1
    warmup_s: float = 0.5
    duration_s: float = 2.0
    min_runs: int = 20
    cuda_graph: bool = False
    seed: int = 0


@dataclass
class Backend:
    name: str
    unavailable: Callable[[Target], str | None]  # reason it cannot time this target here, or None
    measure: Callable[[Target, int, Settings], dict]


def _inputs(t: Target, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *t.in_shape)).astype(np.float32)


# --- onnxruntime --------------------------------------------------------------------------------------
def _ort_measure(provider: str):
    def measure(t: Target, batch: int, s: Settings) -> dict:
        from edgeprune.export.onnx import has_custom_ops, session, static_batch

        if provider == "CPUExecutionProvider" or has_custom_ops(t.onnx):
            sess = session(t.onnx, s.threads)
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            sess = ort.InferenceSession(str(t.onnx), sess_options=opts, providers=[provider, "CPUExecutionProvider"])
        fixed = static_batch(sess)
        if fixed is not None and fixed != batch:
            return {"batch": batch, "skipped": f"the ONNX file has a fixed batch of {fixed}"}
        name = sess.get_inputs()[0].name
        x = _inputs(t, batch, s.seed)
        times = time_callable(lambda: sess.run(None, {name: x}), s.warmup_s, s.duration_s, s.min_runs)
        # no memory figure: this process's peak RSS holds every model and backend it ever ran, not this one's
        return summarize(times, batch)

    return measure


def _ort_unavailable(provider: str):
    def check(t: Target) -> str | None:
        if t.onnx is None:
            return "needs an ONNX file"
        import onnxruntime as ort

        if provider not in ort.get_available_providers():
            return f"onnxruntime here has no {provider} (install onnxruntime-gpu on a CUDA machine)"
        return None

    return check


BACKENDS.register("ort-cpu")(Backend("ort-cpu", _ort_unavailable("CPUExecutionProvider"), _ort_measure("CPUExecutionProvider")))
BACKENDS.register("ort-cuda")(Backend("ort-cuda", _ort_unavailable("CUDAExecutionProvider"), _ort_measure("CUDAExecutionProvider")))


# --- torch --------------------------------------------------------------------------------------------
def _torch_unavailable(t: Target) -> str | None:
    return None if t.module is not None else "needs a torch module (give a run directory, not an ONNX file)"


def _torch_measure(compile_: bool):
    def measure(t: Target, batch: int, s: Settings) -> dict:
        import torch

        from edgeprune.runtime import resolve

        torch.set_num_threads(max(1, s.threads))
        rt = resolve("auto")
        model, kernels = t.module.eval(), None
        if rt.is_cuda:  # block-pruned layers through the project's BSR kernels (CUDA C++ or Triton)
            model, kernels = block_sparse_for_cuda(model)
        model = model.to(rt.torch_device())
        fn = torch.compile(model) if compile_ else model
        x = torch.from_numpy(_inputs(t, batch, s.seed)).to(rt.torch_device())
        with torch.inference_mode():
            if not rt.is_cuda:
                times = time_callable(lambda: fn(x), s.warmup_s, s.duration_s, s.min_runs)
                return {**summarize(times, batch), "device": "cpu"}
            out = _cuda_timing(fn, x, batch, s, rt)
            if kernels:
                from edgeprune.sparse.ops import _cuda_backend

                out["block_sparse"] = {**kernels, "kernel": _cuda_backend.get("name")}  # the one that ran
            return out

    return measure


def block_sparse_for_cuda(model, min_zero_fraction: float = 0.5):
    """A copy of ``model`` whose block-masked Linear / Conv2d layers (a ``block`` run's: whole zero tiles in
    at least ``min_zero_fraction`` of the blocks, at the largest tile size that covers all zero tiles) are replaced by
    the BSR modules of edgeprune.sparse.ops, which call the CUDA C++ / Triton kernels on a GPU. A dense,
    structured or unstructured model has no zero tiles and is returned as it is. Returns (model, summary or
    None)."""
    from torch import nn

    from edgeprune.sparse.ops import BLOCKS, block_zero_fraction, to_block_sparse

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    zeros = {b: sum(block_zero_fraction(m.weight, b) * m.weight.numel() for m in layers) for b in BLOCKS}
    if max(zeros.values()) == 0:
        return model, None
    block = max(b for b in BLOCKS if zeros[b] >= max(zeros.values()))  # the mask's block size: the largest
    sparse, replaced = to_block_sparse(model, block, min_zero_fraction)  # tile that covers every zero block
    return (sparse, {"block": block, "layers": replaced}) if replaced else (model, None)


def _cuda_timing(fn, x, batch: int, s: Settings, rt) -> dict:
    """CUDA events around each call (optionally replaying a captured CUDA graph)."""
    import torch

    torch.cuda.reset_peak_memory_stats()
    call = fn
    if s.cuda_graph:
        static_x = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn(static_x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn(static_x)
        call = lambda _x: graph.replay()  # noqa: E731
    end = time.perf_counter() + s.warmup_s
    while time.perf_counter() < end:
        call(x)
    torch.cuda.synchronize()
    times = []
    end = time.perf_counter() + s.duration_s
    while len(times) < s.min_runs or time.perf_counter() < end:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        call(x)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return {**summarize(times, batch), "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20,
            "device": rt.gpu_name(), "cuda_graph": s.cuda_graph}


BACKENDS.register("torch")(Backend("torch", _torch_unavailable, _torch_measure(False)))
BACKENDS.register("torch-compile")(Backend("torch-compile", _torch_unavailable, _torch_measure(True)))


# --- TensorRT -----------------------------------------------------------------------------------------
def _trt_unavailable(t: Target) -> str | None:
    from edgeprune.export import tensorrt as trt_mod

    if not trt_mod.available():
        return "tensorrt is not installed here (build and time engines on the device: edgeprune bundle / deploy)"
    if t.onnx is None:
        return "needs an ONNX file"
    return None


def _trt_measure(t: Target, batch: int, s: Settings) -> dict:
    import tempfile
    from pathlib import Path

    import torch

    from edgeprune.export import tensorrt as trt_mod

    with tempfile.TemporaryDirectory() as tmp:
        engine = trt_mod.build_engine(t.onnx, Path(tmp) / "m.engine", fp16=True, int8="int8" in str(t.onnx))
        return trt_mod.time_engine(engine, _inputs(t, batch, s.seed), s.warmup_s, s.duration_s, s.min_runs,
                                   summarize, torch)


BACKENDS.register("tensorrt")(Backend("tensorrt", _trt_unavailable, _trt_measure))
