"""The defense protocol: hooks the one training loop (edgeprune.engine.fit) calls.

A defense changes the objective (``loss``), may need the defender's reference data (samples from outside
the members and the audit's non-members) or the dense teacher, may replace the batch sampler (DP-SGD's
Poisson sampling) and may wrap the model and optimizer (Opacus). ``info`` reports what it did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.defend.registry import DEFENSES  # noqa: F401  (re-exported: defenses register here)
from edgeprune.errors import ConfigError


@dataclass
class Step:
    epoch: int
    step: int


class Defense:
    name = "none"
    default_strength = 0.0
    strength_range = (0.0, float("inf"))  # inclusive bounds
    strength_meaning = ""
    needs: tuple[str, ...] = ()  # "reference", "teacher"

    def __init__(self, strength: float | None, cfg, reference=None, teacher: nn.Module | None = None, seed: int = 0,
                 data: str | None = None):
        self.data = data  # the recipe's data spec, for per-data-set defaults
        self.strength = self.default_strength if strength is None else float(strength)
        self.cfg = cfg
        self.reference = reference
        self.teacher = teacher
        self.seed = seed
        if "reference" in self.needs and (reference is None or len(reference[0]) < 2):
            raise ConfigError(f"defense {self.name!r} needs reference data and none is available")
        if "teacher" in self.needs and teacher is None:
            raise ConfigError(f"defense {self.name!r} needs the dense model as teacher")
        self._gen = torch.Generator().manual_seed(seed + 7)

    @classmethod
    def check(cls, strength: float | None) -> None:
        if strength is None:
            return
        lo, hi = cls.strength_range
        if not lo <= strength <= hi:
            raise ConfigError(f"defense {cls.name} strength ({cls.strength_meaning}) must be in [{lo}, {hi}], got {strength}")

    # -- hooks --------------------------------------------------------------------------------------
    def to(self, device) -> Defense:
        """Move what the defense holds (reference data, teacher) to ``device``; ``fit`` calls it before
        training with the runtime's device and afterwards with the model's own. Whatever ``prepare`` builds
        is made on the model's device."""
        self.device = torch.device(device)
        if self.reference is not None:
            self.reference = tuple(t.to(device) for t in self.reference)
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def training_set(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples the loop iterates over (DMP replaces the members by reference data)."""
        return x, y

    def prepare(self, model: nn.Module, optimizer, n: int, batch_size: int, steps: int):
        """Called once before training; returns the (possibly wrapped) model and optimizer."""
        return model, optimizer

    def epoch_batches(self, n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        order = torch.randperm(n, generator=gen)
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]

    def loss(self, model, xb, yb, logits, ce, state: Step) -> torch.Tensor:
        return ce

    def finish(self, model: nn.Module) -> nn.Module:
        return model

    def info(self) -> dict:
        return {"defense": self.name, "strength": self.strength}

    # -- helpers ------------------------------------------------------------------------------------
    def reference_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xr, yr = self.reference
        idx = torch.randint(0, len(xr), (size,), generator=self._gen).to(xr.device)  # CPU draws: same on every device
        return xr[idx], yr[idx]


@DEFENSES.register("none")
class NoDefense(Defense):
    strength_meaning = "unused"
