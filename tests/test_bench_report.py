import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgeprune.bench.latency import summarize
from edgeprune.cli import app

runner = CliRunner()


def test_percentiles_and_throughput():
    times = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    s = summarize(times, batch=4)
    assert s["runs"] == 100
    assert s["p50_ms"] == pytest.approx(50.5) and s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5) and s["throughput_per_s"] == pytest.approx(4 * 1000 / 50.5)
    assert summarize(np.full(7, 0.002), 1)["p99_ms"] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "r.yaml").write_text(yaml.safe_dump({
        "train": {"epochs": 4}, "finetune": {"epochs": 1},
        "bench": {"batches": [1, 8], "warmup_s": 0.0, "duration_s": 0.05, "min_runs": 5}}))
    runs = []
    for s in (0.3, 0.7):
        out = tmp / f"s{s}"
        res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:2000", "--recipe", str(tmp / "r.yaml"),
                                  "--sparsity", str(s), "-o", str(out)])
        assert res.exit_code == 0, res.output
        runs.append(out)
    return runs


def test_bench_appends_and_skips_missing_backends(sweep):
    run = sweep[0]
    before = len(json.loads((run / "bench.json").read_text())["entries"])
    res = runner.invoke(app, ["bench", str(run), "--backend", "torch,ort-cpu,ort-cuda,tensorrt", "--batch", "1,4",
                              "--duration", "0.05", "--warmup", "0"])
    assert res.exit_code == 0, res.output
    assert "backend ort-cuda: skipped" in res.output and "backend tensorrt: skipped" in res.output
    assert "Traceback" not in res.output
    data = json.loads((run / "bench.json").read_text())
    new = data["entries"][before:]
    assert [e["backend"] for e in new] == ["torch", "ort-cpu"]  # the missing ones are not faked
    assert data["machine"]["cores"] >= 1 and "onnxruntime" in data["machine"]["versions"]
    ort = new[1]
    assert set(ort["variants"]) == {"dense", "pruned", "pruned+int8"}
    for v in ort["variants"].values():
        assert [r["batch"] for r in v["latency"]] == [1, 4]
        for r in v["latency"]:
            assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and "peak_rss_mb" not in r
    assert ort["variants"]["dense"]["latency"][0]["speedup_vs_dense"] == 1.0
    assert "pruned+int8" in new[0]["skipped"]  # no torch module for the int8 ONNX


def test_bench_an_onnx_file_and_bad_options(sweep, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    shutil.copy(sweep[0] / "model.onnx", onnx_file)
    res = runner.invoke(app, ["bench", str(onnx_file), "--batch", "2", "--duration", "0.05", "--warmup", "0"])
    assert res.exit_code == 0, res.output
    entry = json.loads((tmp_path / "m.bench.json").read_text())["entries"][0]
    assert entry["variants"]["m"]["latency"][0]["batch"] == 2
    for args, match in ((["--backend", "tpu"], "unknown backend"), (["--batch", "0"], "positive"),
                        (["--batch", "a,b"], "whole numbers")):
        res = runner.invoke(app, ["bench", str(onnx_file), *args])
        assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["bench", str(tmp_path / "nothing.txt")])
    assert res.exit_code == 2 and "neither a run directory" in res.output


def test_report_has_every_run_and_plot(sweep, tmp_path):
    out = tmp_path / "rep" / "report.html"
    res = runner.invoke(app, ["report", *map(str, sweep), "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    for run in sweep:
        assert f"<td>{run.name}</td>" in text
    imgs = re.findall(r'<img id="plot-(\w+)" alt="\w+" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert {k for k, _ in imgs} == {"pareto", "sparsity", "roc"} and all(len(b) > 10_000 for _, b in imgs)
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["sparsity"] for r in data["runs"]] == [0.3, 0.7]
    assert data["runs"][1]["variants"][1]["params"] < data["runs"][0]["variants"][1]["params"]
    assert "![latency vs leakage](report_plots/pareto.png)" in out.with_suffix(".md").read_text()
    res = runner.invoke(app, ["report", str(tmp_path), "-o", str(out)])
    assert res.exit_code == 2 and "not a finished edgeprune run" in res.output

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: the HTML was checked as text only")
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", out.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert 'data-loaded="1"' in proc.stdout, proc.stderr[-500:]
    sizes = re.findall(r'data-rendered="(\d+)x(\d+)"', proc.stdout)
    assert len(sizes) == 3 and all(int(w) > 300 and int(h) > 200 for w, h in sizes)
