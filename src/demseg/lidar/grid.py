"""The output grid: the pixel-snapped union of the files' extents, or an existing raster's grid."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from demseg.errors import DemsegError
from demseg.io.raster import GridSpec, open_grid
from demseg.lidar.sources import PointFile

# ~12 GB of per-cell accumulators: beyond this a typo (pixel size, far-apart files) is likelier
MAX_CELLS = 400_000_000


def union_grid(files: list[PointFile], crs: CRS, pixel_size_m: float) -> GridSpec:
    """A north-up grid covering every file's header bounds, its origin on a multiple of the pixel size."""
    min_x = min(f.mins[0] for f in files)
    min_y = min(f.mins[1] for f in files)
    max_x = max(f.maxs[0] for f in files)
    max_y = max(f.maxs[1] for f in files)
    left = math.floor(min_x / pixel_size_m) * pixel_size_m
    top = math.ceil(max_y / pixel_size_m) * pixel_size_m
    width = max(1, math.ceil(round((max_x - left) / pixel_size_m, 6)))
    height = max(1, math.ceil(round((top - min_y) / pixel_size_m, 6)))
    grid = GridSpec(crs, Affine(pixel_size_m, 0.0, left, 0.0, -pixel_size_m, top), width, height)
    _check_size(grid)
    return grid


def like_grid(path: str | os.PathLike, crs: CRS) -> GridSpec:
    """The grid of an existing raster, which must be in the points' CRS (or declare none)."""
    path = Path(path)
    if not path.exists():
        raise DemsegError(f"--like raster not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                declared = src.crs
    except RasterioIOError as exc:
        raise DemsegError(f"--like raster is not a readable raster: {path}") from exc
    if declared is not None and declared != crs:
        raise DemsegError(f"--like raster is in {declared.to_string()} but the points are in "
                          f"{crs.to_string()}: {path}")
    grid = open_grid(path, crs=None if declared is not None else crs, what="--like raster")
    _check_size(grid)
    return grid


def _check_size(grid: GridSpec) -> None:
    if grid.width * grid.height > MAX_CELLS:
        raise DemsegError(f"the output grid would be {grid.width} x {grid.height} cells; use a larger pixel "
                          "size or rasterise far-apart files separately")


def pixel_sides_m(grid: GridSpec) -> tuple[float, float]:
    """(pixel height, pixel width) of ``grid`` in metres."""
    return abs(grid.transform.e), abs(grid.transform.a)


def cell_index(grid: GridSpec, x: np.ndarray, y: np.ndarray,
               close_far_edges: bool) -> tuple[np.ndarray, np.ndarray]:
    """Flat cell indices (row * width + col) of points and a mask of the points that fall on the grid.

    Cells are half-open ``[left, right)``; with ``close_far_edges`` a point exactly on the grid's
    right or bottom edge (a header maximum) counts in the last column or row instead of falling off.
    """
    transform = grid.transform
    col = np.floor((x - transform.c) / transform.a).astype(np.int64)
    row = np.floor((y - transform.f) / transform.e).astype(np.int64)
    if close_far_edges:
        col[(col == grid.width) & (x <= transform.c + transform.a * grid.width)] = grid.width - 1
        row[(row == grid.height) & (y >= transform.f + transform.e * grid.height)] = grid.height - 1
    inside = (col >= 0) & (col < grid.width) & (row >= 0) & (row < grid.height)
    return row * grid.width + col, inside
