import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.export.bundle import is_two_four, two_four_sparse
from edgeprune.run import sha256_file

runner = CliRunner()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    (tmp / "r.yaml").write_text(yaml.safe_dump({
        "train": {"epochs": 3}, "finetune": {"epochs": 1}, "quant": {"mode": "none"},
        "bench": {"batches": [1], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 3},
    }))
    out = tmp / "run"
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(tmp / "r.yaml"),
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_export_command_writes_verified_files(small_run):
    res = runner.invoke(app, ["export", str(small_run), "--fp16", "--int8", "--dynamic-batch"])
    assert res.exit_code == 0, res.output
    info = json.loads((small_run / "export" / "export.json").read_text())
    assert set(info["files"]) == {"model.fp32.onnx", "model.fp16.onnx", "model.int8.onnx"}
    assert info["files"]["model.fp32.onnx"]["max_rel_err"] < 1e-4
    assert info["files"]["model.fp16.onnx"]["top1_agreement"] >= 0.98
    fp32_acc = info["files"]["model.fp32.onnx"]["test_accuracy"]
    assert info["files"]["model.int8.onnx"]["test_accuracy"] >= fp32_acc - 0.05
    man = json.loads((small_run / "manifest.json").read_text())
    for name in info["files"]:
        assert man["artifacts"][f"export/{name}"] == sha256_file(small_run / "export" / name)
    for args, match in ((["--format", "coreml"], "onnx or tensorrt"), (["--opset", "3"], "opset")):
        res = runner.invoke(app, ["export", str(small_run), *args])
        assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output


def test_tensorrt_format_without_tensorrt_writes_the_bundle(small_run):
    pytest.importorskip("onnx")
    from edgeprune.export import tensorrt as trt_mod

    if trt_mod.available():
        pytest.skip("tensorrt is installed here: the engine path is taken instead")
    res = runner.invoke(app, ["export", str(small_run), "--format", "tensorrt", "--int8"])
    assert res.exit_code == 0, res.output
    assert "built on the device" in res.output
    assert (small_run / "bundle" / "build_engine.sh").is_file()
    assert not list((small_run / "bundle").glob("*.engine"))


def test_bundle_runs_on_a_fresh_device_dir(small_run, tmp_path):
    out = tmp_path / "bundle"
    res = runner.invoke(app, ["bundle", str(small_run), "-o", str(out), "--precision", "fp32,fp16,int8"])
    assert res.exit_code == 0, res.output
    man = json.loads((out / "manifest.json").read_text())
    for f, digest in man["files"].items():
        assert sha256_file(out / f) == digest, f
    assert not list(out.rglob("*.engine"))
    assert man["target"]["tensorrt"] == "10.3" and man["input"]["shape"][0] == 1
    device = tmp_path / "device"
    shutil.copytree(out, device)
    proc = subprocess.run([sys.executable, str(device / "run_onnx.py"), "--duration", "0.2", "--out",
                           str(device / "results" / "onnx.json")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((device / "results" / "onnx.json").read_text())
    assert [r["precision"] for r in report["results"]] == ["fp32", "fp16", "int8"]
    assert all(r["check_passed"] and r["p50_ms"] > 0 for r in report["results"])
    assert report["results"][0]["max_rel_err"] < 1e-5  # fp32 reproduces the recorded outputs
    # on a CPU whose int8 kernels saturate (AVX2 without VNNI) the int8 check uses reference QDQ numerics,
    # the ones the recorded outputs were made with; elsewhere this device's own kernels
    from edgeprune.cpu import cpu_info, u8s8_saturates

    info = cpu_info()
    saturates = bool(u8s8_saturates(info["arch"], info["features"]))
    assert report["results"][2]["check_numerics"].startswith("reference") == saturates
    assert report["results"][0]["check_numerics"] == "this device"
    # a tampered model fails the device-side check
    import numpy as np

    with np.load(device / "samples.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["outputs_fp32"] = arrays["outputs_fp32"] + 10.0
    np.savez(device / "samples.npz", **arrays)
    proc = subprocess.run([sys.executable, str(device / "run_onnx.py"), "--model", "model.fp32.onnx",
                           "--duration", "0.05"], capture_output=True, text=True)
    assert proc.returncode == 1
    for script in ("build_engine.sh", "bench.sh"):
        assert subprocess.run(["bash", "-n", str(out / script)]).returncode == 0
        if shutil.which("shellcheck"):
            sc = subprocess.run(["shellcheck", str(out / script)], capture_output=True, text=True)
            assert sc.returncode == 0, sc.stdout
    text = (out / "build_engine.sh").read_text()
    assert "--fp16" in text and "--int8" in text and "--saveEngine=engines/model.int8.engine" in text
    assert "--sparsity=enable" not in text and "--timingCacheFile" in text
    assert "--useCudaGraph" in (out / "bench.sh").read_text()


def test_shellcheck_is_installed_in_ci():
    import os

    if os.environ.get("CI"):
        assert shutil.which("shellcheck"), ".ci/run must install shellcheck"


def test_two_four_detection():
    import numpy as np

    w = np.array([[1, 0, 2, 0, 0, 3, 0, 4]], float)
    assert is_two_four(w) and not is_two_four(np.ones((2, 8)))
    lin = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    with torch.no_grad():
        for m in (lin[0], lin[2]):
            m.weight.view(m.weight.shape[0], -1, 4)[..., 2:] = 0.0
    assert two_four_sparse(lin)
    with torch.no_grad():
        lin[2].weight.fill_(1.0)
    assert not two_four_sparse(lin)


def test_bundle_of_a_two_four_model_enables_sparsity(tmp_path):
    import numpy as np

    from edgeprune.export.bundle import make_bundle

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.view(m.weight.shape[0], -1, 4)[..., :2] = 0.0
    x = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)
    out = make_bundle(model, (8,), tmp_path / "b", ["fp16"], x, x, dynamic_batch=True)
    text = (out / "build_engine.sh").read_text()
    assert "--sparsity=enable" in text and "--minShapes=input:1x8" in text
    assert json.loads((out / "manifest.json").read_text())["sparsity_2_4"] is True
