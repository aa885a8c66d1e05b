"""The audit: compute (or load cached) signals for the targets, shadows and references, then run attacks.

Shadow and reference models go through the same pipeline as the target (same training recipe, pruning,
fine-tuning and int8 quantization), so the attacker is adaptive. Design choices, stated once:
- shadows train on random halves of the attacker pool (size = the target's member count when the pool
  allows), and are evaluated on their own IN / OUT halves;
- references train on complementary random halves of the audit candidates (LiRA's setup: every candidate is
  IN for half of the references, which online LiRA needs; offline LiRA and RMIA use only the OUT ones);
- population samples for RMIA come from the pool and are never trained on by a reference.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeprune.attack import diff as _diff  # noqa: F401  (registers)
from edgeprune.attack import lira as _lira  # noqa: F401
from edgeprune.attack import metric as _metric  # noqa: F401
from edgeprune.attack import nn as _nn  # noqa: F401
from edgeprune.attack import rmia as _rmia  # noqa: F401
from edgeprune.attack import samia as _samia  # noqa: F401
from edgeprune.attack.attackers import AttackerJob, attacker_signals
from edgeprune.attack.base import ATTACKS, AttackInputs, References, ShadowSet, needs_of
from edgeprune.attack.metrics import attack_metrics, bootstrap_ci, per_class_auc, roc_points
from edgeprune.attack.signals import (
    Predictor,
    SignalCache,
    sample_key,
)
from edgeprune.errors import ConfigError
from edgeprune.recipe import ExecConfig


def resolve_attacks(names: list[str]) -> list[str]:
    if names == ["all"] or names == "all":
        return ATTACKS.names()
    for n in names:
        ATTACKS.get(n)
    return list(dict.fromkeys(names))


@dataclass
class AuditPlan:
    attacks: list[str]
    shadows: int = 0
    references: int = 0
    max_samples: int = 5000  # per side
    population: int = 2000
    bootstrap: int = 200
    seed: int = 0
    execution: object = None  # edgeprune.recipe.ExecConfig: where attacker models train (None: in-process)


@dataclass
class Candidates:
    idx: np.ndarray
    is_member: np.ndarray


@dataclass
class ModelFactory:
    """How the attacker makes its own models: the run's recipe through the same pipeline."""

    make_model: Callable
    in_shape: tuple
    recipe: object  # edgeprune.recipe.Recipe
    pipeline_key: str
    variants: list[str] = field(default_factory=list)
    pool: np.ndarray | None = None  # where the attacker's copy of the defender's reference data comes from


def pick_candidates(split, max_samples: int, seed: int) -> Candidates:
    rng = np.random.default_rng(seed + 17)
    mem = split.members if split.members.size <= max_samples else np.sort(rng.choice(split.members, max_samples, replace=False))
    non = split.nonmembers if split.nonmembers.size <= max_samples else np.sort(rng.choice(split.nonmembers, max_samples, replace=False))
    return Candidates(np.concatenate([mem, non]), np.concatenate([np.ones(mem.size, bool), np.zeros(non.size, bool)]))


def run_audit(
    ds,
    split,
    targets: dict[str, Predictor],
    plan: AuditPlan,
    factory: ModelFactory | None,
    cache: SignalCache,
    log=lambda m: None,
) -> dict:
    attacks = resolve_attacks(plan.attacks)
    needs = needs_of(attacks)
    with_sens = "sensitivity" in needs
    t_start = time.perf_counter()
    timing = {"shadow_and_reference_training_s": 0.0, "signals_s": 0.0, "attacks_s": 0.0}
    cand = pick_candidates(split, plan.max_samples, plan.seed)
    xc, yc = ds.x[cand.idx], ds.y[cand.idx]
    ck = sample_key(cand.idx, "candidates")
    rng = np.random.default_rng(plan.seed + 31)
    pop_idx = np.sort(rng.choice(split.pool, min(plan.population, split.pool.size), replace=False)) if split.pool.size else np.array([], int)
    pk = sample_key(pop_idx, "population")
    want_shadows = "shadows" in needs and plan.shadows > 0
    want_refs = "references" in needs and plan.references > 0
    if (want_shadows or want_refs) and factory is None:
        raise ConfigError("shadow / reference attacks need the target's architecture (audit a run directory or pass --arch)")
    if want_refs and pop_idx.size == 0:
        raise ConfigError("reference attacks need an attacker pool; the split left none")

    # --- target signals -------------------------------------------------------------------------
    t0 = time.perf_counter()
    tsig = {v: cache.signals(p, xc, yc, ck, with_sens, seed=plan.seed) for v, p in targets.items()}
    tpop = {v: cache.signals(p, ds.x[pop_idx], ds.y[pop_idx], pk) for v, p in targets.items()} if want_refs else {}
    timing["signals_s"] += time.perf_counter() - t0

    variants = list(targets)
    shadow_sets: dict[str, list[ShadowSet]] = {v: [] for v in variants}
    refs: dict[str, References] = {}
    trained = {"shadows": 0, "references": 0}
    # --- shadows (random halves of the pool) and references (complementary halves of the candidates):
    # jobs first, then one call trains the missing ones on the executor (edgeprune.attack.attackers) ------
    jobs: list[AttackerJob] = []
    if want_shadows:
        n_in = min(split.members.size, split.pool.size // 2)
        m = min(n_in, plan.max_samples)
        is_in = np.concatenate([np.ones(m, bool), np.zeros(m, bool)])
        for i in range(plan.shadows):
            perm = np.random.default_rng(plan.seed + 1000 + i).permutation(split.pool)
            in_idx, out_idx = np.sort(perm[:n_in]), np.sort(perm[n_in : 2 * n_in])
            ev = np.concatenate([in_idx[:m], out_idx[:m]])
            jobs.append(AttackerJob("shadows", f"shadow{i}-s{plan.seed}", in_idx, plan.seed + 1000 + i,
                                    [(ev, sample_key(ev, f"shadow{i}"), with_sens)], _reference_from(factory, in_idx)))
    ref_in = np.zeros((plan.references if want_refs else 0, cand.idx.size), bool)
    if want_refs:
        for r in range(plan.references):
            if r % 2 == 0:
                perm = np.random.default_rng(plan.seed + 2000 + r).permutation(cand.idx.size)
                half = np.zeros(cand.idx.size, bool)
                half[perm[: cand.idx.size // 2]] = True
            ref_in[r] = half if r % 2 == 0 else ~half
            train_idx = np.sort(cand.idx[ref_in[r]])
            jobs.append(AttackerJob("references", f"ref{r}-s{plan.seed}-{ck}", train_idx, plan.seed + 2000 + r,
                                    [(cand.idx, ck, False), (pop_idx, pk, False)], _reference_from(factory, train_idx)))
    execution = {}
    if jobs:
        got, execution = attacker_signals(jobs, factory, ds, cache, plan.execution or ExecConfig(), timing, trained, log)
        for job, sigs in zip(jobs, got, strict=True):
            for v in variants:
                if job.kind == "shadows":
                    shadow_sets[v].append(ShadowSet(sigs[v][0], is_in, sigs["dense"][0] if "dense" in sigs else None))
        for v in variants if want_refs else []:
            on_c = [g[v][0] for j, g in zip(jobs, got, strict=True) if j.kind == "references"]
            on_p = [g[v][1] for j, g in zip(jobs, got, strict=True) if j.kind == "references"]
            refs[v] = References(np.stack([s.phi for s in on_c]), np.stack([s.true_prob for s in on_c]), ref_in,
                                 np.stack([s.true_prob for s in on_p]))

    used_shadows = len(shadow_sets[variants[0]]) if want_shadows else 0
    used_refs = int(refs[variants[0]].phi.shape[0]) if refs else 0
    if used_shadows != (plan.shadows if want_shadows else 0) or used_refs != (plan.references if want_refs else 0):
        raise RuntimeError(f"attacker models used ({used_shadows} shadows, {used_refs} references) differ from the plan")
    # --- attacks ----------------------------------------------------------------------------------
    out_variants = {}
    roc = {}
    t0 = time.perf_counter()
    for v in variants:
        compressed = v != "dense" and "dense" in tsig
        inp = AttackInputs(
            target=tsig[v],
            dense=tsig["dense"] if compressed else None,
            shadows=shadow_sets[v] if want_shadows else [],
            refs=refs.get(v),
            population=tpop.get(v),
            seed=plan.seed,
        )
        results, skipped, roc[v] = {}, {}, {}
        for name in attacks:
            atk = ATTACKS.get(name)
            why = atk.missing(inp)
            if why:
                skipped[name] = why
                continue
            ta = time.perf_counter()
            scores = np.asarray(atk.fn(inp), dtype=np.float64)
            res = attack_metrics(cand.is_member, scores)
            res["attack_seconds"] = round(time.perf_counter() - ta, 3)
            res["ci95"] = bootstrap_ci(cand.is_member, scores, n=plan.bootstrap, seed=plan.seed)
            res["per_class_auc"] = per_class_auc(cand.is_member, scores, yc)
            res["seconds"] = round(time.perf_counter() - ta, 3)
            results[name] = res
            roc[v][name] = roc_points(cand.is_member, scores)
        sig = tsig[v]
        out_variants[v] = {
            "train_accuracy": float(sig.correct[cand.is_member].mean()),
            "test_accuracy": float(sig.correct[~cand.is_member].mean()),
            "attacks": results,
            "skipped": skipped,
            "strongest": max(results, key=lambda k: (results[k]["auc"], k)) if results else None,
        }
        log(f"audited {v}: {len(results)} attacks, {len(skipped)} skipped")
    timing["attacks_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start
    return {
        "attacks_requested": attacks,
        "candidates": {"members": int(cand.is_member.sum()), "nonmembers": int((~cand.is_member).sum()),
                       "hash": ck},
        "population": int(pop_idx.size) if want_refs else 0,
        "shadows": {"requested": plan.shadows if want_shadows else 0, "used": used_shadows,
                    "trained_now": trained["shadows"]},
        "references": {"requested": plan.references if want_refs else 0, "used": used_refs,
                       "trained_now": trained["references"]},
        "variants": out_variants,
        "roc": roc,
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "cache": {"hits": cache.hits, "misses": cache.misses},
        "execution": execution,
    }


def _reference_from(factory: ModelFactory, train_idx: np.ndarray) -> np.ndarray | None:
    """Where an attacker model's copy of the defender's reference data comes from: pool samples it does not
    train on."""
    return np.setdiff1d(factory.pool, train_idx) if factory.pool is not None else None


def pipeline_key(recipe, split_hash: str) -> str:
    d = recipe.to_dict()
    parts = {k: d[k] for k in ("model", "data", "train", "prune", "finetune", "quant", "seed", "weights")}
    if d.get("defense", {}).get("name", "none") != "none":  # keys of undefended runs stay as they were
        parts["defense"] = d["defense"]
    parts["split"] = split_hash
    if d["quant"]["mode"] != "none":  # 7-bit weights chosen from this CPU's features make other artifacts
        from edgeprune.pipeline import int8_settings

        if int8_settings(recipe)["reduce_range"] and d["quant"].get("reduce_range") is None:
            parts["reduce_range"] = True
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
