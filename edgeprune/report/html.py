"""The multi-run report: one self-contained HTML (plots embedded as PNG data URIs), Markdown and JSON."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from edgeprune.attack.metrics import fmt_tpr
from edgeprune.attack.metrics import strongest as strongest_attack
from edgeprune.attack.plots import log_log_roc_axes, mathtext_escape
from edgeprune.errors import ConfigError, RunDirError
from edgeprune.report.tables import defense_text, latest_entry
from edgeprune.run import (
    check_recipe,
    confined,
    read_manifest,
    read_verified,
    read_verified_json,
    verify_artifact,
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


INVERSION = "inversion.json"  # edgeprune.stages.common.INVERSION (written by edgeprune.ops.inversion)
REPORT_FILES = ("audit.json", "bench.json")  # besides the manifest, what every run in a report must have


def slug(text: str, key: str | None = None) -> str:
    """An id / file name made from user text: ``[A-Za-z0-9._-]`` only, deterministic, and different keys
    (``key``, default the text) never share one (a short sha256 of the key follows the readable part)."""
    clean = re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-.")[:48].rstrip("-.") or "x"
    return f"{clean}-{hashlib.sha256(str(key if key is not None else text).encode()).hexdigest()[:10]}"


@dataclass
class Figure:
    """One picture of the report: ``name`` (safe: an id and a file name) and PNG bytes as base64."""

    name: str
    alt: str
    png: str
    caption: str | None = None


def collect(run_dirs: list[str | Path]) -> dict:
    """Everything the report shows, per run and variant, from the runs' JSON artifacts."""
    return _collect(run_dirs)[0]


def _collect(run_dirs: list[str | Path]) -> tuple[dict, list[Figure]]:
    """The report's data and the runs' inversion picture grids. Every file read from a run is checked against
    the run's manifest (its sha256) and confined to the run; the manifest's recipe against its hash."""
    runs, grids = [], []
    for d in run_dirs:
        d = Path(d)
        need = [d / n for n in ("manifest.json", *REPORT_FILES)]
        missing = [p.name for p in need if not p.is_file()]
        if missing:
            raise RunDirError(f"{d} is not a finished edgeprune run (missing {', '.join(missing)})")
        man = read_manifest(d)
        if not man.get("complete"):
            raise RunDirError(f"{d} is not a finished edgeprune run")
        check_recipe(d, man)
        try:
            run, pictures = _collect_run(d, man)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise RunDirError(f"{d}: its files do not hold what edgeprune writes ({type(e).__name__}: "
                              f"{str(e)[:80]}); the run is damaged") from None
        runs.append(run)
        grids += pictures
    return {"runs": runs}, grids


def _collect_run(d: Path, man: dict) -> tuple[dict, list[Figure]]:
    audit, bench = (read_verified_json(d, man, rel) for rel in REPORT_FILES)
    recipe = man["recipe"]  # checked against its hash by the caller
    prune = man["stages"]["prune"]["results"]
    backends = sorted({str(e["backend"]) for e in bench.get("entries", [])})
    variants = []
    for label, a in audit["variants"].items():
        dense = label == "dense"
        strongest = strongest_attack(a["attacks"])  # one attack; every figure in its row is its own
        lat = {}
        for b in backends:
            e = latest_entry(bench, b)
            for r in e["variants"].get(label, {}).get("latency", []):
                if "p50_ms" in r:
                    lat[f"{b}/b{int(r['batch'])}"] = {"p50_ms": float(r["p50_ms"]), "p90_ms": float(r["p90_ms"])}
        artifact = a.get("artifact")
        kb = None
        if artifact:
            p = confined(d, artifact)
            verify_artifact(d, man, artifact)
            kb = round(p.stat().st_size / 1024, 1)
        best = a["attacks"][strongest] if strongest else {}
        variants.append({
            "variant": str(label),
            "onnx_kb": kb,
            "params": int(prune["params_dense"] if dense else prune["params_pruned"]),
            "macs": int(prune["macs_dense"] if dense else prune["macs_pruned"]),
            "test_accuracy": float(a["test_accuracy"]),
            "train_accuracy": float(a["train_accuracy"]),
            "strongest_attack": strongest,
            "strongest_auc": _num(best.get("auc")),
            "strongest_tpr@0.001fpr": _num(best.get("tpr@0.001fpr")),
            "strongest_tpr@0.01fpr": _num(best.get("tpr@0.01fpr")),
            "strongest_tpr_text": fmt_tpr(best, "tpr@0.001fpr") if strongest else "-",
            "attacks": {k: {"auc": _num(v["auc"]), "tpr@0.01fpr": _num(v.get("tpr@0.01fpr")),
                            "tpr@0.001fpr": _num(v.get("tpr@0.001fpr"))} for k, v in a["attacks"].items()},
            "latency": lat,
        })
    run = {"name": d.name, "path": str(d.resolve()), "model": str(recipe["model"]), "data": str(recipe["data"]),
           "sparsity": float(recipe["prune"]["sparsity"]), "method": str(recipe["prune"]["method"]),
           "quant": str(recipe["quant"]["mode"]), "defense": defense_text(man),
           "defense_scope": str(recipe.get("defense", {}).get("scope", "finetune")), "machine": bench.get("machine", {}),
           "variants": variants, "roc": audit.get("roc", {})}
    inv, pictures = inversion_summary(d, man)
    if inv:
        run["inversion"] = inv
    return run, pictures


def _num(v) -> float | None:
    return None if v is None else float(v)


def inversion_summary(run_dir: Path, manifest: dict | None = None) -> tuple[dict | None, list[Figure]]:
    """The run's inversion audit (inversion.json), when there is one: figures per variant, split point and
    attack, the picture grids' run-relative paths; and the grids (checked against the manifest) as Figures."""
    run_dir = Path(run_dir)
    manifest = manifest if manifest is not None else read_manifest(run_dir)
    if not (run_dir / INVERSION).is_file() and INVERSION not in manifest.get("artifacts", {}):
        return None, []
    inv = read_verified_json(run_dir, manifest, INVERSION)
    rows = []
    for variant, layers in inv["variants"].items():
        for layer, e in layers.items():
            for attack, a in e["attacks"].items():
                rows.append({"variant": str(variant), "layer": str(layer), "attack": str(attack),
                             "feature_shape": [int(n) for n in e["feature_shape"]],
                             **{k: a[k] for k in ("psnr", "ssim", "judge_accuracy") if k in a}})
    figures = []
    for layer, rel in inv.get("grids", {}).items():
        png = read_verified(run_dir, manifest, rel)  # confined to the run, at its recorded sha256
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise RunDirError(f"{run_dir / rel}: not a PNG picture; the run is damaged")
        figures.append(Figure(f"inversion-{slug(f'{run_dir.name}-{layer}', json.dumps([str(run_dir.resolve()), layer]))}",
                              f"inversion picture grid of {run_dir.name} at {layer}", base64.b64encode(png).decode(),
                              f"model inversion: run {run_dir.name}, split point {layer} (originals, then "
                              "reconstructions per variant)"))
    return {"rows": rows, "grids": {str(k): str(v) for k, v in inv.get("grids", {}).items()},
            "split_noise": inv.get("split_noise")}, figures


def inversion_html(data: dict) -> str:
    rows = [(run["name"], r) for run in data["runs"] for r in (run.get("inversion") or {}).get("rows", [])]
    if not rows:
        return ""

    def cell(r, k, spec):
        return f"{r[k]['mean']:{spec}} [{r[k]['ci95'][0]:{spec}}, {r[k]['ci95'][1]:{spec}}]" if k in r else "-"

    trs = "".join(
        "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in (
            name, r["variant"], r["layer"], "x".join(map(str, r["feature_shape"])), r["attack"],
            cell(r, "psnr", ".2f"), cell(r, "ssim", ".3f"), cell(r, "judge_accuracy", ".3f"))) + "</tr>"
        for name, r in rows)
    head = "".join(f"<th>{_esc(h)}</th>" for h in ("run", "variant", "split point", "features", "attack",
                                                   "PSNR dB [95% CI]", "SSIM [95% CI]",
                                                   "judge accuracy on reconstructions"))
    return (f'<h2>Model inversion from split-point features</h2><table id="inversion"><thead><tr>{head}</tr></thead>'
            f"<tbody>{trs}</tbody></table><p>Higher PSNR / SSIM: the features give the input away; the picture grids "
            f"(originals, then reconstructions per variant) are among the plots below.</p>")


def _esc(text) -> str:
    """User text inside HTML: element text and attribute values alike (quotes escaped too)."""
    return html.escape(str(text), quote=True)


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


LEAKAGE = ("tpr", "auc")  # the leakage axis: TPR at the goal FPR (0.1%, 1% when below resolution) or AUC


def leakage_metric(data: dict, leakage: str = "tpr") -> tuple[str, str]:
    """(variant key, axis label) of the leakage the plots show. ``tpr``: the strongest attack's TPR at 0.1%
    FPR, the privacy goal's operating point; at 1% FPR when any run's figure at 0.1% is below resolution
    (the axis says so). ``auc``: its AUC."""
    if leakage not in LEAKAGE:
        raise ConfigError(f"--leakage must be one of {', '.join(LEAKAGE)}, got {leakage!r}")
    if leakage == "auc":
        return "strongest_auc", "AUC of the strongest attack"
    audited = [v for r in data["runs"] for v in r["variants"] if v["strongest_attack"]]
    if all(v["strongest_tpr@0.001fpr"] is not None for v in audited):
        return "strongest_tpr@0.001fpr", "TPR at 0.1% FPR of the strongest attack"
    missing = sum(v["strongest_tpr@0.01fpr"] is None for v in audited)
    return "strongest_tpr@0.01fpr", ("TPR at 1% FPR of the strongest attack (0.1% FPR: below resolution)"
                                     + (f"\n{missing} variant(s) below resolution at 1% too: not drawn" if missing else ""))


def variant_defense(run: dict, variant: str) -> str:
    """The defense behind one variant: the run's, except for the dense model of a run whose defense acts in
    fine-tuning only (scope finetune), which was trained without it."""
    defense = run.get("defense", "none")
    return "none" if variant == "dense" and run.get("defense_scope", "finetune") == "finetune" else defense


def _defense_cell(run: dict, variant: str) -> str:
    own, defense = variant_defense(run, variant), run.get("defense", "none")
    return own if own == defense else f"{own} (fine-tuning: {defense})"


def _groups(data: dict) -> dict[str, list[tuple[float, dict, dict]]]:
    """(sparsity, run, variant) by what makes runs comparable along a sweep: the variant, the defense and,
    where the runs differ in it, the pruning method. A dense model is at sparsity 0."""
    methods = {r["method"] for r in data["runs"]}
    out: dict[str, list] = {}
    for r in data["runs"]:
        for v in r["variants"]:
            label = f"{v['variant']}, defense {variant_defense(r, v['variant'])}" + (f", {r['method']}" if len(methods) > 1 else "")
            out.setdefault(label, []).append((0.0 if v["variant"] == "dense" else r["sparsity"], r, v))
    return out


def _series(ax, pts: list[tuple[float, float]], label: str, marker: str) -> None:
    """Points of one group: joined by a line along the sparsity axis only where every sparsity is its own
    (runs at one sparsity are markers side by side, never a vertical line)."""
    pts = sorted(pts)
    xs = [x for x, _ in pts]
    joined = len(set(xs)) == len(xs) > 1
    ax.plot(xs, [y for _, y in pts], marker=marker, ls="-" if joined else "none", lw=1, alpha=0.8, label=mathtext_escape(label))


def _marker(variant: str) -> str:
    return "s" if variant == "dense" else "^" if "+" in variant else "o"


def plots(data: dict, leakage: str = "tpr") -> list[Figure]:
    metric = leakage_metric(data, leakage)
    return [Figure("pareto", "latency vs leakage", _png(pareto_figure(data, metric))),
            Figure("sparsity", "accuracy and leakage vs sparsity", _png(sparsity_figure(data, metric))),
            Figure("roc", "ROC of the strongest attack", _png(roc_figure(data)))]


def pareto_figure(data: dict, metric: tuple[str, str]):
    """Latency vs leakage, point size = accuracy, colour = the group (variant, defense)."""
    plt = _plt()
    key = _main_latency_key(data)
    metric, axis = metric
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    pts = []
    for (label, members), colour in zip(_groups(data).items(), _colours(), strict=False):
        first = True
        for _, r, v in members:
            if key in v["latency"] and v[metric] is not None:
                x, y = v["latency"][key]["p50_ms"], v[metric]
                pts.append((x, y))
                ax.scatter(x, y, s=40 + 400 * v["test_accuracy"], alpha=0.6, color=colour, marker=_marker(v["variant"]),
                           label=mathtext_escape(label) if first else None)
                first = False
                ax.annotate(mathtext_escape(f"{r['name']}:{v['variant']}"), (x, y), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
    front = []
    for p in sorted(pts):
        if not front or p[1] < front[-1][1]:
            front.append(p)
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, label="Pareto front")
    if pts:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no figure within resolution\n(more non-members, or --leakage auc)", transform=ax.transAxes,
                ha="center")
    ax.set_xlabel(mathtext_escape(f"latency p50 ms ({key})"))
    ax.set_ylabel(axis)
    ax.set_title("latency vs leakage (point size = test accuracy)")
    return fig


def sparsity_figure(data: dict, metric: tuple[str, str]):
    """Accuracy and leakage vs sparsity, one series per group (variant, defense)."""
    metric, axis = metric
    fig, (a1, a2) = _plt().subplots(1, 2, figsize=(11, 4))
    for label, members in _groups(data).items():
        m = _marker(members[0][2]["variant"])
        _series(a1, [(s, v["test_accuracy"]) for s, _, v in members], label, m)
        lk = [(s, v[metric]) for s, _, v in members if v[metric] is not None]
        if lk:
            _series(a2, lk, label, m)
    a1.set_xlabel("sparsity")
    a1.set_ylabel("test accuracy")
    a1.set_title("accuracy vs sparsity")
    a1.legend(fontsize=7)
    a2.set_xlabel("sparsity")
    a2.set_ylabel(axis, fontsize=8)
    a2.set_title("leakage vs sparsity")
    if a2.get_legend_handles_labels()[0]:
        a2.legend(fontsize=7)
    else:
        a2.text(0.5, 0.5, "no figure within resolution\n(more non-members, or --leakage auc)", transform=a2.transAxes,
                ha="center")
    return fig


def roc_figure(data: dict):
    """ROC curves of the strongest attack of every run / variant."""
    fig, ax = _plt().subplots(figsize=(6.5, 4.5))
    for r in data["runs"]:
        for v in r["variants"]:
            roc = r["roc"].get(v["variant"], {}).get(v["strongest_attack"] or "")
            if roc:
                ax.plot(roc["fpr"], roc["tpr"], lw=1,
                        label=mathtext_escape(f"{r['name']}:{v['variant']} ({v['strongest_attack']})"))
    log_log_roc_axes(ax, "ROC of the strongest attack (log-log)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    return fig


def _colours():
    import itertools

    return itertools.cycle(_plt().rcParams["axes.prop_cycle"].by_key()["color"])


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
    head = ["run", "variant", "defense", "sparsity", "ONNX KB", "params", "MACs", "test acc", "strongest attack",
            "AUC", "TPR@0.1%FPR"] + [f"{k} p50/p90 ms" for k in keys]
    rows = []
    for r in data["runs"]:
        for v in r["variants"]:
            sparsity = "0" if v["variant"] == "dense" else f"{r['sparsity']:g}"  # the dense model is not pruned
            row = [r["name"], v["variant"], _defense_cell(r, v["variant"]), sparsity, _fmt(v["onnx_kb"], ".0f"),
                   f"{v['params']:,}", f"{v['macs']:,}", f"{v['test_accuracy']:.3f}", v["strongest_attack"] or "-",
                   _fmt(v["strongest_auc"], ".3f"), v.get("strongest_tpr_text") or _fmt(v["strongest_tpr@0.001fpr"], ".3f")]
            row += [f"{v['latency'][k]['p50_ms']:.3f} / {v['latency'][k]['p90_ms']:.3f}" if k in v["latency"] else "-"
                    for k in keys]
            rows.append(row)
    return head, rows


SCRIPT = """
window.addEventListener("load", () => {
  for (const img of document.images) img.setAttribute("data-rendered", img.naturalWidth + "x" + img.naturalHeight);
  document.body.setAttribute("data-loaded", "1");
});
"""  # the report's only script (a headless browser reads the rendered sizes); nothing in it comes from a run


def recipes_html(data: dict) -> str:
    """What each run is: model, data, pruning, quantization, defense (from its hash-checked recipe)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in ("run", "model", "data", "pruning", "quantization", "defense"))
    trs = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in (
        r["name"], r.get("model", "-"), r.get("data", "-"), f"{r.get('method', '-')} at {r['sparsity']:g}",
        r.get("quant", "-"), r.get("defense", "none") + (f" (scope {r['defense_scope']})" if r.get("defense", "none")
                                                          != "none" and "defense_scope" in r else ""))) + "</tr>"
                  for r in data["runs"])
    return f'<h2>Runs</h2><table id="recipes"><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>'


def render_html(data: dict, figures: list[Figure]) -> str:
    """The page. Every text that comes from a run is escaped (element text and attributes); ids come from
    Figure names, which are fixed words or slugs."""
    head, rows = table_rows(data)
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    figs = "".join(
        f'<figure><img id="plot-{_esc(f.name)}" alt="{_esc(f.alt)}" src="data:image/png;base64,{_esc(f.png)}">'
        + (f"<figcaption>{_esc(f.caption)}</figcaption>" if f.caption else "") + "</figure>"
        for f in figures)
    machine = data["runs"][0]["machine"].get("cpu", "") if data["runs"] else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeprune report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f2f2f2; }} td:nth-child(-n+3) {{ text-align: left; }} #recipes td, #recipes th {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; vertical-align: top; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 13px; color: #555; max-width: 40em; }}
</style></head><body>
<h1>edgeprune report</h1>
<p>{len(data["runs"])} run(s). Latency measured on {_esc(machine)}; leakage audited on the exported artifacts.</p>
<table id="runs"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>
{recipes_html(data)}
{inversion_html(data)}
<h2>Plots</h2>
{figs}
<script>{SCRIPT}</script>
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


def write_report(run_dirs: list[str | Path], out_html: str | Path, leakage: str = "tpr") -> dict[str, Path]:
    """The report of ``run_dirs``: ``out_html``, and beside it .md, .json and ``NAME_plots/`` (file names:
    fixed words and slugs, never text from a run). Reads only the runs' files that their manifests record
    (checked by sha256) and writes only these outputs."""
    from edgeprune.run import atomic_write_bytes

    if not run_dirs:
        raise RunDirError("give at least one run directory")
    if leakage not in LEAKAGE:
        raise ConfigError(f"--leakage must be one of {', '.join(LEAKAGE)}, got {leakage!r}")
    out_html = Path(out_html)
    if out_html.suffix != ".html":
        raise RunDirError(f"-o must name an .html file, got {out_html}")
    stem = out_html.with_suffix("")
    plot_dir = Path(f"{stem}_plots")
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    for target in (out_html, md, js, plot_dir):
        _refuse_run_file(target, out_html)
    data, grids = _collect(run_dirs)
    figures = plots(data, leakage) + grids
    plot_dir.mkdir(parents=True, exist_ok=True)
    for f in figures:
        atomic_write_bytes(plot_dir / f"{f.name}.png", base64.b64decode(f.png))
    atomic_write_bytes(out_html, render_html(data, figures).encode())
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
