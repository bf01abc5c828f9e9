"""Model-ready arrays for a list of tiles: normalised input stacks and 0/1/255 targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demseg.data.augment import coarsened
from demseg.data.noise import noisy_window, parse_label_noise
from demseg.data.normalise import check_scene_channels, normalise_tile
from demseg.data.scene import IGNORE, Scene
from demseg.data.tiles import Tile

NOT_TARGET = 254  # training target code: background of unknown auxiliary class ("anything but the target")


@dataclass
class TileArrays:
    """Inputs (N, C, S, S) float32 and targets (N, S, S) uint8 (1 target, 0 other, 255 ignore)."""

    ids: list[str]
    inputs: np.ndarray
    targets: np.ndarray

    mixed: int = 0  # the last ``mixed`` rows come from a --mix dataset (rehearsal), the rest from the spec

    def __len__(self) -> int:
        return len(self.ids)

    def with_mix(self, other: TileArrays) -> TileArrays:
        """These arrays followed by ``other``'s, the latter marked as mixed-in rows."""
        return TileArrays(self.ids + other.ids, np.concatenate([self.inputs, other.inputs]),
                          np.concatenate([self.targets, other.targets]), len(other))


def tile_arrays(scenes: dict[str, Scene], tiles: Sequence[Tile], task: str, recipe: str,
                coarsen: Sequence[int] = (), auxiliary: Sequence[str] = (), label_noise: str = "",
                noise_seed: int = 0) -> TileArrays:
    """Normalise every tile with ``recipe`` and cut its target for ``task`` (nodata -> ignore).

    With ``auxiliary`` classes (training only) the target codes become 0 background, 1 target,
    2, 3... each auxiliary class where the scene labels it, and :data:`NOT_TARGET` where a
    background pixel's auxiliary class is unknown (the scene does not label it).
    With ``label_noise`` (training only; see :mod:`demseg.data.noise`) the target of each tile is
    made noisy, fixed by ``noise_seed`` and the tile id.

    With ``coarsen`` (resolution augmentation, training only) every tile is followed, block by block,
    by its versions at each factor x the pixel size (:func:`demseg.data.augment.coarsened`): rows
    ``i``, ``n + i``, ``2n + i``... hold tile ``i`` at the original and each coarser resolution,
    with the same target.
    """
    for scene_id in sorted({tile.scene_id for tile in tiles}):
        check_scene_channels(recipe, scenes[scene_id].channels, f"scene '{scene_id}'")
    noise = parse_label_noise(label_noise)
    inputs, targets, ids = [], [], []
    for factor in (1, *coarsen):
        for tile in tiles:
            scene = scenes[tile.scene_id]
            window = tile.window()
            elevation, valid = scene.dem.elevation[window], scene.valid_mask[window]
            dtm = scene.dtm[window] if scene.dtm is not None else None
            extras = scene.channel_window(window)
            if factor > 1:
                elevation, valid = coarsened(elevation, valid, factor)
                if dtm is not None:
                    dtm, _known = coarsened(dtm, np.isfinite(dtm), factor)
                extras = {name: _coarse_known(values, factor) for name, values in extras.items()}
            inputs.append(normalise_tile(elevation, valid, recipe, scene.grid.pixel_size_m, dtm, extras))
            if task in scene.targets and noise:
                target = noisy_window(scene.targets[task], window, noise, scene.grid.pixel_size_m, noise_seed,
                                      tile.id)
            elif task in scene.targets:
                target = scene.targets[task][window].copy()
            else:
                target = np.full(elevation.shape, IGNORE, np.uint8)
            if auxiliary:
                target = _with_auxiliary(target, scene, window, auxiliary)
            target[~valid] = IGNORE
            targets.append(target)
            ids.append(tile.id if factor == 1 else f"{tile.id}@{factor}x")
    return TileArrays(ids, np.stack(inputs), np.stack(targets))


def _with_auxiliary(target: np.ndarray, scene: Scene, window, auxiliary: Sequence[str]) -> np.ndarray:
    background = target == 0
    known = background.copy() if all(name in scene.auxiliary for name in auxiliary) else np.zeros_like(background)
    out = target.copy()
    for code, name in enumerate(auxiliary, start=2):
        if name in scene.auxiliary:
            labels = scene.auxiliary[name][window]
            out[background & (labels == 1)] = code
            known &= labels != IGNORE
    out[background & ~known & (out == 0)] = NOT_TARGET
    return out


def _coarse_known(values: np.ndarray, factor: int) -> np.ndarray:
    coarse, known = coarsened(values, np.isfinite(values), factor)
    return np.where(known, coarse, np.nan)


def augmented_rows(rows: Sequence[int], union_size: int, coarsen: Sequence[int]) -> list[int]:
    """Rows of :func:`tile_arrays` ``(..., coarsen)`` that hold the tiles at ``rows`` and their coarser versions."""
    return [row + k * union_size for k in range(1 + len(coarsen)) for row in rows]
