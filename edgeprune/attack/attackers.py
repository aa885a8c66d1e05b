"""The audit's models as tasks: each shadow / reference model (or other-seed target) goes through the target's pipeline and is
scored on its sample sets, as one task (or several at once, as one batched ensemble) on the chosen executor.

Results are content-addressed in the audit's signal cache (model key = how the model was made, sample key =
which samples): a model whose signals are all cached is not trained again, and every result is cached the
moment its task returns, so an interrupted audit resumes with the missing models only.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.attack.signals import SignalCache, Signals, onnx_predictor, sensitivity, torch_predictor


@dataclass
class AttackerJob:
    """One model the audit trains: what it trains on, its seed, and the sample sets it is scored on."""

    kind: str  # "shadows" | "references" | "targets" (the target's pipeline with another training seed)
    tag: str
    train_idx: np.ndarray
    seed: int
    sample_sets: list[tuple[np.ndarray, str, bool]]  # (sample indices, sample key, with sensitivity)
    reference_from: np.ndarray | None = None  # where its copy of the defender's reference data is drawn from
    reference_seed: int | None = None  # seed of that draw (None: the job's seed)


def model_key(tag: str, variant: str, pipeline_key: str) -> str:
    return f"{tag}-{variant}-{pipeline_key}"


def _cached(cache: SignalCache, factory, job: AttackerJob) -> dict | None:
    out = {}
    for v in factory.variants:
        got = [cache.get(model_key(job.tag, v, factory.pipeline_key), k, s) for _, k, s in job.sample_sets]
        if any(g is None for g in got):
            return None
        out[v] = got
    return out


def attacker_signals(jobs: list[AttackerJob], factory, ds, cache: SignalCache, exec_cfg, timing: dict,
                     trained: dict, log=lambda m: None, label: str = "attacker models") -> tuple[list[dict], dict]:
    """Signals of every variant of every job's model on each of its sample sets ({variant: [Signals, ...]}),
    from the cache or trained now through ``exec_cfg``'s executor. Returns (results in job order, what ran)."""
    from edgeprune.executor import Task, make_executor

    results: list[dict | None] = [_cached(cache, factory, j) for j in jobs]
    missing = [i for i, r in enumerate(results) if r is None]
    size = max(1, exec_cfg.ensemble)
    batches = [missing[i : i + size] for i in range(0, len(missing), size)]
    executor = make_executor(exec_cfg)
    threads = exec_cfg.task_cpus if exec_cfg.executor != "local" else 0
    tasks = [Task((factory, [jobs[i] for i in b], threads, exec_cfg.batch_training), units=len(b)) for b in batches]
    notes: list[str] = []
    phase_s: dict[str, float] = {}

    def on_result(t: int, res: dict) -> None:
        for i, per_variant in zip(batches[t], res["signals"], strict=True):
            job = jobs[i]
            out = {}
            for v, sets in per_variant.items():
                out[v] = []
                for (idx, key, _), (logits, sens) in zip(job.sample_sets, sets, strict=True):
                    sig = Signals(logits.astype(np.float64), np.asarray(ds.y[idx]), sens)
                    cache.put(model_key(job.tag, v, factory.pipeline_key), key, sig)
                    cache.misses += 1
                    out[v].append(sig)
            results[i] = out
            trained[job.kind] += 1
        timing["shadow_and_reference_training_s"] += res["train_s"]
        timing["signals_s"] += res["signals_s"]
        notes.extend(n for n in res["report"] if n not in notes)
        for k, v in res["phase_s"].items():
            phase_s[k] = phase_s.get(k, 0.0) + v

    t0 = time.perf_counter()
    executor.run(train_and_score, tasks, (ds.x, ds.y), on_result, label)
    wall = time.perf_counter() - t0
    for n in notes:
        log(f"[dim]ensemble {n}[/dim]")
    info = {**executor.describe(), "ensemble": size, "tasks": len(tasks), "models_trained": len(missing),
            "models_cached": len(jobs) - len(missing), "wall_s": round(wall, 3), "ensemble_report": notes,
            "ensemble_phase_s": {k: round(v, 3) for k, v in phase_s.items()}}
    return results, info  # type: ignore[return-value]


def train_and_score(shared, payload) -> dict:
    """The task: train the jobs' models through the target's pipeline (several in lockstep, their training
    steps batched where the engine's strategy allows) on the device the factory's recipe names, and score
    every variant."""
    import torch

    from edgeprune.executor import torch_threads
    from edgeprune.pipeline import Member, run_pipelines, split_reference
    from edgeprune.runtime import resolve

    x_all, y_all = shared
    factory, jobs, threads, batch_training = payload
    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
        members = []
        for j in jobs:
            reference = None
            if j.reference_from is not None:  # the defender's reference data as this model's pipeline sees it
                rest = j.reference_from
                seed = j.seed if j.reference_seed is None else j.reference_seed
                reference = split_reference(torch.from_numpy(x_all[rest]), torch.from_numpy(y_all[rest]),
                                            factory.recipe.defense.reference_samples, seed + 5)
            members.append(Member(torch.from_numpy(x_all[j.train_idx]), torch.from_numpy(y_all[j.train_idx]), j.seed,
                                  j.tag, reference))
        dense_only = factory.variants == ["dense"]
        runtime = resolve(factory.recipe.runtime.device, factory.recipe.runtime.amp)  # in this process / worker
        t0 = time.perf_counter()
        outs, report = run_pipelines(factory.make_model, factory.in_shape, members, factory.recipe, Path(tmp),
                                     dense_only=dense_only, runtime=runtime, batch_training=batch_training)
        notes, phases = (report.lines(), report.seconds) if len(members) > 1 else ([], {})
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        signals = []
        for j, out in zip(jobs, outs, strict=True):
            per_variant = {}
            for v in factory.variants:
                key = model_key(j.tag, v, factory.pipeline_key)
                pred = torch_predictor(out.models[v], key, runtime=runtime) if v in out.models else onnx_predictor(out.onnx[v], key, numerics="reference")
                per_variant[v] = [_score(pred.predict, x_all[idx], with_sens, j.seed)
                                  for idx, _, with_sens in j.sample_sets]
            signals.append(per_variant)
        return {"signals": signals, "train_s": train_s, "signals_s": time.perf_counter() - t0, "report": notes,
                "phase_s": phases}


def _score(predict, x: np.ndarray, with_sens: bool, seed: int):
    """What SignalCache.signals computes (logits, and SAMIA's sensitivity when asked), as plain arrays."""
    logits = predict(x)
    return logits, (sensitivity(predict, x, seed=seed) if with_sens else None)
