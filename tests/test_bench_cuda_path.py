"""bench --backend torch: block-pruned layers go through the project's BSR kernels on CUDA (the swap, and the
Triton kernel's numerics on the swapped layers under TRITON_INTERPRET=1 on the CPU); dense torch on the CPU."""

import os

import pytest
import torch
from torch import nn

from edgeprune.runtime import cuda_available

if not cuda_available():  # Triton runs its kernels in the interpreter on CPU (correctness only)
    os.environ["TRITON_INTERPRET"] = "1"

from edgeprune.bench.backends import BACKENDS, Settings, Target, block_sparse_for_cuda  # noqa: E402
from edgeprune.sparse.ops import BlockSparseConv2d, BlockSparseLinear  # noqa: E402


def _block_masked(block: int = 16, sparsity: float = 0.75):
    """A small MLP + 1x1 conv with ``sparsity`` of its ``block`` x ``block`` tiles zero, as a block run leaves it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 1), nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 32))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                w = m.weight.view(m.weight.shape[0], -1)
                rows, cols = w.shape[0] // block, w.shape[1] // block
                keep = torch.rand(rows, cols, generator=g).argsort(1) < round(cols * (1 - sparsity))
                w.mul_(keep.repeat_interleave(block, 0).repeat_interleave(block, 1).float())
    return model.eval()


def test_block_masked_layers_are_swapped_to_the_bsr_modules():
    model = _block_masked(16, 0.75)
    sparse, info = block_sparse_for_cuda(model)
    assert block_sparse_for_cuda(_block_masked(32, 0.5))[1]["block"] == 32  # the mask's own tile size
    assert info["block"] == 16 and info["layers"] == ["0", "2", "4"]
    assert isinstance(sparse[0], BlockSparseConv2d) and isinstance(sparse[2], BlockSparseLinear)
    assert isinstance(model[2], nn.Linear)  # the original is left alone
    x = torch.randn(5, 64, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), model(x), rtol=1e-5, atol=1e-5)  # the ops' CPU path


def test_a_dense_or_structured_model_is_not_swapped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    same, info = block_sparse_for_cuda(model)
    assert same is model and info is None


def test_triton_kernel_numerics_on_the_swapped_layers():
    """What the GPU runs for a swapped Linear: the Triton kernel over the module's BSR buffers (interpreted
    here, fp32, small shapes: correctness only), equal to the dense masked layer."""
    pytest.importorskip("triton")
    from edgeprune.sparse import triton_bsr

    model = _block_masked(16, 0.5)
    sparse, _ = block_sparse_for_cuda(model)
    dev = "cuda" if cuda_available() else "cpu"
    for i in (2, 4):
        layer, dense = sparse[i], model[i]
        x = torch.randn(19, dense.in_features)
        y = triton_bsr.bsr_linear(x.to(dev), layer.bsr_values.to(dev), layer.bsr_crow.to(dev), layer.bsr_col.to(dev),
                                  layer.bias.to(dev), layer.out_features).cpu()
        with torch.no_grad():
            torch.testing.assert_close(y, dense(x), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(cuda_available(), reason="the CPU path")
def test_torch_backend_on_the_cpu_times_the_dense_module():
    model = _block_masked(16, 0.75)
    entry = BACKENDS.get("torch").measure(Target("m", (64, 2, 2), module=model), 2,
                                          Settings(warmup_s=0.0, duration_s=0.01, min_runs=2))
    assert entry["device"] == "cpu" and "block_sparse" not in entry and isinstance(model[2], nn.Linear)


@pytest.mark.gpu
def test_torch_backend_on_cuda_runs_the_bsr_kernels():
    model = _block_masked(16, 0.75)
    entry = BACKENDS.get("torch").measure(Target("m", (64, 2, 2), module=model), 4,
                                          Settings(warmup_s=0.0, duration_s=0.05, min_runs=3))
    assert entry["block_sparse"]["layers"] == ["0", "2", "4"]
    assert entry["block_sparse"]["kernel"] in ("cuda-ext", "triton") and entry["device"]


def test_ray_task_runs_on_the_gpu_ray_reserved(monkeypatch):
    """Ray gives a task one GPU (visible as cuda:0): whatever device the recipe names, the task resolves to it."""
    import sys
    import types

    import edgeprune.runtime as rt
    from edgeprune.executor import _ray_task

    fake = types.SimpleNamespace(is_initialized=lambda: True, get_gpu_ids=lambda: [3])
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(rt, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        got = _ray_task(lambda shared, args: [rt.resolve(d).device for d in args], None, ["auto", "cuda:3", "cpu"], 1)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert got == ["cuda:0", "cuda:0", "cpu"]
    assert rt._task_gpu["device"] is None  # outside the task: as before
    fake.get_gpu_ids = lambda: []  # a task given no GPU keeps the recipe's device
    assert _ray_task(lambda s, a: rt.resolve(a).device, None, "cpu", 1) == "cpu"
