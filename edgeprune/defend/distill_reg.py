"""Distillation as a regulariser of fine-tuning (``distill-reg``): NOT DMP.

The compressed model keeps the weights it has (which were trained on the members) and learns mostly from
the dense teacher's softened outputs on reference samples, partly from member labels:
loss = (1 - w) * CE(members) + w * T^2 * KL(teacher_T || student_T)(references). It does see member
gradients; ``dmp`` is the faithful Distillation for Membership Privacy (student from scratch, references only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeprune.defend.base import DEFENSES, Defense


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """Hinton et al.'s distillation term: T^2 * KL(softmax(teacher / T) || softmax(student / T))."""
    teacher = F.log_softmax(teacher_logits / t, dim=1)
    student = F.log_softmax(student_logits / t, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * t * t


@DEFENSES.register("distill-reg")
class DistillReg(Defense):
    name = "distill-reg"
    default_strength = 0.9
    strength_range = (0.0, 1.0)
    strength_meaning = "w, share of the distillation term"
    needs = ("reference", "teacher")

    def prepare(self, model, optimizer, n, batch_size, steps):
        self.teacher.eval()
        return model, optimizer

    def loss(self, model, xb, yb, logits, ce, state):
        xr, _ = self.reference_batch(len(xb))
        with torch.no_grad():
            teacher = self.teacher(xr)
        return (1 - self.strength) * ce + self.strength * soft_kl(model(xr), teacher, self.cfg.temperature)
