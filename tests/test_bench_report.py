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
        assert f"<td>{run.name}</td><td>dense</td><td>none</td>" in text  # run, variant, defense
    imgs = re.findall(r'<img id="plot-(\w+)" alt="[\w ]+" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert {k for k, _ in imgs} == {"pareto", "sparsity", "roc"} and all(len(b) > 10_000 for _, b in imgs)
    assert "<figcaption>" not in text  # the plots carry their own titles: no stray "pareto" under them
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["sparsity"] for r in data["runs"]] == [0.3, 0.7]
    assert data["runs"][1]["variants"][1]["params"] < data["runs"][0]["variants"][1]["params"]
    assert "![latency vs leakage](report_plots/pareto.png)" in out.with_suffix(".md").read_text()
    res = runner.invoke(app, ["report", str(tmp_path), "-o", str(out)])
    assert res.exit_code == 2 and "not a finished edgeprune run" in res.output
    res = runner.invoke(app, ["report", *map(str, sweep), "-o", str(tmp_path / "auc.html"), "--leakage", "auc"])
    assert res.exit_code == 0 and (tmp_path / "auc_plots" / "pareto.png").stat().st_size > 10_000, res.output
    res = runner.invoke(app, ["report", *map(str, sweep), "-o", str(tmp_path / "x.html"), "--leakage", "tpr@5%"])
    assert res.exit_code == 2 and "--leakage must be one of tpr, auc" in res.output and not (tmp_path / "x.html").exists()

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


def _variant(name, acc, auc, tpr01, tpr1, p50):
    return {"variant": name, "onnx_kb": 10.0, "params": 100, "macs": 1000, "test_accuracy": acc, "train_accuracy": 1.0,
            "strongest_attack": "lira", "strongest_auc": auc, "strongest_tpr@0.001fpr": tpr01,
            "strongest_tpr@0.01fpr": tpr1, "strongest_tpr_text": "-", "attacks": {},
            "latency": {"ort-cpu/b1": {"p50_ms": p50, "p90_ms": p50 * 1.2}}}


def _run(name, sparsity, defense, variants):
    return {"name": name, "sparsity": sparsity, "method": "structured", "defense": defense, "variants": variants,
            "roc": {}, "machine": {"cpu": "x"}}


def _two_defenses_one_sparsity(tpr01_private=0.124):
    """Issue 26's report: a plain and a private run at one sparsity (AUC 0.987 vs 0.956; TPR@0.1% 0.266 vs 0.124)."""
    return {"runs": [
        _run("plain", 0.5, "none", [_variant("dense", 0.70, 0.990, 0.300, 0.5, 2.0),
                                    _variant("pruned", 0.68, 0.987, 0.266, 0.45, 1.0)]),
        _run("private", 0.5, "dmp:1.0", [_variant("dense", 0.70, 0.990, 0.300, 0.5, 2.0),
                                         _variant("pruned", 0.66, 0.956, tpr01_private, 0.3, 1.0)])]}


def test_the_leakage_axis_is_the_tpr_at_the_goal_fpr_with_auc_as_the_option():
    from edgeprune.errors import ConfigError
    from edgeprune.report.html import leakage_metric, pareto_figure

    data = _two_defenses_one_sparsity()
    assert leakage_metric(data) == ("strongest_tpr@0.001fpr", "TPR at 0.1% FPR of the strongest attack")
    assert leakage_metric(data, "auc")[0] == "strongest_auc"
    key, label = leakage_metric(_two_defenses_one_sparsity(tpr01_private=None))  # below resolution at 0.1%
    assert key == "strongest_tpr@0.01fpr" and label.startswith("TPR at 1% FPR") and "below resolution" in label
    with pytest.raises(ConfigError, match="--leakage must be one of tpr, auc"):
        leakage_metric(data, "tpr@5%")
    fig = pareto_figure(data, leakage_metric(data))
    ax = fig.axes[0]
    ys = sorted(float(y) for c in ax.collections for _, y in c.get_offsets())
    assert ys == [0.124, 0.266, 0.3, 0.3] and ax.get_ylabel() == "TPR at 0.1% FPR of the strongest attack"


def test_accuracy_vs_sparsity_never_joins_different_runs_at_one_sparsity():
    from edgeprune.report.html import leakage_metric, sparsity_figure

    data = _two_defenses_one_sparsity()
    data["runs"].append(_run("plain-0.8", 0.8, "none", [_variant("dense", 0.70, 0.99, 0.3, 0.5, 2.0),
                                                        _variant("pruned", 0.60, 0.98, 0.2, 0.4, 0.8)]))
    fig = sparsity_figure(data, leakage_metric(data))
    for ax in fig.axes:
        series = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(series) == {"dense, defense none", "pruned, defense none", "pruned, defense dmp:1.0"}
        for ln in series.values():
            xs = list(ln.get_xdata())
            if ln.get_linestyle() != "None":  # a drawn line runs along the sparsity axis, never up and down
                assert len(set(xs)) == len(xs) > 1, (ln.get_label(), xs)
        assert list(series["pruned, defense none"].get_xdata()) == [0.5, 0.8]
        assert series["pruned, defense none"].get_linestyle() == "-"
        assert series["dense, defense none"].get_linestyle() == "None"  # three dense models at sparsity 0
        assert list(series["pruned, defense dmp:1.0"].get_xdata()) == [0.5]
    fig.clf()


def test_the_report_table_names_each_runs_defense():
    from edgeprune.report.html import table_rows

    head, rows = table_rows(_two_defenses_one_sparsity())
    col = head.index("defense")
    assert [(r[0], r[1], r[col]) for r in rows] == [
        ("plain", "dense", "none"), ("plain", "pruned", "none"),
        ("private", "dense", "none (fine-tuning: dmp:1.0)"), ("private", "pruned", "dmp:1.0")]  # scope finetune
    data = _two_defenses_one_sparsity()
    data["runs"][1]["defense_scope"] = "both"  # the dense model trained with the defense too
    assert [r[col] for r in table_rows(data)[1]][2:] == ["dmp:1.0", "dmp:1.0"]
