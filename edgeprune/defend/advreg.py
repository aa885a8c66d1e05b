"""Min-max adversarial regularization (Nasr, Shokri & Houmansadr, CCS '18), the "min-max game" MCMIA
(IJCAI '21) combines with pruning.

Each step first trains an inference model h(prediction vector, one-hot label) -> P(member) to tell the
current member batch from a reference batch (maximising its gain), then adds lambda * gain to the target's
loss, so the target learns to make members and references indistinguishable. As in Nasr et al. (and the
pruning-MIA authors' code), h sees the prediction vector in class order, not sorted, beside the label, so it
can read the confidence of the true class. Written here: no maintained library implements it for arbitrary
torch models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.defend.base import DEFENSES, Defense


class InferenceModel(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.pred = nn.Sequential(nn.Linear(num_classes, 64), nn.ReLU())
        self.label = nn.Sequential(nn.Linear(num_classes, 32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(96, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, probs, onehot):
        return self.head(torch.cat([self.pred(probs), self.label(onehot)], 1)).squeeze(1)


@DEFENSES.register("advreg")
class AdvReg(Defense):
    name = "advreg"
    default_strength = 1.0
    strength_meaning = "lambda, weight of the inference model's gain"
    needs = ("reference",)
    inference_steps = 1

    def prepare(self, model, optimizer, n, batch_size, steps):
        torch.manual_seed(self.seed + 11)
        device = next(model.parameters()).device
        self.h = InferenceModel(self._classes(model)).to(device)  # initialised on the CPU: same weights everywhere
        self.h_opt = torch.optim.Adam(self.h.parameters(), lr=1e-3)
        return model, optimizer

    def _classes(self, model):
        with torch.no_grad():
            was = model.training
            model.eval()
            c = model(self.reference[0][:2]).shape[1]
            model.train(was)
        return c

    def _features(self, logits, y):
        return F.softmax(logits, dim=1), F.one_hot(y, logits.shape[1]).float()

    def loss(self, model, xb, yb, logits, ce, state):
        xr, yr = self.reference_batch(len(xb))
        ref_logits = model(xr)
        # maximise the attack's gain on (members, references), target fixed
        for _ in range(self.inference_steps):
            s_in = self.h(*self._features(logits.detach(), yb))
            s_out = self.h(*self._features(ref_logits.detach(), yr))
            h_loss = F.binary_cross_entropy_with_logits(s_in, torch.ones_like(s_in)) + \
                F.binary_cross_entropy_with_logits(s_out, torch.zeros_like(s_out))
            self.h_opt.zero_grad(set_to_none=True)
            h_loss.backward()
            self.h_opt.step()
        # minimise the target's loss plus lambda * the attack's gain, attack fixed
        for p in self.h.parameters():
            p.requires_grad_(False)
        gain = F.logsigmoid(self.h(*self._features(logits, yb))).mean()  # Nasr et al.: the members' term
        for p in self.h.parameters():
            p.requires_grad_(True)
        return ce + self.strength * gain
