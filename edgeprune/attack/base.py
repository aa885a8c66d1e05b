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


@dataclass
class Attack:
    name: str
    fn: Callable[[AttackInputs], np.ndarray]
    needs: frozenset[str]  # subset of {"shadows", "references", "dense", "sensitivity"}
    doc: str = ""
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


def register(name: str, needs: tuple[str, ...] = (), doc: str | None = None, kind: str = "membership"):
    def deco(fn):
        text = doc if doc is not None else (fn.__doc__ or "").strip().split("\n")[0]
        ATTACKS.register(name)(Attack(name, fn, frozenset(needs), text, kind))
        return fn

    return deco


def needs_of(names: list[str]) -> set[str]:
    out: set[str] = set()
    for n in names:
        out |= ATTACKS.get(n).needs
    return out


def names_of_kind(kind: str, names: list[str] | None = None) -> list[str]:
    """The registered attacks of one kind (membership / inversion), or those of ``names`` that are."""
    return [n for n in (names if names is not None else ATTACKS.names()) if ATTACKS.get(n).kind == kind]
