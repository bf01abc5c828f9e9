"""Models: the frozen MAE ViT backbone and its weights, the pyramid neck, UperNet, the UNet baseline."""

from demseg.models.backbone import (
    ARCHS,
    DEFAULT_TAP_BLOCKS,
    MaeBackbone,
    build_backbone,
    init_sincos_position_embeddings,
    mae_config,
    ordered_noise,
    resolve_dtype,
    sincos_position_embeddings,
)
from demseg.models.neck import ViTPyramidNeck
from demseg.models.registry import MODEL_NAMES, build_mae_upernet, build_model, build_unet
from demseg.models.unet import UNet
from demseg.models.upernet import MaeUperNet, SegmentationHead, UperNetHead
from demseg.models.weights import load_encoder, save_encoder

__all__ = [
    "ARCHS",
    "DEFAULT_TAP_BLOCKS",
    "MODEL_NAMES",
    "MaeBackbone",
    "MaeUperNet",
    "SegmentationHead",
    "UNet",
    "UperNetHead",
    "ViTPyramidNeck",
    "build_backbone",
    "build_mae_upernet",
    "build_model",
    "build_unet",
    "init_sincos_position_embeddings",
    "load_encoder",
    "mae_config",
    "ordered_noise",
    "resolve_dtype",
    "save_encoder",
    "sincos_position_embeddings",
]
