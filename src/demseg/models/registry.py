"""The one model builder: :func:`build` turns a :class:`ModelConfig` into a model, by a registry of names.

Train, evaluate, predict, probe, the benchmarks and the Python API all build models here, so a
CLI user and a Python user get the same model from the same config. Every path checks that the
backbone's weights were pre-trained on the config's channels and normalisation recipe. Adding a
model is one builder function and one ``MODELS`` entry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from demseg.data.normalise import recipe_channels
from demseg.errors import DemsegError
from demseg.models.backbone import MaeBackbone, build_backbone
from demseg.models.config import ModelConfig
from demseg.models.detail import DetailHead
from demseg.models.unet import UNet
from demseg.models.upernet import MaeUperNet, SegmentationHead


def build_encoder(config: ModelConfig, seed: int = 0) -> MaeBackbone:
    """The frozen backbone a config names, checked against the config's recipe and channels."""
    torch.manual_seed(seed)  # makes "random" backbone weights reproducible too
    channels = recipe_channels(config.recipe)
    backbone = build_backbone(config.arch, config.backbone_weights, channels, tuple(config.tap_blocks),
                              dtype=config.backbone_torch_dtype(), image_size=config.tile_size_px,
                              tuned_blocks=config.tuned_blocks())
    check_encoder_inputs(backbone, config)
    return backbone


def check_encoder_inputs(backbone: MaeBackbone, config: ModelConfig) -> None:
    """Refuse a backbone pre-trained on other inputs than the config's recipe produces."""
    trained_on = (backbone.weights_metadata or {}).get("normalisation")
    if trained_on and trained_on != config.recipe:
        raise DemsegError(f"backbone weights {config.backbone_weights!r} were pre-trained on {trained_on!r} "
                          f"inputs but this model normalises with {config.recipe!r}: pass --recipe {trained_on}")
    if backbone.num_channels != recipe_channels(config.recipe):
        raise DemsegError(f"backbone weights {config.backbone_weights!r} take {backbone.num_channels} channel(s) "
                          f"but recipe {config.recipe!r} makes {recipe_channels(config.recipe)}")


def _encoder_for(config: ModelConfig, backbone: MaeBackbone | None, seed: int) -> MaeBackbone:
    """A fresh encoder, or the shared one (a private copy when its blocks will be fine-tuned)."""
    if backbone is None:
        return build_encoder(config, seed)
    check_encoder_inputs(backbone, config)
    if backbone.tuned_blocks != config.tuned_blocks(backbone.num_blocks):
        raise DemsegError(f"the shared backbone tunes {backbone.tuned_blocks} blocks, the config asks "
                          f"finetune={config.finetune}")
    return copy.deepcopy(backbone) if backbone.tuned_blocks else backbone


def _mae_upernet(config: ModelConfig, backbone: MaeBackbone | None, seed: int) -> nn.Module:
    backbone = _encoder_for(config, backbone, seed)
    torch.manual_seed(seed)
    head = SegmentationHead(backbone.embed_dim, config.num_classes(), config.head_width,
                            neck_channels=config.neck_width or None, aux_head=config.aux_head)
    return MaeUperNet(backbone, head)


def _mae_detail(config: ModelConfig, backbone: MaeBackbone | None, seed: int) -> nn.Module:
    backbone = _encoder_for(config, backbone, seed)
    torch.manual_seed(seed)
    head = DetailHead(backbone.embed_dim, recipe_channels(config.recipe), config.num_classes(), config.head_width,
                      neck_channels=config.neck_width or None, detail_width=config.detail_width,
                      aux_head=config.aux_head)
    return MaeUperNet(backbone, head)


def _unet(config: ModelConfig, backbone: MaeBackbone | None, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return UNet(recipe_channels(config.recipe), config.num_classes(), base_width=config.unet_width,
                context_blocks=config.unet_context)


@dataclass(frozen=True)
class ModelEntry:
    """Everything demseg knows about one model, in one place."""

    build: Callable[[ModelConfig, MaeBackbone | None, int], nn.Module]
    backbone: bool  # built around a (frozen, cacheable) MAE backbone; its head is what training stores
    widths: tuple[str, ...]  # the config fields that size its trainable part (and must match an --init start)
    about: str


MODELS: dict[str, ModelEntry] = {
    "mae-upernet": ModelEntry(_mae_upernet, True, ("head_width", "neck_width"),
                              "MAE ViT + UperNet through blocks 3/5/7/11 (the paper's)"),
    "mae-detail": ModelEntry(_mae_detail, True, ("head_width", "neck_width", "detail_width"),
                             "the same plus a full-resolution convolutional detail path"),
    "unet": ModelEntry(_unet, False, ("unet_width", "unet_context"), "a UNet trained from scratch"),
}


def uses_backbone(name: str) -> bool:
    """True for models built around a (frozen, cacheable) MAE backbone."""
    return MODELS[name].backbone


def shaped_by(name: str) -> tuple[str, ...]:
    """The config fields that size model ``name``'s trainable weights (beyond model, task, recipe, outputs).

    A UNet is fully convolutional: it starts from a run trained on tiles of another size.
    """
    entry = MODELS[name]
    return entry.widths + (("arch", "tile_size_px") if entry.backbone else ())  # a ViT's position table


def build(config: ModelConfig, backbone: MaeBackbone | None = None, seed: int = 0) -> nn.Module:
    """The model ``config`` describes, its trainable parts seeded by ``seed``.

    ``backbone`` reuses an already built frozen encoder (experiments share one between runs);
    it is checked against the config's recipe and channels like a freshly loaded one.
    """
    if config.model not in MODELS:
        raise DemsegError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}")
    try:
        return MODELS[config.model].build(config, backbone, seed)
    except (MemoryError, RuntimeError) as exc:  # torch reports a failed allocation as a RuntimeError
        if isinstance(exc, RuntimeError) and "allocate" not in str(exc):
            raise
        widths = ", ".join(f"{name} {getattr(config, name)}" for name in MODELS[config.model].widths)
        raise DemsegError(f"the {config.model} model asked for ({widths}) does not fit in this machine's "
                          "memory") from exc
