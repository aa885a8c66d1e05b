"""Channel groups found from one traced forward pass (torch.fx + shape propagation).

A group is a producer layer (Conv2d with groups=1, or Linear) whose output channels flow through
channel-wise layers (BatchNorm, activations, pooling, dropout, depthwise convs, flatten) into exactly one
consumer (Conv2d or Linear). Removing channel c means removing the producer's output c, the matching
entries of every channel-wise layer on the way, and the consumer's input c (c*HW..c*HW+HW-1 after a flatten).
Channels that reach an add, a concat, several consumers or the model output are coupled; they are left
whole here and reported with the reason (the pruning-engine issue handles coupled groups).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from edgeprune.errors import UserError

_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.ELU,
    nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
_PASS_FUNCS = {F.relu, F.relu6, F.gelu, F.silu, torch.relu, torch.sigmoid, torch.tanh, F.dropout,
               F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d}


@dataclass
class ChannelGroup:
    producer: str
    channels: int
    norms: list[str] = field(default_factory=list)  # BatchNorm layers on the path
    depthwise: list[str] = field(default_factory=list)  # depthwise convs on the path
    consumer: str = ""
    flatten_factor: int = 1  # consumer inputs per channel (H*W when a flatten is on the path)

    def to_json(self) -> dict:
        return {
            "producer": self.producer, "channels": self.channels, "norms": self.norms,
            "depthwise": self.depthwise, "consumer": self.consumer, "flatten_factor": self.flatten_factor,
        }


@dataclass
class GraphReport:
    groups: list[ChannelGroup]
    skipped: dict[str, str]  # producer -> why its channels are not prunable here


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _is_producer(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)


def trace(model: nn.Module, in_shape: tuple[int, ...]) -> fx.GraphModule:
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        raise UserError(
            f"cannot trace {type(model).__name__} for structured pruning ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    was_training = model.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(2, *in_shape))
    model.train(was_training)
    return gm


def find_groups(model: nn.Module, in_shape: tuple[int, ...]) -> GraphReport:
    gm = trace(model, in_shape)
    modules = dict(gm.named_modules())
    groups: list[ChannelGroup] = []
    skipped: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not _is_producer(modules[node.target]):
            continue
        prod = modules[node.target]
        channels = prod.out_features if isinstance(prod, nn.Linear) else prod.out_channels
        group = ChannelGroup(producer=node.target, channels=channels)
        why = _follow(node, modules, group)
        if why:
            skipped[node.target] = why
        else:
            groups.append(group)
    return GraphReport(groups, skipped)


def _follow(node: fx.Node, modules: dict[str, nn.Module], group: ChannelGroup) -> str | None:
    """Walk from the producer to its consumer; return a reason when the channels are coupled."""
    cur = node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return f"output of {cur.name} is used by {len(users)} nodes (coupled channels)"
        nxt = users[0]
        if nxt.op == "output":
            return "feeds the model output (class logits)"
        if nxt.op == "call_module":
            m = modules[nxt.target]
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                group.norms.append(nxt.target)
            elif _is_depthwise(m):
                group.depthwise.append(nxt.target)
            elif isinstance(m, nn.Flatten):
                shape = cur.meta["tensor_meta"].shape
                group.flatten_factor *= int(torch.Size(shape[2:]).numel())
            elif _is_producer(m):
                group.consumer = nxt.target
                return None
            elif not isinstance(m, _PASS_MODULES):
                return f"reaches {type(m).__name__} {nxt.target!r}, which has no pruning rule"
        elif nxt.op == "call_function" and nxt.target in _PASS_FUNCS:
            pass
        elif nxt.op == "call_function" and nxt.target is torch.flatten:
            shape = cur.meta["tensor_meta"].shape
            group.flatten_factor *= int(torch.Size(shape[2:]).numel())
        elif nxt.op == "call_function" and nxt.target in (operator.add, torch.add, torch.cat):
            return f"reaches {getattr(nxt.target, '__name__', nxt.target)} (coupled channels)"
        else:
            return f"reaches {nxt.op} {getattr(nxt.target, '__name__', nxt.target)}, which has no pruning rule"
        if nxt.args and nxt.args[0] is not cur:
            return f"{nxt.name} takes these channels in a position other than its first input"
        cur = nxt
