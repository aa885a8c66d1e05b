import json
import subprocess
import sys

import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from edgeprune.cli import app

runner = CliRunner()
SMALL = ["--data", "purchase-synth:2000", "--epochs", "3", "--finetune-epochs", "1"]


def test_help_does_not_import_torch():
    code = "import sys; from edgeprune.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "edgeprune.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "compress" in out.stdout


def _fails_cleanly(args, tmp_path, match):
    out = tmp_path / "run"
    res = runner.invoke(app, [*args, "-o", str(out)])
    text = res.output
    assert res.exit_code == 2, text
    assert "Traceback" not in text and "error:" in text and match in text
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


@pytest.mark.parametrize(
    "args,match",
    [
        (["compress", "resnet999", *SMALL], "unknown model"),
        (["compress", "mlp", "--data", "imagenet"], "unknown data set"),
        (["compress", "mlp", *SMALL, "--method", "magic"], "unknown pruning method"),
        (["compress", "mlp", *SMALL, "--sparsity", "1.2"], "sparsity"),
        (["compress", "mlp", *SMALL, "--sparsity", "0"], "sparsity"),
        (["compress", "resnet20", *SMALL], "image inputs"),
        (["compress", "mlp", *SMALL, "--weights", "/nonexistent/w.safetensors"], "not found"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, match, tmp_path):
    _fails_cleanly(args, tmp_path, match)


def test_corrupt_and_mismatched_weights(tmp_path):
    import torch

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    _fails_cleanly(["compress", "mlp", *SMALL, "--weights", str(bad)], tmp_path, "cannot read")
    other = tmp_path / "other.safetensors"
    save_file({"net.1.weight": torch.zeros(3, 3)}, str(other))
    _fails_cleanly(["compress", "mlp", *SMALL, "--weights", str(other)], tmp_path, "does not fit")


def test_compress_end_to_end_then_resume(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["compress", "mlp", *SMALL, "--sparsity", "0.5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    for f in ("manifest.json", "plan.json", "model.safetensors", "model.onnx", "model.int8.onnx",
              "dense/model.onnx", "audit.json", "bench.json", "report.md", "report.json"):
        assert (out / f).is_file(), f
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and len(man["split"]["hash"]) == 64
    from edgeprune.run import sha256_file

    for rel, digest in man["artifacts"].items():
        assert sha256_file(out / rel) == digest, rel
    assert all(v["passed"] for v in man["verification"].values())
    report = json.loads((out / "report.json").read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"dense", "pruned", "pruned+int8"}
    assert rows["pruned"]["params"] < 0.6 * rows["dense"]["params"]
    for r in rows.values():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["attacks"]["loss"]["auc"] <= 1.0
        assert r["latency"]["1"]["p50_ms"] > 0
    assert "dense" in res.output and "loss AUC" in res.output
    # the CPU that ran it, and how the int8 variant was made and scored
    assert man["cpu"]["model"] and "features" in man["cpu"] and man["cpu"]["int8_kernels"]
    q = man["stages"]["quantize"]["results"]
    assert q["int8"]["target"] == "ort-cpu" and isinstance(q["int8"]["reduce_range"], bool)
    assert q["numerics"].startswith("reference QDQ") and q["cpu_kernels"]["max_abs_diff_steps"] <= 2
    assert json.loads((out / "audit.json").read_text())["numerics"]["pruned+int8"].startswith("reference QDQ")
    assert "int8: uint8 activations" in (out / "report.md").read_text()

    # an existing run is not overwritten
    res = runner.invoke(app, ["compress", "mlp", *SMALL, "--sparsity", "0.5", "-o", str(out)])
    assert res.exit_code == 2 and "--resume" in res.output
    # resume skips every finished stage and leaves the artifacts as they were
    before = (out / "model.safetensors").read_bytes()
    res = runner.invoke(app, ["compress", "mlp", *SMALL, "--sparsity", "0.5", "-o", str(out), "--resume"])
    assert res.exit_code == 0 and res.output.count("skipped") == 8, res.output
    assert (out / "model.safetensors").read_bytes() == before
    # a stage whose artifact changed is rerun, with every later stage
    (out / "bench.json").write_text("{}")
    res = runner.invoke(app, ["compress", "mlp", *SMALL, "--sparsity", "0.5", "-o", str(out), "--resume"])
    assert res.exit_code == 0 and res.output.count("skipped") == 6 and "bench: done" in res.output
    # a different recipe cannot resume this run, and the run stays in place
    res = runner.invoke(app, ["compress", "mlp", *SMALL, "--sparsity", "0.3", "-o", str(out), "--resume"])
    assert res.exit_code == 2 and "different recipe" in res.output
    assert (out / "manifest.json").is_file()


def test_same_seed_same_numbers(tmp_path):
    reports = []
    for name in ("a", "b"):
        res = runner.invoke(app, ["compress", "mlp", *SMALL, "--seed", "7", "-o", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        audit = json.loads((tmp_path / name / "audit.json").read_text())
        for v in audit["variants"].values():  # wall-clock times are the only thing allowed to differ
            for r in v["attacks"].values():
                r.pop("seconds"), r.pop("attack_seconds")
        reports.append((audit["variants"], audit["roc"], audit["candidates"]))
    assert reports[0] == reports[1]
    assert (tmp_path / "a" / "plan.json").read_text() == (tmp_path / "b" / "plan.json").read_text()


def test_compress_on_image_data(tmp_path, cifar_dir):
    out = tmp_path / "img"
    res = runner.invoke(app, ["compress", "lenet5", "--data", f"cifar10:{cifar_dir}", "--epochs", "1",
                              "--finetune-epochs", "1", "--quant", "none", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["dense", "pruned"]


def test_version_alone_and_verbose_for_bug_reports():
    from edgeprune import __version__

    out = subprocess.run([sys.executable, "-m", "edgeprune.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == __version__, out.stderr
    code = ("import sys; from typer.testing import CliRunner; from edgeprune.cli import app; "
            "r = CliRunner().invoke(app, ['--version', '--verbose']); print(r.output); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(r.exit_code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    import onnxruntime

    assert f"onnxruntime: {onnxruntime.__version__}" in out.stdout and "numpy: " in out.stdout
    assert "cpu features: " in out.stdout and "onnxruntime int8 kernels: " in out.stdout
    assert runner.invoke(app, ["--version", "models"]).output.strip() == __version__
    r = runner.invoke(app, ["--verbose"])
    assert r.exit_code == 2 and "--version" in r.output
