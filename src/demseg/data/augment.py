"""Dihedral (D4) augmentations: the 8 flips and 90-degree rotations of a square tile."""

from __future__ import annotations

import torch

NUM_VIEWS = 8  # identity, 3 rotations, and the same four after a horizontal flip


def dihedral(x: torch.Tensor, view: int) -> torch.Tensor:
    """View ``view`` (0-7) of tensors whose last two dims are (H, W); view 0 is the identity."""
    if not 0 <= view < NUM_VIEWS:
        raise ValueError(f"view must be in 0..7, got {view}")
    if view >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k=view % 4, dims=(-2, -1))


def dihedral_inverse(x: torch.Tensor, view: int) -> torch.Tensor:
    """Undo :func:`dihedral` (used by test-time augmentation)."""
    x = torch.rot90(x, k=-(view % 4), dims=(-2, -1))
    if view >= 4:
        x = torch.flip(x, dims=(-1,))
    return x
