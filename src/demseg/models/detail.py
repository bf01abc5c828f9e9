"""The detail path: a small full-resolution CNN on the input tile, fused into the UperNet decoder.

A plain ViT sees the tile through 16 px patches: its token maps are 14x14 for a 224 px tile, so a
frozen ViT + UperNet draws blobs, not footprints (PANGAEA, arXiv 2412.04204). As in ViTMatte
(arXiv 2305.15272) a few trainable convolutions on the tile itself give features at strides 1, 2
and 4; the UperNet's fused map (stride 4) is upsampled through them, so the logits come out sharp
at full resolution while the ViT supplies the context. The ViT features can still come from a
feature cache: only this head (which takes the tile's pixels) runs each step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from demseg.models.upernet import CLASSIFIER_DROPOUT, SegmentationHead, _resize, conv_norm_relu


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    """A stride-2 3x3 conv-BN-ReLU followed by a 3x3 conv-BN-ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        conv_norm_relu(out_channels, out_channels, 3),
    )


class DetailBranch(nn.Module):
    """Features of the input tile at strides 1, 2 and 4 (widths w, 2w, 4w)."""

    def __init__(self, in_channels: int, width: int = 16):
        super().__init__()
        self.stride1 = nn.Sequential(conv_norm_relu(in_channels, width, 3), conv_norm_relu(width, width, 3))
        self.stride2 = _down(width, 2 * width)
        self.stride4 = _down(2 * width, 4 * width)
        self.widths = (width, 2 * width, 4 * width)

    def forward(self, x: Tensor) -> list[Tensor]:
        """[(B, w, H, W), (B, 2w, H/2, W/2), (B, 4w, H/4, W/4)] for a (B, C, H, W) tile batch."""
        full = self.stride1(x)
        half = self.stride2(full)
        return [full, half, self.stride4(half)]


class Fuse(nn.Module):
    """Upsamples a coarse map to a detail map's size, concatenates them and mixes with two 3x3 convs."""

    def __init__(self, coarse_channels: int, detail_channels: int, out_channels: int):
        super().__init__()
        self.mix = nn.Sequential(conv_norm_relu(coarse_channels + detail_channels, out_channels, 3),
                                 conv_norm_relu(out_channels, out_channels, 3))

    def forward(self, coarse: Tensor, detail: Tensor) -> Tensor:
        """The (B, out, h, w) fusion of a coarse map and a detail map of size (h, w)."""
        return self.mix(torch.cat([_resize(coarse, detail.shape[-2:]), detail], dim=1))


class DetailHead(nn.Module):
    """UperNet on the ViT pyramid, refined at strides 4, 2 and 1 by the detail branch; full-resolution logits.

    In training mode with ``aux_head`` it also returns the UperNet's own stride-4 logits (deep
    supervision, loss weight 0.4), upsampled to the tile.
    """

    needs_image = True

    def __init__(self, embed_dim: int, in_channels: int, num_classes: int = 2, channels: int = 64,
                 neck_channels: int | None = None, detail_width: int = 16, aux_head: bool = False):
        super().__init__()
        self.context = SegmentationHead(embed_dim, num_classes, channels, neck_channels=neck_channels)
        self.detail = DetailBranch(in_channels, detail_width)
        full, half, quarter = self.detail.widths
        self.fuse_quarter = Fuse(channels, quarter, quarter)
        self.fuse_half = Fuse(quarter, half, half)
        self.fuse_full = Fuse(half, full, full)
        self.classifier = nn.Sequential(nn.Dropout2d(CLASSIFIER_DROPOUT), nn.Conv2d(full, num_classes, 1))
        self.aux_head = aux_head
        self.num_classes = num_classes

    def forward(self, features: list[Tensor], image: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """(B, classes, H, W) logits for the tapped token maps of a (B, C, H, W) tile batch and the tiles."""
        context = self.context.decoder.features(self.context.neck(features))
        full, half, quarter = self.detail(image)
        refined = self.fuse_full(self.fuse_half(self.fuse_quarter(context, quarter), half), full)
        logits = self.classifier(refined)
        if self.training and self.aux_head:
            return logits, _resize(self.context.decoder.classifier(context), image.shape[-2:])
        return logits
