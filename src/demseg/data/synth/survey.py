"""What a LiDAR survey does to the surface: the laser footprint, dropouts, water left without returns or
interpolated across, centimetre rounding, nodata."""

from __future__ import annotations

import numpy as np
import shapely
from rasterio import features
from scipy import ndimage
from scipy.spatial import Delaunay, QhullError
from shapely.geometry import Polygon

from demseg.data.synth.canvas import Canvas


def lidar_survey(rng: np.random.Generator, dsm: np.ndarray,
                 canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The DSM as a LiDAR survey grids it: edges softened by the laser footprint; and a mask of sparse
    dropouts (at least one), pixels without a return, as on glass, dark roofs or puddles."""
    soft = ndimage.gaussian_filter(dsm, rng.uniform(0.2, 0.4) / canvas.pixel_size_m)
    count = 1 + rng.poisson(rng.uniform(100.0, 800.0) * canvas.extent_m**2 / 1e6)
    rows, cols = rng.integers(0, canvas.size_px, size=(2, count))
    heights_px, widths_px = rng.integers(1, 4, size=(2, count))
    dropouts = np.zeros(canvas.shape, dtype=bool)
    for row, col, height_px, width_px in zip(rows, cols, heights_px, widths_px, strict=True):
        dropouts[row:row + height_px, col:col + width_px] = True
    return soft, dropouts


def interpolated_water(rng: np.random.Generator, water: list[Polygon],
                       canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Which water bodies the survey interpolates across from their banks (the others it leaves without
    returns), at a chance drawn per scene, and a mask of their pixels."""
    chance = rng.uniform(0.0, 1.0)
    interpolated = rng.random(len(water)) < chance
    shapes = [(body, 1) for body, filled in zip(water, interpolated, strict=True) if filled]
    return interpolated, canvas.rasterize(shapes, "uint8") > 0


def tin_filled(surface: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """``surface`` with ``holes`` filled as a TIN-gridded LiDAR product fills areas without returns: linear
    interpolation on a Delaunay triangulation of the pixels bordering them, so flat or sloped facets span
    each hole (the nearest border value where no triangle reaches, as at the scene edge)."""
    border = ndimage.binary_dilation(holes) & ~holes
    if not holes.any() or not border.any():
        return surface
    rows, cols = np.nonzero(border)
    vertices = np.column_stack([cols + 0.5, rows + 0.5])  # pixel centres, x right and y down, in pixels
    try:
        triangles = Delaunay(vertices).simplices
    except QhullError:  # fewer than three border pixels, or all on one line
        triangles = np.empty((0, 3), dtype=int)
    hole_rows, hole_cols = np.nonzero(holes)
    owner = np.zeros(len(hole_rows), dtype=int)
    if len(triangles):
        # burn each triangle's number into the pixels whose centres it holds: no point location needed (and
        # no LAPACK, whose threads crawl on a busy machine, as scipy's point location uses)
        shapes = zip(shapely.polygons(vertices[triangles]), range(1, len(triangles) + 1), strict=True)
        owner = features.rasterize(shapes, out_shape=surface.shape, fill=0, dtype="int32")
        owner = owner[hole_rows, hole_cols]
    result = surface.copy()
    inside = owner > 0
    corners = triangles[owner[inside] - 1]
    a, b, c = (vertices[corners[:, index]] for index in range(3))
    to_b, to_c = b - a, c - a
    to_p = np.column_stack([hole_cols[inside] + 0.5, hole_rows[inside] + 0.5]) - a
    area = to_b[:, 0] * to_c[:, 1] - to_c[:, 0] * to_b[:, 1]  # twice the triangle's, never 0 in a Delaunay
    weight_b = (to_p[:, 0] * to_c[:, 1] - to_c[:, 0] * to_p[:, 1]) / area
    weight_c = (to_b[:, 0] * to_p[:, 1] - to_p[:, 0] * to_b[:, 1]) / area
    z = surface[rows, cols][corners]
    result[hole_rows[inside], hole_cols[inside]] = (1 - weight_b - weight_c) * z[:, 0] + weight_b * z[:, 1] \
        + weight_c * z[:, 2]
    if not inside.all():
        _, (near_rows, near_cols) = ndimage.distance_transform_edt(~border, return_indices=True)
        lost = hole_rows[~inside], hole_cols[~inside]
        result[lost] = surface[near_rows[lost], near_cols[lost]]
    return result


def as_survey(elevation: np.ndarray, nodata_mask: np.ndarray) -> np.ndarray:
    """float32 at centimetre precision as LiDAR products are delivered; NaN where there is no return."""
    surveyed = np.round(elevation, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    surveyed[nodata_mask] = np.nan
    return surveyed.astype(np.float32)
