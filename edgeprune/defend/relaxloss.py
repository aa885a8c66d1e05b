"""RelaxLoss (Chen, Yu & Fritz, ICLR '22): keep the training loss near a target level alpha instead of
driving it to zero. Below alpha, even epochs take a gradient-ascent step on |CE - alpha| and odd epochs
flatten the posterior of correctly classified samples (true-class probability kept, the rest spread
evenly), so member and non-member loss distributions overlap. Written here from the paper's algorithm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeprune.defend.base import DEFENSES, Defense


@DEFENSES.register("relaxloss")
class RelaxLoss(Defense):
    name = "relaxloss"
    default_strength = 1.0
    strength_range = (1e-6, float("inf"))
    strength_meaning = "alpha, the target loss level"

    def loss(self, model, xb, yb, logits, ce, state):
        alpha = self.strength
        if state.epoch % 2 == 0:
            return (ce - alpha).abs()
        if ce > alpha:
            return ce
        probs = F.softmax(logits, dim=1)
        c = logits.shape[1]
        onehot = F.one_hot(yb, c).float()
        p_true = (probs * onehot).sum(1, keepdim=True).detach()
        soft = onehot * p_true + (1 - onehot) * (1 - p_true) / max(c - 1, 1)
        correct = (logits.argmax(1) == yb).float()
        per_sample = -(soft * F.log_softmax(logits, dim=1)).sum(1)
        flat = (per_sample * correct).sum() / correct.sum().clamp(min=1.0)
        wrong = F.cross_entropy(logits, yb, reduction="none") * (1 - correct)
        return flat + wrong.sum() / max(len(yb), 1) + torch.zeros((), dtype=ce.dtype)
