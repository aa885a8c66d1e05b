"""Distillation for Membership Privacy (DMP; Shejwalkar & Houmansadr, AAAI '21).

The teacher (the undefended model trained on the members) labels the defender's reference data with
its softened predictions; the protected model is trained FROM SCRATCH on those reference samples and soft
labels only: it never computes a loss, hence never a gradient, on a member. DMP prefers reference samples
on which the teacher is confident (low prediction entropy): they carry the least membership information,
so ``strength`` keeps that share of the reference data, lowest teacher entropy first (1.0: all of it).
``defense.hard_labels`` w mixes in the reference samples' own labels, (1 - w) * distillation + w * cross-entropy
(Hinton et al.'s distillation with ground truth), for a defender whose reference data is labelled: still no
member in the loss. w = 0 is DMP as published; w = 1 trains on the reference data alone (the teacher's
labels unused), the baseline that shows how much of the student's accuracy and leakage the teacher brings.
Written here: it is a change of training set plus the distillation loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeprune.defend.base import DEFENSES, Defense
from edgeprune.defend.distill_reg import soft_kl


@DEFENSES.register("dmp")
class DMP(Defense):
    name = "dmp"
    default_strength = 1.0
    strength_range = (0.01, 1.0)
    strength_meaning = "share of the reference data used, lowest teacher entropy first"
    needs = ("reference", "teacher")
    from_scratch = True  # False: continue the given weights (QAT of an already protected model)

    def training_set(self, x, y):
        from edgeprune.engine import predict_logits

        xr = self.reference[0]
        logits = predict_logits(self.teacher, xr)
        p = F.softmax(logits, dim=1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
        keep = entropy.argsort()[: max(2, round(self.strength * len(xr)))].sort().values
        self.used = int(keep.numel())
        if self.cfg.hard_labels > 0:  # the reference samples' own labels: the loop's cross-entropy uses them
            return xr[keep], self.reference[1][keep]
        return xr[keep], logits[keep].argmax(1)  # hard labels only feed the loop's bookkeeping

    def prepare(self, model, optimizer, n, batch_size, steps):
        """Re-initialise every layer (seeded): the protected model starts from scratch, whatever weights it
        was handed (after pruning they come from the member-trained dense model)."""
        self.teacher.eval()
        if not self.from_scratch:
            return model, optimizer
        torch.manual_seed(self.seed + 13)
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        return model, optimizer

    def loss(self, model, xb, yb, logits, ce, state):
        w = self.cfg.hard_labels
        if w >= 1.0:
            return ce
        with torch.no_grad():
            teacher = self.teacher(xb)
        soft = soft_kl(logits, teacher, self.cfg.temperature)
        return soft if w == 0 else (1 - w) * soft + w * ce

    def info(self):
        return {**super().info(), "reference_samples_used": getattr(self, "used", None),
                "temperature": self.cfg.temperature, "hard_labels": self.cfg.hard_labels, "member_gradients": 0}
