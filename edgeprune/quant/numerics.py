"""Who computes an int8 QDQ model, and how: the numerics an int8 artifact is scored and audited with.

- ``cpu``: onnxruntime on this CPU as deployed: QDQ groups fuse into int8 kernels chosen from CPUID, so the
  numbers depend on the CPU (AVX2 / AVX-512 without VNNI saturate U8S8 pair sums to int16; see edgeprune.cpu).
- ``reference``: reference QDQ semantics, dequantize then compute in fp32 (what an int32-accumulating engine
  such as TensorRT computes, up to rounding): the same graph in onnxruntime with graph optimizations off, so
  no QDQ group is fused and every Conv / Gemm / MatMul runs as an fp32 kernel. About as fast as the fp32 model.
- ``emulated-avx2``: the reference graph with every int8 Conv / Gemm / MatMul replaced by a numpy emulation of
  MLAS's AVX2 U8S8 kernel (uint8 x int8 products summed in adjacent pairs with int16 saturation, as
  ``vpmaddubsw`` does, then int32 accumulation; int8 activations are shifted to uint8 by +128 as onnxruntime
  does on x86). onnxruntime has no switch that selects its non-VNNI kernels on a VNNI CPU (MLAS dispatches on
  CPUID; ``session.x64quantprecision`` only changes anything on CPUs that saturate), so this is how a machine
  with VNNI checks what an AVX2-only machine computes. Pairs run over consecutive input channels (MLAS's
  NHWC convolution packs channels innermost); depthwise convolutions do not saturate (MLAS widens them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.registry import Registry


@dataclass(frozen=True)
class Numerics:
    name: str
    description: str
    machine_independent: bool


NUMERICS: Registry[Numerics] = Registry("numerics")
for _n in (
    Numerics("cpu", "onnxruntime's fused int8 kernels on this CPU", False),
    Numerics("reference", "reference QDQ semantics: dequantize, then fp32 compute (onnxruntime, QDQ fusions off)",
             True),
    Numerics("emulated-avx2", "onnxruntime's AVX2 U8S8 kernels (int16 pair saturation), emulated in numpy", True),
):
    NUMERICS.register(_n.name)(_n)


def session(path: str | Path, numerics: str = "cpu", threads: int = 1):
    """An onnxruntime CPU session that computes ``path`` with the given numerics."""
    import onnxruntime as ort

    NUMERICS.get(numerics)
    if numerics == "cpu":
        from edgeprune.export.onnx import session as cpu_session

        return cpu_session(path, threads)
    if numerics == "emulated-avx2":
        return _emulated_session(path, threads)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    from edgeprune.export.onnx import has_custom_ops

    if has_custom_ops(path):
        from edgeprune.export.sparse_op import session as sparse_session

        return sparse_session(path, threads, opts)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict(path: str | Path, x: np.ndarray, numerics: str = "cpu", batch_size: int = 512, threads: int = 1):
    from edgeprune.export.onnx import run_session

    return run_session(session(path, numerics, threads), x, batch_size)


def is_quantized(path: str | Path) -> bool:
    """True when the graph holds QDQ nodes (its numbers then depend on who computes them)."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return "DequantizeLinear" in ops


def output_step(path: str | Path) -> float | None:
    """The quantization step of the graph's output (scale of the DequantizeLinear that produces it)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in m.graph.initializer}
    out = m.graph.output[0].name
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0] == out and n.input[1] in inits:
            return float(numpy_helper.to_array(inits[n.input[1]]).max())
    return None


def compare(path: str | Path, x: np.ndarray, numerics: str = "cpu", against: str = "reference") -> dict:
    """How far ``numerics`` is from ``against`` on x: max |diff| (also in output quantization steps) and top-1
    agreement."""
    a, b = predict(path, x, numerics), predict(path, x, against)
    diff = float(np.abs(a - b).max())
    step = output_step(path)
    return {"numerics": numerics, "against": against, "max_abs_diff": diff,
            "max_abs_diff_steps": diff / step if step else None,
            "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}


# --- AVX2 U8S8 emulation ------------------------------------------------------------------------

_OPS = {"Conv": "EmuU8S8Conv", "Gemm": "EmuU8S8Gemm", "MatMul": "EmuU8S8MatMul"}
_registered: str | None = None


def pair_saturated_matmul(u: np.ndarray, w: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """sum_k u[m, k] * w[n, k] as MLAS's AVX2 kernel computes it: products of adjacent k (uint8 u, int8 w)
    summed in pairs and saturated to int16 (``vpmaddubsw``), the pair sums added in int32. Hand-written
    because no library exposes this kernel's arithmetic."""
    u = u.astype(np.int32)
    w = w.astype(np.int32)
    m, k = u.shape
    if k % 2:
        u = np.pad(u, ((0, 0), (0, 1)))
        w = np.pad(w, ((0, 0), (0, 1)))
    up = u.reshape(m, -1, 2)
    wp = w.reshape(w.shape[0], -1, 2)
    rows = max(1, chunk // max(wp.shape[0] * wp.shape[1], 1))
    out = np.empty((m, w.shape[0]), np.int64)
    for i in range(0, m, rows):
        a = up[i : i + rows, None]
        pairs = a[..., 0] * wp[None, :, :, 0] + a[..., 1] * wp[None, :, :, 1]
        out[i : i + rows] = np.clip(pairs, -32768, 32767).sum(-1)
    return out


def _to_uint8(x: np.ndarray, scale: float, zp: int, signed: bool) -> tuple[np.ndarray, int]:
    """Recover the quantized activations from a DequantizeLinear output; int8 becomes uint8 (+128, as
    onnxruntime's QDQ S8-to-U8 transform does on x86)."""
    q = np.rint(x / scale).astype(np.int32) + zp
    return (q + 128, zp + 128) if signed else (q, zp)


def _int_matmul(u: np.ndarray, zp: int, wq: np.ndarray, saturate: bool) -> np.ndarray:
    acc = pair_saturated_matmul(u, wq) if saturate else u.astype(np.int64) @ wq.T.astype(np.int64)
    return acc - zp * wq.astype(np.int64).sum(1)[None, :]


def _emulated_conv(x, wq, wscale, bias, x_scale, x_zp, signed, pads, strides, dilations, group):
    u, zp = _to_uint8(x, x_scale, x_zp, bool(signed))
    n_out, cin_g, kh, kw = wq.shape
    pt, pl, pb, pr = pads
    u = np.pad(u, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=zp)  # padding holds the zero point
    sh, sw = strides
    dh, dw = dilations
    win = np.lib.stride_tricks.sliding_window_view(u, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (B, C, OH, OW, kh, kw)
    b, _, oh, ow = win.shape[:4]
    out = np.empty((b * oh * ow, n_out), np.float64)
    per = n_out // group
    for g in range(group):
        cols = win[:, g * cin_g : (g + 1) * cin_g].transpose(0, 2, 3, 4, 5, 1).reshape(b * oh * ow, -1)
        wg = wq[g * per : (g + 1) * per].transpose(0, 2, 3, 1).reshape(per, -1)  # K = (kh, kw, c): NHWC order
        out[:, g * per : (g + 1) * per] = _int_matmul(cols, zp, wg, saturate=cin_g > 1)
    y = out * (x_scale * wscale.reshape(1, -1)) + bias.reshape(1, -1)
    return y.reshape(b, oh, ow, n_out).transpose(0, 3, 1, 2).astype(np.float32)


def _emulated_matmul(x, wq_nk, wscale, bias, x_scale, x_zp, signed):
    u, zp = _to_uint8(x.reshape(-1, x.shape[-1]), x_scale, x_zp, bool(signed))
    y = _int_matmul(u, zp, wq_nk, saturate=True) * (x_scale * wscale.reshape(1, -1)) + bias.reshape(1, -1)
    return y.reshape(*x.shape[:-1], wq_nk.shape[0]).astype(np.float32)


def _register() -> str:
    global _registered
    from onnxruntime_extensions import PyCustomOpDef, onnx_op
    from onnxruntime_extensions._ocos import default_opset_domain

    if _registered is None:
        f, i, s = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64, PyCustomOpDef.dt_string
        common = {"x_scale": f, "x_zero_point": i, "signed": i}

        @onnx_op(op_type=_OPS["Conv"], inputs=[f, f, f, f], outputs=[f],
                 attrs={**common, "pads": s, "strides": s, "dilations": s, "group": i})
        def emu_conv(x, wq, wscale, bias, **a):
            ints = [[int(v) for v in a[k].split(",")] for k in ("pads", "strides", "dilations")]
            return _emulated_conv(x, wq.astype(np.int32), wscale, bias, float(a["x_scale"]), int(a["x_zero_point"]),
                                  int(a["signed"]), *ints, int(a["group"]))

        @onnx_op(op_type=_OPS["Gemm"], inputs=[f, f, f, f], outputs=[f], attrs=common)
        def emu_gemm(x, wq, wscale, bias, **a):  # wq is (N, K): transB=1, as torch's Linear exports
            return _emulated_matmul(x, wq.astype(np.int32), wscale, bias, float(a["x_scale"]),
                                    int(a["x_zero_point"]), int(a["signed"]))

        @onnx_op(op_type=_OPS["MatMul"], inputs=[f, f, f, f], outputs=[f], attrs=common)
        def emu_matmul(x, wq, wscale, bias, **a):  # wq is (K, N)
            return _emulated_matmul(x, wq.astype(np.int32).T, wscale, bias, float(a["x_scale"]),
                                    int(a["x_zero_point"]), int(a["signed"]))

        _registered = default_opset_domain()
    return _registered


def emulate_avx2(src: str | Path):
    """A copy of the QDQ model (an onnx.ModelProto) whose int8 Conv / Gemm / MatMul nodes are the numpy
    emulation of the AVX2 U8S8 kernels; every other node stays as it is."""
    import onnx
    from onnx import helper, numpy_helper

    domain = _register()
    m = onnx.load(str(src))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
    nodes, added = [], []
    for node in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        xd, wd = (dq.get(node.input[0]), dq.get(node.input[1])) if len(node.input) > 1 else (None, None)
        ok = node.op_type in _OPS and xd is not None and wd is not None and wd.input[0] in inits
        if ok:
            wq, xs = inits[wd.input[0]], inits.get(xd.input[1])
            wzp = inits.get(wd.input[2]) if len(wd.input) > 2 else None
            xzp = inits.get(xd.input[2]) if len(xd.input) > 2 else None
            ok = (wq.dtype == np.int8 and xs is not None and xs.size == 1 and (wzp is None or not np.any(wzp))
                  and (xzp is None or xzp.dtype in (np.uint8, np.int8))
                  and not (node.op_type == "Gemm" and (attrs.get("transB", 0) != 1 or attrs.get("transA", 0)))
                  and not (node.op_type == "Conv" and (wq.ndim != 4 or attrs.get("auto_pad", b"NOTSET") not in
                                                       (b"NOTSET", "NOTSET"))))
        if not ok:
            nodes.append(node)
            continue
        base = f"emu{len(added)}"
        wscale = inits[wd.input[1]].astype(np.float32).reshape(-1)
        n_out = wq.shape[1] if node.op_type == "MatMul" else wq.shape[0]
        wscale = np.broadcast_to(wscale, (n_out,)).astype(np.float32)
        bias = (np.zeros(n_out, np.float32) if len(node.input) < 3 or not node.input[2] else None)
        for arr, name in ((wq.astype(np.float32), f"{base}.wq"), (wscale, f"{base}.wscale")):
            added.append(numpy_helper.from_array(arr, name))
        if bias is not None:
            added.append(numpy_helper.from_array(bias, f"{base}.bias"))
        kw = {"x_scale": float(xs.reshape(-1)[0]), "x_zero_point": int(xzp.reshape(-1)[0]) if xzp is not None else 0,
              "signed": int(xzp is not None and xzp.dtype == np.int8)}
        if node.op_type == "Conv":
            kshape = wq.shape[2:]
            kw.update(pads=",".join(map(str, attrs.get("pads", [0, 0, 0, 0]))),
                      strides=",".join(map(str, attrs.get("strides", [1] * len(kshape)))),
                      dilations=",".join(map(str, attrs.get("dilations", [1] * len(kshape)))),
                      group=int(attrs.get("group", 1)))
        inputs = [node.input[0], f"{base}.wq", f"{base}.wscale", f"{base}.bias" if bias is not None else node.input[2]]
        nodes.append(helper.make_node(_OPS[node.op_type], inputs, list(node.output), name=base, domain=domain, **kw))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    m.graph.initializer.extend(added)
    if added and not any(o.domain == domain for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid(domain, 1))
    return m


def _emulated_session(path: str | Path, threads: int):
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    model = emulate_avx2(path)  # registers the Python ops, which must precede loading the library
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
