"""The configuration of one training run, saved with it (and read back by evaluate and predict)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from demseg.data.normalise import DEFAULT_RECIPE


class TrainConfig(BaseModel):
    """Everything that defines a training run; every field is recorded in the run's config.json."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    task: Literal["buildings", "roads"] = Field("buildings", description="Target class.")
    model: Literal["mae-upernet", "unet"] = Field("mae-upernet", description="Frozen MAE + UperNet, or UNet.")
    arch: Literal["tiny", "small", "base"] = Field("tiny", description="ViT size of the MAE backbone.")
    backbone_weights: str = Field("random", description="random, a HF dir/hub id, an MAE .pth or demseg .safetensors")
    tap_blocks: list[int] = Field([3, 5, 7, 11], description="Transformer blocks (0-indexed) feeding the pyramid.")
    recipe: str = Field(DEFAULT_RECIPE, description="Normalisation recipe (channels joined by '+').")
    tile_size_px: int = Field(224, gt=0, description="Tile side in pixels.")
    pixel_size_m: float | None = Field(None, description="Pixel size of the training data (set from the data).")
    train_tiles: int = Field(10, gt=0, description="Number of training tiles (a nested subset for this seed).")
    val_tiles: int = Field(50, ge=0, description="Validation tiles (constant across budgets).")
    seed: int = Field(0, ge=0, description="Fixes the training subset, initialisation and sampling.")
    split_seed: int = Field(0, ge=0, description="Fixes the train/validation split (shared by all seeds).")
    iters: int = Field(3000, gt=0, description="Optimisation steps.")
    batch_size: int = Field(8, gt=0, description="Tiles per step.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Linear warm-up share of the iterations.")
    poly_power: float = Field(0.9, gt=0, description="Polynomial decay power after warm-up.")
    val_every: int = Field(150, gt=0, description="Validate every N iterations; the best-IoU state is kept.")
    head_width: int = Field(256, gt=0, description="UperNet channel width.")
    neck_width: int | None = Field(None, gt=0, description="Project tokens to this width before the pyramid "
                                   "rescaling (None: the backbone width). Cuts the head's cost on a CPU.")
    aux_head: bool = Field(False, description="Add the auxiliary FCN head (weight 0.4) during training.")
    unet_width: int = Field(32, gt=0, description="UNet base width (doubles over 4 levels).")
    cached: bool = Field(True, description="Train the head from a feature cache (backbone run once per view).")
    cache_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Storage precision of cached features.")
    views: int = Field(8, ge=1, le=8, description="Dihedral views per tile (augmentation).")
    backbone_dtype: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Precision of the frozen backbone; auto = bf16 where the CPU has native bf16 "
                            "(AVX512-BF16 / AMX), else fp32 (emulated bf16 is ~50x slower than fp32).")
    amp: Literal["auto", "on", "off"] = Field("auto", description="bf16 autocast for the trainable part.")
    min_labelled_fraction: float = Field(0.5, ge=0, le=1, description="Tiles must be this labelled for the task.")
    min_valid_fraction: float = Field(0.75, ge=0, le=1, description="Tiles need this much valid elevation.")

    def backbone_torch_dtype(self) -> torch.dtype:
        """The backbone dtype after resolving ``auto`` for this machine."""
        if self.backbone_dtype == "auto":
            return torch.bfloat16 if fast_bf16() else torch.float32
        return torch.bfloat16 if self.backbone_dtype == "bf16" else torch.float32

    def use_amp(self) -> bool:
        """Whether the trainable part runs under bf16 autocast on this machine."""
        return fast_bf16() if self.amp == "auto" else self.amp == "on"


def fast_bf16() -> bool:
    """True where this CPU computes bf16 natively (AVX512-BF16 or AMX); else bf16 is emulated and slow."""
    from demseg.models.backbone import fastest_cpu_dtype

    return fastest_cpu_dtype() == torch.bfloat16
