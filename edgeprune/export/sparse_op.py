"""Block-sparse Linear layers as the ONNX custom op ``ai.edgeprune::BlockSparseLinear``.

Graph form: inputs (X, values, crow, col, bias) with BSR values / indices as ordinary initializers,
attributes out_features, in_features, block and ``plugin_namespace='ai.edgeprune'`` so that TensorRT maps
the node to the plugin of the same name built from kernels/. Dense fallback export is the plain Gemm.

On CPU the op runs in onnxruntime through onnxruntime-extensions' Python custom ops. Those are registered
in the extensions' own domain, so ``session()`` loads a copy of the graph with the domain renamed; the file
on disk keeps ``ai.edgeprune``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.sparse.bsr import BSR, block_density, from_dense

DOMAIN = "ai.edgeprune"
OP = "BlockSparseLinear"
_registered = False


def _register() -> str:
    global _registered
    from onnxruntime_extensions import PyCustomOpDef, onnx_op
    from onnxruntime_extensions._ocos import default_opset_domain

    if not _registered:
        f, i = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64

        @onnx_op(op_type=OP, inputs=[f, f, i, i, f], outputs=[f],
                 attrs={"out_features": i, "in_features": i, "block": i, "plugin_namespace": PyCustomOpDef.dt_string})
        def block_sparse_linear(x, values, crow, col, bias, **attrs):
            shape = (int(attrs["out_features"]), int(attrs["in_features"]))
            w = BSR(values, crow, col, shape, int(attrs["block"]))
            return w.matmul_t(x) + bias[None, :]

        _registered = True
    return default_opset_domain()


def sparsify_onnx(src: str | Path, dst: str | Path, block: int = 32, min_sparsity: float = 0.5) -> list[str]:
    """Replace every Gemm whose weight has at least ``min_sparsity`` zero blocks by the custom op."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    replaced, nodes = [], []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = numpy_helper.to_array(inits[node.input[1]]) if node.op_type == "Gemm" and node.input[1] in inits else None
        ok = (w is not None and attrs.get("transB", 0) == 1 and attrs.get("transA", 0) == 0
              and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
              and w.shape[0] % block == 0 and w.shape[1] % block == 0
              and 1.0 - block_density(w, block) >= min_sparsity)
        if not ok:
            nodes.append(node)
            continue
        bsr = from_dense(w, block)
        base = node.name or node.output[0]
        bias = (numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits
                else np.zeros(w.shape[0], np.float32))
        names = [f"{base}.bsr_values", f"{base}.bsr_crow", f"{base}.bsr_col", f"{base}.bsr_bias"]
        for arr, name in zip((bsr.values.astype(np.float32), bsr.crow, bsr.col, bias.astype(np.float32)), names, strict=True):
            model.graph.initializer.append(numpy_helper.from_array(arr, name))
        nodes.append(helper.make_node(OP, [node.input[0], *names], list(node.output), name=f"{base}.bsr",
                                      domain=DOMAIN, out_features=int(w.shape[0]), in_features=int(w.shape[1]),
                                      block=int(block), plugin_namespace=DOMAIN))
        replaced.append(base)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    if replaced and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    onnx.save(model, str(dst))
    return replaced


def session(path: str | Path, threads: int = 1, opts=None):
    """An onnxruntime CPU session that can run ``ai.edgeprune`` ops (plain graphs load as they are);
    ``opts``: onnxruntime SessionOptions to start from."""
    import onnx
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    model = onnx.load(str(path))
    if opts is None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    if any(n.domain == DOMAIN for n in model.graph.node):
        contrib = _register()
        for n in model.graph.node:
            if n.domain == DOMAIN:
                n.domain = contrib
        for o in model.opset_import:
            if o.domain == DOMAIN:
                o.domain = contrib
        opts.register_custom_ops_library(get_library_path())
        return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
