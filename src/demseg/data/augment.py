"""Augmentations: the 8 dihedral (D4) views of a square tile, and coarser-resolution versions of a DEM tile."""

from __future__ import annotations

import numpy as np
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


def coarsen_within(factors: list[int], tile_size_px: int | None) -> list[int]:
    """``--coarsen`` factors, each at most half the tile (a coarser copy shows at least 2 x 2 of its pixels)."""
    too_large = [factor for factor in factors if tile_size_px is not None and factor > tile_size_px // 2]
    if too_large:
        raise ValueError(f"each factor must be at most half the tile size ({tile_size_px // 2} for "
                         f"{tile_size_px} px tiles), got {too_large[0]}")
    return factors


def coarsened(values: np.ndarray, valid: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as a DEM of ``factor`` x the pixel size would record them, back on the same grid.

    Resolution augmentation: LiDAR DEMs come at 0.25 to 2 m, and a model trained on 0.5 m tiles
    sees a 2 m DEM (resampled to 0.5 m) as smooth blobs without roof edges or rough tree crowns.
    Heights are averaged over valid pixels of each ``factor`` x ``factor`` block (a block is valid
    where at least half its pixels are), then interpolated bilinearly back to the original grid;
    nodata never leaks into heights. Returns (values float32, valid bool) of the input's shape.
    """
    if factor < 2:
        return values.astype(np.float32), valid.copy()
    height, width = values.shape
    pad = ((0, -height % factor), (0, -width % factor))
    filled = np.pad(np.where(valid, values, 0.0).astype(np.float64), pad)
    weight = np.pad(valid.astype(np.float64), pad)
    blocks = (filled.shape[0] // factor, factor, filled.shape[1] // factor, factor)
    sums, counts = filled.reshape(blocks).sum((1, 3)), weight.reshape(blocks).sum((1, 3))
    coarse_valid = counts >= factor * factor / 2
    coarse = np.where(counts > 0, sums / np.maximum(counts, 1.0), 0.0)
    # fill invalid blocks from their valid neighbours so interpolation near nodata stays in range
    coarse_t = torch.from_numpy(np.stack([coarse * coarse_valid, coarse_valid.astype(np.float64)]))[None].float()
    up = torch.nn.functional.interpolate(coarse_t, scale_factor=factor, mode="bilinear", align_corners=False)[0]
    up = up[:, :height, :width].numpy()
    near = np.repeat(np.repeat(coarse_valid, factor, 0), factor, 1)[:height, :width]
    out_valid = near & (up[1] > 1e-3)
    out = np.where(out_valid, up[0] / np.maximum(up[1], 1e-3), np.nan).astype(np.float32)
    return out, out_valid
