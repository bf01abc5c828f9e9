"""The MAE ViT encoder's shared facts: sizes, the sin-cos position table, ordered masking noise.

Both :mod:`demseg.models.backbone` (the frozen encoder downstream) and
:mod:`demseg.models.weights` (every source of encoder weights) import this module; neither
imports the other's internals. Two behaviours of ``transformers`` 5.x are handled here
(``tests/test_models.py`` pins both):

* a freshly built ``ViTMAEModel`` / ``ViTMAEForPreTraining`` has all-zero position embeddings
  (encoder and decoder): :func:`init_sincos_position_embeddings` fills the fixed 2-D sin-cos table;
* with ``mask_ratio=0`` the embeddings still shuffle the tokens by ``argsort(noise)``:
  :func:`ordered_noise` keeps them in patch order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import ViTMAEConfig, ViTMAEModel

from demseg.errors import DemsegError

# Encoder sizes follow the ViT/MAE releases; decoder sizes for tiny/small are ours (MAE used 8x512 for all).
ARCHS: dict[str, dict] = {
    "tiny": {
        "hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768,
        "decoder_hidden_size": 128, "decoder_num_hidden_layers": 4, "decoder_num_attention_heads": 4,
        "decoder_intermediate_size": 512,
    },
    "small": {
        "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
        "decoder_hidden_size": 256, "decoder_num_hidden_layers": 4, "decoder_num_attention_heads": 8,
        "decoder_intermediate_size": 1024,
    },
    "base": {
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
        "decoder_hidden_size": 512, "decoder_num_hidden_layers": 8, "decoder_num_attention_heads": 16,
        "decoder_intermediate_size": 2048,
    },
    "large": {
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
        "decoder_hidden_size": 512, "decoder_num_hidden_layers": 8, "decoder_num_attention_heads": 16,
        "decoder_intermediate_size": 2048,
    },
}
ENCODER_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
DEFAULT_TAP_BLOCKS = (3, 5, 7, 11)
# the official MAE builds its LayerNorms with eps 1e-6; transformers' default (1e-12) would not reproduce it
MAE_LAYER_NORM_EPS = 1e-6


def arch_spec(arch: str) -> dict:
    """Return the size table of a named architecture; unknown names raise DemsegError."""
    if arch not in ARCHS:
        raise DemsegError(f"unknown backbone architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[arch]


def arch_name_of(config: ViTMAEConfig) -> str:
    """Return the ARCHS name whose encoder sizes match ``config``, or "custom"."""
    sizes = tuple(getattr(config, field) for field in ENCODER_FIELDS)
    for name, spec in ARCHS.items():
        if sizes == tuple(spec[field] for field in ENCODER_FIELDS):
            return name
    return "custom"


def mae_config(
    arch: str,
    num_channels: int = 1,
    image_size: int = 224,
    patch_size: int = 16,
    decoder_layers: int | None = None,
    decoder_width: int | None = None,
    mask_ratio: float = 0.75,
) -> ViTMAEConfig:
    """Return a ViTMAEConfig for a named architecture (decoder sizes from ARCHS unless overridden)."""
    spec = dict(arch_spec(arch))
    if image_size % patch_size:
        raise DemsegError(f"image size {image_size} px is not a multiple of the patch size {patch_size} px")
    if decoder_layers is not None:
        spec["decoder_num_hidden_layers"] = decoder_layers
    if decoder_width is not None:
        if decoder_width % spec["decoder_num_attention_heads"]:
            raise DemsegError(
                f"decoder width {decoder_width} is not divisible by {spec['decoder_num_attention_heads']} heads"
            )
        spec["decoder_hidden_size"] = decoder_width
        spec["decoder_intermediate_size"] = 4 * decoder_width
    return ViTMAEConfig(
        **spec,
        num_channels=num_channels,
        image_size=image_size,
        patch_size=patch_size,
        mask_ratio=mask_ratio,
        layer_norm_eps=MAE_LAYER_NORM_EPS,
    )


def _sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """Return (len(positions), dim) features [sin | cos] of ``positions`` at geometric frequencies."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_position_embeddings(embed_dim: int, grid_height: int, grid_width: int) -> Tensor:
    """Return the fixed MAE 2-D sin-cos table, (1 + H*W, D) float32: a zero CLS row, then patches row-major.

    Same values as ``get_2d_sincos_pos_embed`` in facebookresearch/mae: the first half of each row
    codes the patch's column, the second half its row (MAE's ``meshgrid(w, h)`` calls the column
    grid "h"; released checkpoints depend on that order).
    """
    if embed_dim % 4:
        raise DemsegError(f"sin-cos position embeddings need a width divisible by 4, got {embed_dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_height), torch.arange(grid_width), indexing="ij")
    half = embed_dim // 2
    patch_rows = torch.cat([_sincos_1d(cols.flatten(), half), _sincos_1d(rows.flatten(), half)], dim=1)
    cls_row = torch.zeros(1, embed_dim, dtype=torch.float64)
    return torch.cat([cls_row, patch_rows]).float()


def patch_grid(encoder: ViTMAEModel) -> tuple[int, int]:
    """Return the (rows, columns) of the patch grid the encoder was built for."""
    patches = encoder.embeddings.patch_embeddings
    return patches.image_size[0] // patches.patch_size[0], patches.image_size[1] // patches.patch_size[1]


def init_sincos_position_embeddings(model: nn.Module) -> None:
    """Fill the fixed sin-cos position embeddings of a ViTMAEModel or ViTMAEForPreTraining in place.

    Covers the encoder table and, for a pre-training model, the decoder table; CLS rows stay zero.
    """
    encoder = model if isinstance(model, ViTMAEModel) else model.vit
    grid_height, grid_width = patch_grid(encoder)
    tables = [encoder.embeddings.position_embeddings]
    if hasattr(model, "decoder"):
        tables.append(model.decoder.decoder_pos_embed)
    with torch.no_grad():
        for table in tables:
            values = sincos_position_embeddings(table.shape[-1], grid_height, grid_width)
            table.copy_(values.unsqueeze(0).to(table.dtype))


def ordered_noise(batch: int, num_patches: int, device: torch.device | str | None = None) -> Tensor:
    """Return (batch, num_patches) masking noise whose argsort is the identity, so tokens stay in patch order.

    ViTMAE shuffles tokens by ``argsort(noise)`` even when ``mask_ratio`` is 0; random noise would
    hand the head a permuted token map.
    """
    return torch.arange(num_patches, dtype=torch.float32, device=device).repeat(batch, 1)
