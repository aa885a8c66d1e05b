"""Rich tables of an audit: one per audited variant, sorted by TPR at 0.1% FPR."""

from __future__ import annotations


def _ci(res: dict, key: str) -> str:
    lo, hi = res["ci95"][key]
    return f"{res[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def audit_table(audit: dict):
    from rich.table import Table

    tables = []
    for v, info in audit["variants"].items():
        t = Table(title=f"{v}: train acc {info['train_accuracy']:.3f}, test acc {info['test_accuracy']:.3f} "
                        f"({audit['candidates']['members']} members / {audit['candidates']['nonmembers']} non-members)")
        for c in ("attack", "AUC [95% CI]", "bal. acc", "TPR@1%", "TPR@0.1% [95% CI]", "TPR@0.01%"):
            t.add_column(c, justify="left" if c == "attack" else "right")
        rows = sorted(info["attacks"].items(), key=lambda kv: (-kv[1]["tpr@0.001fpr"], -kv[1]["auc"]))
        for name, r in rows:
            t.add_row(name, _ci(r, "auc"), f"{r['balanced_accuracy']:.3f}", f"{r['tpr@0.01fpr']:.3f}",
                      _ci(r, "tpr@0.001fpr"), f"{r['tpr@0.0001fpr']:.4f}")
        for name, why in info["skipped"].items():
            t.add_row(f"[dim]{name}[/dim]", f"[dim]skipped: {why}[/dim]", "", "", "", "")
        tables.append(t)
    return tables
