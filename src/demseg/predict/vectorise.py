"""Vectorise a predicted mask block by block: polygons (buildings, roads) and road centrelines.

The mask is read in blocks of rows, so memory follows the block, not the scene.

Polygons: each block is labelled (4-connected) and traced with ``rasterio.features.shapes`` in
pixel coordinates, which are exact integers. A component that touches a cut between two blocks
stays open; open pieces that touch across a cut are linked (union-find over the pixel pairs on
either side of it) and unioned at the end, so a polygon crossing any number of blocks comes out
whole, the same as from a one-block run. Attributes are per-component sums (pixels, probability,
height above the DTM) added over the pieces.

Regularised outlines and road networks are made from the stitched whole-scene vectors (see
:mod:`demseg.predict.regularise` and :mod:`demseg.predict.roadgraph`).

Centrelines: each block is skeletonised with ``halo_px`` extra rows above and below (thinning is
local: with a halo wider than the widest road the skeleton agrees with the whole scene's inside
the block) and traced into pixel chains between end and junction pixels. Terminal branches
shorter than the road width at their junction (skeleton spurs) are pruned. A block keeps the
parts of chains on its own rows, extended by one pixel into the block below, so the pieces of
neighbouring blocks share exact endpoints; at the end, lines that meet at a point no other line
touches are merged. Width = 2 x the median distance to the road edge along the line x pixel size.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict

import numpy as np
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from rasterio import features
from rasterio.windows import Window
from scipy import ndimage
from skimage.morphology import skeletonize

from demseg.io.raster import GridSpec
from demseg.io.vector import VectorLayer
from demseg.predict.config import PredictConfig
from demseg.predict.regularise import regularise_footprints, vertex_count
from demseg.predict.roadgraph import road_network
from demseg.predict.sliding import NODATA, DemInput, StageTimer

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def default_block_rows(width_px: int) -> int:
    """Rows per vectorising block: about 4 million pixels, between 64 and 4096 rows."""
    return int(max(64, min(4096, (1 << 22) // max(1, width_px))))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def add(self, item: int) -> None:
        self.parent.setdefault(item, item)

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[root_b] = root_a

    def groups(self) -> list[list[int]]:
        members: dict[int, list[int]] = defaultdict(list)
        for item in self.parent:
            members[self.find(item)].append(item)
        return list(members.values())


# ------------------------------------------------------------------------------------------ polygons

STAT_PIXELS, STAT_PROBABILITY, STAT_HEIGHT, STAT_HEIGHT_PIXELS, STAT_HEIGHT_MIN, STAT_HEIGHT_MAX = range(6)


def _component_stats(labels: np.ndarray, count: int, probability: np.ndarray | None,
                     height: np.ndarray | None) -> np.ndarray:
    """(count + 1, 6) per label: sums of pixels, probability, height, pixels with a known height; min, max height."""
    index = labels.ravel()
    stats = np.zeros((count + 1, 6))
    stats[:, STAT_HEIGHT_MIN], stats[:, STAT_HEIGHT_MAX] = np.inf, -np.inf
    stats[:, STAT_PIXELS] = np.bincount(index, minlength=count + 1)
    if probability is not None:
        stats[:, STAT_PROBABILITY] = np.bincount(index, weights=probability.ravel(), minlength=count + 1)
    if height is not None:
        known = np.isfinite(height.ravel())
        stats[:, STAT_HEIGHT] = np.bincount(index[known], weights=height.ravel()[known], minlength=count + 1)
        stats[:, STAT_HEIGHT_PIXELS] = np.bincount(index[known], minlength=count + 1)
        np.minimum.at(stats[:, STAT_HEIGHT_MIN], index[known], height.ravel()[known])
        np.maximum.at(stats[:, STAT_HEIGHT_MAX], index[known], height.ravel()[known])
    return stats


def _combine(stats: list[np.ndarray]) -> np.ndarray:
    """The statistics of a component made of pieces: sums add up, extremes take the extreme."""
    stacked = np.stack(stats)
    combined = stacked.sum(axis=0)
    combined[STAT_HEIGHT_MIN] = stacked[:, STAT_HEIGHT_MIN].min()
    combined[STAT_HEIGHT_MAX] = stacked[:, STAT_HEIGHT_MAX].max()
    return combined


class PolygonStitcher:
    """Connected components of a mask fed block by block (top to bottom), joined across block cuts.

    Geometries are in pixel coordinates (x = column, y = row from the scene's top).
    """

    def __init__(self) -> None:
        self.finished: list[tuple[object, np.ndarray]] = []
        self.pieces: dict[int, tuple[object, np.ndarray]] = {}
        self.links = _UnionFind()
        self._last_row_pieces: np.ndarray | None = None
        self._next_id = 1

    def add(self, target: np.ndarray, row_off: int, first: bool, last: bool,
            probability: np.ndarray | None = None, height: np.ndarray | None = None) -> None:
        """Add rows [row_off, row_off + len(target)) of a boolean mask (and per-pixel values to average)."""
        labels, count = ndimage.label(target, structure=FOUR_CONNECTED)
        piece_of = np.zeros(count + 1, np.int64)
        if count:
            stats = _component_stats(labels, count, probability, height)
            open_labels = set()
            if not first:
                open_labels |= set(np.unique(labels[0]).tolist())
            if not last:
                open_labels |= set(np.unique(labels[-1]).tolist())
            open_labels.discard(0)
            shapes = features.shapes(labels, mask=labels > 0, connectivity=4,
                                     transform=Affine.translation(0, row_off))
            for geometry, value in shapes:
                label = int(value)
                polygon = shapely.geometry.shape(geometry)
                if label in open_labels:
                    piece_of[label] = self._next_id
                    self.pieces[self._next_id] = (polygon, stats[label])
                    self.links.add(self._next_id)
                    self._next_id += 1
                else:
                    self.finished.append((polygon, stats[label]))
        if not first and self._last_row_pieces is not None:
            above, below = self._last_row_pieces, piece_of[labels[0]]
            touching = (above > 0) & (below > 0)
            for a, b in set(zip(above[touching].tolist(), below[touching].tolist(), strict=True)):
                self.links.union(a, b)
        self._last_row_pieces = piece_of[labels[-1]]

    def drain(self) -> list[tuple[object, np.ndarray]]:
        """Components completed so far (they touch no open cut); forgets them."""
        done, self.finished = self.finished, []
        return done

    def close(self) -> list[tuple[object, np.ndarray]]:
        """Everything not yet drained, with pieces that cross cuts unioned into whole components."""
        done = self.drain()
        for members in self.links.groups():
            polygons = [self.pieces[m][0] for m in members]
            stats = _combine([self.pieces[m][1] for m in members])
            done.append((shapely.union_all(polygons) if len(polygons) > 1 else polygons[0], stats))
        self.pieces.clear()
        self.links = _UnionFind()
        return done


def _to_map(geometry, transform: Affine):
    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = transform * (xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geometry, apply)


def _simplified(geometry, tolerance_m: float):
    return shapely.simplify(geometry, tolerance_m, preserve_topology=True) if tolerance_m > 0 else geometry


def _polygon_rows(items, grid: GridSpec, min_area_m2: float) -> list[tuple]:
    """(exact outline in map coordinates, statistics) of every component of at least ``min_area_m2``."""
    pixel_area_m2 = abs(grid.transform.a * grid.transform.e)
    rows = []
    for polygon, stats in items:
        if stats[STAT_PIXELS] * pixel_area_m2 < min_area_m2:
            continue
        # the same outline whether it came whole or unioned from block pieces: no collinear
        # vertices left at the cuts, a fixed start vertex, so simplification gives the same result
        rows.append((_to_map(shapely.normalize(shapely.simplify(polygon, 0.0)), grid.transform), stats))
    return rows


def _split_rows(rows: list[tuple], grid: GridSpec, source: DemInput, prob_path, config: PredictConfig
                ) -> tuple[list[tuple], dict[str, np.ndarray]]:
    """Every footprint split at roof-height steps (:mod:`demseg.predict.split`): rows and LoD1 attributes."""
    from demseg.predict.split import LOD1_FIELDS, FootprintSplitter

    splitter = FootprintSplitter(grid, source, prob_path, config.split_step_m, config.min_part_m2)
    pixel_area_m2 = abs(grid.transform.a * grid.transform.e)
    out, lod1 = [], {name: [] for name in LOD1_FIELDS}
    for geometry, _ in rows:
        for part, values in splitter.split(geometry):
            if values["pixels"] * pixel_area_m2 < config.min_area_m2:
                continue
            stats = np.zeros(6)
            stats[STAT_PIXELS] = values["pixels"]
            stats[STAT_PROBABILITY] = 0.0 if np.isnan(values["probability"]) else \
                values["probability"] * values["pixels"]
            above = values["height_above_ground"]
            if above is not None and np.isfinite(above).any():
                known = above[np.isfinite(above)]
                stats[STAT_HEIGHT], stats[STAT_HEIGHT_PIXELS] = known.sum(), known.size
                stats[STAT_HEIGHT_MIN], stats[STAT_HEIGHT_MAX] = known.min(), known.max()
            out.append((part, stats))
            for name in LOD1_FIELDS:
                lod1[name].append(values[name])
    return out, {name: np.round(np.array(values, float), 2) for name, values in lod1.items()}


def _polygon_layer(rows: list[tuple], task: str, grid: GridSpec, config: PredictConfig, crs,
                   lod1: dict[str, np.ndarray] | None = None) -> VectorLayer:
    """The polygon layer: regularised (buildings, on request) or simplified outlines, with their attributes."""
    exact = [geometry for geometry, _ in rows]
    if task == "buildings" and config.regularise:
        geometries = regularise_footprints(exact, grid.pixel_size_m)
    else:
        tolerance = grid.pixel_size_m if config.simplify_m is None else config.simplify_m
        geometries = [_simplified(geometry, tolerance) for geometry in exact]
    stats = np.array([s for _, s in rows]).reshape(-1, 6)
    known = stats[:, STAT_HEIGHT_PIXELS] > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_height = np.where(known, stats[:, STAT_HEIGHT] / stats[:, STAT_HEIGHT_PIXELS], np.nan)
        probability = stats[:, STAT_PROBABILITY] / stats[:, STAT_PIXELS]
    attributes = {"area_m2": np.round(np.array([g.area for g in geometries], float), 2)}
    if task == "buildings":
        attributes["mean_height_m"] = np.round(mean_height, 2)
        attributes["max_height_m"] = np.round(np.where(known, stats[:, STAT_HEIGHT_MAX], np.nan), 2)
        attributes["height_range_m"] = np.round(np.where(known, stats[:, STAT_HEIGHT_MAX] - stats[:, STAT_HEIGHT_MIN],
                                                         np.nan), 2)
        attributes["vertices"] = np.array([vertex_count(g) for g in geometries], np.int32)
        attributes.update(lod1 or {})
    attributes["mean_probability"] = np.round(probability, 3)
    return VectorLayer(_objects(geometries), attributes, crs)


# ---------------------------------------------------------------------------------------- centrelines


def _skeleton_graph(skeleton: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """Skeleton pixel coordinates (N, 2) and each pixel's neighbour indices (8-connected).

    A diagonal step is dropped where an orthogonal path joins the same two pixels, so staircase
    corners are paths, not triangles.
    """
    rows, cols = np.nonzero(skeleton)
    padded = np.pad(skeleton, 1)
    index = np.full(padded.shape, -1, np.int64)
    index[rows + 1, cols + 1] = np.arange(len(rows))
    neighbours = np.full((len(rows), len(_OFFSETS)), -1, np.int64)
    for k, (dr, dc) in enumerate(_OFFSETS):
        found = index[rows + 1 + dr, cols + 1 + dc]
        if dr and dc:
            found = np.where(padded[rows + 1 + dr, cols + 1] | padded[rows + 1, cols + 1 + dc], -1, found)
        neighbours[:, k] = found
    return np.column_stack([rows, cols]), [[n for n in row if n >= 0] for row in neighbours.tolist()]


def trace_skeleton(skeleton: np.ndarray, distance_px: np.ndarray | None = None) -> list[np.ndarray]:
    """Pixel chains (k, 2) of (row, col) between end and junction pixels of a skeleton; loops closed.

    With ``distance_px`` (distance to the mask edge), terminal branches shorter than the mask's
    width at their junction (2 x its distance) are dropped as spurs.
    """
    coords, neighbours = _skeleton_graph(skeleton)
    degree = [len(n) for n in neighbours]
    visited: set[tuple[int, int]] = set()

    def edge(a: int, b: int) -> tuple[int, int]:
        return (a, b) if a < b else (b, a)

    def walk(start: int, first: int) -> list[int]:
        chain, previous, current = [start], start, first
        visited.add(edge(start, first))
        while degree[current] == 2 and current != start:
            chain.append(current)
            following = neighbours[current][0] if neighbours[current][0] != previous else neighbours[current][1]
            if edge(current, following) in visited:
                break
            visited.add(edge(current, following))
            previous, current = current, following
        chain.append(current)
        return chain

    chains = []
    for start in (p for p in range(len(degree)) if degree[p] != 2):
        chains += [walk(start, n) for n in neighbours[start] if edge(start, n) not in visited]
    for start in (p for p in range(len(degree)) if degree[p] == 2):
        if edge(start, neighbours[start][0]) not in visited:
            chains.append(walk(start, neighbours[start][0]))
    out = []
    for chain in chains:
        points = coords[chain]
        if distance_px is not None and _is_spur(chain, points, degree, distance_px):
            continue
        out.append(points)
    return out


def _is_spur(chain: list[int], points: np.ndarray, degree: list[int], distance_px: np.ndarray) -> bool:
    ends = (degree[chain[0]], degree[chain[-1]])
    if sorted(ends)[0] != 1 or max(ends) < 3:
        return False
    junction = points[0] if degree[chain[0]] >= 3 else points[-1]
    length = float(np.hypot(*np.diff(points, axis=0).T).sum())
    return length < 2.0 * float(distance_px[junction[0], junction[1]])


def _runs(inside: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


class CentrelineStitcher:
    """Road centrelines from haloed blocks of a road mask, joined into lines across block cuts.

    Lines are in pixel coordinates (x = column + 0.5, y = row + 0.5: pixel centres).
    """

    def __init__(self) -> None:
        self.pieces: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, road: np.ndarray, halo_off: int, core_start: int, core_stop: int, scene_height: int) -> None:
        """Add the rows [core_start, core_stop) given a block of rows [halo_off, halo_off + len(road))."""
        if not road.any():
            return
        # the scene's own edges are background for the distance; cuts inside the scene are not
        top = 1 if halo_off == 0 else 0
        bottom = 1 if halo_off + road.shape[0] >= scene_height else 0
        distance = ndimage.distance_transform_edt(np.pad(road, ((top, bottom), (1, 1))))
        distance = distance[top:top + road.shape[0], 1:-1]
        for chain in trace_skeleton(skeletonize(road), distance):
            rows = chain[:, 0] + halo_off
            for start, stop in _runs((rows >= core_start) & (rows < core_stop)):
                low = start - 1 if start > 0 and rows[start - 1] >= core_stop else start
                high = stop + 1 if stop < len(chain) and rows[stop] >= core_stop else stop
                if high - low < 2:
                    continue
                points = np.column_stack([chain[low:high, 1] + 0.5, rows[low:high] + 0.5])
                widths = distance[chain[start:stop, 0], chain[start:stop, 1]]
                self.pieces.append((points, widths))

    def close(self) -> list[tuple[object, float]]:
        """(line, width in pixels) for every centreline; pieces meeting at a point of degree 2 are merged."""
        at_point: dict[tuple[float, float], list[int]] = defaultdict(list)
        for index, (points, _) in enumerate(self.pieces):
            at_point[tuple(points[0])].append(index)
            at_point[tuple(points[-1])].append(index)
        links = _UnionFind()
        for index in range(len(self.pieces)):
            links.add(index)
        for members in at_point.values():
            if len(members) == 2 and members[0] != members[1]:
                links.union(*members)
        out = []
        for group in links.groups():
            lines = [shapely.LineString(self.pieces[i][0]) for i in group]
            widths = np.concatenate([self.pieces[i][1] for i in group])
            merged = shapely.line_merge(shapely.MultiLineString(lines)) if len(lines) > 1 else lines[0]
            width_px = 2.0 * float(np.median(widths)) if len(widths) else np.nan
            out += [(line, width_px) for line in shapely.get_parts(merged) if line.length > 0]
        self.pieces = []
        return out


# ------------------------------------------------------------------------------------------- driver


def _objects(geometries: list) -> np.ndarray:
    array = np.empty(len(geometries), dtype=object)
    array[:] = geometries
    return array


def vectorise_mask(mask_path: str | os.PathLike, task: str, prob_path: str | os.PathLike | None = None,
                   source: DemInput | None = None, config: PredictConfig | None = None,
                   timer: StageTimer | None = None) -> dict[str, VectorLayer]:
    """Vector layers of a 0/1/255 mask raster, read in blocks of ``config.block_rows`` rows.

    Buildings: layer ``buildings`` (polygons with area_m2, mean_height_m, max_height_m and
    height_range_m - the DEM minus the DTM inside the polygon when ``source`` has a DTM, else null -
    vertices and mean_probability); ``config.regularise`` straightens the outlines
    (:func:`demseg.predict.regularise.regularise_footprints`), otherwise they are simplified by
    ``config.simplify_m`` (default: the pixel size). Roads: layers ``roads`` (polygons with area_m2,
    mean_probability), ``road_edges`` (centrelines between junctions and ends: length_m, width_m,
    mean_probability, from_node, to_node, bridged_m) and ``road_nodes`` (node_id, degree); see
    :func:`demseg.predict.roadgraph.road_network`.
    """
    config = config or PredictConfig()
    timer = timer or StageTimer()
    with rasterio.open(mask_path) as mask_src, \
            (rasterio.open(prob_path) if prob_path is not None else contextlib.nullcontext()) as prob_src:
        grid = GridSpec(mask_src.crs, mask_src.transform, mask_src.width, mask_src.height)
        polygon_rows, centrelines = _stitch(mask_src, prob_src, source, grid, task, config, timer)
    crs = grid.crs.to_wkt() if grid.crs is not None else None
    lod1 = None
    if task == "buildings" and source is not None and config.split_step_m is not None:
        with timer("split"):
            polygon_rows, lod1 = _split_rows(polygon_rows, grid, source, prob_path, config)
    with timer("vectorise"):
        layers = {task: _polygon_layer(polygon_rows, task, grid, config, crs, lod1)}
        if task == "roads":
            lines, widths = _centrelines_in_map(centrelines, grid, config)
            probabilities = _line_probabilities(lines, prob_path, grid) if prob_path is not None else None
            layers["road_edges"], layers["road_nodes"] = road_network(
                lines, widths, probabilities, bridge_gap_m=config.bridge_gap_m, min_spur_m=config.min_spur_m,
                crs=crs)
    return layers


def road_centrelines(mask_path: str | os.PathLike, config: PredictConfig | None = None) -> tuple[list, list[float]]:
    """The raw centrelines (map coordinates) of a road mask and their widths in metres, before the network."""
    config = config or PredictConfig()
    with rasterio.open(mask_path) as mask_src:
        grid = GridSpec(mask_src.crs, mask_src.transform, mask_src.width, mask_src.height)
        _, centrelines = _stitch(mask_src, None, None, grid, "roads", config, StageTimer())
    return _centrelines_in_map(centrelines, grid, config)


def _centrelines_in_map(centrelines: list[tuple], grid: GridSpec, config: PredictConfig) -> tuple[list, list[float]]:
    simplify_m = grid.pixel_size_m if config.simplify_m is None else config.simplify_m
    lines = [_simplified(_to_map(line, grid.transform), simplify_m) for line, _ in centrelines]
    return lines, [width_px * grid.pixel_size_m for _, width_px in centrelines]


def _stitch(mask_src, prob_src, source: DemInput | None, grid: GridSpec, task: str, config: PredictConfig,
            timer: StageTimer) -> tuple[list[tuple], list[tuple]]:
    """Every component's exact outline and statistics, and (for roads) the centrelines, block by block."""
    block_rows = config.block_rows or default_block_rows(grid.width)
    heights = task == "buildings" and source is not None and source.dtm is not None
    halo = config.halo_px if task == "roads" else 0
    polygons, lines = PolygonStitcher(), CentrelineStitcher()
    polygon_rows = []
    for row_off in range(0, grid.height, block_rows):
        rows = min(block_rows, grid.height - row_off)
        halo_off, halo_stop = max(0, row_off - halo), min(grid.height, row_off + rows + halo)
        with timer("read"):
            block = mask_src.read(1, window=Window(0, halo_off, grid.width, halo_stop - halo_off)) == 1
            probability = None
            if prob_src is not None:
                percent = prob_src.read(1, window=Window(0, row_off, grid.width, rows))
                probability = np.where(percent == NODATA, 0.0, percent / 100.0)
            height = None
            if heights:
                elevation, _, dtm = source.read_rows(row_off, rows, grid)
                height = elevation - dtm
        with timer("vectorise"):
            core = block[row_off - halo_off:row_off - halo_off + rows]
            polygons.add(core, row_off, row_off == 0, row_off + rows >= grid.height, probability, height)
            polygon_rows += _polygon_rows(polygons.drain(), grid, config.min_area_m2)
            if task == "roads":
                lines.add(block, halo_off, row_off, row_off + rows, grid.height)
    with timer("vectorise"):
        polygon_rows += _polygon_rows(polygons.close(), grid, config.min_area_m2)
        return polygon_rows, lines.close() if task == "roads" else []


def _line_probabilities(lines: list, prob_path: str | os.PathLike, grid: GridSpec) -> list[float]:
    """The mean target probability under each line, sampled every pixel along it."""
    means = []
    with rasterio.open(prob_path) as src:
        for line in lines:
            count = max(2, int(line.length / grid.pixel_size_m) + 1)
            points = [line.interpolate(d) for d in np.linspace(0.0, line.length, count)]
            values = np.array([v[0] for v in src.sample([(p.x, p.y) for p in points])], float)
            values = values[values != NODATA]
            means.append(float(values.mean() / 100.0) if len(values) else float("nan"))
    return means
