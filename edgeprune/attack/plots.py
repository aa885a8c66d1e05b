"""Log-log ROC curves and per-class leakage bars (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mathtext_escape(text) -> str:
    """Text drawn by matplotlib as it is: a ``$`` would open mathtext (``m$\\frac$`` fails to parse)."""
    return str(text).replace("$", r"\$")


def log_log_roc_axes(ax, title: str) -> None:
    """Log-log ROC axes (FPR 1e-4..1) with the chance diagonal, as LiRA's papers plot them."""
    ax.plot([1e-5, 1], [1e-5, 1], "k:", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(mathtext_escape(title))


def roc_plot(audit: dict, path: str | Path) -> Path:
    plt = _plt()
    variants = list(audit["roc"])
    variants = variants or ["(no variant)"]
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 4.5), squeeze=False)
    for ax, v in zip(axes[0], variants, strict=True):
        lowest = 1e-4
        for name, pts in sorted(audit["roc"].get(v, {}).items()):
            auc = audit["variants"][v]["attacks"][name]["auc"]
            ax.plot(pts["fpr"], pts["tpr"], label=mathtext_escape(f"{name} ({auc:.3f})"), lw=1.2)
            lowest = max(lowest, pts.get("min_fpr", 1e-4))
        log_log_roc_axes(ax, str(v))
        if lowest > 1e-4:  # the curve is not drawn where it would rest on fewer than MIN_FALSE_POSITIVES
            ax.axvspan(1e-4, lowest, color="0.9", zorder=0)
            ax.text(1.2e-4, 2e-4, "below resolution", fontsize=7, color="0.4")
        if not audit["roc"].get(v):
            ax.text(0.5, 0.5, "no attack ran", transform=ax.transAxes, ha="center")
        if audit["roc"][v]:
            ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def per_class_plot(audit: dict, path: str | Path) -> Path:
    """AUC per class of each variant's strongest attack."""
    plt = _plt()
    variants = [v for v in audit["variants"] if audit["variants"][v]["strongest"]]
    fig, axes = plt.subplots(max(len(variants), 1), 1, figsize=(10, 2.6 * max(len(variants), 1)), squeeze=False)
    if not variants:
        axes[0, 0].text(0.5, 0.5, "no attack ran", transform=axes[0, 0].transAxes, ha="center")
    for ax, v in zip(axes[:, 0], variants, strict=False):
        best = audit["variants"][v]["strongest"]
        pc = audit["variants"][v]["attacks"][best]["per_class_auc"]
        classes = sorted(pc, key=int)
        ax.bar(range(len(classes)), [pc[c] for c in classes], color="tab:red")
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_ylim(0.3, 1.0)
        ax.set_ylabel("AUC")
        ax.set_title(mathtext_escape(f"{v}: per-class leakage ({best})"), fontsize=9)
        step = max(1, len(classes) // 25)
        ax.set_xticks(range(0, len(classes), step), [mathtext_escape(classes[i]) for i in range(0, len(classes), step)], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
