"""RelaxLoss (Chen, Yu & Fritz, ICLR '22): keep the training loss near a target level alpha instead of
driving it to zero, so member and non-member loss distributions overlap.

Per batch, as in the paper's Algorithm 1 and the authors' released code: on even epochs, gradient descent
on |CE - alpha| (ascent once the loss is below alpha); on odd epochs, plain CE while the loss is above
alpha, else posterior flattening: soft targets that keep the true class's confidence, CLAMPED AT ``upper``,
and spread the rest evenly over the other classes. On tabular data the flattened cross-entropy is applied
to every sample (their non-image code); on images, to the misclassified samples, with gradient ascent on
the cross-entropy of all (their CIFAR code). Defaults per data set are the released configurations
(alpha, upper): Purchase (0.8, 0.3), Texas (2.5, 0.1), CIFAR-10 (1, 1), CIFAR-100 (3, 1); any other data
set gets the Purchase values if tabular and the CIFAR-10 values if images. Written here from the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeprune.defend.base import DEFENSES, Defense

RELEASED = {"purchase": (0.8, 0.3), "texas": (2.5, 0.1), "cifar10": (1.0, 1.0), "cifar100": (3.0, 1.0)}
DATA_KEYS = {"purchase-synth": "purchase", "purchase100": "purchase", "texas100": "texas", "cifar10": "cifar10",
             "cifar10-jpeg": "cifar10", "cifar100": "cifar100"}


def released_setting(data: str | None, images: bool) -> tuple[str, tuple[float, float]]:
    key = DATA_KEYS.get((data or "").split(":")[0])
    if key is None:
        key = "cifar10" if images else "purchase"
    return key, RELEASED[key]


@DEFENSES.register("relaxloss")
class RelaxLoss(Defense):
    name = "relaxloss"
    default_strength = None  # the data set's released alpha
    strength_range = (1e-6, float("inf"))
    strength_meaning = "alpha, the target loss level (default: the data set's released value)"

    def __init__(self, strength, cfg, **kw):
        super().__init__(strength, cfg, **kw)
        self.alpha, self.upper, self.setting = self.strength, getattr(cfg, "upper", None), None

    def _resolve(self, images: bool) -> None:
        if self.setting is None:
            self.setting, (alpha, upper) = released_setting(self.data, images)
            self.alpha = alpha if self.alpha is None else self.alpha
            self.upper = upper if self.upper is None else self.upper
            self.strength = self.alpha

    def soft_targets(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """True class: its current confidence clamped to [0, upper]; other classes: the rest, evenly."""
        c = logits.shape[1]
        onehot = F.one_hot(y, c).to(logits.dtype)
        conf = F.softmax(logits, dim=1).gather(1, y[:, None]).clamp(0.0, self.upper)
        return onehot * conf + (1 - onehot) * (1 - conf) / max(c - 1, 1)

    def loss(self, model, xb, yb, logits, ce, state):
        self._resolve(xb.dim() == 4)
        ce_each = F.cross_entropy(logits, yb, reduction="none")
        ce_mean = ce_each.mean()
        if state.epoch % 2 == 0:
            return (ce_mean - self.alpha).abs()
        soft_ce = -(self.soft_targets(logits, yb) * F.log_softmax(logits, dim=1)).sum(1)
        if xb.dim() != 4:
            flattened = soft_ce.mean()
        else:
            wrong = (logits.argmax(1) != yb).to(logits.dtype)
            flattened = (wrong * soft_ce - ce_each).mean()
        # plain CE while the loss is above alpha, else flattening: chosen on the device (no host read per step)
        return torch.where(ce_mean > self.alpha, ce_mean, flattened)

    def info(self):
        return {**super().info(), "alpha": self.alpha, "upper": self.upper,
                "released_setting": self.setting}
