"""The only module that imports tensorrt. Engines are device-specific: build them on the target device.

``available()`` says whether the tensorrt Python package imports here; ``build_engine`` builds a serialized
engine from an ONNX file with the TensorRT builder API (explicit quantization: int8 comes from QDQ nodes).
"""

from __future__ import annotations

from pathlib import Path


def available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return False
    return True


def build_engine(onnx_path: str | Path, engine_path: str | Path, fp16: bool = False, int8: bool = False,
                 sparse: bool = False, plugins: list[str] | None = None, workspace_mb: int = 1024,
                 shapes: dict | None = None) -> Path:
    import ctypes

    import tensorrt as trt

    for lib in plugins or []:
        ctypes.CDLL(str(lib))
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        msgs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {msgs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    if sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in shapes.items():
            profile.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    Path(engine_path).write_bytes(bytes(blob))
    return Path(engine_path)


def time_engine(engine_path, x, warmup_s, duration_s, min_runs, summarize, torch) -> dict:
    """Time a serialized engine with CUDA events (torch tensors as device buffers)."""
    import time

    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inp = torch.from_numpy(x).cuda()
    ctx.set_input_shape(names[0], tuple(inp.shape))
    out = torch.empty(tuple(ctx.get_tensor_shape(names[1])), device="cuda")
    ctx.set_tensor_address(names[0], inp.data_ptr())
    ctx.set_tensor_address(names[1], out.data_ptr())
    stream = torch.cuda.current_stream().cuda_stream
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        ctx.execute_async_v3(stream)
    torch.cuda.synchronize()
    times = []
    end = time.perf_counter() + duration_s
    while len(times) < min_runs or time.perf_counter() < end:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        ctx.execute_async_v3(stream)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return summarize(times, len(x))
