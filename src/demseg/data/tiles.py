"""Tiles on a grid, a spatially disjoint train/validation split, nested training subsets, a tile index."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from demseg.data.scene import IGNORE, Scene
from demseg.errors import DemsegError
from demseg.io.atomic import write_text_atomic

DEFAULT_TILE_SIZE_PX = 224
DEFAULT_MIN_VALID_FRACTION = 0.75
DEFAULT_MIN_TRAIN_FRACTION = 0.4


class SplitConfig(BaseModel):
    """What fixes a spec's validation region: never the training budget, the model or the training seed."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")
    tile_size_px: int = Field(DEFAULT_TILE_SIZE_PX, gt=0, description="Tile side in pixels.")
    val_tiles: int = Field(50, ge=0, description="Validation tiles wanted.")
    split_seed: int = Field(0, ge=0, description="Seed of the split.")
    min_valid_fraction: float = Field(DEFAULT_MIN_VALID_FRACTION, ge=0, le=1,
                                      description="Tiles need this much valid elevation.")
    min_train_fraction: float = Field(DEFAULT_MIN_TRAIN_FRACTION, ge=0, lt=1,
                                      description="Share of each auto scene's tiles kept for training.")


@dataclass
class Tile:
    """One tile: where it lies (scene, pixel window, map bounds) and what it holds."""

    id: str
    scene_id: str
    row_off: int
    col_off: int
    size_px: int
    bounds: tuple[float, float, float, float]  # left, bottom, right, top in the scene CRS
    crs: str
    valid_fraction: float
    labelled_fraction: dict[str, float] = field(default_factory=dict)  # share of pixels with a known label
    target_fraction: dict[str, float] = field(default_factory=dict)  # share of labelled pixels in the class
    split: str = "unassigned"

    def window(self) -> tuple[slice, slice]:
        return (slice(self.row_off, self.row_off + self.size_px), slice(self.col_off, self.col_off + self.size_px))


def make_tiles(scenes: Sequence[Scene], tile_size_px: int = DEFAULT_TILE_SIZE_PX,
               min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION) -> list[Tile]:
    """Cut every scene into non-overlapping tiles on a grid from its top-left corner.

    Tiles with less than ``min_valid_fraction`` valid elevation are dropped.
    """
    if tile_size_px <= 0 or tile_size_px % 16:
        raise DemsegError(f"tile size must be a positive multiple of 16 px, got {tile_size_px}")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise DemsegError(f"min valid fraction must be in [0, 1], got {min_valid_fraction}")
    if scenes and all(min(s.grid.shape) < tile_size_px for s in scenes):
        largest = max(max(s.grid.shape) for s in scenes)
        raise DemsegError(f"tile size {tile_size_px} px is larger than every scene (largest side {largest} px)")
    tiles = []
    for scene in scenes:
        tiles += _scene_tiles(scene, tile_size_px, min_valid_fraction)
    return tiles


def _scene_tiles(scene: Scene, size: int, min_valid_fraction: float) -> list[Tile]:
    height, width = scene.grid.shape
    transform = scene.grid.transform
    crs = scene.grid.crs.to_string()
    tiles = []
    for row in range(height // size):
        for col in range(width // size):
            window = (slice(row * size, (row + 1) * size), slice(col * size, (col + 1) * size))
            valid = scene.valid_mask[window]
            valid_fraction = float(valid.mean())
            if valid_fraction < min_valid_fraction or not valid.any():
                continue
            labelled, target = {}, {}
            for task, raster in scene.targets.items():
                known = raster[window] != IGNORE
                labelled[task] = float(known.mean())
                target[task] = float((raster[window] == 1).sum() / max(1, known.sum()))
            x0, y0 = transform @ (col * size, row * size)
            x1, y1 = transform @ ((col + 1) * size, (row + 1) * size)
            bounds = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            tiles.append(Tile(f"{scene.id}_r{row:03d}_c{col:03d}", scene.id, row * size, col * size, size,
                              bounds, crs, valid_fraction, labelled, target))
    return tiles


def _box_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise distances between boxes a (N, 4) and b (M, 4); 0 where they touch or overlap."""
    dx = np.maximum(0.0, np.maximum(a[:, None, 0] - b[None, :, 2], b[None, :, 0] - a[:, None, 2]))
    dy = np.maximum(0.0, np.maximum(a[:, None, 1] - b[None, :, 3], b[None, :, 1] - a[:, None, 3]))
    return np.hypot(dx, dy)


def _near_validation(tiles: Sequence[Tile], candidates: list[int], val: list[int], buffer_m: float) -> np.ndarray:
    """Mask over ``candidates``: True where the tile touches (or lies within buffer_m of) a val tile."""
    near = np.zeros(len(candidates), dtype=bool)
    if not val or not candidates:
        return near
    by_crs: dict[str, list[int]] = {}
    for v in val:
        by_crs.setdefault(tiles[v].crs, []).append(v)
    cand_boxes = np.array([tiles[i].bounds for i in candidates], dtype=float)
    cand_crs = np.array([tiles[i].crs for i in candidates])
    for crs, members in by_crs.items():
        same = cand_crs == crs
        if same.any():
            val_boxes = np.array([tiles[i].bounds for i in members], dtype=float)
            distance = _box_distance(cand_boxes[same], val_boxes).min(axis=1)
            near[same] = distance <= buffer_m + 1e-6
    return near


def split_tiles(tiles: list[Tile], scene_splits: dict[str, str], val_tiles: int = 50,
                min_train_fraction: float = DEFAULT_MIN_TRAIN_FRACTION, buffer_m: float = 0.0,
                seed: int = 0) -> list[Tile]:
    """Assign each tile to ``train``, ``val`` or ``buffer``, spatially disjoint, fixed by ``seed``.

    Scenes marked ``train``/``val`` keep their split. In ``auto`` scenes a compact validation
    region is grown from a corner tile (seeded) until the scene's share of ``val_tiles`` is
    reached, keeping at least ``min_train_fraction`` of the scene's tiles for training. The
    result depends on the tiles, ``val_tiles``, ``min_train_fraction``, ``buffer_m`` and
    ``seed`` only: every budget, model and training seed is scored on the same region. Training tiles that
    touch a validation tile, or lie within ``buffer_m`` of one (in any scene on the same CRS),
    become ``buffer`` and are used for nothing, so neighbouring pixels cannot leak.
    """
    if val_tiles < 0 or buffer_m < 0 or not 0.0 <= min_train_fraction < 1.0:
        raise DemsegError("val tiles and buffer must not be negative; min train fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    index = {t.id: i for i, t in enumerate(tiles)}
    fixed_val = [index[t.id] for t in tiles if scene_splits.get(t.scene_id) == "val"]
    if len(fixed_val) > val_tiles:
        fixed_val = sorted(rng.choice(fixed_val, size=val_tiles, replace=False).tolist())
    auto_scenes = sorted({t.scene_id for t in tiles if scene_splits.get(t.scene_id, "auto") == "auto"})
    auto_total = sum(1 for t in tiles if t.scene_id in auto_scenes)
    val = list(fixed_val)
    remaining = max(0, val_tiles - len(val))
    members_of = {s: [i for i, t in enumerate(tiles) if t.scene_id == s] for s in auto_scenes}
    quotas = _largest_remainder([len(members_of[s]) / max(1, auto_total) * remaining for s in auto_scenes])
    for scene_id, quota in zip(auto_scenes, quotas, strict=True):
        keep_train = int(np.ceil(min_train_fraction * len(members_of[scene_id])))
        val += _grow_validation_region(tiles, members_of[scene_id], val, quota, keep_train, buffer_m, rng)
    val_set = set(val)
    for i, tile in enumerate(tiles):
        split = scene_splits.get(tile.scene_id, "auto")
        tile.split = "val" if i in val_set else ("unused" if split == "val" else "train")
    train = [i for i, t in enumerate(tiles) if t.split == "train"]
    for i, near in zip(train, _near_validation(tiles, train, sorted(val_set), buffer_m), strict=True):
        if near:
            tiles[i].split = "buffer"
    return tiles


def _largest_remainder(shares: list[float]) -> list[int]:
    """Integers that sum to round(sum(shares)), each the floor of its share plus at most one."""
    floors = [int(np.floor(x)) for x in shares]
    extra = int(round(sum(shares))) - sum(floors)
    for i in sorted(range(len(shares)), key=lambda i: floors[i] - shares[i])[:extra]:
        floors[i] += 1
    return floors


def _grow_validation_region(tiles: list[Tile], members: list[int], val_elsewhere: list[int], quota: int,
                            keep_train: int, buffer_m: float, rng: np.random.Generator) -> list[int]:
    if quota <= 0 or not members:
        return []
    centres = np.array([[(tiles[i].bounds[0] + tiles[i].bounds[2]) / 2, (tiles[i].bounds[1] + tiles[i].bounds[3]) / 2]
                        for i in members])
    centroid = centres.mean(axis=0)
    from_centre = np.hypot(*(centres - centroid).T)
    corners = np.flatnonzero(from_centre >= from_centre.max() - 1e-6)
    start = centres[rng.choice(corners)]
    # nearest-first from a corner gives a compact region: a short border, so few buffer tiles
    order = np.lexsort((rng.random(len(members)), np.hypot(*(centres - start).T)))
    region: list[int] = []
    for position in order:
        candidate = region + [members[position]]
        rest = [i for i in members if i not in candidate]
        near = _near_validation(tiles, rest, val_elsewhere + candidate, buffer_m)
        if len(rest) - int(near.sum()) < keep_train:
            break
        region = candidate
        if len(region) >= quota:
            break
    return region


def training_subset(tiles: Sequence[Tile], count: int, seed: int = 0, task: str | None = None,
                    min_labelled_fraction: float = 0.5) -> list[Tile]:
    """The first ``count`` training tiles of a seeded order: subsets for one seed are nested.

    With ``task``, only tiles mostly labelled for that task are eligible.
    """
    pool = eligible_tiles(tiles, "train", task, min_labelled_fraction)
    if count <= 0:
        raise DemsegError(f"number of training tiles must be positive, got {count}")
    if count > len(pool):
        raise DemsegError(f"asked for {count} training tiles but the split has only {len(pool)}"
                          + (f" labelled for {task}" if task else ""))
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[:count]]


def eligible_tiles(tiles: Sequence[Tile], split: str, task: str | None = None,
                   min_labelled_fraction: float = 0.5) -> list[Tile]:
    """Tiles of one split, in id order; with ``task``, only those mostly labelled for it."""
    chosen = [t for t in tiles if t.split == split]
    if task is not None:
        chosen = [t for t in chosen if t.labelled_fraction.get(task, 0.0) >= min_labelled_fraction]
    return sorted(chosen, key=lambda t: t.id)


INDEX_COLUMNS = ("id", "scene_id", "split", "row_off", "col_off", "size_px", "left", "bottom", "right", "top",
                 "crs", "valid_fraction")


def write_tile_index(tiles: Sequence[Tile], path: str | Path) -> Path:
    """Write the tile index as CSV (one row per tile, per-task label fractions as extra columns)."""
    tasks = sorted({task for t in tiles for task in t.labelled_fraction})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(list(INDEX_COLUMNS) + [f"{k}_{task}" for task in tasks for k in ("labelled", "fraction")])
    for t in tiles:
        row = asdict(t)
        writer.writerow([t.id, t.scene_id, t.split, t.row_off, t.col_off, t.size_px, *t.bounds, t.crs,
                         f"{t.valid_fraction:.4f}"]
                        + [f"{row[k][task]:.4f}" if task in row[k] else ""
                           for task in tasks for k in ("labelled_fraction", "target_fraction")])
    return write_text_atomic(path, buffer.getvalue())
