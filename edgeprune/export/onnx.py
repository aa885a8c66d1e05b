"""ONNX export with the dynamo exporter (single file, dynamic batch) and numerical verification."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.errors import UserError

INPUT, OUTPUT = "input", "logits"


class VerificationError(UserError):
    """The exported graph does not compute what the torch model computes."""


def export_onnx(model: nn.Module, in_shape: tuple[int, ...], path: str | Path, opset: int = 20,
                dynamic_batch: bool = True, batch: int = 1, input_name: str = INPUT, output_name: str = OUTPUT) -> Path:
    """Export ``model`` to one constant-folded ONNX file, with a dynamic or a fixed batch dimension."""
    model = model.eval()
    path = Path(path)
    example = torch.zeros(2 if dynamic_batch else batch, *in_shape)
    dyn = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, external_data=False, input_names=[input_name], output_names=[output_name],
            dynamic_shapes=dyn, opset_version=opset, optimize=True, verbose=False,
        )
        program.save(str(path), external_data=False)
    return path


def has_custom_ops(path: str | Path) -> bool:
    import onnx

    return any(o.domain == "ai.edgeprune" for o in onnx.load(str(path), load_external_data=False).opset_import)


def session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    if has_custom_ops(path):  # block-sparse custom ops run through onnxruntime-extensions
        from edgeprune.export.sparse_op import session as sparse_session

        return sparse_session(path, threads)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def static_batch(sess) -> int | None:
    dim = sess.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def onnx_predict(path: str | Path, x: np.ndarray, batch_size: int = 512, threads: int = 1) -> np.ndarray:
    """Logits for every row of x computed by this CPU's onnxruntime kernels (see edgeprune.quant.numerics
    for the reference QDQ semantics)."""
    return run_session(session(path, threads), x, batch_size)


def run_session(sess, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits for every row of x; a graph with a fixed batch is fed in chunks of that size (padded)."""
    name = sess.get_inputs()[0].name
    fixed = static_batch(sess)
    if fixed is None:
        return np.concatenate([sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])
    outs = []
    for i in range(0, len(x), fixed):
        chunk = x[i : i + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *x.shape[1:]), x.dtype)])
        outs.append(sess.run(None, {name: chunk})[0][:n])
    return np.concatenate(outs)


def to_fp16(src: str | Path, dst: str | Path) -> Path:
    """fp16 weights and compute with fp32 inputs / outputs (onnxruntime's own converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return Path(dst)


@dataclass
class Verification:
    samples: int
    max_abs_err: float
    max_rel_err: float  # max |onnx - torch| / max |torch|
    top1_agreement: float
    rtol: float
    passed: bool

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def verify_onnx(model: nn.Module, path: str | Path, x: np.ndarray, rtol: float = 1e-3, top1_min: float = 1.0) -> Verification:  # noqa: E501
    """Run torch and onnxruntime on the same real samples; raise VerificationError above tolerance."""
    ref = model.eval()(torch.from_numpy(x)).numpy()
    got = onnx_predict(path, x)
    if got.shape != ref.shape:
        raise VerificationError(f"{Path(path).name}: onnxruntime output shape {got.shape} != torch {ref.shape}")
    abs_err = float(np.abs(got - ref).max())
    rel_err = abs_err / max(float(np.abs(ref).max()), 1e-12)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    v = Verification(len(x), abs_err, rel_err, agree, rtol, rel_err <= rtol and agree >= top1_min)
    if not v.passed:
        raise VerificationError(
            f"{Path(path).name} does not match torch: max relative error {rel_err:.2e} (allowed {rtol:.0e}), "
            f"top-1 agreement {agree:.4f}"
        )
    return v
