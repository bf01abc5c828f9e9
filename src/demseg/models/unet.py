"""The baseline: a UNet (Ronneberger et al. 2015) trained from scratch on the same few tiles.

Four 2x downsamplings (widths base, 2 base, 4 base, 8 base, bottleneck 16 base), double
conv-BN-ReLU blocks, skip connections, and either transposed-conv (the original) or bilinear
upsampling. Inputs must be a multiple of 16 px on each side.

Roads are long and a 4-level UNet sees about 180 px around a pixel; ``context_blocks`` adds
residual blocks of 3x3 convolutions dilated 2, 4, 8, ... at the bottleneck (stride 16), each
widening that view by 2 x 2 x dilation x 16 px, at the cost of a few bottleneck convolutions
(Yu & Koltun 2016's dilated context; ENet/D-LinkNet put the same at a road network's centre).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from demseg.errors import DemsegError

DOWN_LEVELS = 4
UP_MODES = ("transposed", "bilinear")


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Return two 3x3 conv-BN-ReLU layers."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _upsample(in_channels: int, out_channels: int, up_mode: str) -> nn.Module:
    """Return a 2x upsampling that also halves the width (transposed conv, or bilinear + 1x1 conv)."""
    if up_mode == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


class UpBlock(nn.Module):
    """Returns the upsampled coarse map concatenated with its skip and passed through a double conv."""

    def __init__(self, in_channels: int, out_channels: int, up_mode: str):
        super().__init__()
        self.up = _upsample(in_channels, out_channels, up_mode)
        self.conv = double_conv(2 * out_channels, out_channels)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        """Return the (B, out, 2h, 2w) map for a (B, in, h, w) coarse map and its (B, out, 2h, 2w) skip."""
        return self.conv(torch.cat([skip, self.up(coarse)], dim=1))


class DilatedContext(nn.Module):
    """Residual 3x3 conv-BN-ReLU blocks with dilations 2, 4, 8, ... at constant width."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=2 ** (k + 1), dilation=2 ** (k + 1), bias=False),
                          nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            for k in range(blocks))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


class UNet(nn.Module):
    """UNet returning (B, num_classes, H, W) logits for (B, in_channels, H, W) inputs."""

    def __init__(self, in_channels: int, num_classes: int, base_width: int = 32, up_mode: str = "transposed",
                 context_blocks: int = 0):
        super().__init__()
        if up_mode not in UP_MODES:
            raise DemsegError(f"unknown UNet upsampling {up_mode!r}; choose one of {', '.join(UP_MODES)}")
        widths = [base_width * 2**level for level in range(DOWN_LEVELS + 1)]
        self.stem = double_conv(in_channels, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), double_conv(widths[level], widths[level + 1]))
            for level in range(DOWN_LEVELS)
        )
        self.ups = nn.ModuleList(
            UpBlock(widths[level + 1], widths[level], up_mode) for level in reversed(range(DOWN_LEVELS))
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        self.context = DilatedContext(widths[-1], context_blocks) if context_blocks else None
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Return logits at the input's height and width (both must be multiples of 16 px)."""
        multiple = 2**DOWN_LEVELS
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise DemsegError(f"UNet input size {tuple(x.shape[-2:])} px is not a multiple of {multiple} px")
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        if self.context is not None:
            y = self.context(y)
        for up in self.ups:
            y = up(y, skips.pop())
        return self.classifier(y)
