"""One footprint per building: split building blocks where the roof height steps, with LoD1 attributes.

A predicted mask joins buildings that touch (a terrace, a perimeter block) into one region. Where
two buildings meet, their roofs rarely have the same height: the DSM steps by a storey or more
across the party wall, while a pitched roof changes by at most ``tan(slope) x pixel`` between
neighbouring pixels (0.5 m per 0.5 m pixel at 45 degrees). So each footprint is cut along the
pixels where the DSM differs from a 4-neighbour by more than ``step_m``; the pieces left of at
least ``min_part_m2`` are the seeds of the parts, and every other pixel of the footprint (the step
line itself, dormers, chimneys, pieces too small to stand alone) joins the part whose seed the
watershed of the height gradient reaches first; a pixel of a step line then goes to the
neighbouring part whose median roof height is nearest its own. A footprint whose step lines do not close off a
part stays whole.

Each footprint is read in its own window (bounded memory whatever the scene size). Per part the
LoD1 attributes: ``ground_m`` (median DTM), ``roof_m`` (median DSM: the LoD1 block's top),
``roof_max_m``, ``height_m`` (roof minus ground), ``area_m2``, ``point_count`` (LiDAR returns,
where a ``point_count.tif`` from ``demseg rasterize`` lies beside the DEM) and ``mean_probability``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio import features
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from scipy import ndimage
from skimage.segmentation import watershed

from demseg.io.raster import GridSpec
from demseg.predict.sliding import DemInput

FOUR = ndimage.generate_binary_structure(2, 1)
LOD1_FIELDS = ("ground_m", "roof_m", "roof_max_m", "height_m", "point_count")


def split_labels(inside: np.ndarray, dsm: np.ndarray, step_m: float, min_part_px: int) -> np.ndarray:
    """Part labels (1..N, 0 outside) of one footprint ``inside`` from its DSM (NaN where unknown)."""
    height = dsm
    step = np.zeros(inside.shape, bool)
    for axis in (0, 1):
        difference = np.abs(np.diff(height, axis=axis))
        jump = np.nan_to_num(difference, nan=0.0) > step_m
        if axis == 0:
            step[:-1] |= jump
            step[1:] |= jump
        else:
            step[:, :-1] |= jump
            step[:, 1:] |= jump
    seeds, count = ndimage.label(inside & ~step, structure=FOUR)
    if count <= 1:
        return inside.astype(np.int32)
    sizes = np.bincount(seeds.ravel(), minlength=count + 1)
    keep = sizes >= min_part_px
    keep[0] = False
    if keep.sum() <= 1:
        return inside.astype(np.int32)
    relabel = np.zeros(count + 1, np.int32)
    relabel[keep] = np.arange(1, keep.sum() + 1)
    markers = relabel[seeds]
    filled = np.where(np.isfinite(height), height, np.nanmedian(height[inside]) if np.isfinite(height[inside]).any()
                      else 0.0)
    gradient = np.hypot(ndimage.sobel(filled, 0), ndimage.sobel(filled, 1))
    parts = watershed(gradient, markers, mask=inside, connectivity=1).astype(np.int32)
    return _connected(_by_height(parts, filled, inside & step))


def _connected(parts: np.ndarray) -> np.ndarray:
    """Every part one 4-connected piece: a part's smaller pieces join the neighbouring part they touch most."""
    out = parts.copy()
    for label in range(1, int(parts.max()) + 1):
        pieces, count = ndimage.label(parts == label, structure=FOUR)
        if count <= 1:
            continue
        largest = np.bincount(pieces.ravel())[1:].argmax() + 1
        for piece, box in enumerate(ndimage.find_objects(pieces), start=1):
            if piece == largest:
                continue
            box = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)  # the piece and its ring
            region = pieces[box] == piece
            ring = ndimage.binary_dilation(region, FOUR) & ~region
            neighbours = out[box][ring]
            neighbours = neighbours[(neighbours > 0) & (neighbours != label)]
            if neighbours.size:
                out[box][region] = np.bincount(neighbours).argmax()
    return out


def _by_height(parts: np.ndarray, height: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Each pixel of a step line given to the neighbouring part (8-neighbours) whose median roof is nearest."""
    count = int(parts.max())
    medians = np.array([np.inf] + [float(np.median(height[parts == k])) for k in range(1, count + 1)])
    rows, cols = np.nonzero(step)
    padded = np.pad(parts, 1)
    # the 3 x 3 neighbourhood of every step pixel (the pixel itself included): labels and their distance
    candidates = np.stack([padded[rows + dr, cols + dc] for dr in range(3) for dc in range(3)], axis=1)
    distance = np.abs(medians[candidates] - height[rows, cols][:, None])
    out = parts.copy()
    out[rows, cols] = candidates[np.arange(len(rows)), distance.argmin(axis=1)]
    return out


def _window_of(geometry, grid: GridSpec) -> Window:
    left, bottom, right, top = geometry.bounds
    col0, row0 = ~grid.transform * (left, top)
    col1, row1 = ~grid.transform * (right, bottom)
    col0, col1 = sorted((col0, col1))
    row0, row1 = sorted((row0, row1))
    c0, r0 = max(0, int(np.floor(col0)) - 1), max(0, int(np.floor(row0)) - 1)
    c1, r1 = min(grid.width, int(np.ceil(col1)) + 1), min(grid.height, int(np.ceil(row1)) + 1)
    return Window(c0, r0, c1 - c0, r1 - r0)


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


class FootprintSplitter:
    """Splits the footprints of one scene (map-coordinate polygons on ``grid``) and describes each part."""

    def __init__(self, grid: GridSpec, source: DemInput, prob_path: str | Path | None, step_m: float,
                 min_part_m2: float) -> None:
        self.grid, self.source, self.step_m = grid, source, step_m
        self.pixel_area_m2 = abs(grid.transform.a * grid.transform.e)
        self.min_part_px = max(1, int(np.ceil(min_part_m2 / self.pixel_area_m2)))
        self.prob_path = prob_path
        count = Path(source.dem).with_name("point_count.tif")
        self.count_path = count if count.exists() and _same_grid(count, grid) else None

    def split(self, geometry) -> list[tuple[object, dict]]:
        """The parts of one footprint: (exact outline in map coordinates, attributes)."""
        window = _window_of(geometry, self.grid)
        transform = window_transform(window, self.grid.transform)
        shape = (int(window.height), int(window.width))
        inside = features.rasterize([(geometry, 1)], out_shape=shape, transform=transform, fill=0,
                                    dtype="uint8").astype(bool)
        dsm, _, dtm = self.source.read_window(window)
        labels = split_labels(inside, dsm, self.step_m, self.min_part_px)
        probability = self._read(self.prob_path, window, scale=0.01, nodata=255)
        counts = self._read(self.count_path, window)
        parts = []
        for shape_geometry, value in features.shapes(labels, mask=labels > 0, connectivity=4, transform=transform):
            part = labels == int(value)
            polygon = shapely.normalize(shapely.simplify(shapely.geometry.shape(shape_geometry), 0.0))
            parts.append((int(value), polygon, part))
        merged: dict[int, list] = {}
        for value, polygon, part in parts:
            merged.setdefault(value, [part, []])[1].append(polygon)
        out = []
        for part, polygons in merged.values():
            geometry_part = shapely.union_all(polygons) if len(polygons) > 1 else polygons[0]
            ground, roof = _median(dtm[part]) if dtm is not None else float("nan"), _median(dsm[part])
            roof_values = dsm[part][np.isfinite(dsm[part])]
            out.append((geometry_part, {
                "pixels": int(part.sum()),
                "ground_m": ground, "roof_m": roof,
                "roof_max_m": float(roof_values.max()) if roof_values.size else float("nan"),
                "height_m": roof - ground,
                "point_count": float(np.nansum(counts[part])) if counts is not None else float("nan"),
                "probability": float(np.nanmean(probability[part])) if probability is not None else float("nan"),
                "height_above_ground": (dsm[part] - dtm[part]) if dtm is not None else None,
            }))
        return out

    @staticmethod
    def _read(path, window: Window, scale: float = 1.0, nodata: float | None = None) -> np.ndarray | None:
        if path is None:
            return None
        with rasterio.open(path) as src:
            values = src.read(1, window=window).astype(np.float64)
            declared = src.nodata if nodata is None else nodata
        if declared is not None:
            values[values == declared] = np.nan
        return values * scale


def _same_grid(path: Path, grid: GridSpec) -> bool:
    with rasterio.open(path) as src:
        return (src.width, src.height) == (grid.width, grid.height) and src.transform.almost_equals(grid.transform)
