"""The model zoo: CIFAR-style networks sized from the data set's input shape and class count.

Each factory takes ``in_shape`` (C, H, W) or (F,) and ``num_classes``; images smaller than 32x32
(sklearn digits is 8x8) get fewer down-sampling steps so every model works on every image set.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeprune.errors import ShapeError
from edgeprune.models.registry import MODELS


def _image_shape(name: str, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ShapeError(
            f"model {name!r} needs image inputs (C, H, W); this data set has inputs of shape {tuple(in_shape)}"
        )
    return in_shape  # type: ignore[return-value]


def _downsamples(size: int, wanted: int) -> int:
    """How many stride-2 steps a side of ``size`` pixels can take (at most ``wanted``)."""
    return max(0, min(wanted, int(math.log2(max(size, 1)))))


@MODELS.register("mlp")
class MLP(nn.Module):
    """Tabular multilayer perceptron (any input is flattened)."""

    def __init__(self, in_shape, num_classes, hidden=(512, 256)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(math.prod(in_shape))
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


@MODELS.register("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 (two 5x5 convs, three linear layers), padded so it takes 8x8 and larger images."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = _image_shape("lenet5", in_shape)
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 16 * (h // 4) * (w // 4)
        if flat == 0:
            raise ShapeError(f"lenet5 needs images of at least 4x4 pixels, got {h}x{w}")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


_VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg_name, in_shape, num_classes):
        super().__init__()
        c, h, w = _image_shape(cfg_name, in_shape)
        pools = _downsamples(min(h, w), 5)
        layers: list[nn.Module] = []
        seen_pools = 0
        for v in _VGG_CFG[cfg_name]:
            if v == "M":
                seen_pools += 1
                if seen_pools <= pools:
                    layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


@MODELS.register("vgg11")
def vgg11(in_shape, num_classes):
    """VGG-11 with BatchNorm, CIFAR-style classifier."""
    return VGG("vgg11", in_shape, num_classes)


@MODELS.register("vgg16")
def vgg16(in_shape, num_classes):
    """VGG-16 with BatchNorm, CIFAR-style classifier."""
    return VGG("vgg16", in_shape, num_classes)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn + shortcut. The inner width (conv1 out / conv2 in) is freely prunable."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_shape, num_classes, widths, blocks, name):
        super().__init__()
        c, h, w = _image_shape(name, in_shape)
        steps = _downsamples(min(h, w), len(widths) - 1)
        self.conv1 = nn.Conv2d(c, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks, strict=True)):
            stride = 2 if 0 < i <= steps else 1
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.fc(self.flatten(self.pool(self.layers(out))))


@MODELS.register("resnet18")
def resnet18(in_shape, num_classes):
    """ResNet-18, CIFAR stem (3x3 conv, no max-pool), 11.2M parameters."""
    return ResNet(in_shape, num_classes, (64, 128, 256, 512), (2, 2, 2, 2), "resnet18")


@MODELS.register("resnet20")
def resnet20(in_shape, num_classes):
    """ResNet-20 (He et al. CIFAR, widths 16-32-64), 0.27M parameters."""
    return ResNet(in_shape, num_classes, (16, 32, 64), (3, 3, 3), "resnet20")


@MODELS.register("resnet56")
def resnet56(in_shape, num_classes):
    """ResNet-56 (He et al. CIFAR, widths 16-32-64), 0.86M parameters."""
    return ResNet(in_shape, num_classes, (16, 32, 64), (9, 9, 9), "resnet56")


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise 3x3 -> project 1x1; the expanded width is prunable as one group."""

    def __init__(self, inp, out, expansion, stride):
        super().__init__()
        hidden = inp * expansion
        self.use_res = stride == 1 and inp == out
        self.conv1 = nn.Conv2d(inp, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.ReLU6(inplace=True)
        self.conv3 = nn.Conv2d(hidden, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + x if self.use_res else out


# (expansion, out_planes, num_blocks, stride): the CIFAR variant keeps stride 1 in the first stages.
_MBV2_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


@MODELS.register("mobilenetv2")
class MobileNetV2(nn.Module):
    """MobileNetV2, CIFAR strides: depthwise convs and inverted residuals."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = _image_shape("mobilenetv2", in_shape)
        steps = _downsamples(min(h, w), 3)
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act = nn.ReLU6(inplace=True)
        blocks = []
        inp = 32
        used = 0
        for expansion, out, n, stride in _MBV2_CFG:
            for j in range(n):
                s = 1
                if j == 0 and stride == 2 and used < steps:
                    s, used = 2, used + 1
                blocks.append(InvertedResidual(inp, out, expansion, s))
                inp = out
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(inp, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.act2 = nn.ReLU6(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(self.blocks(out))))
        return self.fc(self.flatten(self.pool(out)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (conv and linear layers)."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
        total += out.numel() * k

    def lin_hook(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *in_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(total)
