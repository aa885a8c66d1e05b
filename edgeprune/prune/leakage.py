"""Leakage-aware channel importance: keep what generalises, prune what memorises first.

For every prunable channel group two first-order Taylor estimates are taken (removing a channel sets its
weights w to zero, changing a function f by about -w . df/dw):
- task importance |w . dL_ref/dw| from the task loss on the defender's held-out reference data (what the
  channel contributes to accuracy on samples it was not trained on);
- memorisation -(w . dG/dw) with G = L_members - L_ref, the member / reference loss gap (how much removing
  the channel would raise the members' loss relative to held-out loss, i.e. close the gap attacks read).
Score = task / mean(task) - beta * memorisation / mean(|memorisation|) per group; the lowest scores go first.
Torch-Pruning has no such criterion, so it is written here on its Importance protocol.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _grads(model: nn.Module, loss_fn) -> dict[int, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    out = {id(p): p.grad.detach().clone() for p in model.parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _mean_loss(model, batches) -> torch.Tensor:
    total = sum(F.cross_entropy(model(x), y, reduction="sum") for x, y in batches)
    return total / sum(len(y) for _, y in batches)


class LeakageImportance:
    def __init__(self, beta: float = 1.0):
        self.beta = beta
        self.task: dict[int, torch.Tensor] = {}
        self.gap: dict[int, torch.Tensor] = {}

    def prepare(self, model: nn.Module, members, reference) -> None:
        """Gradients of the held-out task loss and of the member - reference loss gap (eval mode)."""
        was = model.training
        model.eval()
        with torch.enable_grad():
            self.task = _grads(model, lambda: _mean_loss(model, reference))
            self.gap = _grads(model, lambda: _mean_loss(model, members) - _mean_loss(model, reference))
        model.train(was)

    @torch.no_grad()
    def __call__(self, group):
        from torch_pruning.pruner import function

        if not self.task:
            raise RuntimeError("LeakageImportance.prepare() was not called")
        size = len(group[0].idxs)
        task, mem, count = torch.zeros(size), torch.zeros(size), torch.zeros(size)
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if not isinstance(layer, (nn.Conv2d, nn.Linear)) or id(layer.weight) not in self.task:
                continue
            w = layer.weight.data
            gt, gg = self.task[id(layer.weight)], self.gap[id(layer.weight)]
            if dep.handler in (function.prune_conv_out_channels, function.prune_linear_out_channels):
                w, gt, gg = (t[idxs].flatten(1) for t in (w, gt, gg))
            elif dep.handler in (function.prune_conv_in_channels, function.prune_linear_in_channels):
                if isinstance(layer, nn.Conv2d) and layer.groups > 1:
                    continue  # depthwise / grouped inputs follow their output channels
                w, gt, gg = (t.transpose(0, 1)[idxs].flatten(1) for t in (w, gt, gg))
            else:
                continue
            # several inputs (e.g. a Linear after flatten) can map to one root channel: accumulate by root
            root = torch.as_tensor(group[i].root_idxs, dtype=torch.long)
            task.scatter_add_(0, root, (w * gt).sum(1).abs())
            mem.scatter_add_(0, root, -(w * gg).sum(1))
            count.scatter_add_(0, root, torch.ones(len(root)))
        if not count.any():
            return None
        task, mem = task / count.clamp(min=1), mem / count.clamp(min=1)
        return task / task.mean().clamp(min=1e-12) - self.beta * mem / mem.abs().mean().clamp(min=1e-12)
