"""Checks on an ONNX file a user hands in (``audit X.onnx``, ``bench X.onnx``) before any work uses it.

A garbage, empty or truncated file, external data outside the model's directory, a graph with several
inputs or outputs, or outputs that do not fit the data each become one ``ConfigError`` line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError


def _external_locations(model) -> list[str]:
    from onnx import TensorProto

    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    out = []
    for t in tensors:
        if t.data_location == TensorProto.EXTERNAL:
            out += [e.value for e in t.external_data if e.key == "location"]
    return out


def check_onnx_file(path: str | Path, single_output: bool = True):
    """The file is a loadable single-input ONNX model (single-output too, unless ``single_output`` is
    False) whose external data (if any) stays in its own directory. Returns the parsed ModelProto
    (without external data)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX file not found: {path}")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path} is empty, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-turned-errors, ValueError ...
        raise ConfigError(f"{path} is not an ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})") from None
    if not model.graph.node or not model.graph.output:
        raise ConfigError(f"{path} is not an ONNX model (no graph: an empty, truncated or foreign file)")
    base = path.resolve().parent
    for loc in _external_locations(model):
        target = (base / loc).resolve()
        if Path(loc).is_absolute() or not target.is_relative_to(base):
            raise ConfigError(f"{path}: external data {loc[:80]!r} lies outside the model's directory; refusing to read it")
        if not target.is_file():
            raise ConfigError(f"{path}: external data file {loc[:80]!r} is missing")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ConfigError(f"{path} has {len(inputs)} inputs; edgeprune handles models with one input")
    if single_output and len(model.graph.output) != 1:
        names = ", ".join(o.name[:30] for o in model.graph.output[:4])
        raise ConfigError(f"{path} has {len(model.graph.output)} outputs ({names}); edgeprune needs one logits output")
    return model


def open_session(path: str | Path, threads: int = 1, single_output: bool = True):
    """An onnxruntime session of a checked file; a file onnxruntime refuses is one line."""
    from edgeprune.export.onnx import session

    check_onnx_file(path, single_output)
    try:
        return session(path, threads)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / NotImplemented types
        raise ConfigError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:160]}") from None


def check_fits_data(path: str | Path, x: np.ndarray, num_classes: int) -> None:
    """The model maps a batch of 2 samples of the data to finite (2, num_classes) logits."""
    sess = open_session(path)
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    batch = fixed if isinstance(fixed, int) and fixed > 0 else 2
    xb = np.ascontiguousarray(np.resize(x[:batch], (batch, *x.shape[1:])), dtype=np.float32)
    try:
        out = sess.run(None, {name: xb})[0]
    except Exception as e:
        raise ConfigError(f"{Path(path).name} does not take this data's inputs {tuple(x.shape[1:])}: "
                          f"{str(e).splitlines()[0][:160]}") from None
    out = np.asarray(out)
    if out.shape != (batch, num_classes):
        raise ConfigError(f"{Path(path).name} outputs shape {out.shape} for a batch of {batch}; the data has "
                          f"{num_classes} classes, so logits of shape ({batch}, {num_classes}) are expected")
    if not np.issubdtype(out.dtype, np.floating) or not np.isfinite(out).all():
        raise ConfigError(f"{Path(path).name} outputs NaN, infinity or non-float values on this data")
