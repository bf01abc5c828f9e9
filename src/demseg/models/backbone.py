"""The frozen Masked-AutoEncoder ViT encoder that feeds the segmentation head.

Recipe (arXiv 2309.03367, after He et al. 2021): a ViT-Base/16 MAE encoder, 224 px input,
frozen; the token maps after transformer blocks 3, 5, 7 and 11 (0-indexed) become the four
pyramid levels of an UperNet head. Two behaviours of ``transformers`` 5.x matter here and are
handled in this module (``tests/test_models.py`` pins both):

* a freshly built ``ViTMAEModel`` / ``ViTMAEForPreTraining`` has all-zero position embeddings
  (encoder and decoder): :func:`init_sincos_position_embeddings` fills the fixed 2-D sin-cos table;
* with ``mask_ratio=0`` the embeddings still shuffle the tokens by ``argsort(noise)``:
  :func:`ordered_noise` keeps them in patch order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

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
DTYPE_NAMES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}


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


def fastest_cpu_dtype() -> torch.dtype:
    """Return bfloat16 where the CPU computes it natively (AVX512-BF16/AMX), else float32.

    Without native support bf16 is emulated: on an AVX2 EPYC the frozen ViT ran 3-5x slower in bf16.
    """
    cpu = getattr(torch, "cpu", None)
    try:
        native = bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # older torch without these probes
        native = False
    return torch.bfloat16 if native else torch.float32


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Return a torch dtype for a dtype, "auto" (see fastest_cpu_dtype) or bfloat16/bf16/float32/fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return fastest_cpu_dtype()
    if dtype not in DTYPE_NAMES:
        raise DemsegError(f"unknown backbone dtype {dtype!r}; choose auto or one of {', '.join(DTYPE_NAMES)}")
    return DTYPE_NAMES[dtype]


def _without_masking(encoder: ViTMAEModel) -> None:
    """Give the encoder its own config with mask_ratio 0, leaving any shared (pre-training) config alone."""
    config = copy.copy(encoder.config)
    config.mask_ratio = 0.0
    encoder.config = config
    encoder.embeddings.config = config


class MaeBackbone(nn.Module):
    """Frozen ViTMAE encoder returning the token maps of the tapped blocks.

    Block ``i`` (0-indexed) is ``hidden_states[i + 1]`` of the encoder: ``hidden_states[0]`` is the
    embedding output (patches + position embeddings, before any block). Maps are the raw block
    outputs (no final LayerNorm), CLS token dropped, reshaped to (B, D, H/patch, W/patch).

    The backbone takes ownership of ``encoder``: it is converted to ``dtype``, frozen and kept in
    eval mode; masking is switched off.
    """

    def __init__(
        self,
        encoder: ViTMAEModel,
        tap_blocks: Sequence[int] = DEFAULT_TAP_BLOCKS,
        dtype: torch.dtype = torch.bfloat16,
        weights_name: str = "random",
    ):
        super().__init__()
        num_blocks = encoder.config.num_hidden_layers
        bad = [block for block in tap_blocks if not 0 <= block < num_blocks]
        if bad or not tap_blocks:
            raise DemsegError(
                f"tap blocks {list(tap_blocks)} must be non-empty and within 0..{num_blocks - 1} "
                f"for a {num_blocks}-block encoder"
            )
        _without_masking(encoder)
        self.encoder = encoder.to(dtype).eval().requires_grad_(False)
        self.tap_blocks = tuple(int(block) for block in tap_blocks)
        self.dtype = dtype
        self.weights_name = weights_name
        self.weights_metadata: dict = {"source": weights_name}
        self.num_channels = encoder.config.num_channels
        self.embed_dim = encoder.config.hidden_size
        self.patch_size = encoder.config.patch_size
        self.image_size = encoder.config.image_size

    def train(self, mode: bool = True) -> MaeBackbone:
        """Keep the frozen encoder in eval mode whatever mode the surrounding model is put in."""
        super().train(mode)
        self.encoder.eval()
        return self

    def _check_input(self, x: Tensor) -> None:
        """Raise DemsegError unless ``x`` is (B, num_channels, H, W) with H and W multiples of the patch."""
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise DemsegError(
                f"backbone expects (batch, {self.num_channels}, height, width) input, got {tuple(x.shape)}"
            )
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise DemsegError(
                f"input size {tuple(x.shape[-2:])} px is not a multiple of the patch size {self.patch_size} px"
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return one float32 (B, D, H/patch, W/patch) map per tapped block for a (B, C, H, W) batch."""
        self._check_input(x)
        batch, _, height_px, width_px = x.shape
        rows, cols = height_px // self.patch_size, width_px // self.patch_size
        device = next(self.encoder.parameters()).device
        resized = (height_px, width_px) != (self.image_size, self.image_size)
        with torch.inference_mode():
            output = self.encoder(
                x.to(device=device, dtype=self.dtype),
                noise=ordered_noise(batch, rows * cols, device),
                interpolate_pos_encoding=resized,
                output_hidden_states=True,
            )
            tokens = [output.hidden_states[block + 1][:, 1:] for block in self.tap_blocks]
        # copy outside inference mode: inference tensors cannot be saved for the head's backward pass
        return [
            token.to(torch.float32, copy=True).transpose(1, 2).reshape(batch, self.embed_dim, rows, cols)
            for token in tokens
        ]


def build_backbone(
    arch: str | None = None,
    weights: str = "random",
    num_channels: int = 1,
    tap_blocks: Sequence[int] = DEFAULT_TAP_BLOCKS,
    dtype: torch.dtype | str = "auto",
    image_size: int = 224,
) -> MaeBackbone:
    """Return a frozen MaeBackbone with encoder weights from ``weights`` (see demseg.models.weights).

    ``arch`` None means "tiny" for random weights and "whatever the file holds" otherwise; a given
    ``arch`` is checked against the weights. ``dtype`` "auto" picks bf16 only where the CPU has it natively.
    """
    from demseg.models.weights import load_encoder  # weights.py imports this module

    encoder, metadata = load_encoder(weights, arch, num_channels, image_size=image_size)
    backbone = MaeBackbone(encoder, tap_blocks, dtype=resolve_dtype(dtype), weights_name=metadata["source"])
    backbone.weights_metadata = metadata
    return backbone
