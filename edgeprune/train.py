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
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> list[float]:
    """Train in place; returns the mean loss per epoch. Same seed, same data -> same weights.

    ``defense`` (edgeprune.defend) may replace the objective, the training set (DMP), the batch sampler,
    and wrap model and optimizer (DP-SGD); its ``info()`` afterwards says what it did.
    ``validation``: held-out (x, y) for early stopping (``cfg.early_stopping`` epochs of patience; the
    weights of the best epoch are kept). ``on_epoch(k, model)`` runs after each epoch k = 1, 2, ..."""
    from edgeprune.defend.base import NoDefense, Step
    from edgeprune.errors import ConfigError

    defense = defense or NoDefense(None, None)
    if cfg.early_stopping and validation is None:
        raise ConfigError("early_stopping needs the defender's reference data (defense.reference_samples > 0)")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = defense.training_set(x, y)
    opt = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = max(1, math.ceil(len(x) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
        if cfg.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    )
    history: list[float] = []
    model.train()
    net, opt = defense.prepare(model, opt, len(x), cfg.batch_size, total)
    if masks:  # after prepare: a defense may re-initialise the weights (DMP trains from scratch)
        apply_masks(model, masks)
    stopper = _EarlyStopping(cfg.early_stopping, validation) if cfg.early_stopping else None
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
                if cfg.augment == "crop-flip" and xb.dim() == 4:
                    xb = crop_flip(xb, gen)
                logits = net(xb)
                ce = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
                loss = defense.loss(net, xb, yb, logits, ce, Step(epoch, step))
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
            if on_epoch is not None:
                on_epoch(epoch + 1, model)
            if stopper is not None and stopper.stop(model):
                break
    defense.finish(net)
    if stopper is not None:
        stopper.restore(model)
    model.eval()
    return history


class _EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss; stop after ``patience`` epochs
    without improvement."""

    def __init__(self, patience: int, validation):
        self.patience, self.validation = patience, validation
        self.best, self.best_state, self.bad = math.inf, None, 0
        self.epochs = self.best_epoch = 0

    def stop(self, model: nn.Module) -> bool:
        self.epochs += 1
        loss = float(F.cross_entropy(predict_logits(model, self.validation[0]), self.validation[1]))
        model.train()
        if loss < self.best:
            self.best, self.bad = loss, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_epoch = self.epochs
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def crop_flip(xb: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard image augmentation: a random crop of the zero-padded image and a horizontal flip with
    probability 1/2, per sample, drawn from the training generator (so seeded). Written here to avoid a
    torchvision dependency for two tensor operations."""
    n, _, h, w = xb.shape
    padded = F.pad(xb, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())
