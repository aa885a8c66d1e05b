"""The one training loop. Defenses plug in as extra loss terms; pruning masks keep pruned weights at zero."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.progress import progress
from edgeprune.recipe import TrainConfig

# (model, x, y, logits) -> scalar added to the cross-entropy
LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    loss_terms: Sequence[LossTerm] = (),
    masks: dict[str, torch.Tensor] | None = None,
    description: str = "train",
    defense=None,
) -> list[float]:
    """Train in place; returns the mean loss per epoch. Same seed, same data -> same weights.

    ``defense`` (edgeprune.defend) may replace the objective, the batch sampler, and wrap model and
    optimizer (DP-SGD); its ``info()`` afterwards says what it did."""
    from edgeprune.defend.base import NoDefense, Step

    defense = defense or NoDefense(None, None)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = max(1, math.ceil(len(x) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
        if cfg.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    )
    if masks:
        apply_masks(model, masks)
    history: list[float] = []
    model.train()
    net, opt = defense.prepare(model, opt, len(x), cfg.batch_size, total)
    step = 0
    with progress() as bar:
        task = bar.add_task(description, total=total)
        for epoch in range(cfg.epochs):
            running, seen = 0.0, 0
            batches = defense.epoch_batches(len(x), cfg.batch_size, gen)
            for idx in batches:
                bar.advance(task)
                if idx.numel() < 2 and len(x) >= 2:  # BatchNorm needs two samples
                    continue
                xb, yb = x[idx], y[idx]
                logits = net(xb)
                loss = defense.loss(net, xb, yb, logits, F.cross_entropy(logits, yb), Step(epoch, step))
                for term in loss_terms:
                    loss = loss + term(net, xb, yb, logits)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if masks:
                    apply_masks(model, masks)
                running += float(loss.detach()) * len(idx)
                seen += len(idx)
            history.append(running / max(seen, 1))
    defense.finish(net)
    model.eval()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())
