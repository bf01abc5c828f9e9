"""Resample a loaded scene to another pixel size, so a model sees objects at the size it was trained on.

Elevation and DTM are resampled bilinearly with the validity mask carried along (a pixel is valid
where most of its footprint was valid; nodata never leaks into heights as zeros); label targets
by nearest neighbour (255 stays unknown). Used to score a run on data recorded at another
resolution (``demseg experiment --score-on``, ``demseg evaluate --resample``), to train at a start's
pixel size (``demseg train --init``), and window by window to predict a DEM at a run's pixel size.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from affine import Affine
from rasterio.warp import Resampling, reproject

from demseg.data.scene import IGNORE, Scene
from demseg.io.raster import DemRaster, GridSpec


def resampled_grid(grid: GridSpec, pixel_size_m: float) -> GridSpec:
    """The grid covering the same extent as ``grid`` at ``pixel_size_m`` (same origin and CRS)."""
    left, bottom, right, top = grid.bounds
    width = max(1, int(round((right - left) / pixel_size_m)))
    height = max(1, int(round((top - bottom) / pixel_size_m)))
    return GridSpec(grid.crs, Affine(pixel_size_m, 0.0, left, 0.0, -pixel_size_m, top), width, height)


def _warp(array: np.ndarray, source: GridSpec, target: GridSpec, method: Resampling, fill) -> np.ndarray:
    out = np.full(target.shape, fill, dtype=array.dtype)
    reproject(array, out, src_transform=source.transform, src_crs=source.crs, dst_transform=target.transform,
              dst_crs=target.crs, resampling=method)
    return out


def resample_scene(scene: Scene, pixel_size_m: float) -> Scene:
    """``scene`` on a grid of ``pixel_size_m`` (returned unchanged when the pixel size already matches)."""
    source = scene.grid
    if abs(source.pixel_size_m - pixel_size_m) <= 1e-9 * pixel_size_m:
        return scene
    target = resampled_grid(source, pixel_size_m)
    valid_share = _warp(scene.valid_mask.astype(np.float32), source, target, Resampling.bilinear, 0.0)
    valid = valid_share >= 0.5
    filled = np.where(scene.valid_mask, scene.dem.elevation, 0.0).astype(np.float32)
    # normalised convolution: heights averaged over valid neighbours only
    elevation = _warp(filled, source, target, Resampling.bilinear, 0.0) / np.maximum(valid_share, 1e-6)
    elevation = np.where(valid, elevation, np.nan).astype(np.float32)
    dtm = None if scene.dtm is None else resample_known(scene.dtm, source, target)
    channels = {name: resample_known(values, source, target) for name, values in scene.channels.items()}
    targets, auxiliary = ({name: _warp_labels(raster, source, target, valid) for name, raster in group.items()}
                          for group in (scene.targets, scene.auxiliary))
    dem = DemRaster(elevation, valid, target, scene.dem.path, scene.dem.vertical_units, scene.dem.source_nodata)
    return dataclasses.replace(scene, dem=dem, dtm=dtm, targets=targets, channels=channels, auxiliary=auxiliary)


def resample_known(values: np.ndarray, source: GridSpec, target: GridSpec) -> np.ndarray:
    """A float raster with NaN where unknown, on ``target``: averaged bilinearly over its known pixels only.

    A target pixel is known where at least half of its bilinear footprint was (nodata never leaks in as zeros).
    """
    known = np.isfinite(values)
    share = _warp(known.astype(np.float32), source, target, Resampling.bilinear, 0.0)
    warped = _warp(np.where(known, values, 0.0).astype(np.float32), source, target, Resampling.bilinear, 0.0)
    return np.where(share >= 0.5, warped / np.maximum(share, 1e-6), np.nan).astype(np.float32)


def _warp_labels(raster: np.ndarray, source: GridSpec, target: GridSpec, valid: np.ndarray) -> np.ndarray:
    labels = _warp(raster, source, target, Resampling.nearest, IGNORE)
    labels[~valid] = IGNORE
    return labels
