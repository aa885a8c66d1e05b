"""Rich tables of an audit: one per audited variant (and threat model), sorted by TPR at 0.1% FPR.

Every figure says what stands behind it: the preset, how many targets / shadows / references, the false
positives a TPR rests on ("below resolution" when too few), and across-seed spread when --seeds > 1."""

from __future__ import annotations


def _ci(res: dict, key: str, digits: int = 3) -> str:
    ci = res.get("ci95", {}).get(key)
    if res.get(key) is None:
        return "below res." if key.startswith("tpr@") else "-"
    if not ci:
        return f"{res[key]:.{digits}f}"
    return f"{res[key]:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _seeds(res: dict, key: str) -> str:
    s = res.get("across_seeds", {}).get(key)
    if not s or s["mean"] is None or s["sd"] is None:
        return "-"
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


def _tpr_cell(res: dict, key: str) -> str:
    if res.get(key) is None:
        return "below res."  # the caption says below which resolution
    return _ci(res, key)


def _significance(d: dict | None) -> str:
    """A paired difference: '*' only when a paired t-test across seeds says so."""
    if not d or d.get("diff") is None:
        return "-"
    if d.get("p") is None:
        return f"{d['diff']:+.3f} (1 seed)"
    return f"{d['diff']:+.3f} *" if d["significant"] else f"{d['diff']:+.3f} n.s."


def models_text(audit: dict) -> str:
    preset = audit.get("preset") or "custom"
    return (f"preset {preset}: {audit.get('seeds', {}).get('count', 1)} target(s), "
            f"{audit['shadows']['used']} shadow(s), {audit['references']['used']} reference(s)")


def _variant_table(audit: dict, v: str, info: dict, threat: str):
    from rich.table import Table

    from edgeprune.attack.metrics import FPR_POINTS, MIN_FALSE_POSITIVES, TPR_KEYS, fp_budget

    seeds = audit.get("seeds", {}).get("count", 1) > 1
    n_neg = audit["candidates"]["nonmembers"]
    rows = sorted(info["attacks"].items(), key=lambda kv: (-(kv[1]["tpr@0.001fpr"] or -1), -kv[1]["auc"]))
    notes = [f"{name}: {r['note']}" for name, r in rows if r.get("note")]
    notes += [f"{name}: no attack acc ({r['attack_accuracy_threshold']})" for name, r in rows
              if r.get("attack_accuracy") is None and r.get("attack_accuracy_threshold")]
    budgets = ", ".join(f"{100 * p:g}%: {fp_budget(p, n_neg)}" for p in FPR_POINTS)
    t = Table(title=f"{v} [{threat} attacker]: train acc {info['train_accuracy']:.3f}, test acc {info['test_accuracy']:.3f}, "
                    f"{audit['candidates']['members']} members / {n_neg} non-members; {models_text(audit)}; "
                    f"strongest: {info['strongest'] or '-'}",
              caption="\n".join([
                  "attack acc: at the attacker's own threshold (shadows, or a reference playing the target); oracle: "
                  "best threshold on the target's labels (an upper bound, no attacker has it).",
                  f"False positives allowed ({budgets}); 'below res.' = fewer than {MIN_FALSE_POSITIVES} "
                  f"(n_neg={n_neg}). T/S/R: targets / shadows / references behind the row."
                  + (" vs dense: * = significant (paired t-test across seeds, p < 0.05), n.s. = no measurable "
                     "difference." if seeds else ""),
                  *notes]))
    cols = ["attack", "AUC [95% CI]", "attack acc", "oracle acc", "TPR@1%", "TPR@0.1%", "TPR@0.01%", "T/S/R"]
    vs = info.get("vs_dense") if seeds else None
    if vs is not None:
        cols.append("AUC vs dense")
    if seeds:
        cols += ["AUC over seeds", "TPR@0.1% over seeds"]
    for c in cols:
        t.add_column(c, justify="left" if c == "attack" else "right", min_width=9 if c.startswith("TPR") else None)
    for name, r in rows:
        m = r.get("models", {})
        acc = "-" if r.get("attack_accuracy") is None else _ci(r, "attack_accuracy")
        cells = [name, _ci(r, "auc"), acc, f"{r['oracle_balanced_accuracy']:.3f}"]
        cells += [_tpr_cell(r, k) for k in TPR_KEYS]
        cells.append(f"{m.get('targets', 1)}/{m.get('shadows', 0)}/{m.get('references', 0)}")
        if vs is not None:
            cells.append(_significance(vs.get(name, {}).get("auc")))
        if seeds:
            cells += [_seeds(r, "auc"), _seeds(r, "tpr@0.001fpr")]
        t.add_row(*cells)
    for name, why in info["skipped"].items():
        t.add_row(f"[dim]{name}[/dim]", f"[dim]skipped: {why}[/dim]", *[""] * (len(cols) - 2))
    return t


def _threat_table(audit: dict, v: str):
    from rich.table import Table

    a, b = audit["threats"]["adaptive"][v]["attacks"], audit["threats"]["non-adaptive"][v]["attacks"]
    cmp = audit.get("threat_comparison", {}).get(v, {})
    t = Table(title=f"{v}: adaptive vs non-adaptive attacker (* = significant, paired across seeds)")
    for c in ("attack", "attack acc adaptive", "attack acc non-adaptive", "AUC adaptive", "AUC non-adaptive"):
        t.add_column(c, justify="left" if c == "attack" else "right")

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    for name in a:
        if name not in b:
            continue
        sig = {k: "*" if d.get("significant") else "" for k, d in cmp.get(name, {}).items()}
        star = sig.get
        t.add_row(name, f(a[name].get("attack_accuracy")), f(b[name].get("attack_accuracy")) + star("attack_accuracy", ""),
                  f(a[name]["auc"]), f(b[name]["auc"]) + star("auc", ""))
    return t


def audit_table(audit: dict):
    tables = []
    threats = audit.get("threats") or {audit.get("threat", "adaptive"): audit["variants"]}
    for threat, variants in threats.items():
        for v, info in variants.items():
            tables.append(_variant_table(audit, v, info, threat))
    if "threats" in audit:
        tables += [_threat_table(audit, v) for v in audit["variants"]]
    return tables
