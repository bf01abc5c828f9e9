"""Model-ready arrays for a list of tiles: normalised input stacks and 0/1/255 targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demseg.data.normalise import normalise_tile
from demseg.data.scene import IGNORE, Scene
from demseg.data.tiles import Tile


@dataclass
class TileArrays:
    """Inputs (N, C, S, S) float32 and targets (N, S, S) uint8 (1 target, 0 other, 255 ignore)."""

    ids: list[str]
    inputs: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def tile_arrays(scenes: dict[str, Scene], tiles: Sequence[Tile], task: str, recipe: str) -> TileArrays:
    """Normalise every tile with ``recipe`` and cut its target for ``task`` (nodata -> ignore)."""
    inputs, targets = [], []
    for tile in tiles:
        scene = scenes[tile.scene_id]
        window = tile.window()
        elevation = scene.dem.elevation[window]
        valid = scene.valid_mask[window]
        dtm = scene.dtm[window] if scene.dtm is not None else None
        inputs.append(normalise_tile(elevation, valid, recipe, scene.grid.pixel_size_m, dtm))
        if task in scene.targets:
            target = scene.targets[task][window].copy()
        else:
            target = np.full(elevation.shape, IGNORE, np.uint8)
        target[~valid] = IGNORE
        targets.append(target)
    return TileArrays([t.id for t in tiles], np.stack(inputs), np.stack(targets))
