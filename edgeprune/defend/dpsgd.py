"""DP-SGD during fine-tuning through Opacus: per-sample gradients (GradSampleModule), clipping and Gaussian
noise (DPOptimizer), Poisson sampling, and the RDP accountant for epsilon at the configured delta.

The epsilon covers the training it was applied to: in fine-tuning only, the dense weights it starts from were
trained without DP, so it is not an end-to-end guarantee (the report says so); with ``defense.scope`` train
or both it covers the dense model's training from scratch.
"""

from __future__ import annotations

import torch

from edgeprune.defend.base import DEFENSES, Defense
from edgeprune.errors import ConfigError

SCOPE_NOTES = {
    "finetune": "fine-tuning only (the dense weights it starts from are not private)",
    "train": "the dense model's training from scratch: covers the deployed weights only if fine-tuning adds no "
             "undefended epochs (finetune.epochs 0, or scope both, which composes the two budgets)",
}


@DEFENSES.register("dpsgd")
class DPSGD(Defense):
    name = "dpsgd"
    default_strength = 1.0
    strength_range = (0.0, float("inf"))
    strength_meaning = "noise multiplier sigma"

    def prepare(self, model, optimizer, n, batch_size, steps):
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ConfigError(f"dpsgd cannot train {type(model).__name__}: {str(errors[0]).splitlines()[0]} "
                              "(per-sample gradients need a model without BatchNorm, e.g. mlp or lenet5)")
        self.n = n
        self.sample_rate = min(1.0, batch_size / max(n, 1))
        self.delta = self.cfg.delta if self.cfg.delta is not None else 1.0 / max(n, 1)
        self.accountant = RDPAccountant()
        self.gsm = GradSampleModule(model)
        self.dp_opt = DPOptimizer(optimizer, noise_multiplier=self.strength, max_grad_norm=self.cfg.max_grad_norm,
                                  expected_batch_size=batch_size, generator=self._noise_generator(model))
        self.dp_opt.attach_step_hook(
            lambda opt: self.accountant.step(noise_multiplier=self.strength, sample_rate=self.sample_rate))
        return self.gsm, self.dp_opt

    def _noise_generator(self, model) -> torch.Generator | None:
        """Opacus draws the noise on the parameters' device, so its generator lives there (seeded)."""
        device = next(model.parameters()).device
        if device.type == "meta":  # no generator on the meta device (placement tests): unseeded draws
            return None
        return torch.Generator(device=device).manual_seed(self.seed + 3)

    def epoch_batches(self, n, batch_size, gen):
        """Poisson sampling: each sample joins each batch with probability q (what the accountant assumes)."""
        steps = max(1, round(n / batch_size))
        return [torch.nonzero(torch.rand(n, generator=gen) < self.sample_rate).flatten() for _ in range(steps)]

    def finish(self, model):
        self.gsm._close()
        return self.gsm._module

    def epsilon(self) -> float:
        if not self.accountant.history:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.delta))

    def info(self):
        return {**super().info(), "noise_multiplier": self.strength, "max_grad_norm": self.cfg.max_grad_norm,
                "sample_rate": self.sample_rate, "delta": self.delta, "epsilon": self.epsilon(),
                "steps": len(self.accountant.history) and sum(h[2] for h in self.accountant.history),
                "scope": SCOPE_NOTES[getattr(self, "phase", "finetune")]}
