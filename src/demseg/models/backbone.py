"""The frozen Masked-AutoEncoder ViT encoder that feeds the segmentation head.

Recipe (arXiv 2309.03367, after He et al. 2021): a ViT-Base/16 MAE encoder, 224 px input,
frozen; the token maps after transformer blocks 3, 5, 7 and 11 (0-indexed) become the four
pyramid levels of an UperNet head. The encoder's shared facts (sizes, sin-cos positions,
ordered noise) live in :mod:`demseg.models.vit`; weights come from :mod:`demseg.models.weights`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

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
    """ViTMAE encoder returning the token maps of the tapped blocks; frozen, or its last blocks tuned.

    Block ``i`` (0-indexed) is the output of the encoder's ``i``-th transformer layer (the input of
    block 0 is the embedding output: patches + position embeddings). Maps are the raw block outputs
    (no final LayerNorm), CLS token dropped, reshaped to (B, D, H/patch, W/patch).

    With ``tuned_blocks`` K > 0 the last K blocks are trainable (fp32 weights, run under the
    caller's autocast) and everything before them stays frozen in ``dtype``. The frozen part is
    split out (:meth:`frozen_forward` -> :class:`FrozenState`) so a feature cache can hold it and a
    training step runs only the K tuned blocks (:meth:`tuned_forward`). K equal to the depth
    also tunes the patch and position embeddings; nothing is then cacheable. Masking is off.
    """

    def __init__(
        self,
        encoder: ViTMAEModel,
        tap_blocks: Sequence[int] = DEFAULT_TAP_BLOCKS,
        dtype: torch.dtype = torch.bfloat16,
        weights_name: str = "random",
        tuned_blocks: int = 0,
    ):
        super().__init__()
        num_blocks = encoder.config.num_hidden_layers
        bad = [block for block in tap_blocks if not 0 <= block < num_blocks]
        if bad or not tap_blocks:
            raise DemsegError(
                f"tap blocks {list(tap_blocks)} must be non-empty and within 0..{num_blocks - 1} "
                f"for a {num_blocks}-block encoder"
            )
        if not 0 <= tuned_blocks <= num_blocks:
            raise DemsegError(f"cannot fine-tune the top {tuned_blocks} blocks of a {num_blocks}-block encoder "
                              f"(choose top-1 .. top-{num_blocks}, or all)")
        _without_masking(encoder)
        self.encoder = encoder.eval().requires_grad_(False)
        self.tap_blocks = tuple(int(block) for block in tap_blocks)
        self.dtype = dtype
        self.num_blocks = num_blocks
        self.tuned_blocks = int(tuned_blocks)
        self.first_tuned = num_blocks - self.tuned_blocks
        self.weights_name = weights_name
        self.weights_metadata: dict = {"source": weights_name}
        self.num_channels = encoder.config.num_channels
        self.embed_dim = encoder.config.hidden_size
        self.patch_size = encoder.config.patch_size
        self.image_size = encoder.config.image_size
        for module in self.frozen_modules():
            module.to(dtype)
        for module in self.tuned_modules():
            module.float().requires_grad_(True)

    def frozen_modules(self) -> list[nn.Module]:
        """The parts that never train: embeddings (unless all blocks tune) and the blocks before the tuned ones."""
        parts = [] if self.tuned_blocks == self.num_blocks else [self.encoder.embeddings]
        return parts + list(self.encoder.layers[:self.first_tuned])

    def tuned_modules(self) -> list[nn.Module]:
        """The parts that train: the last ``tuned_blocks`` blocks (and the embeddings when all tune)."""
        if not self.tuned_blocks:
            return []
        parts = [self.encoder.embeddings] if self.tuned_blocks == self.num_blocks else []
        return parts + list(self.encoder.layers[self.first_tuned:])

    @property
    def cacheable(self) -> bool:
        """True when some frozen computation precedes the tuned blocks (a feature cache pays)."""
        return self.tuned_blocks < self.num_blocks

    def train(self, mode: bool = True) -> MaeBackbone:
        """Keep the encoder in eval mode (no dropout, as frozen) whatever mode the model is put in."""
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

    def _embed(self, x: Tensor) -> Tensor:
        batch, _, height_px, width_px = x.shape
        device = next(self.encoder.parameters()).device
        dtype = self.dtype if self.cacheable else torch.float32
        embeddings, _, _ = self.encoder.embeddings(
            x.to(device=device, dtype=dtype),
            noise=ordered_noise(batch, (height_px // self.patch_size) * (width_px // self.patch_size), device),
            interpolate_pos_encoding=(height_px, width_px) != (self.image_size, self.image_size))
        return embeddings

    def _run(self, hidden: Tensor, start: int, stop: int, taps: dict[int, Tensor]) -> Tensor:
        for block in range(start, stop):
            hidden = self.encoder.layers[block](hidden, None)
            if block in self.tap_blocks:
                taps[block] = hidden
        return hidden

    def _maps(self, taps: dict[int, Tensor], grid: tuple[int, int]) -> list[Tensor]:
        rows, cols = grid
        return [taps[block][:, 1:].float().transpose(1, 2).reshape(-1, self.embed_dim, rows, cols)
                for block in self.tap_blocks]

    def frozen_forward(self, x: Tensor) -> FrozenState:
        """The frozen part's output for a (B, C, H, W) batch: hidden state and taps (no gradients)."""
        self._check_input(x)
        if not self.cacheable:
            raise DemsegError("with every block fine-tuned nothing is frozen to cache")
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        with torch.inference_mode():
            taps: dict[int, Tensor] = {}
            hidden = self._run(self._embed(x), 0, self.first_tuned, taps)
        # copies outside inference mode: inference tensors cannot be saved for a backward pass
        tapped = {block: tokens.clone() for block, tokens in taps.items()}
        return FrozenState(hidden.clone() if self.tuned_blocks else None, tapped, grid)

    def tuned_forward(self, state: FrozenState) -> list[Tensor]:
        """Float32 (B, D, h, w) maps of every tapped block, running only the tuned blocks (with gradients)."""
        taps = {block: tokens.float() for block, tokens in state.taps.items()}
        if self.tuned_blocks:
            self._run(state.hidden.float(), self.first_tuned, self.num_blocks, taps)
        return self._maps(taps, state.grid)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return one float32 (B, D, H/patch, W/patch) map per tapped block for a (B, C, H, W) batch."""
        self._check_input(x)
        if self.cacheable:
            return self.tuned_forward(self.frozen_forward(x))
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        taps: dict[int, Tensor] = {}
        self._run(self._embed(x), 0, self.num_blocks, taps)
        return self._maps(taps, grid)


@dataclass
class FrozenState:
    """What the frozen part of a backbone computed for a batch: the input of the first tuned block and the taps."""

    hidden: Tensor | None  # (B, 1 + h*w, D), CLS first; None when no block is tuned
    taps: dict[int, Tensor]  # block -> (B, 1 + h*w, D) tokens of the frozen tapped blocks
    grid: tuple[int, int]


def build_backbone(
    arch: str | None = None,
    weights: str = "random",
    num_channels: int | None = None,
    tap_blocks: Sequence[int] = DEFAULT_TAP_BLOCKS,
    dtype: torch.dtype | str = "auto",
    image_size: int = 224,
    tuned_blocks: int = 0,
) -> MaeBackbone:
    """Return a frozen MaeBackbone with encoder weights from ``weights`` (see demseg.models.weights).

    ``arch`` None means "tiny" for random weights and "whatever the file holds" otherwise; a given
    ``arch`` is checked against the weights. ``num_channels`` None likewise means the weights' own
    (1 for random weights), so ``build_backbone(weights="dem-tiny")`` is the shipped encoder as made.
    ``dtype`` "auto" is the faster of bf16 and fp32 on this machine (measured once, see precision).
    """
    encoder, metadata = load_encoder(weights, arch, num_channels, image_size=image_size)
    backbone = MaeBackbone(encoder, tap_blocks, dtype=resolve_dtype(dtype), weights_name=metadata["source"],
                           tuned_blocks=tuned_blocks)
    backbone.weights_metadata = metadata
    return backbone
