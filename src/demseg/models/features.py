"""Feature cache: run the frozen part of the backbone once per tile and augmentation view, train from RAM.

What is cached is the backbone's :class:`FrozenState`: the tokens of the frozen tapped blocks and,
when the last K blocks are fine-tuned, the input of the first tuned block, so a training step runs
only those K blocks and the head. Flipping cached token grids is not the same as flipping the
input (a ViT is not equivariant: per-token cosine 0.6-0.8), so every dihedral view is encoded
separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from demseg.data.augment import NUM_VIEWS, dihedral
from demseg.models.backbone import FrozenState


@dataclass
class FeatureCache:
    """Frozen backbone outputs per (tile, view), stored in ``dtype``; row ``t * views + v`` is view v of tile t."""

    taps: dict[int, torch.Tensor]  # block -> (N*V, 1 + h*w, D) tokens
    hidden: torch.Tensor | None  # (N*V, 1 + h*w, D) input of the first tuned block, or None
    grid: tuple[int, int]
    targets: torch.Tensor  # (N*V, S, S) uint8, the target seen under the same view
    tile_index: np.ndarray  # (N*V,) which tile
    view_index: np.ndarray  # (N*V,) which view

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, indices: np.ndarray) -> tuple[FrozenState, torch.Tensor]:
        """The frozen state (float32) and int64 targets of the given cache rows."""
        idx = torch.as_tensor(indices)
        state = FrozenState(self.hidden[idx].float() if self.hidden is not None else None,
                            {block: tokens[idx].float() for block, tokens in self.taps.items()}, self.grid)
        return state, self.targets[idx].long()

    def select_tiles(self, positions: list[int] | np.ndarray) -> FeatureCache:
        """A cache of the tiles at ``positions`` (in that order, renumbered 0..n-1), every view kept."""
        rows = np.concatenate([np.flatnonzero(self.tile_index == p) for p in positions])
        idx = torch.as_tensor(rows)
        views = int(np.sum(self.tile_index == self.tile_index[0])) if len(self.tile_index) else 0
        return FeatureCache({block: tokens[idx] for block, tokens in self.taps.items()},
                            self.hidden[idx] if self.hidden is not None else None, self.grid, self.targets[idx],
                            np.repeat(np.arange(len(positions)), views), self.view_index[rows])

    @property
    def nbytes(self) -> int:
        tensors = list(self.taps.values()) + ([self.hidden] if self.hidden is not None else [])
        return sum(t.element_size() * t.nelement() for t in tensors)


def encode_views(backbone, inputs: np.ndarray, targets: np.ndarray, views: int = NUM_VIEWS, batch_size: int = 8,
                 dtype: torch.dtype = torch.bfloat16, progress: bool = False, desc: str = "caching features"
                 ) -> FeatureCache:
    """Run the backbone's frozen part on every tile under ``views`` dihedral views."""
    rows = [(t, v) for t in range(len(inputs)) for v in range(views)]
    x_all, y_all = torch.from_numpy(inputs), torch.from_numpy(targets)
    taps: dict[int, torch.Tensor] = {}
    hidden = None
    grid = (0, 0)
    out_targets = torch.empty((len(rows),) + tuple(targets.shape[1:]), dtype=torch.uint8)
    with tqdm(total=len(rows), desc=desc, unit="view", disable=not progress) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            state = backbone.frozen_forward(torch.stack([dihedral(x_all[t], v) for t, v in chunk]))
            grid = state.grid
            if not taps:
                taps = {b: torch.empty((len(rows),) + tuple(x.shape[1:]), dtype=dtype) for b, x in state.taps.items()}
                if state.hidden is not None:
                    hidden = torch.empty((len(rows),) + tuple(state.hidden.shape[1:]), dtype=dtype)
            for block, tokens in state.taps.items():
                taps[block][start:start + len(chunk)] = tokens.to(dtype)
            if hidden is not None:
                hidden[start:start + len(chunk)] = state.hidden.to(dtype)
            out_targets[start:start + len(chunk)] = torch.stack([dihedral(y_all[t], v) for t, v in chunk])
            bar.update(len(chunk))
    return FeatureCache(taps, hidden, grid, out_targets, np.array([t for t, _ in rows]),
                        np.array([v for _, v in rows]))
