"""The multi-run report: one self-contained HTML (plots embedded as PNG data URIs), Markdown and JSON."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from edgeprune.attack.metrics import fmt_tpr
from edgeprune.attack.metrics import strongest as strongest_attack
from edgeprune.errors import RunDirError
from edgeprune.report.tables import latest_entry
from edgeprune.run import read_manifest, verify_artifact


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def collect(run_dirs: list[str | Path]) -> dict:
    """Everything the report shows, per run and variant, from the runs' JSON artifacts."""
    runs = []
    for d in run_dirs:
        d = Path(d)
        need = [d / n for n in ("manifest.json", "audit.json", "bench.json")]
        missing = [p.name for p in need if not p.is_file()]
        if missing:
            raise RunDirError(f"{d} is not a finished edgeprune run (missing {', '.join(missing)})")
        man = read_manifest(d)
        for rel in ("audit.json", "bench.json"):  # what the report reads, checked against the manifest
            verify_artifact(d, man, rel)
        audit, bench = (json.loads(p.read_text()) for p in need[1:])
        prune = man["stages"]["prune"]["results"]
        backends = sorted({e["backend"] for e in bench.get("entries", [])})
        variants = []
        for label, a in audit["variants"].items():
            dense = label == "dense"
            strongest = strongest_attack(a["attacks"])  # one attack; every figure in its row is its own
            lat = {}
            for b in backends:
                e = latest_entry(bench, b)
                for r in e["variants"].get(label, {}).get("latency", []):
                    if "p50_ms" in r:
                        lat[f"{b}/b{r['batch']}"] = {"p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"]}
            artifact = a.get("artifact")
            if artifact and artifact in man.get("artifacts", {}):
                verify_artifact(d, man, artifact)
            variants.append({
                "variant": label,
                "onnx_kb": round((d / artifact).stat().st_size / 1024, 1) if artifact and (d / artifact).is_file() else None,
                "params": prune["params_dense"] if dense else prune["params_pruned"],
                "macs": prune["macs_dense"] if dense else prune["macs_pruned"],
                "test_accuracy": a["test_accuracy"],
                "train_accuracy": a["train_accuracy"],
                "strongest_attack": strongest,
                "strongest_auc": a["attacks"][strongest]["auc"] if strongest else None,
                "strongest_tpr@0.001fpr": a["attacks"][strongest]["tpr@0.001fpr"] if strongest else None,
                "strongest_tpr_text": fmt_tpr(a["attacks"][strongest], "tpr@0.001fpr") if strongest else "-",
                "attacks": {k: {"auc": v["auc"], "tpr@0.001fpr": v["tpr@0.001fpr"]} for k, v in a["attacks"].items()},
                "latency": lat,
            })
        runs.append({
            "name": d.name, "path": str(d.resolve()), "model": man["model"]["spec"], "data": man["data"]["spec"],
            "sparsity": man["recipe"]["prune"]["sparsity"], "method": man["recipe"]["prune"]["method"],
            "quant": man["recipe"]["quant"]["mode"], "machine": bench.get("machine", {}),
            "variants": variants, "roc": audit.get("roc", {}),
        })
        inv = inversion_summary(d)
        if inv:
            runs[-1]["inversion"] = inv
    return {"runs": runs}


def inversion_summary(run_dir: Path) -> dict | None:
    """The run's inversion audit (inversion.json), when there is one: figures per variant, split point and
    attack, and the picture grids' paths."""
    p = run_dir / "inversion.json"
    if not p.is_file():
        return None
    inv = json.loads(p.read_text())
    rows = []
    for variant, layers in inv["variants"].items():
        for layer, e in layers.items():
            for attack, a in e["attacks"].items():
                rows.append({"variant": variant, "layer": layer, "attack": attack, "feature_shape": e["feature_shape"],
                             **{k: a[k] for k in ("psnr", "ssim", "judge_accuracy") if k in a}})
    return {"rows": rows, "grids": {k: str(run_dir / v) for k, v in inv.get("grids", {}).items()},
            "split_noise": inv.get("split_noise")}


def inversion_images(data: dict) -> dict[str, str]:
    out = {}
    for run in data["runs"]:
        for layer, path in (run.get("inversion") or {}).get("grids", {}).items():
            if Path(path).is_file():
                out[f"inversion-{run['name']}-{layer}"] = base64.b64encode(Path(path).read_bytes()).decode()
    return out


def inversion_html(data: dict) -> str:
    rows = [(run["name"], r) for run in data["runs"] for r in (run.get("inversion") or {}).get("rows", [])]
    if not rows:
        return ""

    def cell(r, k, spec):
        return f"{r[k]['mean']:{spec}} [{r[k]['ci95'][0]:{spec}}, {r[k]['ci95'][1]:{spec}}]" if k in r else "-"

    trs = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in (
            name, r["variant"], r["layer"], "x".join(map(str, r["feature_shape"])), r["attack"],
            cell(r, "psnr", ".2f"), cell(r, "ssim", ".3f"), cell(r, "judge_accuracy", ".3f"))) + "</tr>"
        for name, r in rows)
    head = "".join(f"<th>{h}</th>" for h in ("run", "variant", "split point", "features", "attack", "PSNR dB [95% CI]",
                                             "SSIM [95% CI]", "judge accuracy on reconstructions"))
    return (f'<h2>Model inversion from split-point features</h2><table id="inversion"><thead><tr>{head}</tr></thead>'
            f"<tbody>{trs}</tbody></table><p>Higher PSNR / SSIM: the features give the input away; the picture grids "
            f"(originals, then reconstructions per variant) are among the plots below.</p>")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _main_latency_key(data: dict) -> str | None:
    keys = [k for r in data["runs"] for v in r["variants"] for k in v["latency"]]
    for pref in ("ort-cpu/b1", "tensorrt/b1", "ort-cuda/b1", "torch/b1"):
        if pref in keys:
            return pref
    return keys[0] if keys else None


def plots(data: dict) -> dict[str, str]:
    plt = _plt()
    out = {}
    key = _main_latency_key(data)
    # Pareto: latency vs leakage, point size = accuracy
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    pts = []
    for r in data["runs"]:
        for v in r["variants"]:
            if key in v["latency"] and v["strongest_auc"] is not None:
                pts.append((v["latency"][key]["p50_ms"], v["strongest_auc"], v["test_accuracy"], f"{r['name']}:{v['variant']}"))
    for x, y, acc, lab in pts:
        ax.scatter(x, y, s=40 + 400 * acc, alpha=0.6)
        ax.annotate(lab, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = []
    for p in sorted(pts):
        if not front or p[1] < front[-1][1]:
            front.append(p)
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xlabel(f"latency p50 ms ({key})")
    ax.set_ylabel("AUC of the strongest attack")
    ax.set_title("latency vs leakage (point size = test accuracy)")
    out["pareto"] = _png(fig)
    # accuracy and attack AUC vs sparsity
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = sorted({v["variant"] for r in data["runs"] for v in r["variants"]})
    for lab in labels:
        xs = [(r["sparsity"], v) for r in data["runs"] for v in r["variants"] if v["variant"] == lab]
        xs.sort(key=lambda t: t[0])
        a1.plot([s for s, _ in xs], [v["test_accuracy"] for _, v in xs], "o-", label=lab)
    a1.set_xlabel("sparsity")
    a1.set_ylabel("test accuracy")
    a1.set_title("accuracy vs sparsity")
    a1.legend(fontsize=7)
    deployed = [(r["sparsity"], r["variants"][-1]) for r in data["runs"]]
    deployed.sort(key=lambda t: t[0])
    attacks = sorted({k for _, v in deployed for k in v["attacks"]})
    for atk in attacks:
        xs = [(s, v["attacks"][atk]["auc"]) for s, v in deployed if atk in v["attacks"]]
        a2.plot([s for s, _ in xs], [a for _, a in xs], "o-", label=atk, lw=1)
    a2.set_xlabel("sparsity")
    a2.set_ylabel("attack AUC (deployed variant)")
    a2.set_title("attack AUC vs sparsity")
    a2.legend(fontsize=6, ncol=2)
    out["sparsity"] = _png(fig)
    # ROC curves of the strongest attack of every run / variant
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in data["runs"]:
        for v in r["variants"]:
            roc = r["roc"].get(v["variant"], {}).get(v["strongest_attack"] or "")
            if roc:
                ax.plot(roc["fpr"], roc["tpr"], lw=1, label=f"{r['name']}:{v['variant']} ({v['strongest_attack']})")
    from edgeprune.attack.plots import log_log_roc_axes

    log_log_roc_axes(ax, "ROC of the strongest attack (log-log)")
    ax.legend(fontsize=6)
    out["roc"] = _png(fig)
    return out


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _latency_order(key: str) -> tuple:
    """'ort-cpu/b8' before 'ort-cpu/b32': backend by name, then batch by number."""
    backend, _, batch = key.rpartition("/b")
    return (backend, int(batch)) if batch.isdigit() else (key, 0)


def _md_cell(text: str) -> str:
    """A Markdown table cell that shows the text: HTML escaped (run names are user text), pipes escaped."""
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def table_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    keys = sorted({k for r in data["runs"] for v in r["variants"] for k in v["latency"]}, key=_latency_order)
    head = ["run", "variant", "sparsity", "ONNX KB", "params", "MACs", "test acc", "strongest attack", "AUC",
            "TPR@0.1%FPR"] + [f"{k} p50/p90 ms" for k in keys]
    rows = []
    for r in data["runs"]:
        for v in r["variants"]:
            sparsity = "0" if v["variant"] == "dense" else f"{r['sparsity']:g}"  # the dense model is not pruned
            row = [r["name"], v["variant"], sparsity, _fmt(v["onnx_kb"], ".0f"), f"{v['params']:,}",
                   f"{v['macs']:,}", f"{v['test_accuracy']:.3f}", v["strongest_attack"] or "-",
                   _fmt(v["strongest_auc"], ".3f"), v.get("strongest_tpr_text") or _fmt(v["strongest_tpr@0.001fpr"], ".3f")]
            row += [f"{v['latency'][k]['p50_ms']:.3f} / {v['latency'][k]['p90_ms']:.3f}" if k in v["latency"] else "-"
                    for k in keys]
            rows.append(row)
    return head, rows


def render_html(data: dict, images: dict[str, str]) -> str:
    head, rows = table_rows(data)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    figs = "".join(
        f'<figure><img id="plot-{k}" alt="{k}" src="data:image/png;base64,{v}"><figcaption>{k}</figcaption></figure>'
        for k, v in images.items())
    machine = data["runs"][0]["machine"].get("cpu", "") if data["runs"] else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeprune report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f2f2f2; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>edgeprune report</h1>
<p>{len(data["runs"])} run(s). Latency measured on {html.escape(machine)}; leakage audited on the exported artifacts.</p>
<table id="runs"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>
{inversion_html(data)}
<h2>Plots</h2>
{figs}
<script>
window.addEventListener("load", () => {{
  for (const img of document.images) img.setAttribute("data-rendered", img.naturalWidth + "x" + img.naturalHeight);
  document.body.setAttribute("data-loaded", "1");
}});
</script>
</body></html>
"""


def render_markdown(data: dict, plot_dir: str) -> str:
    head, rows = table_rows(data)
    lines = ["# edgeprune report", "", "| " + " | ".join(map(_md_cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
    from urllib.parse import quote

    d = quote(plot_dir)
    lines += ["", f"![latency vs leakage]({d}/pareto.png)", f"![sparsity]({d}/sparsity.png)", f"![ROC]({d}/roc.png)", ""]
    return "\n".join(lines)


def write_report(run_dirs: list[str | Path], out_html: str | Path) -> dict[str, Path]:
    from edgeprune.run import atomic_write_bytes

    if not run_dirs:
        raise RunDirError("give at least one run directory")
    out_html = Path(out_html)
    if out_html.suffix != ".html":
        raise RunDirError(f"-o must name an .html file, got {out_html}")
    stem = out_html.with_suffix("")
    plot_dir = Path(f"{stem}_plots")
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    for target in (out_html, md, js, plot_dir):
        _refuse_run_file(target, out_html)
    data = collect(run_dirs)
    images = {**plots(data), **inversion_images(data)}
    plot_dir.mkdir(parents=True, exist_ok=True)
    for k, v in images.items():
        atomic_write_bytes(plot_dir / f"{k}.png", base64.b64decode(v))
    atomic_write_bytes(out_html, render_html(data, images).encode())
    atomic_write_bytes(md, render_markdown(data, plot_dir.name).encode())
    atomic_write_bytes(js, (json.dumps(data, indent=2) + "\n").encode())
    return {"html": out_html, "markdown": md, "json": js, "plots": plot_dir}


def _refuse_run_file(target: Path, out_html: Path) -> None:
    """The report never overwrites a file of an edgeprune run (its manifest or an artifact it lists), e.g.
    ``-o RUN/report.html`` next to the run's own report.md / report.json."""
    target = target.expanduser().resolve()
    for parent in target.parents:
        if (parent / "manifest.json").is_file():
            try:
                man = read_manifest(parent)
            except RunDirError:
                continue
            rel = target.relative_to(parent).as_posix()
            if rel == "manifest.json" or rel in man.get("artifacts", {}) or (target.is_dir() and any(
                    a.startswith(rel + "/") for a in man.get("artifacts", {}))):
                raise RunDirError(f"-o {out_html} would overwrite {target}, which belongs to the run {parent}; "
                                  f"choose another name (e.g. {parent / 'summary.html'})")
