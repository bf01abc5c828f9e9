"""Models: the frozen MAE ViT backbone and its weights, the pyramid neck, UperNet, the UNet baseline.

Build every model with :func:`build` from a :class:`ModelConfig` (or a ``TrainConfig``, which extends it).
"""

from typing import get_args

from demseg.models.backbone import MaeBackbone, build_backbone
from demseg.models.config import ModelConfig
from demseg.models.encoders import SHIPPED_ENCODERS, describe, shipped_names
from demseg.models.neck import ViTPyramidNeck
from demseg.models.precision import resolve_dtype, resolve_precision
from demseg.models.registry import MODELS, build, build_encoder, uses_backbone
from demseg.models.unet import UNet
from demseg.models.upernet import MaeUperNet, SegmentationHead, UperNetHead
from demseg.models.vit import (
    ARCHS,
    DEFAULT_TAP_BLOCKS,
    init_sincos_position_embeddings,
    mae_config,
    ordered_noise,
    sincos_position_embeddings,
)
from demseg.models.weights import load_encoder, save_encoder

MODEL_NAMES = get_args(ModelConfig.model_fields["model"].annotation)

__all__ = [
    "ARCHS",
    "DEFAULT_TAP_BLOCKS",
    "MODELS",
    "MODEL_NAMES",
    "SHIPPED_ENCODERS",
    "MaeBackbone",
    "MaeUperNet",
    "ModelConfig",
    "SegmentationHead",
    "UNet",
    "UperNetHead",
    "ViTPyramidNeck",
    "build",
    "build_backbone",
    "build_encoder",
    "describe",
    "init_sincos_position_embeddings",
    "load_encoder",
    "mae_config",
    "ordered_noise",
    "resolve_dtype",
    "resolve_precision",
    "save_encoder",
    "shipped_names",
    "sincos_position_embeddings",
    "uses_backbone",
]
