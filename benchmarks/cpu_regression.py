"""Is the default CPU run slower after a change? The demo compress and an 8-reference audit, timed for two
source trees in one benchmark run, alternating (before, after, after, before, ...) so that drift of a shared
machine falls on both alike.

    .venv/bin/python benchmarks/cpu_regression.py --before /tmp/base --after . [--repeats 3] [--scale full|tiny] \
        [--out benchmarks/results/cpu_regression_cpu.json]

    # e.g. the base commit as a worktree beside the merged tree:
    git worktree add /tmp/base <base-commit> && .venv/bin/python benchmarks/cpu_regression.py --before /tmp/base --after .

Each measurement is a fresh subprocess of this Python with ``PYTHONPATH=<tree>``, run in an empty temporary
directory (so the tree on PYTHONPATH is the edgeprune imported):
- ``compress``: ``edgeprune compress mlp --data purchase-synth --sparsity 0.5 --quant int8`` (the README's demo);
- ``audit8``: ``edgeprune audit RUN --attacks lira-online,rmia --references 8`` on that run, its signal cache
  emptied first (every reference model is trained).
``--scale tiny`` (tests): purchase-synth:1000, one epoch each, 2 references. The table gives the median seconds
per tree and the ratio after / before; the JSON names the machine (edgeprune.bench.machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALES = {
    "full": {"compress": ["--data", "purchase-synth", "--sparsity", "0.5", "--quant", "int8"], "references": 8},
    "tiny": {"compress": ["--data", "purchase-synth:1000", "--sparsity", "0.5", "--quant", "int8", "--epochs", "1",
                          "--finetune-epochs", "1"], "references": 2},
}
ATTACKS = "lira-online,rmia"


def _tree(path: str) -> Path:
    p = Path(path).expanduser().resolve()
    if not (p / "edgeprune" / "__init__.py").is_file():
        raise SystemExit(f"cpu_regression.py: {path} is not an edgeprune source tree (no edgeprune/__init__.py)")
    return p


def _revision(tree: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def _cli(tree: Path, args: list[str], cwd: Path) -> float:
    """Seconds one edgeprune command takes with ``tree`` on PYTHONPATH; a failure stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(tree), "EDGEPRUNE_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], cwd=cwd, env=env, capture_output=True,
                         text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"cpu_regression.py: `edgeprune {' '.join(args[:2])}` failed in {tree}:\n" + "\n".join(tail))
    return wall


def measure(before: Path, after: Path, repeats: int, scale: str, log=print) -> dict:
    cfg = SCALES[scale]
    times: dict[str, dict[str, list[float]]] = {w: {"before": [], "after": []} for w in ("compress", "audit8")}
    order = []
    with tempfile.TemporaryDirectory(prefix="cpu-regression-") as tmp:
        for r in range(repeats):
            for label in (("before", "after") if r % 2 == 0 else ("after", "before")):
                tree = before if label == "before" else after
                work = Path(tmp) / f"{label}-{r}"
                work.mkdir()
                run = work / "run"
                t_c = _cli(tree, ["compress", "mlp", *cfg["compress"], "-o", str(run)], work)
                shutil.rmtree(run / "audit_cache", ignore_errors=True)
                t_a = _cli(tree, ["audit", str(run), "--attacks", ATTACKS, "--references", str(cfg["references"])],
                           work)
                times["compress"][label].append(round(t_c, 3))
                times["audit8"][label].append(round(t_a, 3))
                order.append(label)
                log(f"repeat {r + 1}/{repeats} {label:>6}: compress {t_c:6.1f}s, audit {t_a:6.1f}s")
                shutil.rmtree(work, ignore_errors=True)
    rows = []
    for w, t in times.items():
        b, a = statistics.median(t["before"]), statistics.median(t["after"])
        rows.append({"workload": w, "before_s": t["before"], "after_s": t["after"], "before_median_s": round(b, 3),
                     "after_median_s": round(a, 3), "ratio_after_before": round(a / b, 3)})
    return {"rows": rows, "order": order}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="source tree before the change (e.g. a git worktree of the base)")
    ap.add_argument("--after", required=True, help="source tree after the change")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per tree, alternating")
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--out", default="benchmarks/results/cpu_regression_cpu.json")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    before, after = _tree(args.before), _tree(args.after)

    from rich.console import Console
    from rich.table import Table

    from edgeprune.bench.machine import machine

    load0 = os.getloadavg()[0]
    res = measure(before, after, args.repeats, args.scale, log=lambda m: print(m, file=sys.stderr))
    cfg = SCALES[args.scale]
    doc = {"benchmark": "cpu_regression", "machine": machine(), "scale": args.scale, "repeats": args.repeats,
           "python": sys.executable, "command": " ".join(sys.argv),
           "before": {"tree": str(before), "revision": _revision(before)},
           "after": {"tree": str(after), "revision": _revision(after)},
           "workloads": {"compress": "edgeprune compress mlp " + " ".join(cfg["compress"]),
                         "audit8": f"edgeprune audit RUN --attacks {ATTACKS} --references {cfg['references']} "
                                   "(signal cache emptied)"},
           "load_avg_1min_before": load0, "load_avg_1min_after": os.getloadavg()[0], **res}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    t = Table("workload", "before s (median)", "after s (median)", "after / before",
              title=f"default CPU run, {args.repeats} alternating repeats ({doc['machine']['cpu']})")
    for r in res["rows"]:
        t.add_row(r["workload"], f"{r['before_median_s']:.2f}", f"{r['after_median_s']:.2f}",
                  f"{r['ratio_after_before']:.3f}")
    Console(width=120).print(t)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
