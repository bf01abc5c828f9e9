"""The frozen Masked-AutoEncoder ViT encoder that feeds the segmentation head.

Recipe (arXiv 2309.03367, after He et al. 2021): a ViT-Base/16 MAE encoder, 224 px input,
frozen; the token maps after transformer blocks 3, 5, 7 and 11 (0-indexed) become the four
pyramid levels of an UperNet head. The encoder's shared facts (sizes, sin-cos positions,
ordered noise) live in :mod:`demseg.models.vit`; weights come from :mod:`demseg.models.weights`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import ViTMAEModel

from demseg.errors import DemsegError
from demseg.models.precision import resolve_dtype
from demseg.models.vit import DEFAULT_TAP_BLOCKS, ordered_noise
from demseg.models.weights import load_encoder


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
    ``arch`` is checked against the weights. ``dtype`` "auto" is the faster of bf16 and fp32 on this machine (measured once, see precision).
    """
    encoder, metadata = load_encoder(weights, arch, num_channels, image_size=image_size)
    backbone = MaeBackbone(encoder, tap_blocks, dtype=resolve_dtype(dtype), weights_name=metadata["source"])
    backbone.weights_metadata = metadata
    return backbone
