"""Issue 15's rough edges: each one a user hit, each with a test."""

import json
import os
import stat
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from edgeprune.cli import app

runner = CliRunner()


def _one_line_exit_2(res, match):
    text = res.output
    assert res.exit_code == 2, text
    assert "Traceback" not in text and match in text, text
    assert [ln for ln in text.splitlines() if ln.strip()] == [text.strip()] and text.startswith("error:"), text


def test_audit_of_a_missing_path_says_not_found_at_once(tmp_path):
    t0 = time.perf_counter()
    res = runner.invoke(app, ["audit", str(tmp_path / "no" / "such" / "run"), "--attacks", "loss"])
    _one_line_exit_2(res, "not found")
    res = runner.invoke(app, ["audit", "missing.onnx", "--data", "digits"])
    _one_line_exit_2(res, "not found")
    assert time.perf_counter() - t0 < 30  # no data loaded, nothing trained (generous: a shared 2-core box)


def test_block_size_is_rejected_before_training(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["prune", "mlp", "--data", "digits", "--method", "block", "--block", "7", "-o", str(out)])
    _one_line_exit_2(res, "block size")
    assert not any(tmp_path.iterdir())  # nothing staged, nothing written


def test_rich_markup_in_docstrings_and_user_text_is_printed_literally(tmp_path):
    res = runner.invoke(app, ["attacks"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "[softmax, sensitivity, label]" in res.output
    res = runner.invoke(app, ["compress", "mlp", "--data", "npz:x[/]", "-o", str(tmp_path / "r")])
    _one_line_exit_2(res, "x[/]")
    res = runner.invoke(app, ["audit", "o/[red]run", "--attacks", "loss"])
    _one_line_exit_2(res, "o/[red]run")


def test_datasets_lists_a_description_for_every_data_set():
    res = runner.invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in res.output.splitlines()
            if line.count("│") >= 3 and "description" not in line}
    assert set(rows) >= {"digits", "purchase-synth", "cifar-synth", "cifar10", "npz"}
    assert all(rows.values()), rows
    assert "handwritten digits" in rows["digits"]


def _tune_result():
    configs = [("structured", "l1", 0.5, "none"), ("structured", "leakage", 0.5, "kl:4"),
               ("structured", "l1", 0.7, "relaxloss:1"), ("block", "l1", 0.7, "none")]
    trials = [{"id": i, "rung": 1, "feasible": True, "pareto": i == 1,
               "config": {"method": m, "criterion": c, "sparsity": s, "defense": d, "quant": "int8"},
               "metrics": {"accuracy": 0.9, "acc_drop_points": 1.0, "auc": 0.6, "tpr_at_0.1": 0.01, "latency_ms": 0.1}}
              for i, (m, c, s, d) in enumerate(configs)]
    return {"trials": trials, "chosen": 1}


def test_tune_table_gives_each_varying_parameter_its_own_column():
    from rich.console import Console

    from edgeprune.cli import _tune_table

    con = Console(width=80, force_terminal=False, record=True)
    con.print(_tune_table(_tune_result()))
    text = con.export_text()
    assert "…" not in text and "..." not in text  # nothing cut in 80 columns
    header = Console(width=200, force_terminal=False, record=True)
    header.print(_tune_table(_tune_result()))
    wide = header.export_text()
    for col in ("method", "criterion", "sparsity", "defense"):
        assert col in wide
    assert "quant int8" in wide.splitlines()[0]  # the fixed parameter goes in the title, not a column
    rows = [ln.split() for ln in wide.splitlines() if ln.strip()[:1].isdigit()]
    assert [r[:5] for r in rows] == [["0", "structured", "l1", "0.5", "none"], ["1", "structured", "leakage", "0.5", "kl:4"],
                                     ["2", "structured", "l1", "0.7", "relaxloss:1"], ["3", "block", "l1", "0.7", "none"]]


def _report_data(name="sweep-<b>0.5</b>"):
    lat = {f"ort-cpu/b{b}": {"p50_ms": b / 10, "p90_ms": b / 5} for b in (32, 1, 8)}
    variants = [{"variant": v, "onnx_kb": 10.0, "params": 100, "macs": 1000, "test_accuracy": 0.9,
                 "strongest_attack": "loss", "strongest_auc": 0.6, "strongest_tpr@0.001fpr": 0.01, "latency": lat}
                for v in ("dense", "pruned")]
    return {"runs": [{"name": name, "sparsity": 0.5, "variants": variants, "machine": {"cpu": "x"}}]}


def test_report_tables_dense_sparsity_batch_order_and_html_escaping():
    from edgeprune.report.html import render_markdown, table_rows
    from edgeprune.report.tables import columns

    head, rows = table_rows(_report_data())
    lat_cols = [h for h in head if h.startswith("ort-cpu")]
    assert lat_cols == ["ort-cpu/b1 p50/p90 ms", "ort-cpu/b8 p50/p90 ms", "ort-cpu/b32 p50/p90 ms"]
    sp = head.index("sparsity")
    assert rows[0][1] == "dense" and rows[0][sp] == "0" and rows[1][sp] == "0.5"
    md = render_markdown(_report_data(), "report_plots")
    assert "<b>" not in md and "&lt;b&gt;0.5&lt;/b&gt;" in md
    report = {"rows": [{"latency": {"32": {}, "1": {}, "8": {}}, "attacks": {}}]}
    assert [c for c in columns(report) if c.startswith("p50")] == ["p50 ms b1", "p50 ms b8", "p50 ms b32"]


def test_bench_help_promises_no_peak_memory_it_does_not_measure():
    res = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "peak memory" not in res.output.replace("\n", " ")


def test_output_directories_get_the_usual_modes(tmp_path):
    from edgeprune.run import staged_dir

    old = os.umask(0o022)
    try:
        with staged_dir(tmp_path / "export", "bundle") as tmp:
            (tmp / "a.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "export" / "a.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("command", ["models", "attacks", "defenses", "datasets"])
def test_list_commands_do_not_import_torch(command):
    code = ("import sys; from edgeprune.cli import app\n"
            f"try:\n    app([{command!r}])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = sorted(m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) > 4


def test_declared_registry_entries_match_what_registers():
    from edgeprune.defend import _load
    from edgeprune.models import MODELS

    for name in MODELS.names():
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()[0]
        assert MODELS.meta(name)["doc"] == doc, name
    reg = _load()
    assert set(reg._items) == set(reg._declared)
    for name in reg.names():
        cls, meta = reg.get(name), reg.meta(name)
        assert (meta["default_strength"], meta["strength"], tuple(meta["needs"])) == (
            cls.default_strength, cls.strength_meaning, tuple(cls.needs)), name


def test_pickled_weights_are_refused_in_one_line_with_the_conversion(tmp_path):
    import torch

    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(600, 100), path)  # a whole module: a pickle, not a state_dict
    res = runner.invoke(app, ["compress", "mlp", "--data", "purchase-synth:1000", "--weights", str(path),
                              "-o", str(tmp_path / "run")])
    _one_line_exit_2(res, "holds a pickle")
    assert "safetensors" in res.output and "weights_only=False" in res.output
    assert not (tmp_path / "run").exists()


def test_report_markdown_of_a_run_escapes_user_text():
    from edgeprune.report.tables import to_markdown

    report = {"model": {"spec": "<img src=x onerror=alert(1)>"}, "data": "npz:a|b.npz", "sparsity": 0.5,
              "method": "structured", "split": {"members": 1, "nonmembers": 1, "hash": "0" * 12},
              "bench": {"backend": "ort-cpu", "threads": 1, "machine": {"cpu": "x"}}, "rows": []}
    md = to_markdown(report)
    assert "<img" not in md and "&lt;img" in md and "a\\|b" in md
    json.dumps(report)


def test_progress_lines_print_user_paths_literally(capsys):
    from edgeprune.cli import _log

    _log("audit written to o/[red]run[/]")
    _log("[dim]x[/y]: done before, skipped[/dim]")
    err = capsys.readouterr().err
    assert "o/[red]run[/]" in err and "x[/y]: done before" in err and "[dim]" not in err
