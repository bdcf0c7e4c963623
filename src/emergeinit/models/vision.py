"""Image classifiers for the built-in model specs: MLP, VGG-style CNN, small ResNet.

Plain ``nn.Sequential`` stacks where possible, so module hooks and ``torch.fx`` both read them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    batch_norm: bool = False,
    bias: bool = True,
) -> nn.Sequential:
    """Flatten -> [Linear -> (BatchNorm1d) -> ReLU] per hidden width -> Linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for out in hidden:
        layers.append(nn.Linear(width, out, bias=bias))
        if batch_norm:
            layers.append(nn.BatchNorm1d(out))
        layers.append(nn.ReLU())
        width = out
    layers.append(nn.Linear(width, num_classes, bias=bias))
    return nn.Sequential(*layers)


def vgg_cnn(
    input_shape: tuple[int, int, int],
    plan: Sequence[int | str],
    num_classes: int,
    *,
    batch_norm: bool = False,
    bias: bool = True,
) -> nn.Sequential:
    """VGG-style stack: 3x3 convs (padding 1) with ReLU, ``"M"`` = 2x2 max pool, Flatten, Linear."""
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
            continue
        assert isinstance(item, int)
        layers.append(nn.Conv2d(channels, item, 3, padding=1, bias=bias))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU())
        channels = item
    if height < 1 or width < 1:
        raise ValueError("too many max pools for the input size")
    layers += [nn.Flatten(), nn.Linear(channels * height * width, num_classes, bias=bias)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: conv-(bn)-relu-conv-(bn) plus a shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, batch_norm: bool):
        super().__init__()
        norm = nn.BatchNorm2d if batch_norm else nn.Identity
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=not batch_norm)
        self.bn1 = norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=not batch_norm)
        self.bn2 = norm(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=not batch_norm),
                norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet: stem conv, stages of basic blocks (stride 2 between stages), GAP, Linear."""

    def __init__(
        self,
        in_channels: int,
        stages: Sequence[tuple[int, int]],
        num_classes: int,
        *,
        batch_norm: bool = False,
    ):
        super().__init__()
        if not stages:
            raise ValueError("a ResNet needs at least one stage")
        norm = nn.BatchNorm2d if batch_norm else nn.Identity
        first = stages[0][0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, 1, 1, bias=not batch_norm), norm(first), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        channels = first
        for index, (width, count) in enumerate(stages):
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, batch_norm=batch_norm))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))
