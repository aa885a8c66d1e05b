"""Wall time of a LiRA + RMIA audit as the number of reference models K grows: the attacker's models trained
one by one, as batched ensembles, and as Ray tasks on a local 2-CPU Ray instance, all in one run on one
target (a 50%-pruned, int8-quantized MLP on purchase-synth; every reference goes through the same pipeline).

    .venv/bin/python benchmarks/audit_scale.py [--data purchase-synth:10000] [--epochs 4] [--finetune-epochs 2] \
        [--one 8,16] [--ensemble 8,16,32,64] [--ray 8,16] [--out benchmarks/results/audit_scale_cpu.json]

Each audit starts from an empty signal cache (every reference is trained). Local modes run with one torch
thread; Ray runs 2 workers with one thread each. Ray's start-up is timed once, apart from the audits. The
JSON holds, per mode and K: wall time of the audit, of the attacker models, seconds per model, and the AUC /
TPR@0.1%FPR of each attack (so the modes can be seen to agree). The 1-minute load average before and after
is recorded: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGEPRUNE_NO_PROGRESS", "1")
ATTACKS = ["lira-online", "lira-offline", "rmia"]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="purchase-synth:10000")
    ap.add_argument("--model", default="mlp", help="zoo model (benchmarks/gpu_check.sh: resnet20 on CIFAR-10)")
    ap.add_argument("--device", default="auto", help="the recipe's runtime device: auto | cpu | cuda | cuda:N")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--one", default="8,16", help="K for one-by-one training")
    ap.add_argument("--ensemble", default="8,16,32,64", help="K for batched ensembles")
    ap.add_argument("--ensemble-unbatched", default="",
                    help="K for ensemble tasks whose training steps run one by one (batch_training one-by-one, the "
                         "CPU default of 'auto'): shared ONNX export, no vmap")
    ap.add_argument("--ensemble-size", type=int, default=32, help="models per ensemble batch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the local modes")
    ap.add_argument("--mlp-steps", type=int, default=0,
                    help="also time N Adam steps (batch 128) of K=8 MLPs: 8 separate steps vs one vmap step over the "
                         "stacked members (what edgeprune.engine.fit_many does) vs a hand-written baddbmm step, 3 repeats")
    ap.add_argument("--reverse", action="store_true", help="run the modes in the opposite order")
    ap.add_argument("--ray", default="8,16", help="K for Ray tasks (local instance, 2 CPUs, one model a task)")
    ap.add_argument("--resnet-steps", type=int, default=0,
                    help="also time N training steps of a CIFAR ResNet-18 reference (batch 128) on this CPU, dense "
                         "and 50%%-pruned, for the extrapolation in benchmarks/README.md")
    ap.add_argument("--out", default="benchmarks/results/audit_scale_cpu.json")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from edgeprune import api
    from edgeprune.recipe import ExecConfig, Recipe
    from edgeprune.runtime import resolve

    torch.set_num_threads(args.threads)
    recipe = Recipe(model=args.model, data=args.data)
    recipe.runtime.device = args.device
    recipe.train.epochs, recipe.finetune.epochs = args.epochs, args.finetune_epochs
    recipe.prune.sparsity = 0.5
    recipe.audit.attacks = ["loss"]
    recipe.bench.batches, recipe.bench.duration_s, recipe.bench.warmup_s = [1], 0.2, 0.05
    result = {"machine": api.machine(), "data": args.data, "model": args.model,
              "runtime": resolve(args.device).describe(), "sparsity": 0.5, "quant": "int8",
              "threads": args.threads, "order": "reversed" if args.reverse else "as listed",
              "train_epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "attacks": ATTACKS,
              "load_avg_1min_before": os.getloadavg()[0], "runs": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    con = Console()
    try:
        if args.mlp_steps:
            result["mlp_step"] = _mlp_steps(args.mlp_steps, 8)
            con.print(result["mlp_step"])
            out.write_text(json.dumps(result, indent=2) + "\n")
        if args.resnet_steps:
            result["resnet18_cifar_step"] = _resnet_steps(args.resnet_steps)
            con.print(result["resnet18_cifar_step"])
            out.write_text(json.dumps(result, indent=2) + "\n")
        plan = [("one by one", k, ExecConfig(ensemble=1)) for k in _ints(args.one)]
        plan += [("ensemble", k, ExecConfig(ensemble=args.ensemble_size, batch_training="batched"))
                 for k in _ints(args.ensemble)]
        plan += [("ensemble, training one by one", k, ExecConfig(ensemble=args.ensemble_size, batch_training="one-by-one"))
                 for k in _ints(args.ensemble_unbatched)]
        plan += [("ray 2 CPUs", k, ExecConfig(executor="ray", ensemble=1, workers=2)) for k in _ints(args.ray)]
        if args.reverse:  # the machine is shared: a second pass in the opposite order shows the drift
            plan.reverse()
        if plan:
            t0 = time.perf_counter()
            run = api.compress(recipe, tmp / "run", log=lambda m: None)
            result["compress_s"] = round(time.perf_counter() - t0, 2)
        if any(mode.startswith("ray") for mode, _, _ in plan):
            import ray

            t0 = time.perf_counter()
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            result["ray_start_s"] = round(time.perf_counter() - t0, 2)
        for mode, k, ex in plan:
            shutil.rmtree(run / "audit_cache", ignore_errors=True)
            t0 = time.perf_counter()
            audit = api.audit_run(run, ATTACKS, 0, k, "onnx", log=lambda m: None, execution=ex)
            wall = time.perf_counter() - t0
            e = audit["execution"]
            row = {"mode": mode, "references": k, "audit_wall_s": round(wall, 2),
                   "attacker_models_wall_s": e["wall_s"], "s_per_model": round(e["wall_s"] / k, 3),
                   "attacks_s": audit["timing"]["attacks_s"], "tasks": e["tasks"],
                   "ensemble_report": e["ensemble_report"],
                   "leakage": {v: {a: {"auc": r["auc"], "tpr@0.001fpr": r["tpr@0.001fpr"]}
                                   for a, r in info["attacks"].items()}
                               for v, info in audit["variants"].items()}}
            result["runs"].append(row)
            row["ensemble_phase_s"] = e.get("ensemble_phase_s", {})
            con.print(f"{mode:>11} K={k:3d}: audit {wall:7.1f}s, attacker models {e['wall_s']:7.1f}s, "
                      f"{e['wall_s'] / k:6.2f}s a model")
            out.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive an interruption
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_avg_1min_after"] = os.getloadavg()[0]
    base = {r["references"]: r["s_per_model"] for r in result["runs"] if r["mode"] == "one by one"}
    for r in result["runs"]:
        b = base.get(r["references"]) or (min(base.values()) if base else None)
        r["speedup_per_model_vs_one_by_one"] = round(b / r["s_per_model"], 2) if b else None
    out.write_text(json.dumps(result, indent=2) + "\n")

    if not result["runs"]:
        return 0
    t = Table(title=f"audit scale: {args.data}, {args.model} 50% pruned + int8, {', '.join(ATTACKS)} "
                    f"({result['machine']['cores']} cores, load {result['load_avg_1min_before']:.1f})")
    for c in ("mode", "K", "audit s", "models s", "s / model", "x vs one by one", "lira-online AUC", "rmia AUC"):
        t.add_column(c, justify="left" if c == "mode" else "right")
    for r in result["runs"]:
        lk = r["leakage"]["pruned+int8"]
        t.add_row(r["mode"], str(r["references"]), f"{r['audit_wall_s']:.1f}", f"{r['attacker_models_wall_s']:.1f}",
                  f"{r['s_per_model']:.2f}", f"{r['speedup_per_model_vs_one_by_one'] or 0:.2f}",
                  f"{lk['lira-online']['auc']:.3f}", f"{lk['rmia']['auc']:.3f}")
    con.print(t)
    return 0


def _mlp_steps(n: int, k: int) -> dict:
    """Milliseconds per training step of k MLPs (purchase shapes, batch 128, Adam): k separate steps, one vmap
    step over the stacked members (edgeprune.engine.fit_many's path), and a hand-written baddbmm step; 3 repeats."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from edgeprune.models import build_model

    torch.manual_seed(0)
    models = [build_model("mlp", (600,), 100) for _ in range(k)]
    x, y = torch.randn(k, 128, 600), torch.randint(0, 100, (k, 128))

    def separate():
        opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in models]

        def step():
            for i, m in enumerate(models):
                loss = F.cross_entropy(m(x[i]), y[i])
                opts[i].zero_grad()
                loss.backward()
                opts[i].step()
        return step

    def vmapped():
        params, buffers = stack_module_state(models)
        params = {name: v.detach().requires_grad_(True) for name, v in params.items()}
        base = copy.deepcopy(models[0]).to("meta")
        fwd = vmap(lambda p, b, xb: functional_call(base, (p, b), (xb,)), randomness="different")
        opt = torch.optim.Adam(list(params.values()), 1e-3)

        def step():
            loss = F.cross_entropy(fwd(params, buffers, x).flatten(0, 1), y.flatten(), reduction="none")
            opt.zero_grad()
            loss.view(k, -1).mean(1).sum().backward()
            opt.step()
        return step

    def baddbmm():
        layers = [[m for m in model.modules() if isinstance(m, torch.nn.Linear)] for model in models]
        ws = [torch.stack([ls[j].weight.detach().t() for ls in layers]).requires_grad_(True) for j in range(len(layers[0]))]
        bs = [torch.stack([ls[j].bias.detach() for ls in layers]).unsqueeze(1).requires_grad_(True)
              for j in range(len(layers[0]))]
        opt = torch.optim.Adam(ws + bs, 1e-3)

        def step():
            h = x
            for j, (w, b) in enumerate(zip(ws, bs, strict=True)):
                h = torch.baddbmm(b, h, w)
                h = torch.relu(h) if j < len(ws) - 1 else h
            loss = F.cross_entropy(h.flatten(0, 1), y.flatten(), reduction="none")
            opt.zero_grad()
            loss.view(k, -1).mean(1).sum().backward()
            opt.step()
        return step

    out = {"models": k, "batch": 128, "steps": n, "threads": torch.get_num_threads(), "ms_per_step_of_all_models": {}}
    for name, make in (("separate", separate), ("vmap", vmapped), ("baddbmm", baddbmm)):
        step = make()
        step()  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            times.append(round((time.perf_counter() - t0) / n * 1000, 2))
        out["ms_per_step_of_all_models"][name] = times
    sep = out["ms_per_step_of_all_models"]["separate"]
    out["vmap_vs_separate"] = [round(v / s_, 2) for v, s_ in zip(out["ms_per_step_of_all_models"]["vmap"], sep, strict=True)]
    return out


def _resnet_steps(n: int) -> dict:
    """Seconds per training step (batch 128, Adam) of ResNet-18 on 32x32x3 inputs, dense and 50%-pruned."""
    import torch

    from edgeprune.models import build_model, count_macs
    from edgeprune.recipe import PruneConfig, TrainConfig
    from edgeprune.train import train

    out = {"batch": 128, "steps": n, "threads": torch.get_num_threads()}
    x, y = torch.randn(128 * (n + 1), 3, 32, 32), torch.randint(0, 10, (128 * (n + 1),))
    torch.manual_seed(0)
    dense = build_model("resnet18", (3, 32, 32), 10)
    pruned = build_model("resnet18", (3, 32, 32), 10)
    from edgeprune.prune import schedule

    schedule.run(pruned, (3, 32, 32), x[:256], y[:256], PruneConfig(sparsity=0.5), TrainConfig(epochs=1), seed=0)
    for name, m in (("dense", dense), ("pruned_0.5", pruned)):
        cfg = TrainConfig(epochs=1, batch_size=128)
        train(m, x[:128], y[:128], cfg, seed=0)  # warm-up step
        t0 = time.perf_counter()
        train(m, x[128:], y[128:], cfg, seed=0)
        out[name] = {"s_per_step": round((time.perf_counter() - t0) / n, 3),
                     "macs_per_sample": count_macs(m, (3, 32, 32))}
    return out


if __name__ == "__main__":
    sys.exit(main())
