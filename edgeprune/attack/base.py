"""What attacks consume, and the attack registry. Attacks are cheap functions of cached signals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeprune.attack.signals import Signals
from edgeprune.registry import Registry


@dataclass
class ShadowSet:
    """One shadow model (through the same pipeline as the target) on samples whose membership is known."""

    target: Signals  # the shadow's variant matching the audited target
    is_in: np.ndarray  # (M,) bool: was the sample in this shadow's training set
    dense: Signals | None = None  # the shadow's dense model on the same samples


@dataclass
class References:
    """Reference models' outputs on the audit candidates and on a population sample."""

    phi: np.ndarray  # (R, N) logit-scaled confidence on candidates
    prob: np.ndarray  # (R, N) true-class probability on candidates
    is_in: np.ndarray  # (R, N) bool
    pop_prob: np.ndarray  # (R, Z) true-class probability on population samples (never trained on)


@dataclass
class AttackInputs:
    target: Signals  # audited model on the candidates (members first, then non-members; order is hidden)
    dense: Signals | None = None  # the dense model on the candidates (compressed targets only)
    shadows: list[ShadowSet] = field(default_factory=list)
    refs: References | None = None
    population: Signals | None = None  # audited model on the population samples
    seed: int = 0
    # when these inputs replay the attack with one reference playing the target (to choose a threshold),
    # the attacker's full reference set: choices that depend on how many references there are follow it
    full_refs: References | None = None
    runtime: object = None  # edgeprune.runtime.Runtime where attack classifiers train (None: the CPU)


@dataclass
class Attack:
    name: str
    fn: Callable[[AttackInputs], np.ndarray]
    needs: frozenset[str]  # subset of {"shadows", "references", "dense", "sensitivity"}
    doc: str = ""
    # the attacker's own decision threshold: a number (the score of a classifier trained on shadows),
    # "shadows" (chosen on the shadows' scores) or "references" (one reference model plays the target)
    threshold: float | str = "shadows"
    note: Callable[[AttackInputs], str | None] | None = None  # how the attack ran, for the table / audit.json
    kind: str = "membership"  # "inversion": consumes features at a split point (edgeprune.attack.inversion)

    def missing(self, inp: AttackInputs) -> str | None:
        if "shadows" in self.needs and not inp.shadows:
            return "needs shadow models (--shadows N)"
        if "references" in self.needs and inp.refs is None:
            return "needs reference models (--references N)"
        if "dense" in self.needs and (inp.dense is None or any(s.dense is None for s in inp.shadows)):
            return "needs the dense model's outputs (audits compressed variants only)"
        if "sensitivity" in self.needs and (inp.target.sens is None or any(s.target.sens is None for s in inp.shadows)):
            return "needs sensitivity signals"
        return None


ATTACKS: Registry = Registry("attack")


def register(name: str, needs: tuple[str, ...] = (), doc: str | None = None, threshold: float | str | None = None,
             note: Callable[[AttackInputs], str | None] | None = None, kind: str = "membership"):
    def deco(fn):
        text = doc if doc is not None else (fn.__doc__ or "").strip().split("\n")[0]
        thr = threshold if threshold is not None else ("references" if "references" in needs else "shadows")
        ATTACKS.register(name)(Attack(name, fn, frozenset(needs), text, threshold=thr, note=note, kind=kind))
        return fn

    return deco


@dataclass
class _Replay:
    """What a reference model playing the target offers an attack: its confidences (no logits)."""

    phi: np.ndarray
    true_prob: np.ndarray


def attacker_threshold(atk: Attack, inp: AttackInputs) -> tuple[float | None, str]:
    """The threshold a real attacker would use (never the target's membership labels), and how it was chosen."""
    from edgeprune.attack.metric import best_threshold

    if not isinstance(atk.threshold, str):
        return float(atk.threshold), "the shadow-trained classifier's decision"
    if atk.threshold == "shadows":
        if not inp.shadows:
            return None, "needs shadow models to choose a threshold"
        scores = np.concatenate([atk.fn(AttackInputs(s.target, dense=s.dense, seed=inp.seed)) for s in inp.shadows])
        return best_threshold(scores, np.concatenate([s.is_in for s in inp.shadows])), "chosen on shadow models"
    r = inp.refs
    if r is None or r.phi.shape[0] < 3:
        return None, "needs 3+ reference models to choose a threshold"
    rest = References(r.phi[1:], r.prob[1:], r.is_in[1:], r.pop_prob[1:])
    replay = AttackInputs(_Replay(r.phi[0], r.prob[0]), refs=rest, population=_Replay(r.pop_prob[0], r.pop_prob[0]),
                          seed=inp.seed, full_refs=r)
    scores = np.asarray(atk.fn(replay), np.float64)
    return best_threshold(scores, r.is_in[0]), "chosen with reference model 0 playing the target"


def needs_of(names: list[str]) -> set[str]:
    out: set[str] = set()
    for n in names:
        out |= ATTACKS.get(n).needs
    return out


def names_of_kind(kind: str, names: list[str] | None = None) -> list[str]:
    """The registered attacks of one kind (membership / inversion), or those of ``names`` that are."""
    return [n for n in (names if names is not None else ATTACKS.names()) if ATTACKS.get(n).kind == kind]
