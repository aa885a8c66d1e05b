"""--device / --amp on the commands, the resolved runtime in the manifest and audit.json, the attacker cache key
per device, and CUDA probed in one module only."""

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.runtime import cuda_available

runner = CliRunner()
NO_CUDA = pytest.mark.skipif(cuda_available(), reason="checks the refusal where there is no CUDA")


@NO_CUDA
@pytest.mark.parametrize("cmd", [
    ["compress", "mlp", "--data", "purchase-synth:2000"],
    ["prune", "mlp", "--data", "purchase-synth:2000"],
    ["tune", "mlp", "--data", "purchase-synth:2000"],
])
def test_device_cuda_without_cuda_is_one_line_and_writes_no_run(cmd, tmp_path):
    out = tmp_path / "nested" / "run"
    res = runner.invoke(app, [*cmd, "-o", str(out), "--device", "cuda"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and "error:" in lines[0] and "no CUDA device" in lines[0], res.output
    assert not (tmp_path / "nested").exists()  # nothing written, not even the parent of -o


@NO_CUDA
def test_recipe_runtime_cuda_without_cuda_fails_before_any_directory(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("runtime: {device: 'cuda:1'}\n")
    out = tmp_path / "nested" / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(recipe),
                              "-o", str(out)])
    assert res.exit_code == 2 and "no CUDA device" in res.output, res.output
    assert not (tmp_path / "nested").exists()


@NO_CUDA
def test_audit_device_cuda_without_cuda(tmp_path, npz_file):
    out = tmp_path / "aud"
    res = runner.invoke(app, ["audit", "mlp", "--weights", str(npz_file), "--data", f"npz:{npz_file}",
                              "--device", "cuda:0", "-o", str(out)])
    assert res.exit_code == 2 and "no CUDA device" in res.output, res.output
    assert not out.exists()


def test_device_option_overrides_the_recipe():
    from edgeprune.cli import _runtime
    from edgeprune.recipe import Recipe

    r = Recipe()
    r.runtime.device = "cuda"
    assert _runtime(r, "cpu", True).device == "cpu" and (r.runtime.device, r.runtime.amp) == ("cpu", True)
    assert _runtime(r, None, None).device == "cpu"  # no option: the recipe's section as it is


def test_bad_device_spec_is_one_line(tmp_path):
    res = runner.invoke(app, ["prune", "mlp", "--device", "gpu", "-o", str(tmp_path / "r")])
    assert res.exit_code == 2 and "runtime device must be auto, cpu, cuda or cuda:N" in res.output


def test_manifest_records_the_resolved_runtime(tmp_path):
    from edgeprune.recipe import Recipe
    from edgeprune.run import Run

    r = Recipe()
    r.runtime.device = "cpu"
    run = Run(tmp_path / "run", r.to_dict())
    try:
        assert run.manifest["runtime"] == {"device": "cpu", "amp": False, "gpu": None, "numerics": "CPU"}
    finally:
        run.close()


def _fake_gpu(monkeypatch):
    import torch

    import edgeprune.runtime as rt

    monkeypatch.setattr(rt, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # resolve sets them

    def restore():
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    return restore


def test_cuda_runtime_is_described_as_gpu_numerics(monkeypatch):
    from edgeprune.runtime import resolve

    restore = _fake_gpu(monkeypatch)
    try:
        d = resolve("cuda", amp=True).describe()
        assert d["device"] == "cuda:0" and d["gpu"] == "NVIDIA H200" and d["amp"] is True
        assert "differ from a CPU run" in d["numerics"] and "bf16" in d["numerics"]
        assert resolve("auto").device == "cuda:0"
    finally:
        restore()


def test_attacker_cache_key_depends_on_the_device_type_only_on_cuda(monkeypatch):
    from edgeprune.attack.audit import pipeline_key
    from edgeprune.recipe import Recipe

    def key(device, amp=False):
        r = Recipe()
        r.runtime.device, r.runtime.amp = device, amp
        return pipeline_key(r, "split")

    cpu = key("cpu")
    assert key("cpu", amp=True) == cpu  # amp is off on the CPU: the same models
    if not cuda_available():
        assert key("auto") == cpu  # auto is the CPU here: caches made before stay valid
    restore = _fake_gpu(monkeypatch)
    try:
        cuda = key("cuda")
        assert cuda != cpu and key("cuda:0") == cuda and key("auto") == cuda
        assert key("cuda", amp=True) not in (cpu, cuda)
    finally:
        restore()


def test_cuda_is_probed_in_runtime_py_only():
    """``torch.cuda.is_available`` / ``get_device_name`` / ``device_count`` appear nowhere in edgeprune/ but
    edgeprune/runtime.py (attribute access, so aliases of torch.cuda are caught too)."""
    root = Path(__file__).resolve().parents[1] / "edgeprune"
    probes = {"is_available", "get_device_name", "device_count"}
    found = []
    for path in root.rglob("*.py"):
        if path.name == "runtime.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in probes:
                base = ast.unparse(node.value)
                if base.endswith("cuda"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {base}.{node.attr}")
    assert not found, found


def test_audit_json_execution_block_names_the_runtime(tmp_path):
    import json

    from test_run_integrity import _tiny_onnx

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "audit"
    res = runner.invoke(app, ["audit", str(model), "--data", "digits", "--membership", "split", "--attacks", "loss",
                              "--device", "cpu", "-o", str(out)])
    assert res.exit_code == 0, res.output
    ex = json.loads((out / "audit.json").read_text())["execution"]
    assert ex["runtime"] == {"device": "cpu", "amp": False, "gpu": None, "numerics": "CPU"}


def test_a_run_resumed_on_another_device_keeps_the_earlier_one(tmp_path, monkeypatch):
    import edgeprune.runtime as rt
    from edgeprune.recipe import Recipe
    from edgeprune.run import Run

    r = Recipe()
    r.runtime.device = "cpu"
    run = Run(tmp_path / "run", r.to_dict())
    run.finish("train", [], {})
    run.save_manifest()
    run.close()  # interrupted after train
    gpu = {"device": "cuda:0", "amp": False, "gpu": "NVIDIA H200", "numerics": "GPU kernels"}
    monkeypatch.setattr(rt.Runtime, "describe", lambda self: gpu)
    again = Run(tmp_path / "run", r.to_dict(), resume=True)
    try:
        assert again.manifest["runtime"] == gpu
        assert again.manifest["runtime_earlier"] == [{"device": "cpu", "amp": False, "gpu": None, "numerics": "CPU",
                                                      "stages_done": ["train"]}]
    finally:
        again.close()


@pytest.mark.gpu
def test_compress_on_cuda_records_the_gpu(tmp_path):
    import json

    out = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:1000", "--epochs", "1", "--finetune-epochs",
                              "1", "--device", "cuda", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rt = json.loads((out / "manifest.json").read_text())["runtime"]
    assert rt["device"] == "cuda:0" and rt["gpu"] and "differ from a CPU run" in rt["numerics"]
