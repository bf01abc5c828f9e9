"""Feature cache: run the frozen backbone once per tile and augmentation view, train the head from RAM.

Flipping cached token grids is not the same as flipping the input (a ViT is not equivariant:
per-token cosine 0.6-0.8), so every dihedral view is encoded separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from demseg.data.augment import NUM_VIEWS, dihedral


@dataclass
class FeatureCache:
    """Tapped backbone features per (tile, view): one (N*V, D, h, w) tensor per level, stored in ``dtype``."""

    levels: list[torch.Tensor]
    targets: torch.Tensor  # (N*V, S, S) uint8, the target seen under the same view
    tile_index: np.ndarray  # (N*V,) which tile
    view_index: np.ndarray  # (N*V,) which view

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, indices: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Float32 features and int64 targets for the given cache rows."""
        idx = torch.as_tensor(indices)
        return [level[idx].float() for level in self.levels], self.targets[idx].long()

    def select_tiles(self, positions: list[int] | np.ndarray) -> FeatureCache:
        """A cache of the tiles at ``positions`` (in that order, renumbered 0..n-1), every view kept.

        Row ``t * views + v`` of the result is view ``v`` of the ``t``-th tile, as in :func:`encode_views`.
        """
        rows = np.concatenate([np.flatnonzero(self.tile_index == p) for p in positions])
        idx = torch.as_tensor(rows)
        views = int(np.sum(self.tile_index == self.tile_index[0])) if len(self.tile_index) else 0
        return FeatureCache([level[idx] for level in self.levels], self.targets[idx],
                            np.repeat(np.arange(len(positions)), views), self.view_index[rows])

    @property
    def nbytes(self) -> int:
        return sum(level.element_size() * level.nelement() for level in self.levels)


def encode_views(backbone, inputs: np.ndarray, targets: np.ndarray, views: int = NUM_VIEWS, batch_size: int = 8,
                 dtype: torch.dtype = torch.bfloat16, progress: bool = False, desc: str = "caching features"
                 ) -> FeatureCache:
    """Encode every tile under ``views`` dihedral views with the frozen backbone."""
    n_tiles = len(inputs)
    rows = [(t, v) for t in range(n_tiles) for v in range(views)]
    levels: list[torch.Tensor] | None = None
    x_all = torch.from_numpy(inputs)
    y_all = torch.from_numpy(targets)
    out_targets = torch.empty((len(rows),) + tuple(targets.shape[1:]), dtype=torch.uint8)
    with tqdm(total=len(rows), desc=desc, unit="view", disable=not progress) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            x = torch.stack([dihedral(x_all[t], v) for t, v in chunk])
            feats = backbone(x)
            if levels is None:
                levels = [torch.empty((len(rows),) + tuple(f.shape[1:]), dtype=dtype) for f in feats]
            for level, f in zip(levels, feats, strict=True):
                level[start:start + len(chunk)] = f.to(dtype)
            out_targets[start:start + len(chunk)] = torch.stack([dihedral(y_all[t], v) for t, v in chunk])
            bar.update(len(chunk))
    tiles = np.array([t for t, _ in rows])
    view_ids = np.array([v for _, v in rows])
    return FeatureCache(levels or [], out_targets, tiles, view_ids)
