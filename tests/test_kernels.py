"""Block-sparse kernels: Triton (interpreted on CPU), torch custom ops, end to end, and nvcc compile checks."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

if not torch.cuda.is_available():  # Triton runs its kernels in the interpreter on CPU (correctness only)
    os.environ["TRITON_INTERPRET"] = "1"

from edgeprune.sparse import ops  # noqa: E402  (after TRITON_INTERPRET)
from edgeprune.sparse.ops import BlockSparseConv2d, BlockSparseLinear, to_block_sparse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _block_sparse(out: int, k: int, block: int, density: float, seed: int = 0, empty_row: bool = True):
    """A dense weight with whole zero blocks (one block-row entirely empty) and its BSR arrays."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, k, generator=g)
    keep = torch.rand(out // block, k // block, generator=g) < density
    if empty_row:
        keep[0] = False
    w = w * keep.repeat_interleave(block, 0).repeat_interleave(block, 1).float()
    values, crow, col = ops._to_bsr(w, block, torch.float32)
    return w, values, crow, col


@pytest.fixture(scope="module")
def tri():
    pytest.importorskip("triton")
    from edgeprune.sparse import triton_bsr

    return triton_bsr


@pytest.mark.parametrize("block", [16, 32, 64])
@pytest.mark.parametrize("density", [0.5, 0.1])
def test_triton_linear_matches_dense_fp32_fp16_int8(tri, block, density):
    w, v, crow, col = _block_sparse(128, 256, block, density, seed=block)
    x = torch.randn(37, 256)  # 37 rows: a partial row tile
    b = torch.randn(128)
    y = tri.bsr_linear(x.to(DEVICE), v.to(DEVICE), crow.to(DEVICE), col.to(DEVICE), b.to(DEVICE), 128).cpu()
    torch.testing.assert_close(y, x @ w.T + b, rtol=1e-4, atol=1e-4)
    assert torch.equal(y[:, :block], b[:block].expand(37, -1))  # the empty block-row is the bias alone
    # fp16 inputs, fp32 accumulation: relative error under 1e-3
    yh = tri.bsr_linear(*(t.to(DEVICE) for t in (x.half(), v.half(), crow, col, b.half())), 128).cpu().float()
    ref = x.half().float() @ w.half().float().T + b.half().float()
    assert float((yh - ref).abs().max() / ref.abs().max()) < 1e-3
    # int8: the int32 accumulator is exact
    g = torch.Generator().manual_seed(1)
    wq = torch.randint(-127, 128, w.shape, generator=g, dtype=torch.int8) * (w != 0)
    xq = torch.randint(-127, 128, x.shape, generator=g, dtype=torch.int8)
    vq, cq, colq = ops._to_bsr(wq.float(), block, torch.float32)
    acc = tri.bsr_linear(xq.to(DEVICE), vq.to(torch.int8).to(DEVICE), cq.to(DEVICE), colq.to(DEVICE), None, 128)
    assert acc.dtype == torch.int32
    assert torch.equal(acc.cpu().long(), xq.long() @ wq.long().T)


@pytest.mark.parametrize("cin,cout,k,stride,pad", [(16, 32, 3, 1, 1), (32, 64, 3, 2, 1), (32, 32, 1, 1, 0)])
def test_triton_conv_implicit_gemm_matches_conv2d(tri, cin, cout, k, stride, pad):
    w2, v, crow, col = _block_sparse(cout, cin * k * k, 16, 0.4, seed=cin + k)
    w = w2.reshape(cout, cin, k, k)
    x = torch.randn(2, cin, 9, 7)
    b = torch.randn(cout)
    y = tri.bsr_conv2d(*(t.to(DEVICE) for t in (x, v, crow, col, b)), cout, (k, k), stride, pad).cpu()
    torch.testing.assert_close(y, F.conv2d(x, w, b, stride, pad), rtol=1e-4, atol=1e-4)
    yh = tri.bsr_conv2d(*(t.to(DEVICE) for t in (x.half(), v.half(), crow, col, b.half())), cout, (k, k), stride,
                        pad).cpu().float()
    ref = F.conv2d(x.half().float(), w.half().float(), b.half().float(), stride, pad)
    assert float((yh - ref).abs().max() / ref.abs().max()) < 1e-3
    xq = torch.randint(-127, 128, x.shape, dtype=torch.int8)
    wq = torch.randint(-127, 128, w.shape, dtype=torch.int8) * (w != 0)
    vq, cq, colq = ops._to_bsr(wq.reshape(cout, -1).float(), 16, torch.float32)
    acc = tri.bsr_conv2d(*(t.to(DEVICE) for t in (xq, vq.to(torch.int8), cq, colq)), None, cout, (k, k), stride, pad)
    ref_int = F.conv2d(xq.double(), wq.double(), None, stride, pad).long()  # exact in fp64
    assert torch.equal(acc.cpu().long(), ref_int)


def test_bsr_arrays_round_trip_and_skip_zero_blocks():
    w, v, crow, col = _block_sparse(64, 128, 16, 0.3)
    dense = torch.sparse_bsr_tensor(crow, col, v, size=w.shape).to_dense()
    assert torch.equal(dense, w)
    assert v.shape[0] == int((w.reshape(4, 16, 8, 16).abs().amax((1, 3)) > 0).sum())  # only non-zero blocks stored
    assert crow[1] == crow[0]  # the empty first block-row stores nothing
    with pytest.raises(Exception, match="tile"):
        ops._to_bsr(torch.randn(30, 64), 16, torch.float32)


def test_custom_ops_match_dense_and_pass_opcheck():
    w, v, crow, col = _block_sparse(64, 128, 32, 0.5)
    x, b = torch.randn(5, 128), torch.randn(64)
    torch.testing.assert_close(torch.ops.edgeprune.bsr_linear(x, v, crow, col, b, 64), x @ w.T + b)
    torch.testing.assert_close(torch.ops.edgeprune.bsr_linear(x.half(), v.half(), crow, col, b.half(), 64).float(),
                               (x @ w.T + b), rtol=2e-2, atol=2e-2)
    torch.library.opcheck(torch.ops.edgeprune.bsr_linear.default, (x, v, crow, col, b, 64))
    # int8: exact integer sums, then the scales
    wq = torch.randint(-127, 128, w.shape, dtype=torch.int8) * (w != 0)
    xq = torch.randint(-127, 128, (5, 128), dtype=torch.int8)
    vq, cq, colq = ops._to_bsr(wq.float(), 32, torch.float32)
    ws = torch.rand(64) / 100
    y = torch.ops.edgeprune.bsr_linear_int8(xq, 0.02, vq.to(torch.int8), ws, cq, colq, b, 64)
    ref = (xq.double() @ wq.double().T) * 0.02 * ws.double() + b.double()
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-5)
    torch.library.opcheck(torch.ops.edgeprune.bsr_linear_int8.default, (xq, 0.02, vq.to(torch.int8), ws, cq, colq, b, 64))
    wc, vc, cc, colc = _block_sparse(32, 16 * 9, 16, 0.5)
    xc = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(torch.ops.edgeprune.bsr_conv2d(xc, vc, cc, colc, None, 32, 3, 3, 1, 1, 1),
                               F.conv2d(xc, wc.reshape(32, 16, 3, 3), None, 1, 1), rtol=1e-4, atol=1e-4)
    torch.library.opcheck(torch.ops.edgeprune.bsr_conv2d.default, (xc, vc, cc, colc, None, 32, 3, 3, 1, 1, 1))


def _block_pruned(model: nn.Module, sparsity: float, block: int) -> nn.Module:
    from edgeprune.prune import masks as M

    masks, _ = M.block(model, sparsity, size=block)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name].to(p.dtype))
    return model


@pytest.mark.parametrize("arch,shape", [("resnet20", (3, 32, 32)), ("mlp", (512,))])
def test_block_pruned_model_runs_through_the_ops_eager_and_compiled(arch, shape):
    from edgeprune.models import build_model

    torch.manual_seed(0)
    dense = build_model(arch, shape, 10).eval()
    for m in dense.modules():  # non-trivial BatchNorm statistics so outputs are not near zero
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
            m.running_mean.uniform_(-0.1, 0.1)
    pruned = _block_pruned(dense, 0.5, 16)
    sparse, replaced = to_block_sparse(pruned, 16, 0.4)
    assert len(replaced) >= 2
    assert any(isinstance(m, (BlockSparseLinear, BlockSparseConv2d)) for m in sparse.modules())
    x = torch.randn(4, *shape)
    with torch.no_grad():
        ref = pruned(x)
        out = sparse(x)
        compiled = torch.compile(sparse, backend="aot_eager", fullgraph=True)(x)
    scale = float(ref.abs().max())
    assert float(ref.std(0).max()) > 1e-3 * scale > 0  # the pruned network still depends on its input
    assert float((out - ref).abs().max()) / scale < 1e-4
    assert float((compiled - ref).abs().max()) / scale < 1e-4


NVCC = shutil.which("nvcc")
ARCHS = ["80", "86", "87", "89", "90"]


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_cuda_kernels_compile_for_every_target_architecture(tmp_path):
    gencode = [a for arch in ARCHS for a in ("-gencode", f"arch=compute_{arch},code=sm_{arch}")]
    out = subprocess.run([NVCC, "-std=c++17", "-O3", "-Xptxas", "-v", "-c", str(ROOT / "kernels" / "bsr_gemm.cu"),
                          "-o", str(tmp_path / "bsr.o"), *gencode], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    for arch in ARCHS:  # every kernel variant was assembled for every architecture
        assert out.stderr.count(f"for 'sm_{arch}'") >= 18, arch
    spills = [line for line in out.stderr.splitlines() if "spill stores" in line]
    assert spills and all(" 0 bytes spill stores" in line for line in spills)  # no register spills


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_torch_extension_compiles_against_this_torch(tmp_path):
    import sysconfig

    inc = Path(torch.__file__).parent / "include"
    out = subprocess.run([NVCC, "-std=c++17", "-c", str(ROOT / "kernels" / "torch_ext.cu"), "-o",
                          str(tmp_path / "ext.o"), "-arch=sm_80", f"-I{inc}", f"-I{inc / 'torch/csrc/api/include'}",
                          f"-I{sysconfig.get_paths()['include']}", "-DTORCH_EXTENSION_NAME=edgeprune_bsr_ext"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


def test_plugin_sources_match_the_onnx_custom_op():
    """The TensorRT plugin answers to the name, version and namespace the ONNX export writes."""
    from edgeprune.export import sparse_op

    src = (ROOT / "kernels" / "trt" / "block_sparse_linear_plugin.h").read_text()
    assert f'kPluginName = "{sparse_op.OP}"' in src and f'kPluginNamespace = "{sparse_op.DOMAIN}"' in src
    cmake = (ROOT / "kernels" / "CMakeLists.txt").read_text()
    assert "add_library(edgeprune_plugins SHARED" in cmake and "87" in cmake


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extension_matches_dense_on_gpu():
    from edgeprune.sparse import cuda_ext

    ext = cuda_ext.load()
    w, v, crow, col = _block_sparse(256, 512, 32, 0.25)
    x, b = torch.randn(100, 512, device="cuda").half(), torch.randn(256, device="cuda").half()
    y = ext.bsr_linear(x, v.cuda().half(), crow.cuda().int(), col.cuda().int(), b,
                       torch.cuda.current_stream().cuda_stream)
    ref = x.float() @ w.cuda().half().float().T + b.float()
    assert float((y.float() - ref).abs().max() / ref.abs().max()) < 1e-3
    wc, vc, cc, colc = _block_sparse(64, 32 * 9, 32, 0.5)
    xc = torch.randn(2, 32, 9, 9, device="cuda").half()
    yc = ext.bsr_conv2d(xc, vc.cuda().half(), cc.cuda().int(), colc.cuda().int(), None, 3, 3, 2, 1, 1,
                        torch.cuda.current_stream().cuda_stream)
    refc = F.conv2d(xc.float(), wc.cuda().half().float().reshape(64, 32, 3, 3), None, 2, 1)
    assert float((yc.float() - refc).abs().max() / refc.abs().max()) < 1e-3


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
