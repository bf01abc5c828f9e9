"""DSM, DTM, nDSM and label rasters from per-cell point statistics (NaN marks nodata in float arrays).

DSM: the highest return of any return number in the cell, water and dropped classes excluded;
    the highest return of a cell is in practice a first return, and last returns below a canopy
    never raise it. An empty cell takes the height of the nearest cell (centre to centre) that holds
    points, if one lies within ``fill_radius_m``; if that nearest cell holds only water points, or
    none lies within the radius, the cell stays nodata: water and occlusions give no usable returns,
    so canals and ponds stay holes rather than being bridged.
DTM: the mean height of ground-class points in each cell that has some; elsewhere linear
    interpolation on a Delaunay triangulation (TIN) of the centres of the ground cells that border a
    gap (they carry the interpolation; leaving out interior ground cells keeps the TIN small), built
    block by block (:mod:`demseg.lidar.tin`), and the nearest ground cell outside the TIN's convex
    hull. Only cells where the DSM is valid get a DTM.
nDSM: DSM - DTM where both are valid; small negative values (measurement noise) are kept.
Labels: per cell, a majority vote between each configured class and "other" (every other kept
    point, water and ground included); a tie goes to the class of the cell's highest return, which
    is what the DSM shows, then to "other". 255 where the cell has no point or no valid DSM.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from demseg.errors import DemsegError
from demseg.lidar.accumulate import CellAccumulator
from demseg.lidar.fill import fill_from_nearest
from demseg.lidar.grid import pixel_sides_m
from demseg.lidar.tin import fill_gaps

LABEL_NODATA = 255


def surface_model(acc: CellAccumulator, fill_radius_m: float) -> np.ndarray:
    """The DSM as float32, NaN where it is nodata (see the module docstring for the rule)."""
    has_points = acc.shaped(acc.count) > 0
    dsm = acc.shaped(acc.top_z).copy()
    dsm[~np.isfinite(dsm)] = np.nan  # cells holding only water points
    fill_from_nearest(dsm, has_points, pixel_sides_m(acc.grid), fill_radius_m)
    return dsm


def check_ground(acc: CellAccumulator) -> None:
    """Refuse input without ground points: no DTM (and so no nDSM) can be built from it."""
    if not acc.ground_count.any():
        raise DemsegError(f"no ground points (ASPRS class {acc.ground_class}) in the input: a DTM cannot be "
                          "built; check --ground-class or classify ground first (e.g. pdal filters.smrf)")


def terrain_model(acc: CellAccumulator, dsm_valid: np.ndarray) -> np.ndarray:
    """The DTM as float32, NaN where it is nodata: mean ground height per cell, interpolated elsewhere."""
    check_ground(acc)
    ground_count = acc.shaped(acc.ground_count)
    has_ground = ground_count > 0
    dtm = np.full(has_ground.shape, np.nan, np.float32)
    dtm[has_ground] = acc.shaped(acc.ground_sum)[has_ground] / ground_count[has_ground]
    missing = dsm_valid & ~has_ground
    if missing.any():
        _interpolate_ground(dtm, has_ground, missing, pixel_sides_m(acc.grid))
    dtm[~dsm_valid] = np.nan
    return dtm


def _interpolate_ground(dtm: np.ndarray, has_ground: np.ndarray, missing: np.ndarray,
                        sides_m: tuple[float, float]) -> None:
    """Fill ``missing`` cells of ``dtm`` in place: linear on a TIN of ground cells by gaps, else nearest."""
    rim = has_ground & ndimage.binary_dilation(~has_ground, structure=np.ones((3, 3), bool))
    fill_gaps(dtm, rim, missing, sides_m)
    outside = missing & np.isnan(dtm)
    if outside.any():  # beyond the hull of the ground cells: the nearest one
        near_rows, near_cols = ndimage.distance_transform_edt(~has_ground, sampling=sides_m,
                                                              return_distances=False, return_indices=True)
        dtm[outside] = dtm[near_rows[outside], near_cols[outside]]


def height_model(dsm: np.ndarray, dtm: np.ndarray) -> np.ndarray:
    """The nDSM (DSM - DTM) as float32, NaN where either is nodata."""
    return (dsm - dtm).astype(np.float32)


def label_raster(acc: CellAccumulator, label_codes: list[int], dsm_valid: np.ndarray) -> np.ndarray:
    """uint8 labels: 0 other, ``label_codes[k]`` where class k wins the vote, 255 without points or DSM."""
    count, votes, top_class = acc.shaped(acc.count), acc.shaped(acc.votes), acc.shaped(acc.top_class)
    best_votes = count - votes.sum(axis=0, dtype=np.uint32)  # "other" (slot 0) first: it wins plain ties
    best = np.zeros(count.shape, np.uint8)
    for k in range(len(label_codes)):
        better = votes[k] > best_votes
        best[better] = k + 1
        best_votes[better] = votes[k][better]
    for k, code in enumerate(acc.class_codes):  # a tie goes to the class of the highest return
        best[(top_class == code) & (votes[k] == best_votes)] = k + 1
    labels = np.asarray([0, *label_codes], np.uint8)[best]
    labels[(count == 0) | ~dsm_valid] = LABEL_NODATA
    return labels
