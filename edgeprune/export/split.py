"""Split deployment: the head (input -> features) runs on the device, the tail (features -> logits) on a
server; and reading the features of an exported ONNX graph (int8 QDQ included) at a split point.

``export_split`` writes ``head.onnx`` and ``tail.onnx`` and verifies, on real samples, that each matches its
torch half and that onnxruntime's tail(head(x)) matches the full torch model within the export tolerance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.errors import UserError
from edgeprune.export.onnx import VerificationError, export_onnx, onnx_predict
from edgeprune.models.splits import SplitPoint, cut

FEATURES = "features"


class NoisyHead(nn.Module):
    """The head of a split deployment with the --split-noise defense: Gaussian noise of standard deviation
    ``sigma`` (absolute, feature units) on the features before they leave the device."""

    def __init__(self, head: nn.Module, sigma: float):
        super().__init__()
        self.head, self.sigma = head, float(sigma)

    def forward(self, x):
        f = self.head(x)
        return f + self.sigma * torch.randn_like(f)


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))


@torch.no_grad()
def export_split(model: nn.Module, in_shape: tuple[int, ...], point: SplitPoint, out_dir: str | Path,
                 x_verify: np.ndarray, opset: int = 20, rtol: float = 1e-3, noise_sigma: float = 0.0,
                 dynamic_batch: bool = True, batch: int = 1) -> dict:
    """Write head.onnx and tail.onnx into ``out_dir``; raise VerificationError when they do not compose to
    ``model``. With ``noise_sigma`` > 0 the head adds Gaussian noise (RandomNormalLike); composition is then
    verified on a noise-free head and the noise's standard deviation is checked on the noisy one."""
    out_dir = Path(out_dir)
    model = model.eval()
    head, tail = cut(model, point)
    kw = {"opset": opset, "dynamic_batch": dynamic_batch, "batch": batch}
    x = torch.from_numpy(np.ascontiguousarray(x_verify, np.float32))
    ref_f, ref_logits = head(x).numpy(), model(x).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        clean = export_onnx(head, in_shape, Path(tmp) / "head.onnx", output_name=FEATURES, **kw)
        tail_path = export_onnx(tail, point.shape, out_dir / "tail.onnx", input_name=FEATURES, **kw)
        f = onnx_predict(clean, x_verify)
        logits = onnx_predict(tail_path, f)
        head_err, tail_err = _rel_err(f, ref_f), _rel_err(onnx_predict(tail_path, ref_f), tail(torch.from_numpy(ref_f)).numpy())
        comp_err = _rel_err(logits, ref_logits)
        agree = float((logits.argmax(1) == ref_logits.argmax(1)).mean())
        if max(head_err, tail_err, comp_err) > rtol or agree < 1.0:
            raise VerificationError(
                f"split at {point.name!r}: head/tail do not compose to the model (relative errors head {head_err:.1e}, "
                f"tail {tail_err:.1e}, composed {comp_err:.1e}; allowed {rtol:.0e}; top-1 agreement {agree:.4f})")
        info = {"split_point": point.name, "feature_name": FEATURES, "feature_shape": list(point.shape),
                "bytes_per_sample": {"fp32": point.bytes_per_sample(4), "fp16": point.bytes_per_sample(2),
                                     "int8": point.bytes_per_sample(1)},
                "input_bytes_per_sample_fp32": int(np.prod(in_shape)) * 4,
                "verification": {"samples": len(x_verify), "head_max_rel_err": head_err, "tail_max_rel_err": tail_err,
                                 "composed_max_rel_err": comp_err, "top1_agreement": agree, "rtol": rtol,
                                 "passed": True}}
        if noise_sigma > 0:
            noisy = export_onnx(NoisyHead(head, noise_sigma), in_shape, out_dir / "head.onnx", output_name=FEATURES, **kw)
            fn = onnx_predict(noisy, x_verify)
            measured = float((fn - f).std())
            if not 0.8 * noise_sigma <= measured <= 1.2 * noise_sigma:
                raise VerificationError(f"the noisy head adds noise of std {measured:.3g}, expected {noise_sigma:.3g}")
            info["noise"] = {"sigma": noise_sigma, "measured_std": measured,
                             "top1_agreement_with_noise_free": float((onnx_predict(tail_path, fn).argmax(1)
                                                                      == ref_logits.argmax(1)).mean())}
        else:
            Path(clean).replace(out_dir / "head.onnx")
    return info


# --- features of an exported graph ---------------------------------------------------------------

class FeatureLocateError(UserError):
    """A split point's tensor cannot be found in an exported ONNX graph."""


def _with_outputs(model, names: list[str]):
    from onnx import TensorProto, helper

    have = {o.name for o in model.graph.output}
    for n in names:
        if n not in have:
            model.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    return model


def _float_tensors(model) -> list[str]:
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return [o for n in model.graph.node for o in n.output if o and types.get(o) == TensorProto.FLOAT]


def _reference_session(model):
    """onnxruntime with graph optimisations off: reference QDQ semantics (dequantize, compute in fp32,
    quantize), the same numbers on every CPU; a fused int8 kernel's numbers depend on the CPU (AVX2 vs
    AVX-512), and exposing an inner tensor would break the fusion anyway."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def locate_feature_tensor(path: str | Path, x_probe: np.ndarray, f_probe: np.ndarray, max_rel_err: float = 0.25) -> str:
    """The name of the tensor in the ONNX graph at ``path`` that holds the features ``f_probe`` of
    ``x_probe`` (computed by the torch head), found by value: the exporter and the quantizer rename and
    fuse nodes, values stay. In a QDQ graph the dequantized copy (what the next layer reads) wins over the
    float tensor it was quantized from, and a Relu folded into the quantization range is found through its
    DequantizeLinear output."""
    import onnx

    model = onnx.load(str(path))
    names = _float_tensors(model)
    sess = _reference_session(_with_outputs(model, names))
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x_probe, np.float32)}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))
    scale = max(float(np.abs(f_probe).max()), 1e-12)
    best, best_err = None, np.inf
    producers = {o: n for n in model.graph.node for o in n.output}
    for name in names:
        v = outs.get(name)
        if v is None or v.shape != f_probe.shape:
            continue
        err = float(np.abs(v - f_probe).max()) / scale
        is_dq = producers[name].op_type == "DequantizeLinear"
        if err < best_err - 1e-9 or (abs(err - best_err) <= 1e-9 and is_dq):
            best, best_err = name, err
    if best is None or best_err > max_rel_err:
        raise FeatureLocateError(f"{Path(path).name}: no tensor matches the split point's features "
                                 f"(closest relative error {best_err:.2g})")
    # a float tensor that is quantized right after: the deployed next layer reads its dequantized copy
    consumers = [n for n in model.graph.node if best in n.input]
    if len(consumers) == 1 and consumers[0].op_type == "QuantizeLinear":
        q = consumers[0].output[0]
        dq = [n for n in model.graph.node if q in n.input and n.op_type == "DequantizeLinear"]
        if dq:
            best = dq[0].output[0]
    return best


def onnx_features(path: str | Path, tensor: str, batch_size: int = 512):
    """inputs -> the values of ``tensor`` in the graph at ``path`` (reference semantics, see above)."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.output[:]
    sess = _reference_session(_with_outputs(model, [tensor]))
    name = sess.get_inputs()[0].name

    def features(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        return np.concatenate([sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])

    return features
