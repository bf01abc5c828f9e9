"""A small registry: build a segmentation model by name with keyword options."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from demseg.errors import DemsegError
from demseg.models.backbone import DEFAULT_TAP_BLOCKS, build_backbone
from demseg.models.unet import UNet
from demseg.models.upernet import MaeUperNet, SegmentationHead


def build_mae_upernet(
    num_classes: int = 2,
    arch: str | None = None,
    weights: str = "random",
    num_channels: int = 1,
    tap_blocks: Sequence[int] = DEFAULT_TAP_BLOCKS,
    dtype: torch.dtype | str = "auto",
    image_size: int = 224,
    head_channels: int = 256,
    neck_channels: int | None = None,
    aux_head: bool = False,
    norm: str = "batch",
) -> MaeUperNet:
    """Return the paper's model: a frozen MAE ViT backbone feeding a trainable neck + UperNet head."""
    backbone = build_backbone(arch, weights, num_channels, tap_blocks, dtype=dtype, image_size=image_size)
    head = SegmentationHead(
        backbone.embed_dim, num_classes, head_channels, neck_channels=neck_channels, aux_head=aux_head, norm=norm
    )
    return MaeUperNet(backbone, head)


def build_unet(
    num_classes: int = 2, num_channels: int = 1, base_width: int = 32, up_mode: str = "transposed"
) -> UNet:
    """Return the from-scratch UNet baseline."""
    return UNet(num_channels, num_classes, base_width=base_width, up_mode=up_mode)


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {"mae-upernet": build_mae_upernet, "unet": build_unet}
MODEL_NAMES = tuple(MODEL_BUILDERS)


def build_model(name: str, **kwargs) -> nn.Module:
    """Return the model registered as ``name`` built with ``kwargs``; unknown names or options raise DemsegError."""
    if name not in MODEL_BUILDERS:
        raise DemsegError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    builder = MODEL_BUILDERS[name]
    signature = inspect.signature(builder)
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown:
        raise DemsegError(
            f"model {name} has no option {', '.join(unknown)}; options: {', '.join(signature.parameters)}"
        )
    return builder(**kwargs)
