"""The shape of the pipeline: one registered module per stage, in STAGES order, and a light public API."""

import subprocess
import sys

from edgeprune.stages import STAGE, STAGES, StageResult


def test_every_stage_is_one_module_registered_under_its_name():
    assert STAGES == ["train", "prune", "finetune", "export", "quantize", "audit", "bench", "report"]
    assert set(STAGE.names()) == set(STAGES)
    for name in STAGES:
        fn = STAGE.get(name)  # imports edgeprune.stages.<name>, which registers it
        assert fn.__module__ == f"edgeprune.stages.{name}", name
        assert STAGE.meta(name)["doc"], name
    assert set(STAGE._items) == set(STAGE._declared)
    artifacts, results = StageResult(["plan.json"], {"method": "structured"})  # the runner unpacks it so
    assert artifacts == ["plan.json"] and results == {"method": "structured"}


def test_public_api_is_reexported_without_heavy_imports():
    code = ("import sys, edgeprune.api as api\n"
            "missing = [n for n in api.__all__ if not hasattr(api, n)]\n"
            "assert not missing, missing\n"
            "heavy = sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'sklearn', 'scipy') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
