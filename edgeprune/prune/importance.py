"""Channel importance criteria: ``criterion(model, group) -> scores`` (one score per channel)."""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.prune.graph import ChannelGroup
from edgeprune.registry import Registry

IMPORTANCE: Registry = Registry("importance criterion")


def _out_weight(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    w = model.get_submodule(group.producer).weight.detach()
    return w.reshape(w.shape[0], -1)


@IMPORTANCE.register("l1")
def l1(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    return _out_weight(model, group).abs().sum(1)


@IMPORTANCE.register("l2")
def l2(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    return _out_weight(model, group).pow(2).sum(1).sqrt()
