"""Pair-based posterior balancing (Yuan & Zhang, USENIX Security '22, the pruning-MIA paper's defense).

Fine-tuning adds lambda * KL between the descending-sorted posteriors of the two halves of each batch, so
the shape of the confidence vector stops depending on which sample it is (the divergence the SAMIA attack
reads). As in the authors' released code (mia_prune, ``train_defend_ppb``): logits ranked per sample, the
first half of the batch as the log-input and the second half as the target, KL(second || first), batch
mean; an odd last sample is left out. Written here because no library ships it; it is one line of
tensor algebra.
"""

from __future__ import annotations

import torch.nn.functional as F

from edgeprune.defend.base import DEFENSES, Defense


@DEFENSES.register("kl")
class KLBalancing(Defense):
    name = "kl"
    default_strength = 4.0
    strength_meaning = "lambda, weight of the KL term"

    def loss(self, model, xb, yb, logits, ce, state):
        half = len(xb) // 2
        if half == 0 or self.strength == 0:
            return ce
        logp = F.log_softmax(logits, dim=1).sort(dim=1, descending=True).values
        a, b = logp[:half], logp[half : 2 * half]
        kl = F.kl_div(a, b, log_target=True, reduction="batchmean")  # KL(b || a), b: the second half
        return ce + self.strength * kl
