"""What a segmentation model is: the fields :func:`demseg.models.build` reads, each default stated once.

``TrainConfig`` extends this with the training schedule, so a run's ``config.json`` is also its
model description; evaluate, predict, probe and the benchmarks rebuild models from it.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from demseg.data.normalise import DEFAULT_RECIPE
from demseg.data.tiles import DEFAULT_TILE_SIZE_PX
from demseg.models.precision import resolve_dtype, resolve_precision
from demseg.models.vit import DEFAULT_TAP_BLOCKS

DEFAULT_ENCODER = "dem-tiny"


class ModelConfig(BaseModel):
    """Everything that defines a segmentation model's architecture, weights and precision."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid", protected_namespaces=())
    model: Literal["mae-upernet", "mae-detail", "unet"] = Field(
        "mae-upernet", description="mae-upernet: MAE ViT + UperNet (the paper's); mae-detail: the same plus a "
                                   "full-resolution convolutional detail path; unet: UNet from scratch.")
    arch: Literal["tiny", "small", "base"] = Field("tiny", description="ViT size of the MAE backbone.")
    backbone_weights: str = Field(
        DEFAULT_ENCODER, description="Backbone weights: a shipped encoder (dem-tiny), random, a Hugging Face "
                                     "folder or hub id, an official MAE .pth, or demseg .safetensors.")
    tap_blocks: list[int] = Field(list(DEFAULT_TAP_BLOCKS),
                                  description="Transformer blocks (0-indexed) feeding the pyramid.")
    recipe: str = Field(DEFAULT_RECIPE, description="Normalisation recipe: channels joined by '+', e.g. "
                                                    "relief+slope or minmax (the paper's).")
    tile_size_px: int = Field(DEFAULT_TILE_SIZE_PX, gt=0, description="Tile side in pixels (a multiple of 16).")
    head_width: int = Field(64, gt=0, description="UperNet channel width (CPU-sized; the paper's "
                                                  "MMSegmentation head is 512).")
    neck_width: int = Field(64, ge=0, description="Project tokens to this width before the pyramid "
                                                  "(0 keeps the ViT width); cuts the head's cost on a CPU.")
    aux_head: bool = Field(False, description="Add the auxiliary FCN head (loss weight 0.4) during training.")
    auxiliary: list[Literal["vegetation"]] = Field(
        [], description="Auxiliary classes learnt as extra outputs beside the target (e.g. vegetation, from "
                        "labels that carry it, such as a synthetic world): trees become a class of their own "
                        "instead of plain background. Tiles without the class's labels only say 'not the target'.")
    unet_width: int = Field(16, gt=0, description="UNet base width (doubles over 4 levels; the paper's UNet: 32).")
    unet_context: int = Field(0, ge=0, le=6, description="Dilated context blocks at the UNet's bottleneck (dilations "
                                                        "2, 4, 8, ...): block k widens what each pixel sees by "
                                                        "2^(k+6) px, so 3 blocks add 448 px (224 m at 0.5 m). For "
                                                        "long structures such as roads; 0: the plain UNet.")
    detail_width: int = Field(16, gt=0, description="Width of mae-detail's full-resolution branch (doubles at "
                                                    "strides 2 and 4).")
    finetune: str = Field("none", description="Backbone blocks that train: none (frozen, the paper's), top-K (the "
                                              "last K blocks) or all.")
    layer_decay: float = Field(0.75, gt=0, le=1, description="Layer-wise learning-rate decay of fine-tuned blocks "
                                                             "(MAE's recipe): block i gets lr x decay^(depth - i).")
    backbone_dtype: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Frozen backbone precision; auto: the faster of bf16 and fp32 on this machine "
                            "(measured once and cached).")
    amp: Literal["auto", "on", "off"] = Field(
        "auto", description="bf16 autocast for the trainable part; auto: on where bf16 is measured faster.")

    @field_validator("finetune")
    @classmethod
    def _finetune_form(cls, value: str) -> str:
        if value in ("none", "all") or re.fullmatch(r"top-[1-9][0-9]*", value):
            return value
        raise ValueError(f"finetune must be none, all or top-K (e.g. top-4), got {value!r}")

    def num_classes(self) -> int:
        """Output classes: background, the target, then each auxiliary class."""
        return 2 + len(self.auxiliary)

    def tuned_blocks(self, depth: int = 12) -> int:
        """How many of a ``depth``-block encoder's last blocks train (0: frozen)."""
        if self.finetune == "none":
            return 0
        return depth if self.finetune == "all" else int(self.finetune.removeprefix("top-"))

    @field_validator("neck_width", mode="before")
    @classmethod
    def _none_keeps_width(cls, value):
        return 0 if value is None else value  # runs written before 0.2 stored null for "keep the width"

    def backbone_torch_dtype(self) -> torch.dtype:
        """The backbone dtype after resolving ``auto`` for this machine."""
        return resolve_dtype(self.backbone_dtype)

    def use_amp(self) -> bool:
        """Whether the trainable part runs under bf16 autocast on this machine."""
        return resolve_precision("auto") == "bf16" if self.amp == "auto" else self.amp == "on"
