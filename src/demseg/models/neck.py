"""The neck that turns four same-size ViT token maps into a feature pyramid.

A plain ViT keeps one resolution (1/16 of the input for 16 px patches); UperNet wants four. As in
BEiT/MAE segmentation (MMSegmentation's ``Feature2Pyramid``) the maps of the tapped blocks are
rescaled by 4x up, 2x up, 1x and 2x down, giving strides 4, 8, 16 and 32 px.
"""

from __future__ import annotations

from torch import Tensor, nn

PYRAMID_LEVELS = 4


def _upsample_4x(channels: int) -> nn.Sequential:
    """Return two stride-2 transposed convolutions with BatchNorm + GELU between them."""
    return nn.Sequential(
        nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
        nn.BatchNorm2d(channels),
        nn.GELU(),
        nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
    )


class ViTPyramidNeck(nn.Module):
    """Maps four (B, D, h, w) token maps to a pyramid of (4h, 4w), (2h, 2w), (h, w) and (h/2, w/2) maps.

    With ``out_channels`` different from ``embed_dim`` each map is first projected by a 1x1
    convolution (cheaper than rescaling at full width).
    """

    def __init__(self, embed_dim: int, out_channels: int | None = None):
        super().__init__()
        self.out_channels = out_channels or embed_dim
        self.projections = nn.ModuleList(
            nn.Identity() if self.out_channels == embed_dim else nn.Conv2d(embed_dim, self.out_channels, 1)
            for _ in range(PYRAMID_LEVELS)
        )
        channels = self.out_channels
        self.rescales = nn.ModuleList([
            _upsample_4x(channels),
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Return the four pyramid levels, finest first."""
        if len(features) != PYRAMID_LEVELS:
            raise ValueError(f"the pyramid neck takes {PYRAMID_LEVELS} token maps, got {len(features)}")
        return [
            rescale(project(feature))
            for feature, project, rescale in zip(features, self.projections, self.rescales, strict=True)
        ]
