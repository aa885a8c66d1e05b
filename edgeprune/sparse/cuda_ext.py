"""Build and load the CUDA C++ block-sparse kernels (kernels/) as a torch extension, once per machine
(torch.utils.cpp_extension caches the build). Only on CUDA machines; the ops fall back to Triton otherwise."""

from __future__ import annotations

from pathlib import Path

from edgeprune.errors import UserError

_module = None


def kernels_dir() -> Path:
    """kernels/ beside the package (a source checkout or an editable install)."""
    path = Path(__file__).resolve().parents[2] / "kernels"
    if not (path / "bsr_gemm.cu").is_file():
        raise UserError(f"CUDA kernel sources not found at {path} (use a source checkout of edgeprune)")
    return path


def sources() -> list[Path]:
    d = kernels_dir()
    return [d / "torch_ext.cu", d / "bsr_gemm.cu"]


def load(verbose: bool = False):
    global _module
    if _module is None:
        from torch.utils.cpp_extension import load as build

        from edgeprune.runtime import cuda_available

        if not cuda_available():
            raise UserError("the CUDA block-sparse kernels need a CUDA device")
        _module = build(name="edgeprune_bsr_ext", sources=[str(s) for s in sources()],
                        extra_include_paths=[str(kernels_dir())],
                        extra_cuda_cflags=["-O3", "-std=c++17"], verbose=verbose)
    return _module
