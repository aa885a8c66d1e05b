"""Self-distillation from the dense model on reference data (DMP, Shejwalkar & Houmansadr, AAAI '21).

The compressed model learns mostly from the dense teacher's softened outputs on reference samples that
were never members, and only partly from member labels: loss = (1 - w) * CE(members) +
w * T^2 * KL(teacher_T || student_T)(references).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeprune.defend.base import DEFENSES, Defense


@DEFENSES.register("distill")
class Distill(Defense):
    name = "distill"
    default_strength = 0.9
    strength_range = (0.0, 1.0)
    strength_meaning = "w, share of the distillation term"
    needs = ("reference", "teacher")

    def prepare(self, model, optimizer, n, batch_size, steps):
        self.teacher.eval()
        return model, optimizer

    def loss(self, model, xb, yb, logits, ce, state):
        t = self.cfg.temperature
        xr, _ = self.reference_batch(len(xb))
        with torch.no_grad():
            teacher = F.log_softmax(self.teacher(xr) / t, dim=1)
        student = F.log_softmax(model(xr) / t, dim=1)
        kd = F.kl_div(student, teacher, log_target=True, reduction="batchmean") * t * t
        return (1 - self.strength) * ce + self.strength * kd
