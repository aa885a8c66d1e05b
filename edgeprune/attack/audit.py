"""The audit: compute (or load cached) signals for the targets, shadows and references, then run attacks.

Design choices, stated once:
- threat models: *adaptive* (the attacker's shadow and reference models go through the target's whole
  pipeline: training, pruning, defense, quantization) and *non-adaptive* (the same compression without the
  defense: the seed papers' plain shadows). ``threat="both"`` reports them side by side;
- shadows train on random halves of the attacker pool (size = the target's member count when the pool
  allows) and are evaluated on their own IN / OUT samples; a shadow's copy of the defender's reference data
  comes from the pool minus everything it is evaluated on, as the target's does;
- references train on complementary random halves of the audit candidates (LiRA's setup: every candidate is
  IN for half of the references, which online LiRA needs; offline LiRA and RMIA use only the OUT ones);
  their copy of the defender's reference data never contains RMIA's population samples;
- population samples for RMIA come from the pool minus the target's reference data and are never trained
  on by a reference;
- ``seeds`` > 1 trains more targets (same split, other training seeds) through the target's pipeline and
  reports every figure's mean, standard deviation and t-interval across them; a difference between two
  variants or threat models is significant only by a paired t-test across seeds (p < 0.05);
- attacker models are cached under the package version and every recipe field that shapes the pipeline;
- every model the audit trains (other-seed targets, shadows, references) is an ``AttackerJob``: the jobs of
  one phase go to ``attacker_signals`` in one call, which trains the missing ones on the recipe's executor
  (in-process, a process pool or Ray; several at once as one batched ensemble) and caches each result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeprune.attack import diff as _diff  # noqa: F401  (registers)
from edgeprune.attack import inversion as _inversion  # noqa: F401  (kind "inversion": run by edgeprune.ops.inversion)
from edgeprune.attack import lira as _lira  # noqa: F401
from edgeprune.attack import metric as _metric  # noqa: F401
from edgeprune.attack import nn as _nn  # noqa: F401
from edgeprune.attack import rmia as _rmia  # noqa: F401
from edgeprune.attack import samia as _samia  # noqa: F401
from edgeprune.attack.attackers import AttackerJob, attacker_signals
from edgeprune.attack.base import (
    ATTACKS,
    AttackInputs,
    References,
    ShadowSet,
    attacker_threshold,
    names_of_kind,
    needs_of,
)
from edgeprune.attack.metrics import (
    TPR_KEYS,
    attack_metrics,
    bootstrap_ci,
    per_class_auc,
    roc_points,
    strongest,
)
from edgeprune.attack.signals import (
    Predictor,
    SignalCache,
    Signals,
    sample_key,
)
from edgeprune.errors import ConfigError
from edgeprune.recipe import ExecConfig

THREATS = ("adaptive", "non-adaptive")
# --preset: how many attacker models and training seeds stand behind the figures. "thorough" is the
# documented minimum for a privacy claim (16+ references for LiRA / RMIA, 4 shadows, 3 seeds).
PRESETS = {
    "quick": {"shadows": 1, "references": 4, "seeds": 1},
    "thorough": {"shadows": 4, "references": 16, "seeds": 3},
}
SEED_STRIDE = 7919  # target k of --seeds trains with recipe seed + k * SEED_STRIDE
SEED_METRICS = ("auc", "attack_accuracy") + TPR_KEYS


ALL = "all"  # every membership attack; inversion ones are named explicitly


def resolve_attacks(names: list[str] | str) -> list[str]:
    """Attack names with ``all`` expanded (alone or beside others: ``all,inversion``), each checked, no repeats."""
    out = []
    for n in [names] if isinstance(names, str) else names:
        out += names_of_kind("membership") if n == ALL else [n]
        if n != ALL:
            ATTACKS.get(n)
    return list(dict.fromkeys(out))


@dataclass
class AuditPlan:
    attacks: list[str]
    shadows: int = 0
    references: int = 0
    max_samples: int = 5000  # per side
    population: int = 2000
    bootstrap: int = 200
    seed: int = 0
    threat: str = "adaptive"  # adaptive | non-adaptive | both
    seeds: int = 1  # trained targets (the run's own + seeds - 1 retrained with other seeds)
    preset: str | None = None  # quick | thorough: what set shadows / references / seeds
    execution: object = None  # edgeprune.recipe.ExecConfig: where attacker models train (None: in-process)

    def threats(self) -> list[str]:
        return list(THREATS) if self.threat == "both" else [self.threat]


def with_preset(plan: AuditPlan, preset: str | None, given: dict) -> AuditPlan:
    """``plan`` with the preset's counts, except those the user gave explicitly (``given``: name -> value)."""
    if preset is None:
        return dataclasses.replace(plan, **{k: v for k, v in given.items() if v is not None})
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in given.items() if v is not None}}
    return dataclasses.replace(plan, preset=preset, **values)


def check_plan(plan: AuditPlan) -> None:
    """Refuse settings that cannot work before anything is trained or written (one-line errors)."""
    for name in ("shadows", "references", "population", "bootstrap"):
        if getattr(plan, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(plan, name)}")
    if plan.max_samples < 1 or plan.seeds < 1:
        raise ConfigError(f"max_samples and --seeds must be >= 1, got {plan.max_samples} and {plan.seeds}")
    if plan.references == 1:
        raise ConfigError("--references must be 0 or at least 2 (LiRA needs IN and OUT references)")
    if plan.threat not in (*THREATS, "both"):
        raise ConfigError(f"--threat must be adaptive, non-adaptive or both, got {plan.threat!r}")
    # 'all' runs what the settings allow and lists the rest as skipped; attacks named beside it are checked
    named = [n for n in ([plan.attacks] if isinstance(plan.attacks, str) else plan.attacks) if n != ALL]
    for name in resolve_attacks(named):
        needs = ATTACKS.get(name).needs
        if "shadows" in needs and plan.shadows == 0:
            raise ConfigError(f"attack {name} needs shadow models: pass --shadows N (N >= 1)")
        if "references" in needs and plan.references == 0:
            raise ConfigError(f"attack {name} needs reference models: pass --references N (N >= 2)")


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

    def for_threat(self, threat: str) -> ModelFactory:
        """The non-adaptive attacker's factory: the same compression, no defense (its own cache key)."""
        if threat == "adaptive" or self.recipe.defense.name == "none":
            return self
        plain = dataclasses.replace(self.recipe, defense=dataclasses.replace(self.recipe.defense, name="none"))
        key = hashlib.sha256(f"{self.pipeline_key}|non-adaptive".encode()).hexdigest()[:16]
        return dataclasses.replace(self, recipe=plain, pipeline_key=key)


def uses_reference(recipe) -> bool:
    """Whether the pipeline reads the defender's reference data (defenses, leakage criterion, mixed bits)."""
    from edgeprune.defend.registry import DEFENSES

    defense_reads = recipe.defense.name != "none" and "reference" in DEFENSES.meta(recipe.defense.name)["needs"]
    early_stops = recipe.train.early_stopping > 0 or recipe.finetune.early_stopping > 0  # validates on it
    return defense_reads or early_stops or recipe.prune.criterion == "leakage" or recipe.quant.mode == "mixed"


def defender_reference(split, recipe) -> np.ndarray:
    """Dataset indices of the target's reference data (``edgeprune.stages.common.Context.reference`` picks the same ones)."""
    from edgeprune.pipeline import reference_positions

    return split.pool[reference_positions(split.pool.size, recipe.defense.reference_samples, recipe.seed + 5)]


def population_indices(pool: np.ndarray, defender_ref: np.ndarray, n: int, seed: int) -> np.ndarray:
    """RMIA's population: pool samples outside the target's reference data (which a defense trained on)."""
    rest = np.setdiff1d(pool, defender_ref)
    if rest.size == 0:
        return np.array([], int)
    return np.sort(np.random.default_rng(seed + 31).choice(rest, min(n, rest.size), replace=False))


def validation_indices(pool: np.ndarray, defender_ref: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Held-out samples for *choosing* between configurations (tune, benchmarks): pool samples the target
    never trained on (its reference data excluded), so that the audited non-members only report."""
    rest = np.setdiff1d(pool, defender_ref)
    if rest.size == 0:
        return np.array([], int)
    return np.sort(np.random.default_rng(seed + 47).choice(rest, min(int(n), rest.size), replace=False))


def validation_block(attacks: list[str], member_sig: Signals, cand: Candidates, val_sig: Signals,
                     plan: AuditPlan) -> dict:
    """Accuracy and the attacks that need no attacker models on members vs validation samples: the
    figures a configuration search selects on (never the audited non-members)."""
    mem = Signals(member_sig.logits[cand.is_member], member_sig.labels[cand.is_member])
    joined = _concat([mem, val_sig])
    is_member = np.r_[np.ones(len(mem.labels), bool), np.zeros(len(val_sig.labels), bool)]
    res = {}
    for name in attacks:
        atk = ATTACKS.get(name)
        if atk.needs:
            continue
        m = attack_metrics(is_member, atk.fn(AttackInputs(joined, seed=plan.seed)))
        res[name] = {k: m[k] for k in ("auc", "tpr@0.01fpr", "tpr@0.001fpr")}
    return {"n": int(len(val_sig.labels)), "accuracy": float(val_sig.correct.mean()), "attacks": res,
            "max_auc": max((r["auc"] for r in res.values()), default=None),
            "max_tpr@0.001fpr": max((r["tpr@0.001fpr"] for r in res.values() if r["tpr@0.001fpr"] is not None),
                                    default=None)}


def pick_candidates(split, max_samples: int, seed: int) -> Candidates:
    rng = np.random.default_rng(seed + 17)
    mem = split.members if split.members.size <= max_samples else np.sort(rng.choice(split.members, max_samples, replace=False))
    non = split.nonmembers if split.nonmembers.size <= max_samples else np.sort(rng.choice(split.nonmembers, max_samples, replace=False))
    return Candidates(np.concatenate([mem, non]), np.concatenate([np.ones(mem.size, bool), np.zeros(non.size, bool)]))


def shadow_samples(pool: np.ndarray, n_members: int, max_samples: int, reference_n: int, seed: int):
    """One shadow's (train, evaluated, is_in, reference source) indices: the reference source is disjoint
    from the samples the shadow is evaluated on (and from its training set), as the target's is."""
    perm = np.random.default_rng(seed).permutation(pool)
    n_in = min(n_members, pool.size // 2)
    m = min(n_in, max_samples)
    if reference_n > 0:  # leave room for the shadow's copy of the defender's reference data
        m = min(m, pool.size - n_in - reference_n)
        if m < 10:
            raise ConfigError(f"the attacker pool ({pool.size} samples) is too small for shadows with "
                              f"{reference_n} reference samples; use more data or fewer reference_samples")
    in_idx = np.sort(perm[:n_in])
    out_idx = np.sort(perm[n_in : n_in + m])
    ev = np.concatenate([in_idx[:m], out_idx])
    is_in = np.concatenate([np.ones(m, bool), np.zeros(m, bool)])
    rest = np.sort(perm[n_in + m :]) if reference_n > 0 else np.setdiff1d(pool, in_idx)
    return in_idx, ev, is_in, rest


def reference_membership(references: int, n_candidates: int, seed: int) -> np.ndarray:
    """(references, candidates) bool: which candidates reference model r trains on. Pairs of complementary
    random halves (r even: a fresh half, r odd: its complement), so every candidate is IN for half of them."""
    ref_in = np.zeros((references, n_candidates), bool)
    for r in range(references):
        if r % 2 == 0:
            half = np.zeros(n_candidates, bool)
            half[np.random.default_rng(seed + 2000 + r).permutation(n_candidates)[: n_candidates // 2]] = True
        ref_in[r] = half if r % 2 == 0 else ~half
    return ref_in


def reference_tag(r: int, seed: int, candidates_key: str) -> str:
    """The name reference model r's signals are cached under (with the variant and the pipeline key)."""
    return f"ref{r}-s{seed}-{candidates_key}"


@dataclass
class _AttackerModels:
    shadows: dict[str, list[ShadowSet]]
    refs: dict[str, References]
    n_shadows: int = 0
    n_refs: int = 0
    execution: dict = field(default_factory=dict)  # what attacker_signals ran (executor, tasks, timings)


def run_audit(
    ds,
    split,
    targets: dict[str, Predictor],
    plan: AuditPlan,
    factory: ModelFactory | None,
    cache: SignalCache,
    log=lambda m: None,
) -> dict:
    check_plan(plan)
    attacks = names_of_kind("membership", resolve_attacks(plan.attacks))
    needs = needs_of(attacks)
    with_sens = "sensitivity" in needs
    t_start = time.perf_counter()
    timing = {"shadow_and_reference_training_s": 0.0, "signals_s": 0.0, "attacks_s": 0.0}
    cand = pick_candidates(split, plan.max_samples, plan.seed)
    xc, yc = ds.x[cand.idx], ds.y[cand.idx]
    ck = sample_key(cand.idx, "candidates")
    want_shadows = "shadows" in needs and plan.shadows > 0
    want_refs = "references" in needs and plan.references > 0
    if (want_shadows or want_refs or plan.seeds > 1) and factory is None:
        raise ConfigError("shadow / reference attacks and --seeds need the target's architecture "
                          "(audit a run directory or pass --model)")
    ref_n = factory.recipe.defense.reference_samples if factory is not None and uses_reference(factory.recipe) else 0
    target_ref = defender_reference(split, factory.recipe) if ref_n else np.array([], int)
    pop_idx = population_indices(split.pool, target_ref, plan.population, plan.seed)
    pk = sample_key(pop_idx, "population")
    if want_refs and pop_idx.size == 0:
        raise ConfigError("reference attacks need an attacker pool; the split left none")

    # --- target signals (the run's own target, then --seeds retrained ones) -------------------------
    t0 = time.perf_counter()
    tsig = [{v: cache.signals(p, xc, yc, ck, with_sens, seed=plan.seed) for v, p in targets.items()}]
    val_idx = validation_indices(split.pool, target_ref, cand.is_member.sum(), plan.seed)
    vk = sample_key(val_idx, "validation")
    vsig = {v: cache.signals(p, ds.x[val_idx], ds.y[val_idx], vk) for v, p in targets.items()} if val_idx.size else {}
    tpop = [{v: cache.signals(p, ds.x[pop_idx], ds.y[pop_idx], pk) for v, p in targets.items()} if want_refs else {}]
    timing["signals_s"] += time.perf_counter() - t0

    variants = list(targets)
    trained = {"shadows": 0, "references": 0, "targets": 0}
    execution: dict[str, dict] = {}  # phase -> what attacker_signals ran
    exec_cfg = plan.execution or ExecConfig()
    if plan.seeds > 1:  # the target's own pipeline with other training seeds (same data, same reference data)
        sets = [(cand.idx, ck, with_sens)] + ([(pop_idx, pk, False)] if want_refs else [])
        jobs = [AttackerJob("targets", f"target{k}", split.members, factory.recipe.seed + k * SEED_STRIDE, sets,
                            reference_from=split.pool if ref_n else None, reference_seed=factory.recipe.seed)
                for k in range(1, plan.seeds)]
        got, execution["targets"] = attacker_signals(jobs, factory, ds, cache, exec_cfg, timing, trained, log,
                                                     label="targets (other seeds)")
        for sigs in got:
            tsig.append({v: sigs[v][0] for v in variants})
            tpop.append({v: sigs[v][1] for v in variants} if want_refs else {})
    attacker: dict[str, _AttackerModels] = {}
    for threat in plan.threats():
        fac = factory.for_threat(threat) if factory is not None else None
        attacker[threat] = _attacker_models(fac, ds, split, plan, cand, ck, pop_idx, pk, want_shadows, want_refs,
                                            with_sens, ref_n, variants, cache, exec_cfg, timing, trained, threat, log)
        if attacker[threat].execution:
            execution[threat] = attacker[threat].execution

    # --- attacks ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    by_threat, roc = {}, {}
    for threat, models in attacker.items():
        by_threat[threat], roc_t = _evaluate(attacks, variants, tsig, tpop, models, cand, yc, plan, log, threat,
                                             _runtime_of(factory))
        roc.setdefault(threat, roc_t)
    timing["attacks_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start
    primary = plan.threats()[0]
    first = attacker[primary]
    out = {
        "attacks_requested": attacks,
        "threat": plan.threat,
        "preset": plan.preset,
        "seeds": {"count": plan.seeds, "training_seeds": [None if k == 0 else factory.recipe.seed + k * SEED_STRIDE
                                                          for k in range(plan.seeds)]},
        "candidates": {"members": int(cand.is_member.sum()), "nonmembers": int((~cand.is_member).sum()),
                       "hash": ck},
        "population": int(pop_idx.size) if want_refs else 0,
        "shadows": {"requested": plan.shadows if want_shadows else 0, "used": first.n_shadows,
                    "trained_now": trained["shadows"]},
        "references": {"requested": plan.references if want_refs else 0, "used": first.n_refs,
                       "trained_now": trained["references"]},
        "variants": by_threat[primary],
        "roc": roc[primary],
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "cache": {"hits": cache.hits, "misses": cache.misses},
        "execution": {**_execution_summary(execution), "runtime": _runtime_of(factory).describe()},
    }
    for v in vsig:  # selection figures (tune, benchmarks): members vs held-out validation samples
        out["variants"][v]["validation"] = validation_block(attacks, tsig[0][v], cand, vsig[v], plan)
    if len(by_threat) > 1:
        out["threats"] = by_threat
        out["threat_comparison"] = _compare_threats(by_threat, plan.seeds)
    return out


def _attacker_models(factory, ds, split, plan, cand, ck, pop_idx, pk, want_shadows, want_refs, with_sens, ref_n,
                     variants, cache, exec_cfg, timing, trained, threat, log) -> _AttackerModels:
    """One threat model's shadows and references: the jobs first (which samples each model trains on, is
    scored on and draws its reference data from), then one ``attacker_signals`` call trains the missing ones."""
    shadow_sets: dict[str, list[ShadowSet]] = {v: [] for v in variants}
    refs: dict[str, References] = {}
    suffix = "" if threat == "adaptive" else f" ({threat})"
    fac_ref_n = ref_n if ref_n and uses_reference(factory.recipe) else 0  # no factory: no attacker models
    jobs: list[AttackerJob] = []
    shadow_in: list[np.ndarray] = []
    # --- shadows: random halves of the pool, reference data disjoint from what they are evaluated on --------
    if want_shadows:
        for i in range(plan.shadows):
            seed = plan.seed + 1000 + i
            in_idx, ev, is_in, rest = shadow_samples(split.pool, split.members.size, plan.max_samples, fac_ref_n, seed)
            shadow_in.append(is_in)
            jobs.append(AttackerJob("shadows", f"shadow{i}-s{plan.seed}", in_idx, seed,
                                    [(ev, sample_key(ev, f"shadow{i}"), with_sens)],
                                    reference_from=rest if fac_ref_n else None))
    # --- references: complementary halves of the candidates; reference data never RMIA's population ------
    ref_in = reference_membership(plan.references if want_refs else 0, cand.idx.size, plan.seed)
    if want_refs:
        ref_from = np.setdiff1d(split.pool, pop_idx) if fac_ref_n else None
        for r in range(plan.references):
            jobs.append(AttackerJob("references", reference_tag(r, plan.seed, ck), np.sort(cand.idx[ref_in[r]]),
                                    plan.seed + 2000 + r, [(cand.idx, ck, False), (pop_idx, pk, False)],
                                    reference_from=ref_from))
    execution = {}
    if jobs:
        got, execution = attacker_signals(jobs, factory, ds, cache, exec_cfg, timing, trained, log,
                                          label=f"shadow and reference models{suffix}")
        shadow_got = [g for j, g in zip(jobs, got, strict=True) if j.kind == "shadows"]
        for sigs, is_in in zip(shadow_got, shadow_in, strict=True):
            for v in variants:
                shadow_sets[v].append(ShadowSet(sigs[v][0], is_in, sigs["dense"][0] if "dense" in sigs else None))
        ref_got = [g for j, g in zip(jobs, got, strict=True) if j.kind == "references"]
        for v in variants if want_refs else []:
            on_c, on_p = [g[v][0] for g in ref_got], [g[v][1] for g in ref_got]
            refs[v] = References(np.stack([c.phi for c in on_c]), np.stack([c.true_prob for c in on_c]), ref_in,
                                 np.stack([p.true_prob for p in on_p]))
    n_sh = len(shadow_sets[variants[0]])
    n_refs = int(refs[variants[0]].phi.shape[0]) if refs else 0
    if n_sh != (plan.shadows if want_shadows else 0) or n_refs != (plan.references if want_refs else 0):
        raise RuntimeError(f"attacker models used ({n_sh} shadows, {n_refs} references) differ from the plan")
    return _AttackerModels(shadow_sets, refs, n_sh, n_refs, execution)


def _runtime_of(factory):
    """Where the attacker's models train: the recipe's runtime (the CPU without attacker models)."""
    from edgeprune.runtime import Runtime, of_recipe

    return of_recipe(factory.recipe) if factory is not None else Runtime.cpu()


def _execution_summary(calls: dict[str, dict]) -> dict:
    """Where the audit's models trained: the totals over its attacker_signals calls (targets of other seeds,
    one per threat model), and each call under ``phases`` when there were several."""
    if not calls:
        return {}
    first = next(iter(calls.values()))
    out = dict(first)
    for k in ("tasks", "models_trained", "models_cached"):
        out[k] = sum(c[k] for c in calls.values())
    out["wall_s"] = round(sum(c["wall_s"] for c in calls.values()), 3)
    out["ensemble_report"] = list(dict.fromkeys(n for c in calls.values() for n in c["ensemble_report"]))
    phase_s: dict[str, float] = {}
    for c in calls.values():
        for k, v in c["ensemble_phase_s"].items():
            phase_s[k] = round(phase_s.get(k, 0.0) + v, 3)
    out["ensemble_phase_s"] = phase_s
    if len(calls) > 1:
        out["phases"] = calls
    return out


def _concat(sigs: list[Signals | None]) -> Signals | None:
    if any(s is None for s in sigs):
        return None
    sens = None if any(s.sens is None for s in sigs) else np.concatenate([s.sens for s in sigs])
    return Signals(np.concatenate([s.logits for s in sigs]), np.concatenate([s.labels for s in sigs]), sens)


def _seed_scores(atk, inputs: list[AttackInputs]) -> list[np.ndarray]:
    """The attack's scores on every seed's target. Shadow-trained attacks score one sample at a time, so
    the targets go through one call (their classifier is trained once); reference attacks align candidates
    with reference statistics and run per target."""
    if "references" in atk.needs or len(inputs) == 1:
        return [np.asarray(atk.fn(i), np.float64) for i in inputs]
    n = len(inputs[0].target.labels)
    joined = dataclasses.replace(inputs[0], target=_concat([i.target for i in inputs]),
                                 dense=_concat([i.dense for i in inputs]) if inputs[0].dense is not None else None)
    scores = np.asarray(atk.fn(joined), np.float64)
    return [scores[k * n : (k + 1) * n] for k in range(len(inputs))]


def across_seeds(values: list[float | None]) -> dict:
    """Mean, standard deviation and 95% t-interval of one figure over training seeds."""
    from scipy.stats import t

    if any(v is None for v in values):
        return {"values": values, "mean": None, "sd": None, "ci95": None}
    a = np.asarray(values, np.float64)
    if a.size < 2:
        return {"values": values, "mean": float(a.mean()), "sd": None, "ci95": None}
    sd = float(a.std(ddof=1))
    half = float(t.ppf(0.975, a.size - 1) * sd / np.sqrt(a.size))
    lo, hi = np.clip([a.mean() - half, a.mean() + half], 0.0, 1.0)  # every such figure is a proportion
    return {"values": values, "mean": float(a.mean()), "sd": sd, "ci95": [float(lo), float(hi)]}


def paired(a: list[float | None], b: list[float | None]) -> dict:
    """Paired t-test across seeds of a - b; significant only with 2+ seeds and p < 0.05."""
    from scipy.stats import ttest_rel

    if any(v is None for v in (*a, *b)):
        return {"diff": None, "p": None, "significant": False, "why": "below resolution"}
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size < 2:
        return {"diff": float(d.mean()), "p": None, "significant": False, "why": "one seed: no test"}
    if np.allclose(d, d[0]):
        p = 0.0 if abs(d[0]) > 0 else 1.0
    else:
        p = float(ttest_rel(a, b).pvalue)
    return {"diff": float(d.mean()), "p": p, "significant": bool(p < 0.05)}


def _evaluate(attacks, variants, tsig, tpop, models: _AttackerModels, cand, yc, plan, log, threat, runtime=None):
    out_variants, roc = {}, {}
    for v in variants:
        compressed = v != "dense" and "dense" in tsig[0]
        inputs = [AttackInputs(
            target=ts[v],
            dense=ts["dense"] if compressed else None,
            shadows=models.shadows[v],
            refs=models.refs.get(v),
            population=tp.get(v),
            seed=plan.seed,
            runtime=runtime,
        ) for ts, tp in zip(tsig, tpop, strict=True)]
        results, skipped, roc[v] = {}, {}, {}
        for name in attacks:
            atk = ATTACKS.get(name)
            why = atk.missing(inputs[0])
            if why:
                skipped[name] = why
                continue
            ta = time.perf_counter()
            thr, how = attacker_threshold(atk, inputs[0])
            per_seed = _seed_scores(atk, inputs)
            scores = per_seed[0]
            res = attack_metrics(cand.is_member, scores, thr)
            res["attack_seconds"] = round(time.perf_counter() - ta, 3)
            res["attack_accuracy_threshold"] = how
            res["ci95"] = bootstrap_ci(cand.is_member, scores, n=plan.bootstrap, seed=plan.seed, threshold=thr)
            res["per_class_auc"] = per_class_auc(cand.is_member, scores, yc)
            res["note"] = atk.note(inputs[0]) if atk.note else None
            res["models"] = {"targets": len(inputs),
                             "shadows": models.n_shadows if ("shadows" in atk.needs or atk.threshold == "shadows") else 0,
                             "references": models.n_refs if "references" in atk.needs else 0}
            seed_metrics = [res] + [attack_metrics(cand.is_member, s, thr) for s in per_seed[1:]]
            res["per_seed"] = {k: [m[k] for m in seed_metrics] for k in SEED_METRICS}
            if len(inputs) > 1:
                res["across_seeds"] = {k: across_seeds(res["per_seed"][k]) for k in SEED_METRICS}
            res["seconds"] = round(time.perf_counter() - ta, 3)
            results[name] = res
            roc[v][name] = roc_points(cand.is_member, scores)
        sig = tsig[0][v]
        out_variants[v] = {
            "train_accuracy": float(sig.correct[cand.is_member].mean()),
            "test_accuracy": float(sig.correct[~cand.is_member].mean()),
            "attacks": results,
            "skipped": skipped,
            "strongest": strongest(results),
            "threat": threat,
        }
        if compressed:  # compressed vs dense, paired across seeds, per attack
            dense_res = out_variants["dense"]["attacks"]
            out_variants[v]["vs_dense"] = {
                n: {k: paired(r["per_seed"][k], dense_res[n]["per_seed"][k]) for k in ("auc", "tpr@0.001fpr")}
                for n, r in results.items() if n in dense_res}
        log(f"audited {v} ({threat}): {len(results)} attacks, {len(skipped)} skipped")
    return out_variants, roc


def _compare_threats(by_threat: dict, seeds: int) -> dict:
    """Adaptive minus non-adaptive attacker, per variant and attack, paired across seeds."""
    a, b = by_threat["adaptive"], by_threat["non-adaptive"]
    out = {}
    for v in a:
        out[v] = {}
        for name, ra in a[v]["attacks"].items():
            rb = b[v]["attacks"].get(name)
            if rb is None:
                continue
            out[v][name] = {k: paired(ra["per_seed"][k], rb["per_seed"][k]) for k in ("auc", "attack_accuracy")
                            if None not in ra["per_seed"][k] and None not in rb["per_seed"][k]}
    return out


def pipeline_key(recipe, split_hash: str) -> str:
    """What an attacker model's cache entry depends on: the code (package version) and every recipe field
    that shapes the pipeline (a re-audit after an upgrade or a recipe change retrains)."""
    from edgeprune import __version__

    d = recipe.to_dict()
    parts = {k: d[k] for k in ("model", "data", "split", "train", "prune", "finetune", "defense", "quant", "seed",
                               "weights") if k in d}
    parts["opset"] = d.get("export", {}).get("opset")
    parts["edgeprune"] = __version__
    parts["split_hash"] = split_hash
    from edgeprune.runtime import of_recipe

    rt = of_recipe(recipe)
    if rt.is_cuda:  # GPU-trained attacker models differ numerically from CPU ones (CPU keys stay as they were)
        parts["device"] = "cuda+amp" if rt.amp else "cuda"
    if d["quant"]["mode"] != "none":  # 7-bit weights chosen from this CPU's features make other artifacts
        from edgeprune.pipeline import int8_settings

        if int8_settings(recipe)["reduce_range"] and d["quant"].get("reduce_range") is None:
            parts["reduce_range"] = True
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
