"""One row per model variant (dense, pruned, pruned+int8): size, accuracy, leakage, latency."""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.attack.metrics import fmt_tpr


def build_report(manifest: dict, run_dir: Path, path=None) -> dict:
    """``path(rel)`` says where to read artifact ``rel`` (a run being built or updated stages new files)."""
    path = path or (lambda rel: run_dir / rel)
    audit = json.loads(path("audit.json").read_text())
    bench_file = json.loads(path("bench.json").read_text())
    bench = latest_entry(bench_file, "ort-cpu")
    prune = manifest["stages"]["prune"]["results"]
    rows = []
    for label, a in audit["variants"].items():
        rel = a["artifact"]
        dense = label == "dense"
        lat = bench["variants"][label]["latency"] if label in bench["variants"] else []
        strongest = a["strongest"]
        rows.append({
            "variant": label,
            "artifact": rel,
            "onnx_kb": round(path(rel).stat().st_size / 1024, 1),
            "params": prune["params_dense"] if dense else prune["params_pruned"],
            "macs": prune["macs_dense"] if dense else prune["macs_pruned"],
            "train_accuracy": a["train_accuracy"],
            "test_accuracy": a["test_accuracy"],
            "attacks": {k: {"auc": v["auc"], "tpr@0.01fpr": v["tpr@0.01fpr"], "tpr@0.001fpr": v["tpr@0.001fpr"],
                            "attack_accuracy": v.get("attack_accuracy"),
                            "oracle_balanced_accuracy": v["oracle_balanced_accuracy"],
                            "tpr_at_fpr": v.get("tpr_at_fpr", {})} for k, v in a["attacks"].items()},
            # one attack and its own figures (metrics.strongest: highest TPR@0.1%FPR within resolution,
            # ties by AUC)
            "validation": a.get("validation"),  # what a configuration search selects on
            "strongest_attack": strongest,
            "strongest_auc": a["attacks"][strongest]["auc"] if strongest else None,
            "strongest_tpr@0.001fpr": a["attacks"][strongest]["tpr@0.001fpr"] if strongest else None,
            "latency": {str(r["batch"]): {"p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"],
                                          "speedup_vs_dense": r.get("speedup_vs_dense")} for r in lat if "p50_ms" in r},
        })
    return {
        "model": manifest["model"],
        "data": manifest["data"]["spec"],
        "split": manifest["split"],
        "sparsity": manifest["recipe"]["prune"]["sparsity"],
        "method": manifest["recipe"]["prune"]["method"],
        "criterion": manifest["recipe"]["prune"]["criterion"],
        "defense": defense_text(manifest),
        "quant": manifest["recipe"]["quant"]["mode"],
        "bench": {"backend": bench["backend"], "threads": bench["threads"], "machine": bench_file["machine"]},
        "int8": _int8(manifest),
        "rows": rows,
        "audit": {"preset": audit.get("preset"), "threat": audit.get("threat", "adaptive"),
                  "seeds": audit.get("seeds", {}).get("count", 1), "shadows": audit["shadows"]["used"],
                  "references": audit["references"]["used"], "nonmembers": audit["candidates"]["nonmembers"]},
    }


def _int8(manifest: dict) -> dict | None:
    """How the quantized variant was made and which numerics scored it (None without quantization)."""
    q = manifest.get("stages", {}).get("quantize", {}).get("results", {})
    if "cpu_kernels" not in q:
        return None
    return {"settings": q.get("int8"), "numerics": q.get("numerics"), "cpu_kernels": q["cpu_kernels"]}


def int8_line(report: dict) -> str | None:
    q = report.get("int8")
    if not q:
        return None
    s, k = q["settings"] or {}, q["cpu_kernels"]
    steps = "" if k["max_abs_diff_steps"] is None else f", max difference {k['max_abs_diff_steps']:.1f} output steps"
    line = (f"int8: {s.get('activations', '?')} activations, {'7' if s.get('reduce_range') else '8'}-bit weights "
            f"({s.get('reduce_range_reason', '?')}); accuracy and audit with {q['numerics']}. This CPU's kernels "
            f"({k['int8_kernels']}) agree with it on top-1 for {k['top1_agreement_with_reference']:.1%}{steps}.")
    return line + (f" Warning: {k['warning']}." if k.get("warning") else "")


def attack_names(report: dict) -> list[str]:
    """Attacks that ran on at least one variant, in a stable order."""
    return list(dict.fromkeys(a for r in report["rows"] for a in r["attacks"]))


def latest_entry(bench_file: dict, backend: str) -> dict:
    """The newest bench.json entry of ``backend`` (bench runs append; compress writes the first one)."""
    entries = [e for e in bench_file.get("entries", []) if e["backend"] == backend]
    if not entries:
        entries = bench_file.get("entries", [])
    return entries[-1] if entries else {"backend": backend, "threads": None, "variants": {}}


def columns(report: dict) -> list[str]:
    attacks = attack_names(report)
    batches = sorted(report["rows"][0]["latency"], key=int) if report["rows"] else []
    cols = ["variant", "params", "ONNX KB", "train acc", "test acc"]
    cols += [f"{a} AUC" for a in attacks] + ["strongest attack", "its AUC", "its TPR@0.1%FPR"]
    cols += [f"p50 ms b{b}" for b in batches] + [f"speedup b{b}" for b in batches]
    return cols


def row_cells(report: dict) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        cells = [r["variant"], f"{r['params']:,}", f"{r['onnx_kb']:.0f}", f"{r['train_accuracy']:.3f}",
                 f"{r['test_accuracy']:.3f}"]
        cells += [f"{r['attacks'][a]['auc']:.3f}" if a in r["attacks"] else "-" for a in attack_names(report)]
        best = r["strongest_attack"]
        if best:
            cells += [best, f"{r['attacks'][best]['auc']:.3f}", fmt_tpr(r["attacks"][best], "tpr@0.001fpr")]
        else:
            cells += ["-", "-", "-"]
        lat = [r["latency"][b] for b in sorted(r["latency"], key=int)]  # b1, b8, b32: numeric order
        cells += [f"{v['p50_ms']:.3f}" for v in lat]
        cells += ["-" if v["speedup_vs_dense"] is None else f"{v['speedup_vs_dense']:.2f}x" for v in lat]
        out.append(cells)
    return out


def to_markdown(report: dict) -> str:
    """The run's report.md; model and data specs are user text, so HTML in them is escaped."""
    import html

    m = report["model"]
    esc = lambda t: html.escape(str(t)).replace("|", "\\|")  # noqa: E731
    lines = [
        f"# edgeprune report: {esc(m['spec'])} on {esc(report['data'])}",
        "",
        f"Pruning: {report['method']} ({report.get('criterion', 'l1')}) at sparsity {report['sparsity']}, "
        f"defense {report.get('defense', 'none')}, quantization {report.get('quant', 'int8')}. Members {report['split']['members']}, "
        f"non-members {report['split']['nonmembers']} (split hash `{report['split']['hash'][:12]}`).",
        f"Latency: {report['bench']['backend']}, {report['bench']['threads']} thread(s), "
        f"{report['bench']['machine']['cpu']}. Attacks run on the exported ONNX artifacts.",
    ]
    if int8_line(report):
        lines.append(int8_line(report))
    if "audit" in report:
        a = report["audit"]
        lines.append(f"Audit: preset {a['preset'] or 'custom'}, threat model {a['threat']}, {a['seeds']} target(s), "
                     f"{a['shadows']} shadow(s), {a['references']} reference(s), {a['nonmembers']} non-members. "
                     "Strongest attack: highest TPR@0.1%FPR within resolution, ties by AUC.")
    lines.append("")
    cols = columns(report)
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for cells in row_cells(report):
        lines.append("| " + " | ".join(map(esc, cells)) + " |")
    lines.append("")
    return "\n".join(lines)


def to_rich(report: dict):
    """Variants as columns, metrics as rows: fits an 80-column terminal."""
    from rich.table import Table

    defense = report.get("defense", "none")
    from rich.markup import escape

    t = Table(title=escape(f"{report['model']['spec']} on {report['data']} - sparsity {report['sparsity']}"
                           + (f" - defense {defense}" if defense != "none" else "")))
    cols, cells = columns(report), row_cells(report)
    t.add_column("")
    for r in cells:
        t.add_column(r[0], justify="right")
    for i, name in enumerate(cols[1:], start=1):
        t.add_row(name, *[r[i] for r in cells])
    return t


def defense_text(manifest: dict) -> str:
    """The run's defense in words (name:strength, the reference labels of dmp, DP-SGD's epsilon)."""
    d = manifest["recipe"].get("defense", {"name": "none"})
    if d["name"] == "none":
        return "none"
    info = manifest.get("stages", {}).get("finetune", {}).get("results", {}).get("defense", {})
    text = f"{d['name']}:{info.get('strength', d.get('strength'))}"
    if d["name"] == "dmp" and d.get("hard_labels"):  # the reference labels' share of the student's loss
        text += f" + reference labels {d['hard_labels']:g}"
    if "epsilon" in info:
        text += f" (epsilon {info['epsilon']:.2f} at delta {info['delta']:.1e}, {info['scope']})"
    return text
