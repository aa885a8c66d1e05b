"""benchmarks/gpu_check.sh, the prepared run for a lent GPU: its CPU-checkable parts (syntax, shellcheck where
installed, argument parsing, --dry-run listing the steps, refusing to run or write anything without CUDA)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _run(*args, **kw):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, **kw)


def test_syntax_and_shellcheck():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed here (bash -n passed)")
    res = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_dry_run_lists_every_step_and_runs_nothing(tmp_path):
    before = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    res = _run("--dry-run", "--wheels", str(tmp_path / "wheels"), "--data", "shared/data/c 10.tar.gz",
               "--budget-s", "300")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "budget 300s" in out
    for step in ("install", "device check", "pytest-gpu (60s)", "kernels (110s)", "resnet20-audit16 (200s)",
                 "mlp-audit64 (90s)", "gpu_check_cuda.json"):
        assert step in out, out
    assert "-m pytest -q -m gpu" in out and "kernels.py --gemm4096" in out
    assert r"cifar10-jpeg:shared/data/c\ 10.tar.gz:10000" in out  # one argument, quoted, never re-split
    assert "--ensemble 64" in out and "--one 16 --ensemble 16" in out
    assert sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir()) == before


@pytest.mark.parametrize("args,msg", [(["--bogus"], "unknown argument"), (["--wheels"], "usage"),
                                      (["--budget-s", "8m"], "whole seconds"),
                                      (["--wheels", "/nonexistent/wheels"], "not a directory")])
def test_bad_arguments_exit_2(args, msg):
    res = _run(*args)
    assert res.returncode == 2 and msg in res.stderr, res.stderr


def test_without_cuda_it_stops_and_writes_nothing():
    from edgeprune.runtime import cuda_available

    if cuda_available():
        pytest.skip("this machine has CUDA")
    before = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    res = _run("--skip-install", "--python", sys.executable, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert res.returncode == 3 and "no CUDA device here; nothing run, nothing written" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir()) == before


def test_kernels_goal_check_picks_our_best_kernel_at_90_percent():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kernels_bench", ROOT / "benchmarks" / "kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.gemm_shapes(False, only_4096=True) == [{"name": "4096x4096 N=4096", "M": 4096, "K": 4096, "N": 4096}]
    row = {"M": 4096, "K": 4096, "N": 4096, "dtype": "fp16", "block_sparsity": 0.9}
    rows = [{**row, "block": 32, "kernel": "triton", "speedup": 4.0},
            {**row, "block": 32, "kernel": "cuda-wmma", "speedup": 6.5},
            {**row, "block": 32, "kernel": "torch bsr_dense_mm", "speedup": 9.0},  # a baseline, not ours
            {**row, "block": 64, "kernel": "triton", "speedup": 5.0},
            {**row, "block": 64, "kernel": "triton", "speedup": 7.0, "block_sparsity": 0.95}]
    assert mod.goal_check(rows) == {"32": {"kernel": "cuda-wmma", "speedup": 6.5, "met": True},
                                    "64": {"kernel": "triton", "speedup": 5.0, "met": False}}


def test_a_missing_module_stops_it_before_any_step(tmp_path):
    """A Python without the project's dependencies (here: one that cannot import torch) is refused in one line."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nexport PYTHONPATH=/nonexistent\nexec {sys.executable} -S -I \"$@\"\n")
    fake.chmod(0o755)
    before = sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())
    res = _run("--skip-install", "--python", str(fake), env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 4 and "missing Python modules: " in res.stderr and "torch" in res.stderr, res.stderr
    assert sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir()) == before
