"""UperNet head (Xiao et al. 2018) on the ViT pyramid, and the MAE + UperNet segmentation model.

Layout follows MMSegmentation's ``UPerHead`` as used for MAE/BEiT segmentation: a Pyramid Pooling
Module (bins 1, 2, 3, 6) on the coarsest level, an FPN (1x1 laterals, top-down sum, 3x3 convs),
all levels upsampled to the finest and concatenated, a 3x3 fuse conv, dropout 0.1 and a 1x1
classifier. The optional auxiliary FCN head reads the third pyramid level (1/16 scale).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from demseg.errors import DemsegError
from demseg.models.backbone import MaeBackbone
from demseg.models.neck import PYRAMID_LEVELS, ViTPyramidNeck

PPM_BINS = (1, 2, 3, 6)
AUX_LEVEL = 2  # third pyramid level, the identity-scale map (MMSegmentation's in_index=2)
CLASSIFIER_DROPOUT = 0.1
NORMS = ("batch", "group")
GROUP_NORM_GROUPS = 32


def _norm(channels: int, norm: str) -> nn.Module:
    """Return a BatchNorm or GroupNorm layer for ``channels``."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    # at least two channels per group: the 1x1 pyramid-pooling bin has nothing else to normalise over
    return nn.GroupNorm(math.gcd(GROUP_NORM_GROUPS, max(channels // 2, 1)), channels)


def conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, norm: str = "batch") -> nn.Sequential:
    """Return conv (same padding, no bias) -> norm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        _norm(out_channels, norm),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Return ``x`` bilinearly resized to ``size`` (unchanged when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """Returns a map fused from the input and its average pools over 1x1, 2x2, 3x3 and 6x6 bins."""

    def __init__(self, in_channels: int, channels: int, norm: str):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(bins), conv_norm_relu(in_channels, channels, 1, norm))
            for bins in PPM_BINS
        )
        self.bottleneck = conv_norm_relu(in_channels + len(PPM_BINS) * channels, channels, 3, norm)

    def forward(self, x: Tensor) -> Tensor:
        """Return the (B, channels, h, w) pyramid-pooled map of a (B, C, h, w) input."""
        pooled = [_resize(stage(x), x.shape[-2:]) for stage in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UperNetHead(nn.Module):
    """UperNet decoder: returns class logits at the finest pyramid level's resolution.

    In training mode with ``aux_head=True`` it returns ``(logits, aux_logits)``, the auxiliary
    logits coming from a small FCN on the third level; otherwise the logits alone.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        aux_head: bool = False,
        norm: str = "batch",
    ):
        super().__init__()
        if norm not in NORMS:
            raise DemsegError(f"unknown head norm {norm!r}; choose one of {', '.join(NORMS)}")
        self.num_classes = num_classes
        self.ppm = PyramidPooling(in_channels, channels, norm)
        self.laterals = nn.ModuleList(conv_norm_relu(in_channels, channels, 1, norm) for _ in range(PYRAMID_LEVELS - 1))
        self.fpn_convs = nn.ModuleList(conv_norm_relu(channels, channels, 3, norm) for _ in range(PYRAMID_LEVELS - 1))
        self.fuse = conv_norm_relu(PYRAMID_LEVELS * channels, channels, 3, norm)
        self.classifier = nn.Sequential(nn.Dropout2d(CLASSIFIER_DROPOUT), nn.Conv2d(channels, num_classes, 1))
        self.aux = (
            nn.Sequential(
                conv_norm_relu(in_channels, channels, 3, norm),
                nn.Dropout2d(CLASSIFIER_DROPOUT),
                nn.Conv2d(channels, num_classes, 1),
            )
            if aux_head
            else None
        )

    def _fpn(self, levels: list[Tensor]) -> list[Tensor]:
        """Return the FPN outputs, finest first: laterals summed top-down, then smoothed by 3x3 convs."""
        laterals = [lateral(level) for lateral, level in zip(self.laterals, levels[:-1], strict=True)]
        laterals.append(self.ppm(levels[-1]))
        for index in range(len(laterals) - 1, 0, -1):
            laterals[index - 1] = laterals[index - 1] + _resize(laterals[index], laterals[index - 1].shape[-2:])
        smoothed = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals[:-1], strict=True)]
        return [*smoothed, laterals[-1]]

    def features(self, levels: list[Tensor]) -> Tensor:
        """The fused (B, channels, h0, w0) map of a pyramid, finest first, before the classifier."""
        outputs = self._fpn(levels)
        finest = outputs[0].shape[-2:]
        return self.fuse(torch.cat([_resize(output, finest) for output in outputs], dim=1))

    def forward(self, levels: list[Tensor]) -> Tensor | tuple[Tensor, Tensor]:
        """Return logits (B, classes, h0, w0) for a pyramid, finest first (plus aux logits, see class doc)."""
        logits = self.classifier(self.features(levels))
        if self.training and self.aux is not None:
            return logits, self.aux(levels[AUX_LEVEL])
        return logits


def output_size_of(image_or_size: Tensor | tuple[int, int] | torch.Size) -> tuple[int, int]:
    """(H, W) of an input batch, or the size itself."""
    if isinstance(image_or_size, Tensor):
        return tuple(image_or_size.shape[-2:])
    return tuple(image_or_size)


class SegmentationHead(nn.Module):
    """The trainable part: pyramid neck + UperNet, fed by the backbone or by a feature cache.

    Returns logits upsampled bilinearly to the input's size (a pair ``(logits, aux_logits)`` in
    training mode when ``aux_head`` is on). It needs only the input's size, never its pixels.
    """

    needs_image = False

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = 2,
        channels: int = 256,
        neck_channels: int | None = None,
        aux_head: bool = False,
        norm: str = "batch",
    ):
        super().__init__()
        self.neck = ViTPyramidNeck(embed_dim, neck_channels)
        self.decoder = UperNetHead(self.neck.out_channels, num_classes, channels, aux_head=aux_head, norm=norm)
        self.num_classes = num_classes

    def forward(
        self, features: list[Tensor], output_size: Tensor | tuple[int, int] | torch.Size
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Return (B, classes, H, W) logits from the tapped token maps, at the size of ``output_size``
        (a size, or the input batch itself)."""
        output_size = output_size_of(output_size)
        outputs = self.decoder(self.neck(features))
        if isinstance(outputs, tuple):
            return tuple(_resize(output, output_size) for output in outputs)
        return _resize(outputs, output_size)


class MaeUperNet(nn.Module):
    """MAE backbone + trainable head (UperNet, or UperNet with a detail path); logits at the input size."""

    def __init__(self, backbone: MaeBackbone, head: nn.Module):
        super().__init__()
        if len(backbone.tap_blocks) != PYRAMID_LEVELS:
            raise DemsegError(f"MAE + UperNet needs {PYRAMID_LEVELS} tap blocks, got {list(backbone.tap_blocks)}")
        self.backbone = backbone
        self.head = head
        self.num_classes = head.num_classes

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Return (B, classes, H, W) logits for a (B, C, H, W) batch (see SegmentationHead for aux)."""
        return self.head(self.backbone(x), x)
