"""`edgeprune tune`: search sparsity x method x criterion x defense x quantization to an accuracy / leakage
budget, record every trial, return the Pareto front of latency / accuracy / leakage and the chosen point.

The dense model is trained once (``OUT/dense``); every trial is an ordinary compress run on those weights
(``OUT/trials/NNN-...``), audited on its exported artifact, so a trial can be opened, re-audited or
bundled like any run. Trials are tasks on the recipe's executor (``exec``: in-process, a process pool of
``jobs`` workers, or Ray tasks). Search: the full grid, or successive halving (every configuration with a
third of the fine-tuning epochs, then the best third with all of them). Not Ray Tune: its schedulers (ASHA)
need trials that report metrics every epoch from inside the training loop and keep results in Ray Tune's
own store; a trial here is one compress run judged once, on its final audit, and stays an edgeprune run
directory, so plain Ray tasks run the same two-rung halving on a cluster as on a process pool.

Selection and reporting use different data: budgets, ranking and the Pareto front use each trial's
*selection* figures (accuracy and the leakage of the attacks without attacker models, members against a
validation split of held-out samples the target never saw: ``audit.json`` ``validation``); the reported
figures are the audit's, on the audited non-members only, which no choice has looked at.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprune.errors import ConfigError

OBJECTIVES = {  # name -> (metric key, lower is better)
    "latency": ("latency_ms", True),
    "size": ("onnx_kb", True),
    "auc": ("auc", True),
    "tpr": ("tpr_at_0.1", True),
    "accuracy": ("accuracy", False),
}


@dataclass
class Space:
    sparsity: list[float] = field(default_factory=lambda: [0.5])
    method: list[str] = field(default_factory=lambda: ["structured"])
    criterion: list[str] = field(default_factory=lambda: ["l1"])
    defense: list[str] = field(default_factory=lambda: ["none"])  # NAME[:STRENGTH]
    quant: list[str] = field(default_factory=lambda: ["int8"])

    def points(self) -> list[dict]:
        keys = [f.name for f in dataclasses.fields(self)]
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(getattr(self, k) for k in keys))]


@dataclass
class Budget:
    max_acc_drop: float | None = None  # accuracy points (1.0 = one point) below the dense model
    max_auc: float | None = None  # strongest attack's AUC
    max_tpr: float | None = None  # strongest attack's TPR at 0.1% FPR
    objective: str = "latency"

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        for name in ("max_acc_drop", "max_auc", "max_tpr"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < float("inf"):  # NaN fails this too
                raise ConfigError(f"{name} must be a number >= 0, got {v}")

    def violations(self, m: dict) -> list[str]:
        """Budgets are checked on the selection figures (members vs the validation split), never on the
        audited non-members that the trial's report shows."""
        m = m.get("selection", m)
        out = []
        if self.max_acc_drop is not None and m["acc_drop_points"] > self.max_acc_drop + 1e-9:
            out.append(f"accuracy drop {m['acc_drop_points']:.2f} > {self.max_acc_drop} points")
        if self.max_auc is not None and m["auc"] > self.max_auc + 1e-9:
            out.append(f"AUC {m['auc']:.3f} > {self.max_auc}")
        if self.max_tpr is not None and m["tpr_at_0.1"] is None:
            out.append("TPR@0.1%FPR below resolution (too few non-members to check the budget)")
        elif self.max_tpr is not None and m["tpr_at_0.1"] > self.max_tpr + 1e-9:
            out.append(f"TPR@0.1%FPR {m['tpr_at_0.1']:.3f} > {self.max_tpr}")
        return out


def trial_recipe(base, point: dict, weights: str, finetune_epochs: int | None = None):
    from edgeprune.defend import parse
    from edgeprune.recipe import parse_rewind

    r = dataclasses.replace(base, prune=dataclasses.replace(base.prune), quant=dataclasses.replace(base.quant),
                            defense=dataclasses.replace(base.defense), finetune=dataclasses.replace(base.finetune))
    r.prune.sparsity, r.prune.method, r.prune.criterion = point["sparsity"], point["method"], point["criterion"]
    r.defense.name, r.defense.strength = parse(point["defense"])
    # a defense whose scope covers the dense training, or a rewind to a training epoch, needs the trial to
    # train its own dense model; every other trial shares the one trained for the search
    own_dense = (r.defense.scope != "finetune" and r.defense.name != "none") or \
        parse_rewind(r.prune.rewind)[1] > 0
    r.weights = base.weights if own_dense else weights  # loaded weights + own_dense: validate() says why not
    r.quant.mode = point["quant"]
    if finetune_epochs is not None:
        r.finetune.epochs = finetune_epochs
    return r.validate()


def slug(i: int, point: dict, rung: int) -> str:
    d = point["defense"].replace(":", "")
    return f"{i:03d}-r{rung}-{point['method'].replace(':', 'of')}-{point['criterion']}-s{point['sparsity']}-{d}-{point['quant']}"


def metrics(report: dict) -> dict:
    """The deployed variant's numbers (the quantized one if any), leakage of the strongest attack run."""
    rows = {r["variant"]: r for r in report["rows"]}
    dense = rows["dense"]
    final = report["rows"][-1]
    attacks = final.get("attacks", {})
    if not attacks:
        raise ConfigError("tune needs an audit in every trial (recipe audit.attacks is empty)")
    auc = max(a["auc"] for a in attacks.values())
    resolved = [a["tpr@0.001fpr"] for a in attacks.values() if a["tpr@0.001fpr"] is not None]
    tpr = max(resolved) if resolved else None  # None: below resolution for every attack
    lat = final["latency"].get("1") or next(iter(final["latency"].values()))
    val, dval = final.get("validation"), dense.get("validation")
    if not val or not dval or val["max_auc"] is None:
        raise ConfigError("tune needs an attack without attacker models (e.g. loss) in every trial's audit: "
                          "configurations are chosen on it over a validation split")
    selection = {"accuracy": val["accuracy"], "acc_drop_points": 100.0 * (dval["accuracy"] - val["accuracy"]),
                 "auc": val["max_auc"], "tpr_at_0.1": val["max_tpr@0.001fpr"], "validation_samples": val["n"]}
    return {
        "selection": selection,
        "variant": final["variant"], "accuracy": final["test_accuracy"], "dense_accuracy": dense["test_accuracy"],
        "acc_drop_points": 100.0 * (dense["test_accuracy"] - final["test_accuracy"]),
        "auc": auc, "tpr_at_0.1": tpr, "strongest_attack": final.get("strongest_attack") or max(attacks, key=lambda k: attacks[k]["auc"]),
        "dense_auc": max((a["auc"] for a in dense.get("attacks", {}).values()), default=None),
        "latency_ms": lat["p50_ms"], "speedup": lat.get("speedup_vs_dense"), "onnx_kb": final["onnx_kb"],
    }


def pareto(trials: list[dict]) -> list[int]:
    """Indices of the trials no other trial beats on every one of latency, accuracy, AUC and TPR@0.1%."""
    def key(t):
        m = t["metrics"]["selection"]
        return (t["metrics"]["latency_ms"], -m["accuracy"], m["auc"], 1.0 if m["tpr_at_0.1"] is None else m["tpr_at_0.1"])

    pts = [(i, key(t)) for i, t in enumerate(trials) if t.get("metrics")]
    front = []
    for i, a in pts:
        dominated = any(all(x <= y for x, y in zip(b, a, strict=True)) and b != a for _, b in pts)
        if not dominated:
            front.append(i)
    return front


def _run_trial(_shared, args) -> dict:
    """One trial (a task on the executor): an ordinary compress run; a finished run is reopened, not redone."""
    from edgeprune.errors import UserError

    recipe_dict, out, threads = args
    from edgeprune import api
    from edgeprune.executor import torch_threads
    from edgeprune.recipe import Recipe, from_dict

    try:
        with torch_threads(threads):
            recipe = from_dict(Recipe, recipe_dict).validate()
            run_dir = api.compress(recipe, out, resume=Path(out).exists(), log=lambda m: None)
            return {"dir": str(run_dir), "report": api.load_report(run_dir)}
    except UserError as e:  # one bad combination (e.g. dpsgd on a BatchNorm model) fails its trial only
        return {"dir": out, "error": str(e)}


def _execute(jobs_args: list, execution, bar_label: str) -> list[dict]:
    from edgeprune.executor import Task, make_executor

    results: list[dict | None] = [None] * len(jobs_args)
    make_executor(execution).run(_run_trial, [Task(a) for a in jobs_args], None,
                                 lambda i, r: results.__setitem__(i, r), bar_label)
    return results


def trial_execution(base, jobs: int):
    """Where trials run: the recipe's executor; ``jobs`` > 1 with the in-process default means a process pool.
    Each trial's own audit runs inside its task (exec local), so tasks never wait on tasks."""
    import dataclasses

    ex = dataclasses.replace(base.exec)
    if ex.executor == "local" and jobs > 1:
        ex.executor = "process"
    if jobs > 1:
        ex.workers = jobs
    return ex


def tune(base, space: Space, budget: Budget, out: str | Path, search: str = "grid", jobs: int = 1,
         log=print) -> dict:
    from edgeprune.run import RunLock

    budget.check()
    if search not in ("grid", "halving"):
        raise ConfigError(f"search must be grid or halving, got {search!r}")
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    points = space.points()
    if not points:
        raise ConfigError("the search space is empty")
    for p in points:  # every configuration is checked before anything runs
        trial_recipe(base, p, "unused")
    out = Path(out)
    with RunLock(out):  # one tune per directory (each trial locks its own run directory too)
        return _tune_locked(base, space, budget, out, search, jobs, points, log)


def _tune_locked(base, space: Space, budget: Budget, out: Path, search: str, jobs: int, points: list[dict],
                 log) -> dict:
    from edgeprune import api
    from edgeprune.run import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    dense_dir = out / "dense"
    if base.weights is None:
        log("training the dense model once for every trial")
        api.compress(base, dense_dir, resume=dense_dir.exists(), log=log, stages=["train"])
        weights = str((dense_dir / api.DENSE_WEIGHTS).resolve())
    else:
        weights = base.weights
    execution = trial_execution(base, jobs)
    threads = execution.task_cpus if execution.executor != "local" else 0
    trials: list[dict] = []

    def run_rung(pts: list[tuple[int, dict]], rung: int, epochs: int | None) -> list[dict]:
        args = []
        for i, p in pts:
            r = trial_recipe(base, p, weights, epochs)
            r.exec = dataclasses.replace(r.exec, executor="local")
            args.append((asdict(r), str(out / "trials" / slug(i, p, rung)), threads))
        res = _execute(args, execution, f"tune rung {rung} ({len(args)} trials)")
        rows = []
        for (i, p), r in zip(pts, res, strict=True):
            row = {"id": i, "rung": rung, "config": p, "finetune_epochs": epochs or base.finetune.epochs,
                   "dir": os.path.relpath(r["dir"], out)}
            if "error" in r:
                row.update(error=r["error"], feasible=False, violations=[r["error"]])
            else:
                m = metrics(r["report"])
                v = budget.violations(m)
                row.update(metrics=m, feasible=not v, violations=v)
            rows.append(row)
        return rows

    indexed = list(enumerate(points))
    if search == "halving" and len(points) >= 3 and base.finetune.epochs >= 3:
        low = run_rung(indexed, 0, max(1, base.finetune.epochs // 3))
        trials += low
        keep = sorted((t for t in low if t.get("metrics")), key=lambda t: _rank(t, budget))
        keep = keep[: max(1, math.ceil(len(points) / 3))]
        trials += run_rung([(t["id"], t["config"]) for t in keep], 1, None)
    else:
        trials += run_rung(indexed, 1, None)

    final = [t for t in trials if t["rung"] == 1]
    front = pareto(final)
    for i, t in enumerate(final):
        t["pareto"] = i in front
    feasible = [t for t in final if t["feasible"]]
    chosen = min(feasible, key=lambda t: _rank(t, budget)) if feasible else None
    result = {
        "base_recipe": base.to_dict(), "space": asdict(space), "budget": asdict(budget), "search": search,
        "jobs": jobs, "execution": execution.executor, "dense_weights": weights, "trials": trials,
        "pareto": [t["id"] for t in final if t["pareto"]],
        "chosen": chosen["id"] if chosen else None,
        "verdict": (f"trial {chosen['id']} meets every budget" if chosen else
                    "no configuration met the budgets; the Pareto front shows the closest trade-offs"),
    }
    atomic_write_bytes(out / "tune.json", json.dumps(result, indent=2).encode())
    _write_chosen(base, chosen, out / "chosen.yaml")
    _plot(final, out / "tune_pareto.png", chosen)
    return result


def _write_chosen(base, chosen: dict | None, path: Path) -> None:
    """The chosen trial as a standalone recipe (``edgeprune compress --recipe chosen.yaml`` trains its own
    dense model unless the base recipe named weights): what a search hands on to be shipped. A search that
    chose nothing removes the file an earlier search in the same directory wrote."""
    from edgeprune.recipe import dump_recipe
    from edgeprune.run import atomic_write_bytes

    if chosen is None:
        path.unlink(missing_ok=True)
        return
    r = trial_recipe(base, chosen["config"], base.weights)
    head = (f"# chosen by edgeprune tune: trial {chosen['id']} of tune.json, {chosen['config']}\n"
            f"# selection figures (members vs the validation split): {json.dumps(chosen['metrics']['selection'])}\n")
    atomic_write_bytes(path, (head + dump_recipe(r)).encode())


def _rank(t: dict, budget: Budget):
    key, lower = OBJECTIVES[budget.objective]
    sel = t["metrics"]["selection"]
    v = sel.get(key, t["metrics"][key])  # leakage and accuracy from the validation split; latency, size as measured
    if v is None:  # a figure below resolution cannot be ranked: last
        v = float("inf") if lower else float("-inf")
    return (0 if t["feasible"] else 1, v if lower else -v, sel["auc"])


def _plot(trials: list[dict], path: Path, chosen: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [t for t in trials if t.get("metrics")]
    if not ok:
        return
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sc = ax.scatter([t["metrics"]["latency_ms"] for t in ok], [t["metrics"]["auc"] for t in ok],
                    c=[t["metrics"]["accuracy"] for t in ok], cmap="viridis", s=[60 if t["pareto"] else 20 for t in ok],
                    edgecolors=["red" if t["pareto"] else "none" for t in ok])
    if chosen is not None:
        ax.scatter([chosen["metrics"]["latency_ms"]], [chosen["metrics"]["auc"]], marker="*", s=220, c="red",
                   label=f"chosen: trial {chosen['id']}")
        ax.legend(loc="best")
    fig.colorbar(sc, label="test accuracy")
    ax.set_xlabel("latency p50 (ms, ORT CPU)")
    ax.set_ylabel("strongest attack AUC")
    ax.set_title("edgeprune tune: trials (red edge = Pareto front)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
