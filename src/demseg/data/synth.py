"""A synthetic city world of LiDAR DEMs with building and road labels, for tests, demos and pre-training.

Each scene is built in metres in a local frame (x east, y north, origin at the scene's south-west
corner): smooth terrain, a street network cut into it (kerbs, sidewalks, embankments), buildings,
trees, hedges, cars and water without LiDAR returns. The DSM sees everything, the DTM only the bare
earth, and the labels are burnt from the very polygons that are written as vectors.

A scene is made of districts, urban forms of the cities demseg is used on:

- ``suburban``: detached houses set back from a street grid, gardens, hedges, trees;
- ``canopy``: detached houses under tall trees whose crowns reach over roofs and streets (Washington DC);
- ``rowhouse``: terraces of narrow houses sharing walls, gables along the row, back gardens;
- ``perimeter``: 19th-century perimeter blocks, a continuous street front of units around a courtyard
  with annexes and trees, in some scenes a canal between quays (Amsterdam, Paris, Lyon);
- ``oldtown``: irregular blocks filled with lots round patios, between 3-6 m alleys (Seville);
- ``industrial``: large flat-roofed halls with rooftop units amid parking lots and lorries.

The ``style`` of a scene picks them: ``"mixed"`` (the default) draws a district per scene and often a
second one in a zone of it, ``"dense"`` does so among perimeter blocks, old towns and row houses, a district
name gives that district alone, and ``"suburban"`` reproduces generator version 1 exactly (its scenes are
bit-identical). All styles but ``"suburban"`` also have what real DSMs show: dormers, chimneys, roof huts and
rooftop units, height steps between adjoining units, roof terraces, crowns over roofs, edges softened by the
LiDAR footprint and sparse dropouts without a return (nodata, like water).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.crs import CRS
from scipy import ndimage
from shapely import affinity
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.polygon import orient
from shapely.ops import substring
from tqdm import tqdm

from demseg.data.normalise import hillshade
from demseg.errors import DemsegError
from demseg.io import GridSpec, VectorLayer, write_geotiff, write_gpkg, write_text_atomic
from demseg.io.atomic import atomic_path, staging_folder

__all__ = ["DISTRICTS", "STYLES", "SynthScene", "generate_scene", "generate_world", "scene_grid",
           "scene_seed",
           "write_preview", "write_scene", "write_style_sheet"]

GENERATOR_VERSION = 2
DISTRICTS = ("suburban", "canopy", "rowhouse", "perimeter", "oldtown", "industrial")
STYLES = ("mixed", "dense", *DISTRICTS)
DEFAULT_STYLE = "mixed"
DETACHED = ("suburban", "canopy")  # houses placed along the roads, as generator version 1 does
WORLD_CRS = "EPSG:32631"
WORLD_ORIGIN_M = (500_000.0, 5_400_000.0)  # south-west corner of scene 0, UTM 31N
SCENE_GAP_M = 100.0
SCENES_PER_ROW = 10
ELEVATION_NODATA = -9999.0
LABEL_NODATA = 255
BUILDING, ROAD = 1, 2
MIN_SIZE_PX = 64
MAX_PIXEL_SIZE_M = 5.0  # beyond this, buildings and roads are only a few pixels wide
ROAD_PAD_M = 12.0  # roads just outside the scene still shape its edge (profile, kerbs, embankments)
FIELD_MARGIN_M = 40.0
BLOCK_MARGIN_M = 30.0  # blocks are filled this far past the scene edge, so edge blocks look like inner ones
WATER_RGB = (0.24, 0.50, 0.77)


@dataclass
class SynthScene:
    """One synthetic scene: rasters on a north-up grid and the vectors they were burnt from.

    Vectors are in metres in the scene's local frame: x east, y north, origin at the south-west
    corner of the scene, so they lie in ``[0, extent_m]``. Per-road arrays are aligned.
    """

    seed: int
    pixel_size_m: float
    style: str  # one of STYLES
    districts: tuple[str, ...]  # the scene's districts, the main one first
    dsm: np.ndarray  # float32 (H, W), NaN where there is no return (water, dropouts)
    dtm: np.ndarray  # float32 (H, W), bare earth with the road cut, NaN where the DSM is
    labels: np.ndarray  # uint8 (H, W): 0 background, 1 building, 2 road, 255 nodata
    buildings: np.ndarray  # shapely Polygons (courtyards and patios as holes; adjoining units share walls)
    building_heights_m: np.ndarray  # roof top (ridge or flat roof) above the ground at the footprint
    building_roofs: np.ndarray  # "flat", "gable", "hip" or "mansard"
    building_districts: np.ndarray  # the district each building belongs to
    road_centrelines: np.ndarray  # shapely LineStrings, reaching a little past the scene edge
    road_widths_m: np.ndarray
    road_polygons: np.ndarray  # centreline buffered by half its width (flat caps), clipped to the scene
    water: np.ndarray  # shapely Polygons without LiDAR returns
    vegetation_mask: np.ndarray  # bool (H, W): tree crowns and hedges (style "suburban": also under roofs)
    car_mask: np.ndarray  # bool (H, W): cars, vans and lorries

    @property
    def size_px(self) -> int:
        return int(self.dsm.shape[0])

    @property
    def extent_m(self) -> float:
        return self.size_px * self.pixel_size_m

    @property
    def local_transform(self) -> Affine:
        """Pixel -> local metres, north-up."""
        return Affine(self.pixel_size_m, 0.0, 0.0, 0.0, -self.pixel_size_m, self.extent_m)


# ----------------------------------------------------------------------------------------------
# grid and random fields


@dataclass(frozen=True)
class _Canvas:
    size_px: int
    pixel_size_m: float

    @property
    def extent_m(self) -> float:
        return self.size_px * self.pixel_size_m

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size_px, self.size_px)

    @property
    def pad_px(self) -> int:
        return int(math.ceil(ROAD_PAD_M / self.pixel_size_m))

    def xs_m(self, pad_px: int = 0) -> np.ndarray:
        return (np.arange(-pad_px, self.size_px + pad_px) + 0.5) * self.pixel_size_m

    def ys_m(self, pad_px: int = 0) -> np.ndarray:
        return self.extent_m - (np.arange(-pad_px, self.size_px + pad_px) + 0.5) * self.pixel_size_m

    def transform(self, pad_px: int = 0) -> Affine:
        pad_m = pad_px * self.pixel_size_m
        return Affine(self.pixel_size_m, 0.0, -pad_m, 0.0, -self.pixel_size_m, self.extent_m + pad_m)

    def rasterize(self, shapes: list, dtype: str, pad_px: int = 0) -> np.ndarray:
        """Burn (geometry, value) pairs, later ones on top; a pixel is inside when its centre is."""
        size = self.size_px + 2 * pad_px
        if not shapes:
            return np.zeros((size, size), dtype=dtype)
        return features.rasterize(shapes, out_shape=(size, size), transform=self.transform(pad_px),
                                  fill=0, dtype=dtype)

    def pixel_of(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the pixels holding points (clamped to the grid)."""
        cols = np.clip((np.asarray(x_m) / self.pixel_size_m).astype(int), 0, self.size_px - 1)
        rows = np.clip(((self.extent_m - np.asarray(y_m)) / self.pixel_size_m).astype(int), 0,
                       self.size_px - 1)
        return rows, cols


class _SmoothField:
    """A unit-variance random field: white noise on a lattice of ``cell_m`` blurred by a Gaussian as wide.

    Built once as a separable sum of Gaussian bumps on a grid a quarter of a cell apart, then
    interpolated, so it gives the same values wherever it is sampled, on the scene grid or a padded one.
    """

    def __init__(self, rng: np.random.Generator, cell_m: float, extent_m: float):
        count = int(math.ceil((extent_m + 2 * FIELD_MARGIN_M) / cell_m)) + 7
        centres_m = -FIELD_MARGIN_M - 3 * cell_m + cell_m * np.arange(count)
        noise = rng.standard_normal((count, count))
        self.step_m = cell_m / 4
        self.grid_m = np.arange(-FIELD_MARGIN_M, extent_m + FIELD_MARGIN_M + self.step_m, self.step_m)
        weights = np.exp(-0.5 * ((self.grid_m[:, None] - centres_m[None, :]) / cell_m) ** 2)
        # einsum, not @: a multi-threaded BLAS on a busy machine is slower than this for such small products;
        # the sum of unit Gaussians on a lattice of their own width has variance ~pi in 2D
        summed = np.einsum("ik,lk->il", np.einsum("ij,jk->ik", weights, noise), weights)
        self.values = summed / math.sqrt(math.pi)

    def _cells(self, coords_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position = np.clip((coords_m - self.grid_m[0]) / self.step_m, 0, len(self.grid_m) - 1.000001)
        lower = position.astype(int)
        return lower, position - lower

    def sample(self, xs_m: np.ndarray, ys_m: np.ndarray) -> np.ndarray:
        """The field on the grid of pixel centres ``xs_m`` x ``ys_m`` (bilinear between grid nodes)."""
        row, row_frac = self._cells(ys_m)
        col, col_frac = self._cells(xs_m)
        rows = self.values[row] * (1 - row_frac)[:, None] + self.values[row + 1] * row_frac[:, None]
        return rows[:, col] * (1 - col_frac)[None, :] + rows[:, col + 1] * col_frac[None, :]


@dataclass
class _Relief:
    """Terrain height: base + regional tilt + octaves of smooth noise (roads follow the first octaves)."""

    extent_m: float
    base_m: float
    tilt: tuple[float, float]
    octaves: list[tuple[_SmoothField, float]]
    road_octaves: int
    floor_at_zero: bool

    def sample(self, xs_m: np.ndarray, ys_m: np.ndarray, roads_only: bool = False) -> np.ndarray:
        half = self.extent_m / 2
        height = self.base_m + self.tilt[0] * (xs_m[None, :] - half) + self.tilt[1] * (ys_m[:, None] - half)
        for octave, amplitude_m in self.octaves[: self.road_octaves if roads_only else None]:
            height = height + amplitude_m * octave.sample(xs_m, ys_m)
        # a coastal polder: everything below sea level was filled to exactly 0 m
        return np.maximum(height, 0.0) if self.floor_at_zero else height


def _random_relief(rng: np.random.Generator, extent_m: float) -> _Relief:
    coastal = rng.random() < 0.2
    amplitude_m = rng.uniform(1.0, 4.0) if coastal else rng.uniform(1.5, 12.0)
    base_m = rng.uniform(0.3, 2.5) if coastal else rng.uniform(5.0, 300.0)
    slope = rng.uniform(0.0, 0.01 if coastal else 0.04)
    direction = rng.uniform(0, 2 * np.pi)
    octaves = [(_SmoothField(rng, 160.0, extent_m), amplitude_m),
               (_SmoothField(rng, 70.0, extent_m), amplitude_m * rng.uniform(0.2, 0.5)),
               (_SmoothField(rng, 30.0, extent_m), amplitude_m * rng.uniform(0.04, 0.12)),
               (_SmoothField(rng, 12.0, extent_m), rng.uniform(0.05, 0.3))]
    tilt = (slope * math.cos(direction), slope * math.sin(direction))
    return _Relief(extent_m, base_m, tilt, octaves, road_octaves=2, floor_at_zero=coastal)


# ----------------------------------------------------------------------------------------------
# roads


@dataclass
class _Road:
    line: LineString  # metres, reaching past the scene edge
    width_m: float
    kind: str  # "main", "street", "lane", "winding" or "quay" (along a canal)
    kerb_m: float = 0.15
    sidewalk_m: float = 2.0
    ramp_m: float = 5.0

    @property
    def polygon(self) -> Polygon:
        return self.line.buffer(self.width_m / 2, cap_style="flat")


@dataclass(frozen=True)
class _StreetPlan:
    """A district's street grid: spacings and widths in m, chances of curves, lanes and a winding road."""

    main_spacing_m: tuple[float, float]
    street_spacing_m: tuple[float, float]
    main_width_m: tuple[float, float]
    street_width_m: tuple[float, float]
    lane_width_m: tuple[float, float]  # streets between two crossings (T-junctions), alleys in old towns
    winding_width_m: tuple[float, float]
    main_curvy_p: float
    street_curvy_p: float
    main_keep_p: float  # chance that a line of the grid is built
    street_keep_p: float
    lane_p: float
    winding_p: float
    wavelength_m: tuple[float, float]  # of curved streets
    wave_amplitude_m: tuple[float, float]
    kerb_m: tuple[float, float]
    sidewalk_m: tuple[float, float]


SUBURBAN_STREETS = _StreetPlan((90.0, 150.0), (60.0, 110.0), (8.0, 15.0), (5.0, 10.0), (4.0, 7.0),
                               (6.0, 12.0),
                               0.35, 0.15, 0.9, 0.85, 0.35, 0.5, (250.0, 600.0), (5.0, 25.0), (0.12, 0.18),
                               (1.5, 3.0))
_STREETS = {
    "suburban": SUBURBAN_STREETS,
    "canopy": _StreetPlan((90.0, 160.0), (70.0, 120.0), (8.0, 12.0), (5.0, 8.0), (4.0, 6.0), (6.0, 10.0),
                          0.6, 0.4, 0.9, 0.85, 0.35, 0.7, (200.0, 500.0), (8.0, 30.0), (0.10, 0.16),
                          (1.0, 2.5)),
    "rowhouse": _StreetPlan((70.0, 110.0), (45.0, 75.0), (7.0, 11.0), (5.0, 8.0), (4.0, 6.0), (6.0, 10.0),
                            0.2, 0.1, 0.95, 0.9, 0.25, 0.3, (250.0, 600.0), (5.0, 20.0), (0.10, 0.16),
                            (1.5, 2.5)),
    "perimeter": _StreetPlan((65.0, 115.0), (85.0, 160.0), (9.0, 16.0), (6.0, 11.0), (5.0, 8.0), (8.0, 12.0),
                             0.15, 0.1, 0.95, 0.9, 0.2, 0.25, (300.0, 700.0), (5.0, 15.0), (0.12, 0.18),
                             (2.0, 4.0)),
    "oldtown": _StreetPlan((35.0, 70.0), (30.0, 60.0), (5.0, 8.0), (3.5, 6.0), (3.0, 5.0), (7.0, 11.0),
                           0.95, 0.95, 0.92, 0.88, 0.5, 0.7, (60.0, 160.0), (3.0, 12.0), (0.04, 0.10),
                           (0.2, 0.8)),
    "industrial": _StreetPlan((130.0, 200.0), (110.0, 190.0), (9.0, 15.0), (7.0, 12.0), (6.0, 9.0),
                              (8.0, 12.0),
                              0.2, 0.1, 0.9, 0.85, 0.3, 0.3, (300.0, 700.0), (5.0, 20.0), (0.12, 0.18),
                              (1.0, 2.5)),
}


def _parallel_lines(rng: np.random.Generator, extent_m: float, along: np.ndarray, across: np.ndarray,
                    spacing_m: float, curvy_probability: float, plan: _StreetPlan) -> list[LineString]:
    """Lines running along ``along`` every ``spacing_m`` across the scene, some of them curved."""
    centre = np.full(2, extent_m / 2)
    half_span_m = extent_m / 2 * (abs(across[0]) + abs(across[1]))
    offsets = np.arange(-half_span_m - spacing_m, half_span_m + spacing_m, spacing_m)
    offsets = offsets + rng.uniform(0, spacing_m)
    offsets = offsets[np.abs(offsets) < half_span_m - 5.0]
    if offsets.size == 0:
        offsets = np.array([rng.uniform(-0.3, 0.3) * half_span_m])
    along_m = np.arange(-extent_m, extent_m + 4.0, 4.0)
    lines = []
    for offset in offsets:
        shift = np.full_like(along_m, offset)
        if rng.random() < curvy_probability:
            wavelength_m = rng.uniform(*plan.wavelength_m)
            amplitude_m = rng.uniform(*plan.wave_amplitude_m)
            shift += amplitude_m * np.sin(2 * np.pi * along_m / wavelength_m + rng.uniform(0, 2 * np.pi))
        lines.append(LineString(centre + along_m[:, None] * along + shift[:, None] * across))
    return lines


def _keep_some(rng: np.random.Generator, lines: list[LineString], probability: float) -> list[LineString]:
    kept = [line for line in lines if rng.random() < probability]
    return kept or [lines[len(lines) // 2]]


def _between_crossings(rng: np.random.Generator, line: LineString, crossing: list[LineString]) -> LineString:
    """The piece of ``line`` between two consecutive crossing roads: a street ending in T-junctions."""
    cuts = sorted(line.project(point) for other in crossing
                  for point in shapely.get_parts(line.intersection(other)) if point.geom_type == "Point")
    bounds = [0.0, *cuts, line.length]
    piece = int(rng.integers(len(bounds) - 1))
    if bounds[piece + 1] - bounds[piece] < 20.0:
        return line
    return substring(line, bounds[piece], bounds[piece + 1])


def _chaikin(points: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Corner cutting: a polyline smoothed towards a quadratic B-spline, ends kept."""
    for _ in range(iterations):
        near, far = points[:-1], points[1:]
        middle = np.empty((2 * len(near), 2))
        middle[0::2] = 0.75 * near + 0.25 * far
        middle[1::2] = 0.25 * near + 0.75 * far
        points = np.vstack([points[:1], middle, points[-1:]])
    return points


def _winding_line(rng: np.random.Generator, extent_m: float) -> LineString:
    """An old through-road ignoring the grid: enters on one side, leaves on the other, bending."""
    heading = rng.uniform(0, 2 * np.pi)
    along = np.array([math.cos(heading), math.sin(heading)])
    across = np.array([-along[1], along[0]])
    steps = np.linspace(-0.85, 0.85, 6) * extent_m
    jitter = rng.uniform(-0.22, 0.22, size=6) * extent_m
    jitter[[0, -1]] = 0.0
    controls = extent_m / 2 + steps[:, None] * along + jitter[:, None] * across
    return LineString(_chaikin(controls))


def _road_network(rng: np.random.Generator, extent_m: float,
                  plan: _StreetPlan = SUBURBAN_STREETS) -> tuple[list[_Road], float]:
    """Main roads and cross streets on a rotated grid, T-junction streets and sometimes a winding road."""
    theta = rng.uniform(0, np.pi / 2)
    along = np.array([math.cos(theta), math.sin(theta)])
    across = np.array([-along[1], along[0]])
    mains = _keep_some(rng, _parallel_lines(rng, extent_m, along, across, rng.uniform(*plan.main_spacing_m),
                                            plan.main_curvy_p, plan), plan.main_keep_p)
    streets = _keep_some(rng, _parallel_lines(rng, extent_m, across, along,
                                              rng.uniform(*plan.street_spacing_m),
                                              plan.street_curvy_p, plan), plan.street_keep_p)
    roads = [_Road(line, rng.uniform(*plan.main_width_m), "main") for line in mains]
    for line in streets:
        if rng.random() < plan.lane_p:
            roads.append(_Road(_between_crossings(rng, line, mains), rng.uniform(*plan.lane_width_m), "lane"))
        else:
            roads.append(_Road(line, rng.uniform(*plan.street_width_m), "street"))
    if rng.random() < plan.winding_p:
        roads.append(_Road(_winding_line(rng, extent_m), rng.uniform(*plan.winding_width_m), "winding"))
    for road in roads:
        rural = road.kind == "winding" and rng.random() < 0.5
        road.kerb_m = 0.0 if rural else rng.uniform(*plan.kerb_m)
        road.sidewalk_m = rng.uniform(0.5, 1.0) if rural else rng.uniform(*plan.sidewalk_m)
        road.ramp_m = rng.uniform(3.0, 8.0)
    return roads, theta


def _clip_roads(roads: list[_Road], extent_m: float) -> list[_Road]:
    """Roads cut to pieces that touch the scene: centrelines run on past the edge by half a width,
    so buffering a written centreline covers exactly the road pixels inside the scene."""
    scene = box(0, 0, extent_m, extent_m)
    pieces = []
    for road in roads:
        reach = scene.buffer(road.width_m / 2 + 1.0, join_style="mitre")
        for part in shapely.get_parts(road.line.intersection(reach)):
            if part.geom_type == "LineString" and part.length > 0 \
                    and part.buffer(road.width_m / 2).intersects(scene):
                pieces.append(_Road(part, road.width_m, road.kind, road.kerb_m, road.sidewalk_m, road.ramp_m))
    return [piece for piece in pieces if not piece.polygon.intersection(scene).is_empty]


# ----------------------------------------------------------------------------------------------
# water


def _blob(rng: np.random.Generator, centre: np.ndarray, radius_m: float) -> Polygon:
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radii = np.ones_like(angles)
    for harmonic in (2, 3, 4):
        radii += rng.uniform(0.0, 0.18) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
    radii *= radius_m
    return Polygon(np.column_stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)]))


def _pond(rng: np.random.Generator, extent_m: float, keep_clear) -> Polygon:
    """A pond clear of ``keep_clear`` (roads); in a crowded scene it takes what is left."""
    radius_m = float(np.clip(rng.uniform(0.04, 0.09) * extent_m, 5.0, 40.0))
    for _attempt in range(40):
        pond = _blob(rng, rng.uniform(radius_m, extent_m - radius_m, size=2), radius_m)
        if not keep_clear.intersects(pond):
            return pond
    return pond.difference(keep_clear)


def _road_clearance(roads: list[_Road]):
    keep_clear = shapely.union_all([road.polygon.buffer(road.sidewalk_m + 3.0) for road in roads])
    shapely.prepare(keep_clear)
    return keep_clear


def _in_scene(water: list[Polygon], extent_m: float) -> list[Polygon]:
    scene = box(0, 0, extent_m, extent_m)
    parts = shapely.get_parts(shapely.intersection(np.array(water, dtype=object), scene))
    return [part for part in parts if part.geom_type == "Polygon" and part.area > 1.0]


def _water_bodies(rng: np.random.Generator, extent_m: float, roads: list[_Road]) -> list[Polygon]:
    """One or two ponds clear of the roads, sometimes a canal that roads cross on bridges."""
    keep_clear = _road_clearance(roads)
    water = [_pond(rng, extent_m, keep_clear) for _ in range(1 + int(rng.random() < 0.3))]
    if rng.random() < 0.25:
        canal = _winding_line(rng, extent_m).buffer(rng.uniform(6.0, 14.0) / 2, cap_style="flat")
        bridges = shapely.union_all([road.polygon.buffer(1.0) for road in roads])
        water.append(canal.difference(bridges))
    return _in_scene(water, extent_m)


def _with_canal(rng: np.random.Generator, network: list[_Road]) -> tuple[list[_Road], Polygon | None]:
    """A canal in place of a main road, a quay street on either side: (new network, canal polygon)."""
    mains = [index for index, road in enumerate(network) if road.kind == "main"]
    if not mains:
        return network, None
    main = network[mains[int(rng.integers(len(mains)))]]
    canal_m, quay_m = rng.uniform(10.0, 24.0), rng.uniform(5.0, 8.0)
    offset_m = canal_m / 2 + rng.uniform(1.0, 3.0) + quay_m / 2
    sides = [shapely.offset_curve(main.line, side * offset_m) for side in (1, -1)]
    quays = [_Road(part, quay_m, "quay", rng.uniform(0.12, 0.18), rng.uniform(1.0, 2.0),
                   rng.uniform(3.0, 6.0))
             for side in sides for part in shapely.get_parts(side)
             if part.geom_type == "LineString" and part.length > 20.0]
    canal = main.line.buffer(canal_m / 2, cap_style="flat")
    return [road for road in network if road is not main] + quays, canal


def _district_water(rng: np.random.Generator, extent_m: float, roads: list[_Road], canal: Polygon | None,
                    pond_p: tuple[float, float]) -> tuple[list[Polygon], list[Polygon]]:
    """(all water, ponds): ponds clear of the roads, and a canal bridged by the streets crossing it."""
    keep_clear = _road_clearance(roads)
    ponds = [_pond(rng, extent_m, keep_clear) for chance in pond_p if rng.random() < chance]
    water = list(ponds)
    if canal is not None:
        bridges = [road.polygon.buffer(1.0) for road in roads if road.kind != "quay"]
        water.append(canal.difference(shapely.union_all(bridges)) if bridges else canal)
    return _in_scene(water, extent_m), _in_scene(ponds, extent_m) if ponds else []


# ----------------------------------------------------------------------------------------------
# buildings


@dataclass
class _Building:
    """A footprint and its roof; heights are in m above the building's ground level."""

    footprint: Polygon  # clipped to the scene
    roof: str  # "flat", "gable", "hip" or "mansard"
    eave_m: float
    tan_pitch: float
    half_short_m: float  # half the width of the roof wing, so the ridge rises half_short_m * tan_pitch
    shape: str  # "rect", "L", "court" or "lot" (any polygon)
    centre: tuple[float, float]  # of the rectangle, with its frontage direction, for analytic roofs
    frontage_dir: tuple[float, float]  # along the street; its left normal points away from the street
    half_frontage_m: float
    half_depth_m: float
    parapet_m: float = 0.0
    rooftop_units: tuple = ()  # (Polygon, height above the roof in m)
    # where the roof rises from: "auto" (version 1: ridge along the longer side of the rectangle), "along" or
    # "across" the frontage, "mass" (from the outline of all adjoining buildings: a ridge along a row or
    # block)
    # or "unit" (from the building's own outline, shared walls included: one roof per house)
    ridge: str = "auto"
    raised: tuple = ()  # (Polygon, top in m): chimneys, dormers, roof huts
    lowered: tuple = ()  # (Polygon, top in m): roof terraces set into the top storey
    district: str = "suburban"

    @property
    def height_m(self) -> float:
        return self.eave_m + self.half_short_m * self.tan_pitch


@dataclass
class _Plan:
    shape: str
    frontage_m: float
    depth_m: float
    wing_m: float
    local: Polygon  # (u along the road, v away from it), front facade on v = 0


def _local_footprint(rng: np.random.Generator, shape: str, frontage_m: float, depth_m: float,
                     wing_m: float) -> Polygon:
    half = frontage_m / 2
    if shape == "court":
        court = box(-half + wing_m, wing_m, half - wing_m, depth_m - wing_m)
        return box(-half, 0, half, depth_m).difference(court)
    if shape == "L":
        wing_u = -half if rng.random() < 0.5 else half - wing_m
        return box(-half, 0, half, wing_m).union(box(wing_u, 0, wing_u + wing_m, depth_m))
    return box(-half, 0, half, depth_m)


def _plan_footprint(rng: np.random.Generator, density: float) -> _Plan:
    """Shape and size of a building: small houses where density is low, blocks and courtyards where high."""
    court_p, l_shape_p = 0.3 * density**2, 0.15 + 0.1 * density
    shape = rng.choice(["rect", "L", "court"], p=[1 - court_p - l_shape_p, l_shape_p, court_p])
    if shape == "court":
        frontage_m, depth_m, wing_m = rng.uniform(36, 70), rng.uniform(32, 55), rng.uniform(9, 14)
    elif shape == "L":
        wing_m = rng.uniform(7, 12)
        frontage_m, depth_m = rng.uniform(16, 28) + density * rng.uniform(0, 20), rng.uniform(18, 30)
    else:
        frontage_m = rng.uniform(8, 15) + density * rng.uniform(4, 35)
        depth_m = rng.uniform(8, 13) + density * rng.uniform(2, 15)
        wing_m = min(frontage_m, depth_m)
    local = _local_footprint(rng, shape, frontage_m, depth_m, wing_m)
    return _Plan(str(shape), frontage_m, depth_m, wing_m, local)


def _roof_and_height(rng: np.random.Generator, plan: _Plan, density: float, on_main_road: bool) -> dict:
    storeys = 1 + rng.poisson(0.6 + 11.0 * density**2 + (3.0 * density if on_main_road else 0.0))
    eave_m = float(np.clip(3.0 * storeys + rng.uniform(-0.3, 1.0), 3.0, 56.0))
    half_short_m = plan.wing_m / 2
    pitched = rng.random() > 0.15 + 0.8 * density and half_short_m <= 8.0 and eave_m <= 20.0
    if not pitched:
        parapet_m = rng.uniform(0.3, 1.0) if eave_m > 6.0 else 0.0
        return dict(roof="flat", eave_m=eave_m, tan_pitch=0.0, half_short_m=half_short_m, parapet_m=parapet_m)
    roof = "gable" if plan.shape == "rect" and rng.random() < 0.6 else "hip"
    tan_pitch = math.tan(math.radians(rng.uniform(22.0, 42.0)))
    eave_m = max(3.0, min(eave_m, 60.0 - half_short_m * tan_pitch))
    return dict(roof=roof, eave_m=eave_m, tan_pitch=tan_pitch, half_short_m=half_short_m, parapet_m=0.0)


def _rooftop_units(rng: np.random.Generator, footprint: Polygon, angle_deg: float) -> tuple:
    """Plant rooms and stair towers on large flat roofs: what makes a flat roof look like one in a DSM."""
    if footprint.area < 250.0:
        return ()
    inner = footprint.buffer(-1.5)
    left, bottom, right, top = footprint.bounds
    units = []
    for _ in range(int(rng.integers(0, 4))):
        centre = rng.uniform([left, bottom], [right, top])
        size = rng.uniform(2.0, 6.0, size=2)
        unit = affinity.rotate(box(-size[0] / 2, -size[1] / 2, size[0] / 2, size[1] / 2), angle_deg)
        unit = affinity.translate(unit, *centre)
        if inner.contains(unit):
            units.append((unit, rng.uniform(1.0, 3.0)))
    return tuple(units)


class _Occupancy:
    """Placed footprints with their bounds, to keep new buildings a minimum gap from the others."""

    def __init__(self, gap_m: float):
        self.gap_m = gap_m
        self.bounds = np.empty((0, 4))
        self.shapes: list[Polygon] = []

    def is_free(self, footprint: Polygon) -> bool:
        if not self.shapes:
            return True
        left, bottom, right, top = footprint.bounds
        near = ((self.bounds[:, 0] < right + self.gap_m) & (self.bounds[:, 2] > left - self.gap_m)
                & (self.bounds[:, 1] < top + self.gap_m) & (self.bounds[:, 3] > bottom - self.gap_m))
        candidates = np.array(self.shapes, dtype=object)[near]
        return not shapely.dwithin(footprint, candidates, self.gap_m).any()

    def add(self, footprint: Polygon) -> None:
        self.shapes.append(footprint)
        self.bounds = np.vstack([self.bounds, footprint.bounds])


def _point_and_tangent(line: LineString, distance_m: float) -> tuple[np.ndarray, np.ndarray]:
    ahead = np.array(line.interpolate(distance_m + 1.0).coords[0])
    behind = np.array(line.interpolate(distance_m - 1.0).coords[0])
    tangent = ahead - behind
    return np.array(line.interpolate(distance_m).coords[0]), tangent / max(np.linalg.norm(tangent), 1e-9)


@dataclass
class _Site:
    """What building placement needs to know about the scene."""

    extent_m: float
    obstacles: object  # prepared shapely geometry buildings must keep out of
    density: np.ndarray  # (H, W) in [0, 1]: 0 suburb, 1 downtown
    canvas: _Canvas
    occupancy: _Occupancy

    def density_at(self, point: np.ndarray) -> float:
        rows, cols = self.canvas.pixel_of(point[0], point[1])
        return float(self.density[rows, cols])

    def inside(self, point: np.ndarray, margin_m: float) -> bool:
        return bool(np.all(point > -margin_m) and np.all(point < self.extent_m + margin_m))


def _try_building(rng: np.random.Generator, site: _Site, road: _Road, side: int, row: int,
                  distance_m: float, plan: _Plan, density: float) -> _Building | None:
    point, tangent = _point_and_tangent(road.line, distance_m)
    normal = side * np.array([-tangent[1], tangent[0]])
    setback_m = road.sidewalk_m + (rng.uniform(0.5, 2.0) * (1 + 3 * (1 - density)) if row == 0
                                   else rng.uniform(16.0, 32.0))
    anchor = point + normal * (road.width_m / 2 + setback_m)
    if not site.inside(anchor, 20.0):
        return None
    matrix = [tangent[0], normal[0], tangent[1], normal[1], anchor[0], anchor[1]]
    full = affinity.affine_transform(plan.local, matrix)
    if site.obstacles.intersects(full) or not site.occupancy.is_free(full):
        return None
    footprint = full.intersection(box(0, 0, site.extent_m, site.extent_m))
    if footprint.geom_type != "Polygon" or footprint.area < max(12.0, 4 * site.canvas.pixel_size_m**2):
        return None
    site.occupancy.add(full)
    roof = _roof_and_height(rng, plan, density, road.kind == "main")
    angle_deg = math.degrees(math.atan2(tangent[1], tangent[0]))
    units = _rooftop_units(rng, footprint, angle_deg) if roof["roof"] == "flat" else ()
    centre = anchor + normal * plan.depth_m / 2
    return _Building(footprint, shape=plan.shape, centre=(float(centre[0]), float(centre[1])),
                     frontage_dir=(float(tangent[0]), float(tangent[1])), half_frontage_m=plan.frontage_m / 2,
                     half_depth_m=plan.depth_m / 2, rooftop_units=units, **roof)


def _buildings_along(rng: np.random.Generator, site: _Site, road: _Road, side: int,
                     row: int) -> list[_Building]:
    """Walk along one side of a road, proposing a row of buildings facing it."""
    buildings = []
    distance_m = rng.uniform(0.0, 12.0)
    while distance_m < road.line.length:
        point, _ = _point_and_tangent(road.line, distance_m)
        if not site.inside(point, 40.0):
            distance_m += 10.0
            continue
        density = site.density_at(np.clip(point, 0, site.extent_m - 1e-6))
        if rng.random() < 0.1 + 0.15 * (1 - density) or (row == 1 and rng.random() > 0.25 + 0.4 * density):
            distance_m += rng.uniform(6.0, 20.0)  # a garden, a car park, a gap
            continue
        plan = _plan_footprint(rng, density)
        building = _try_building(rng, site, road, side, row, distance_m + plan.frontage_m / 2, plan, density)
        if building is not None:
            buildings.append(building)
        distance_m += plan.frontage_m + rng.uniform(1.6, 3.0) + (1 - density) * rng.uniform(0.0, 8.0)
    return buildings


def _place_buildings(rng: np.random.Generator, roads: list[_Road], water: list[Polygon], density: np.ndarray,
                     canvas: _Canvas, claimed: Polygon | None = None) -> list[_Building]:
    """Houses along both sides of every road, in a front row and sometimes a back row, outside ``claimed``."""
    keep_clear = [road.polygon.buffer(road.sidewalk_m + 0.5) for road in roads]
    keep_clear += [pond.buffer(3.0) for pond in water]
    keep_clear += [] if claimed is None else [claimed]
    obstacles = shapely.union_all(keep_clear)
    shapely.prepare(obstacles)
    site = _Site(canvas.extent_m, obstacles, density, canvas, _Occupancy(gap_m=1.6))
    buildings = []
    for road in sorted(roads, key=lambda item: -item.width_m):
        for side in (1, -1):
            for row in (0, 1):
                buildings += _buildings_along(rng, site, road, side, row)
    return buildings


# ----------------------------------------------------------------------------------------------
# districts


@dataclass(frozen=True)
class _Traits:
    """What a district looks like beyond its street grid (chances are per scene, block or building)."""

    density: float  # 0 suburb .. 1 downtown: sizes houses, thins free trees; < 0: a suburban random field
    canal_p: float
    pond_p: tuple[float, float]  # chances of a first and of a second pond
    big_trees_per_km2: float  # tall trees whose crowns may reach over roofs and streets
    chimney_p: float
    dormer_p: float
    hut_p: float  # stair and lift huts on flat roofs
    terrace_p: float  # a roof terrace set into the front of a flat roof's top storey


_TRAITS = {
    "suburban": _Traits(-1.0, 0.0, (1.0, 0.3), 250.0, 0.5, 0.2, 0.2, 0.0),
    "canopy": _Traits(0.15, 0.0, (0.6, 0.2), 3200.0, 0.5, 0.25, 0.1, 0.0),
    "rowhouse": _Traits(0.7, 0.1, (0.4, 0.1), 150.0, 0.6, 0.35, 0.1, 0.0),
    "perimeter": _Traits(0.95, 0.45, (0.2, 0.0), 80.0, 0.5, 0.45, 0.3, 0.25),
    "oldtown": _Traits(0.97, 0.0, (0.05, 0.0), 40.0, 0.2, 0.0, 0.45, 0.3),
    "industrial": _Traits(0.9, 0.15, (0.2, 0.0), 40.0, 0.1, 0.0, 0.3, 0.0),
}


@dataclass(frozen=True)
class _Mix:
    """How a style draws a scene's districts: a main one and, with chance ``second_p``, another in a zone."""

    weights: dict[str, float]
    second_p: float
    second_weights: dict[str, float]


_ANY_DISTRICT = {"suburban": 0.2, "canopy": 0.14, "rowhouse": 0.16, "perimeter": 0.22, "oldtown": 0.12,
                 "industrial": 0.16}
_MIXES = {
    "mixed": _Mix(_ANY_DISTRICT, 0.6, _ANY_DISTRICT),
    "dense": _Mix({"perimeter": 0.55, "oldtown": 0.45}, 0.5,
                  {"perimeter": 0.4, "oldtown": 0.4, "rowhouse": 0.2}),
    **{name: _Mix({name: 1.0}, 0.0, {}) for name in DISTRICTS},
}


def _pick(rng: np.random.Generator, weights: dict[str, float], leave_out: str = "") -> str:
    names = [name for name in weights if name != leave_out]
    chances = np.array([weights[name] for name in names])
    return names[int(rng.choice(len(names), p=chances / chances.sum()))]


def _district_map(rng: np.random.Generator, canvas: _Canvas,
                  style: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The scene's districts (the main one first) and per pixel the index of the district it lies in."""
    mix = _MIXES[style]
    districts = (_pick(rng, mix.weights),)
    zones = np.zeros(canvas.shape, dtype=np.uint8)
    if rng.random() < mix.second_p:
        districts += (_pick(rng, mix.second_weights, leave_out=districts[0]),)
        zone_field = _SmoothField(rng, 150.0, canvas.extent_m).sample(canvas.xs_m(), canvas.ys_m())
        zones[zone_field > np.quantile(zone_field[::8, ::8], 1.0 - rng.uniform(0.25, 0.5))] = 1
    return districts, zones


def _district_density(rng: np.random.Generator, canvas: _Canvas, districts: tuple[str, ...],
                      zones: np.ndarray) -> np.ndarray:
    """Per pixel how built-up its district is, 0 (suburb) to 1 (downtown)."""
    downtown = _SmoothField(rng, 120.0, canvas.extent_m).sample(canvas.xs_m(), canvas.ys_m())
    suburban = 1.0 / (1.0 + np.exp(-(1.6 * downtown + rng.uniform(-2.4, 0.6))))
    levels = [suburban if _TRAITS[name].density < 0 else np.full(canvas.shape, _TRAITS[name].density)
              for name in districts]
    return np.choose(zones, levels)


def _district_at(canvas: _Canvas, districts: tuple[str, ...], zones: np.ndarray, geometry) -> str:
    point = geometry.representative_point()
    row, col = canvas.pixel_of(point.x, point.y)
    return districts[int(zones[row, col])]


def _frame_boxes(origin: np.ndarray, along: np.ndarray, inward: np.ndarray, u_m: np.ndarray,
                 v_m: np.ndarray) -> np.ndarray:
    """Map polygons of rectangles [u0, u1] x [v0, v1] (rows of ``u_m``, ``v_m``) in frame(s) at ``origin``."""
    u = np.asarray(u_m, dtype=float)[:, [0, 1, 1, 0], None]
    v = np.asarray(v_m, dtype=float)[:, [0, 0, 1, 1], None]
    return shapely.polygons(np.reshape(origin, (-1, 1, 2)) + u * along + v * inward)


def _frame_box(origin: np.ndarray, along: np.ndarray, inward: np.ndarray, u0: float, u1: float, v0: float,
               v1: float) -> Polygon:
    return _frame_boxes(origin, along, inward, np.array([[u0, u1]]), np.array([[v0, v1]]))[0]


def _frame_of(polygon: Polygon) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Corner, long-side direction, inward normal, length and width of a polygon's oriented bounding box."""
    corners = np.asarray(orient(shapely.oriented_envelope(polygon), 1.0).exterior.coords)[:4]
    sides = np.roll(corners, -1, axis=0) - corners
    lengths = np.hypot(sides[:, 0], sides[:, 1])
    first = int(np.argmax(lengths[:2]))
    along = sides[first] / max(lengths[first], 1e-9)
    inward = np.array([-along[1], along[0]])
    return corners[first], along, inward, float(lengths[first]), float(lengths[first + 1])


def _polygons(geometry) -> list[Polygon]:
    """The polygons with area in any geometry (shapely ops return collections of mixed parts)."""
    if isinstance(geometry, Polygon):  # the usual case, and the fast one
        return [geometry] if geometry.area > 0 else []
    return [part for part in shapely.get_parts(geometry) if part.geom_type == "Polygon" and part.area > 0]


def _largest(geometry) -> Polygon | None:
    return max(_polygons(geometry), key=lambda part: part.area, default=None)


@dataclass
class _Filled:
    """What a block filler built: buildings, gardens (room for trees) and parked vehicles (shape, height)."""

    buildings: list[_Building] = field(default_factory=list)
    gardens: list[Polygon] = field(default_factory=list)
    vehicles: list[tuple[Polygon, float]] = field(default_factory=list)

    def extend(self, other: _Filled) -> None:
        self.buildings += other.buildings
        self.gardens += other.gardens
        self.vehicles += other.vehicles


def _blocks(network: list[_Road], hollows: list[Polygon], extent_m: float) -> list[Polygon]:
    """The land between streets (with sidewalks) and water, a little past the scene edge: CCW polygons."""
    area = box(-BLOCK_MARGIN_M, -BLOCK_MARGIN_M, extent_m + BLOCK_MARGIN_M, extent_m + BLOCK_MARGIN_M)
    cuts = [road.line.buffer(road.width_m / 2 + road.sidewalk_m, cap_style="flat") for road in network]
    land = area.difference(shapely.union_all(cuts + hollows))
    return [orient(part, 1.0) for part in _polygons(land) if part.area > 80.0]


def _front_units(rng: np.random.Generator, block: Polygon, ring: Polygon,
                 frontage_m: tuple[float, float]) -> list[tuple[Polygon, np.ndarray, np.ndarray, float]]:
    """Units cut from ``ring`` by Voronoi cells of points along the block's front, so neighbours share walls.

    Returns (unit, its point on the front, direction along the front, frontage in m) for each unit.
    """
    front = block.exterior
    widths = rng.uniform(*frontage_m, size=int(front.length / frontage_m[0]) + 1)
    distances = rng.uniform(0.0, widths[0]) + np.concatenate([[0.0], np.cumsum(widths[:-1])])
    keep = distances < front.length - frontage_m[0] / 2
    distances, widths = distances[keep], widths[keep]
    if len(distances) < 2:
        return []
    points = shapely.get_coordinates(shapely.line_interpolate_point(front, distances))
    ahead = shapely.line_interpolate_point(front, np.minimum(distances + 0.5, front.length))
    behind = shapely.line_interpolate_point(front, np.maximum(distances - 0.5, 0.0))
    along = shapely.get_coordinates(ahead) - shapely.get_coordinates(behind)
    along /= np.maximum(np.hypot(along[:, 0], along[:, 1]), 1e-9)[:, None]
    diagram = shapely.voronoi_polygons(shapely.multipoints(points), extend_to=block, ordered=True)
    cells = shapely.get_parts(diagram)
    units = shapely.intersection(cells, ring)
    return [(part, point, direction, float(width)) for unit, point, direction, width
            in zip(units, points, along, widths, strict=True) for part in _polygons(unit) if part.area > 4.0]


_PERIMETER_FRONTAGE_M = {"gables": (5.0, 9.0), "mansard": (12.0, 24.0), "flat": (10.0, 22.0),
                         "ridge": (8.0, 16.0)}


def _perimeter_roof(rng: np.random.Generator, kind: str, eave_m: float, frontage_m: float,
                    depth_m: float) -> dict:
    """A unit's roof: one gable per house (Amsterdam), a mansard (Paris), flat, or a ridge along the block."""
    if kind == "flat":
        return dict(roof="flat", eave_m=eave_m, tan_pitch=0.0, half_short_m=0.0,
                    parapet_m=rng.uniform(0.3, 1.0))
    if kind == "mansard":
        tan_pitch = math.tan(math.radians(rng.uniform(60.0, 72.0)))
        return dict(roof="mansard", ridge="mass", eave_m=eave_m, tan_pitch=tan_pitch,
                    half_short_m=rng.uniform(2.6, 3.6) / tan_pitch)
    if kind == "gables":
        return dict(roof="gable", ridge="unit", eave_m=eave_m,
                    tan_pitch=math.tan(math.radians(rng.uniform(40.0, 55.0))),
                    half_short_m=min(frontage_m, depth_m) / 2)
    return dict(roof="gable", ridge="mass", eave_m=eave_m,
                tan_pitch=math.tan(math.radians(rng.uniform(30.0, 45.0))),
                half_short_m=depth_m / 2)


def _perimeter_block(rng: np.random.Generator, block: Polygon) -> _Filled:
    """Units sharing walls along a block's whole street front, 12-30 m tall, round a courtyard and annexes."""
    *_, width_m = _frame_of(block)
    depth_m = min(rng.uniform(12.0, 23.0), 0.4 * width_m)
    inner = block.buffer(-depth_m, join_style="mitre") if depth_m >= 6.0 else Polygon()
    if inner.area < 40.0:  # too narrow for a courtyard: built through
        inner, depth_m = Polygon(), width_m / 2
    kind = ("gables", "mansard", "flat", "ridge")[int(rng.choice(4, p=[0.3, 0.25, 0.25, 0.2]))]
    eave_m = rng.integers(4, 8) * rng.uniform(2.9, 3.2) + rng.uniform(0.5, 1.5)
    buildings = []
    units = _front_units(rng, block, block.difference(inner), _PERIMETER_FRONTAGE_M[kind])
    for unit, point, along, frontage_m in units:
        step_m = rng.uniform(1.0, 3.5) * rng.choice([-1.0, 1.0]) if rng.random() < 0.45 else 0.0
        roof = _perimeter_roof(rng, kind, float(np.clip(eave_m + step_m, 6.0, 26.0)), frontage_m, depth_m)
        centre = point + np.array([-along[1], along[0]]) * depth_m / 2
        buildings.append(_Building(unit, shape="lot", centre=tuple(centre), frontage_dir=tuple(along),
                                   half_frontage_m=frontage_m / 2, half_depth_m=depth_m / 2,
                                   district="perimeter", **roof))
    filled = _Filled(buildings)
    if not inner.is_empty:
        filled.extend(_courtyard(rng, inner))
    return filled


def _courtyard(rng: np.random.Generator, inner) -> _Filled:
    """Low annexes against the back walls of a courtyard, which is a garden for trees."""
    annexes: list[_Building] = []
    for yard in _polygons(inner):
        yard = orient(yard, 1.0)
        count = min(int(rng.poisson(yard.area / 300.0)), 8) if rng.random() < 0.6 else 0
        for _ in range(count):
            point, along = _point_and_tangent(yard.exterior, rng.uniform(0.0, yard.exterior.length))
            inward = np.array([-along[1], along[0]])
            half_width_m, depth_m = rng.uniform(1.5, 4.5), rng.uniform(3.0, 8.0)
            # from half a metre inside the wall, cut back to the courtyard: it touches the wall exactly
            shape = _largest(_frame_box(point, along, inward, -half_width_m, half_width_m, -0.5, depth_m)
                             .intersection(yard))
            if shape is None or shape.area < 10.0 or any(shape.distance(a.footprint) < 1.0 for a in annexes):
                continue
            annexes.append(_Building(shape, roof="flat", eave_m=rng.uniform(3.0, 5.0), tan_pitch=0.0,
                                     half_short_m=0.0, shape="lot",
                                     centre=tuple(point + inward * depth_m / 2),
                                     frontage_dir=tuple(along), half_frontage_m=half_width_m,
                                     half_depth_m=depth_m / 2, district="perimeter"))
    return _Filled(annexes, _polygons(inner))


def _row_houses(rng: np.random.Generator, block: Polygon) -> _Filled:
    """Terraces of narrow houses sharing walls along a block's sides, back gardens between them."""
    origin, along, inward, length_m, width_m = _frame_of(block)
    setback_m, depth_m = rng.uniform(1.5, 6.0), rng.uniform(8.0, 12.0)
    row_m = setback_m + depth_m
    if width_m < row_m + 2.0 or length_m < 20.0:
        return _Filled([], [block])
    inside = block.buffer(-1.0)
    shapely.prepare(inside)
    # the sides of the block's rectangle counter-clockwise: corner, direction (the block on its left), length
    sides = [(origin, along, length_m), (origin + along * length_m, inward, width_m),
             (origin + along * length_m + inward * width_m, -along, length_m),
             (origin + inward * width_m, -inward, width_m)]
    two_rows = width_m >= 2 * row_m + 6.0
    houses = _terraces(rng, inside, *sides[0], setback_m, depth_m)
    if two_rows:
        houses += _terraces(rng, inside, *sides[2], setback_m, depth_m)
    if two_rows and length_m >= 2 * row_m + 20.0:  # rows on the short sides, between the long ones
        for front, direction, side_m in (sides[1], sides[3]):
            houses += _terraces(rng, inside, front, direction, side_m - row_m - 3.0, setback_m, depth_m,
                                row_m + 3.0)
    built = shapely.union_all([house.footprint for house in houses])
    gardens = _polygons(block.difference(built)) if houses else [block]
    return _Filled(houses, gardens)


def _terraces(rng: np.random.Generator, inside: Polygon, front: np.ndarray, along: np.ndarray, end_m: float,
              setback_m: float, depth_m: float, skip_m: float = 0.0) -> list[_Building]:
    """Rows of 3-10 houses 5-8 m wide along one side of a block from ``skip_m`` to ``end_m``; one roof form
    per row, heights stepping between houses."""
    inward = np.array([-along[1], along[0]])
    houses = []
    u_m = skip_m + rng.uniform(0.0, 4.0)
    while u_m < end_m - 10.0:
        width_m, count = rng.uniform(5.0, 8.0), int(rng.integers(3, 11))
        form = ("along", "across", "flat")[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
        eave_m = rng.integers(2, 4) * rng.uniform(2.7, 3.0) + rng.uniform(0.0, 0.5)
        tan_pitch = math.tan(math.radians(rng.uniform(30.0, 45.0)))
        for _ in range(count):
            unit_m = width_m * rng.uniform(0.92, 1.08)
            footprint = _frame_box(front, along, inward, u_m, u_m + unit_m, setback_m, setback_m + depth_m)
            if u_m + unit_m > end_m or not inside.contains(footprint):
                break
            step_m = rng.uniform(-1.0, 1.5) if rng.random() < 0.35 else 0.0
            if form == "flat":
                roof = dict(roof="flat", tan_pitch=0.0, half_short_m=0.0, parapet_m=rng.uniform(0.2, 0.5))
            else:
                half_short_m = (depth_m if form == "along" else unit_m) / 2
                roof = dict(roof="gable", ridge=form, tan_pitch=tan_pitch, half_short_m=half_short_m)
            centre = front + along * (u_m + unit_m / 2) + inward * (setback_m + depth_m / 2)
            houses.append(_Building(footprint, eave_m=max(eave_m + step_m, 3.0), shape="rect",
                                    centre=tuple(centre), frontage_dir=tuple(along),
                                    half_frontage_m=unit_m / 2, half_depth_m=depth_m / 2, district="rowhouse",
                                    **roof))
            u_m += unit_m
        u_m += rng.uniform(2.0, 6.0)
    return houses


def _old_town_block(rng: np.random.Generator, block: Polygon) -> _Filled:
    """Lots of 2-5 storeys along a block's street front, reaching to its middle or to an inner garden (in
    large blocks often a convent round a cloister), many round a patio; a few blocks are small squares."""
    if rng.random() < 0.15:
        return _Filled([], [block])
    *_, width_m = _frame_of(block)
    depth_m = rng.uniform(12.0, 26.0)
    inner = block.buffer(-depth_m, join_style="mitre") if depth_m < width_m / 2 else Polygon()
    inner = inner if inner.area > 60.0 else Polygon()
    filled = _Filled()
    for lot, point, along, frontage_m in _front_units(rng, block, block.difference(inner), (6.0, 15.0)):
        filled.extend(_old_town_lot(rng, lot, point, along, frontage_m, min(depth_m, width_m / 2)))
    for garden in _polygons(inner):
        filled.extend(_cloister(rng, garden) if garden.area > 1200.0 and rng.random() < 0.5
                      else _Filled([], [garden]))
    return filled


def _cloister(rng: np.random.Generator, garden: Polygon) -> _Filled:
    """A convent filling a block's interior: 8-12 m deep wings with tiled roofs round a cloister garden."""
    cloister = _largest(garden.buffer(-rng.uniform(8.0, 12.0), join_style="mitre"))
    if cloister is None or cloister.area < 50.0:
        return _Filled([], [garden])
    origin, along, inward, length_m, width_m = _frame_of(garden)
    frame = dict(shape="lot", centre=tuple(origin + along * length_m / 2 + inward * width_m / 2),
                 frontage_dir=tuple(along), half_frontage_m=length_m / 2, half_depth_m=width_m / 2,
                 district="oldtown")
    wings = [_Building(part, roof="hip", ridge="mass", eave_m=int(rng.integers(2, 4)) * rng.uniform(3.4, 4.0),
                       tan_pitch=math.tan(math.radians(rng.uniform(20.0, 30.0))), half_short_m=4.0, **frame)
             for part in _polygons(garden.difference(cloister))]
    return _Filled(wings, [cloister])


def _old_town_lot(rng: np.random.Generator, lot: Polygon, point: np.ndarray, along: np.ndarray,
                  frontage_m: float, depth_m: float) -> _Filled:
    """One old-town house: a flat roof with a parapet or a tiled hip roof, often round a patio (a hole)."""
    if rng.random() < 0.18:
        return _Filled([], [lot])
    footprint, gardens = lot, []
    if lot.area > 90.0 and rng.random() < 0.7:
        patio = _largest(lot.buffer(-rng.uniform(3.0, 5.0), join_style="mitre"))
        if patio is not None and patio.area > 8.0:
            footprint, gardens = lot.difference(patio), [patio]
    eave_m = int(rng.choice([2, 3, 3, 4, 4, 5])) * rng.uniform(3.0, 3.4) + rng.uniform(0.0, 0.8)
    if rng.random() < 0.6:
        roof = dict(roof="flat", tan_pitch=0.0, half_short_m=0.0, parapet_m=rng.uniform(0.5, 1.2))
    else:
        roof = dict(roof="hip", ridge="unit", tan_pitch=math.tan(math.radians(rng.uniform(18.0, 30.0))),
                    half_short_m=min(frontage_m, depth_m, 12.0) / 2)
    centre = point + np.array([-along[1], along[0]]) * depth_m / 2
    frame = dict(shape="lot", centre=tuple(centre), frontage_dir=tuple(along), half_frontage_m=frontage_m / 2,
                 half_depth_m=depth_m / 2, district="oldtown")
    houses = [_Building(part, eave_m=eave_m, **roof, **frame) for part in _polygons(footprint)]
    return _Filled(houses, gardens)


def _industrial_block(rng: np.random.Generator, block: Polygon) -> _Filled:
    """Halls of 40-150 m set back in a block, some with an office wing, amid parking lots and lorries."""
    origin, along, inward, length_m, width_m = _frame_of(block)
    inset_m = rng.uniform(6.0, 18.0)
    inside = block.buffer(-3.0)
    buildings, halls, u_m = [], [], inset_m
    while u_m < length_m - inset_m - 30.0 and width_m - 2 * inset_m >= 20.0:
        hall_m = min(rng.uniform(40.0, 150.0), length_m - inset_m - u_m)
        span_m = min(rng.uniform(30.0, 100.0), width_m - 2 * inset_m)
        v_m = inset_m + rng.uniform(0.0, width_m - 2 * inset_m - span_m)
        footprint = _largest(_frame_box(origin, along, inward, u_m, u_m + hall_m, v_m, v_m + span_m)
                             .intersection(inside))
        if footprint is not None and footprint.area > max(400.0, 0.8 * hall_m * span_m):
            if rng.random() < 0.35:
                office = _frame_box(origin, along, inward, u_m, u_m + rng.uniform(8.0, 14.0), v_m,
                                    v_m + min(span_m, rng.uniform(12.0, 25.0))).intersection(footprint)
                buildings += [_office(rng, part) for part in _polygons(office)]
                footprint = _largest(footprint.difference(office))
            centre = origin + along * (u_m + hall_m / 2) + inward * (v_m + span_m / 2)
            halls.append(_hall(rng, footprint, centre, along, hall_m, span_m))
        u_m += hall_m + rng.uniform(10.0, 30.0)
    taken = shapely.union_all([building.footprint for building in buildings + halls])
    vehicles = _parking(rng, block.buffer(-2.0).difference(taken.buffer(4.0)), origin, along, inward)
    vehicles += _lorries(rng, halls, block.buffer(-1.0).difference(taken.buffer(0.5)))
    return _Filled(buildings + halls, [], vehicles)


def _office(rng: np.random.Generator, footprint: Polygon) -> _Building:
    origin, along, inward, length_m, width_m = _frame_of(footprint)
    centre = origin + along * length_m / 2 + inward * width_m / 2
    return _Building(footprint, roof="flat", eave_m=int(rng.integers(2, 5)) * 3.4 + rng.uniform(0.0, 1.0),
                     tan_pitch=0.0, half_short_m=0.0, shape="rect", centre=tuple(centre),
                     frontage_dir=tuple(along), half_frontage_m=length_m / 2, half_depth_m=width_m / 2,
                     parapet_m=rng.uniform(0.3, 0.8), district="industrial")


def _hall(rng: np.random.Generator, footprint: Polygon, centre: np.ndarray, along: np.ndarray, hall_m: float,
          span_m: float) -> _Building:
    """A warehouse 6-15 m tall: a flat roof with rooftop units, or a low-pitched roof along its length."""
    eave_m = rng.uniform(6.0, 13.0)
    frame = dict(shape="rect", centre=tuple(centre), frontage_dir=tuple(along), half_frontage_m=hall_m / 2,
                 half_depth_m=span_m / 2, district="industrial")
    if rng.random() < 0.3:
        tan_pitch = min(math.tan(math.radians(rng.uniform(4.0, 12.0))), 3.0 / (span_m / 2))
        return _Building(footprint, roof="gable", ridge="along", eave_m=eave_m, tan_pitch=tan_pitch,
                         half_short_m=span_m / 2, **frame)
    return _Building(footprint, roof="flat", eave_m=eave_m, tan_pitch=0.0, half_short_m=0.0,
                     parapet_m=rng.uniform(0.3, 0.9), rooftop_units=_hall_units(rng, footprint, along),
                     **frame)


def _hall_units(rng: np.random.Generator, footprint: Polygon, along: np.ndarray) -> tuple:
    """Air handling units and skylight boxes on a flat hall roof: (Polygon, height above the roof in m)."""
    count = min(int(rng.poisson(footprint.area / 250.0)), 40)
    left, bottom, right, top = footprint.bounds
    centres = rng.uniform([left, bottom], [right, top], size=(count, 2))
    half_m = rng.uniform(0.8, 2.5, size=(count, 2))
    heights_m = rng.uniform(0.8, 2.5, size=count)
    units = _frame_boxes(centres, along, np.array([-along[1], along[0]]),
                         np.column_stack([-half_m[:, 0], half_m[:, 0]]),
                         np.column_stack([-half_m[:, 1], half_m[:, 1]]))
    fits = shapely.contains(footprint.buffer(-2.0), units)
    return tuple(zip(units[fits], heights_m[fits], strict=True))


def _parking(rng: np.random.Generator, lot, origin: np.ndarray, along: np.ndarray,
             inward: np.ndarray) -> list[tuple[Polygon, float]]:
    """Cars parked across pairs of rows on a lot, 2.6 m apart, 6 m aisles between pairs; some bays empty."""
    if lot.is_empty or lot.area < 150.0:
        return []
    uv = (shapely.get_coordinates(lot) - origin) @ np.column_stack([along, inward])
    (u0, v0), (u1, v1) = uv.min(axis=0), uv.max(axis=0)
    rows_v = (np.arange(v0, v1, 16.0)[:, None] + np.array([2.5, 7.5])).ravel()
    u, v = (grid.ravel() for grid in np.meshgrid(np.arange(u0 + 1.3, u1, 2.6), rows_v))
    taken = rng.random(u.size) < rng.uniform(0.3, 0.85)
    u, v = u[taken], v[taken]
    half_length_m = rng.uniform(2.1, 2.45, size=u.size)
    heights_m = rng.uniform(1.35, 1.65, size=u.size)
    cars = _frame_boxes(origin, along, inward, np.column_stack([u - 0.9, u + 0.9]),
                        np.column_stack([v - half_length_m, v + half_length_m]))
    shapely.prepare(lot)
    fits = shapely.contains(lot, cars)
    return list(zip(cars[fits], heights_m[fits], strict=True))


def _lorries(rng: np.random.Generator, halls: list[_Building], yard) -> list[tuple[Polygon, float]]:
    """Lorries backed up to one long side of some halls: 13.6 m trailers about 4 m tall."""
    lorries: list[tuple[Polygon, float]] = []
    for hall in halls:
        if rng.random() < 0.5:
            continue
        along = np.array(hall.frontage_dir)
        count = int(rng.integers(1, 5))
        u = rng.uniform(-hall.half_frontage_m + 3.0, hall.half_frontage_m - 3.0, size=count)
        side = rng.choice([-1.0, 1.0])
        v = np.sort([side * (hall.half_depth_m + 1.0), side * (hall.half_depth_m + 14.6)])
        trailers = _frame_boxes(np.array(hall.centre), along, np.array([-along[1], along[0]]),
                                np.column_stack([u - 1.25, u + 1.25]), np.tile(v, (count, 1)))
        parked = trailers[shapely.contains(yard, trailers)]
        lorries += [(trailer, rng.uniform(3.6, 4.1)) for trailer in parked]
    return lorries


_FILLERS = {"rowhouse": _row_houses, "perimeter": _perimeter_block, "oldtown": _old_town_block,
            "industrial": _industrial_block}


def _fill_blocks(rng: np.random.Generator, network: list[_Road], hollows: list[Polygon], canvas: _Canvas,
                 districts: tuple[str, ...], zones: np.ndarray) -> tuple[_Filled, Polygon | None]:
    """Everything built block by block (all districts but the detached ones), and the land it claims."""
    scene = box(0, 0, canvas.extent_m, canvas.extent_m)
    filled, claimed = _Filled(), []
    for block in _blocks(network, hollows, canvas.extent_m):
        district = _district_at(canvas, districts, zones, block)
        if district in DETACHED or block.intersection(scene).area < 20.0:
            continue
        claimed.append(block)
        filled.extend(_FILLERS[district](rng, block))
    filled.buildings = _clipped(filled.buildings, canvas)
    return filled, shapely.union_all(claimed) if claimed else None


def _clipped(buildings: list[_Building], canvas: _Canvas) -> list[_Building]:
    """Buildings cut to the scene (a building cut in two becomes two); slivers dropped."""
    inside = shapely.intersection(np.array([b.footprint for b in buildings], dtype=object),
                                  box(0, 0, canvas.extent_m, canvas.extent_m))
    min_area_m2 = max(8.0, 4 * canvas.pixel_size_m**2)
    return [replace(building, footprint=part) for building, footprint in zip(buildings, inside, strict=True)
            for part in _polygons(footprint) if part.area >= min_area_m2]


def _decorated(rng: np.random.Generator, building: _Building) -> _Building:
    """The building with its district's roof details, cut to its footprint: chimneys and dormers on pitched
    roofs, stair huts and terraces on flat ones."""
    traits = _TRAITS[building.district]
    along = np.array(building.frontage_dir)
    inward = np.array([-along[1], along[0]])
    centre = np.array(building.centre)
    front = centre - inward * building.half_depth_m
    half_m = building.half_frontage_m
    raised, lowered = [], []
    if building.tan_pitch > 0:
        rise_m = building.height_m - building.eave_m
        if rng.random() < traits.chimney_p:
            u, size = rng.choice([-1.0, 1.0]) * max(half_m - 0.5, 0.0), rng.uniform(0.3, 0.5)
            raised.append((_frame_box(centre, along, inward, u - size, u + size, -size, size),
                           building.height_m + rng.uniform(0.6, 1.4)))
        if rng.random() < traits.dormer_p and half_m >= 2.0 and rise_m > 2.4:
            width_m = min(rng.uniform(0.7, 1.4), half_m - 0.8)
            dormer_m = 0.4 + rng.uniform(1.4, 2.4)
            raised.append((_frame_box(front, along, inward, -width_m, width_m, 0.4, dormer_m),
                           building.eave_m + rng.uniform(1.6, rise_m - 0.3)))
    else:
        if rng.random() < traits.hut_p:
            u, v = rng.uniform(-0.5, 0.5, size=2) * (half_m, building.half_depth_m)
            half_u, half_v = rng.uniform(1.0, 1.8, size=2)
            hut = _frame_box(centre, along, inward, u - half_u, u + half_u, v - half_v, v + half_v)
            raised.append((hut, building.eave_m + building.parapet_m + rng.uniform(2.2, 2.8)))
        if rng.random() < traits.terrace_p and building.eave_m > 9.0 and building.half_depth_m > 4.0:
            lowered.append((_frame_box(front, along, inward, -half_m, half_m, -0.5, rng.uniform(2.0, 3.5)),
                            building.eave_m - rng.uniform(2.8, 3.2)))
    return replace(building, raised=_cut_to(raised, building.footprint),
                   lowered=_cut_to(lowered, building.footprint))


def _cut_to(details: list[tuple[Polygon, float]], footprint: Polygon) -> tuple:
    return tuple((part, top) for shape, top in details for part in _polygons(shape.intersection(footprint)))


def _crowns(rng: np.random.Generator, points: np.ndarray, heights_m: np.ndarray,
            radius_m: tuple[float, float], conifer_p: float) -> np.ndarray:
    """Trees at ``points``: (N, 6) x_m, y_m, crown radius, height, crown base fraction, conifer flag."""
    radii_m = np.clip(0.28 * heights_m + rng.uniform(-1.0, 1.5, size=len(points)), *radius_m)
    base = rng.uniform(0.25, 0.5, size=len(points))
    conifer = (rng.random(len(points)) < conifer_p).astype(float)
    return np.column_stack([points.reshape(-1, 2), radii_m, heights_m, base, conifer])


def _district_trees(rng: np.random.Generator, layout: _Layout, canvas: _Canvas,
                    clearance: dict[str, np.ndarray]) -> np.ndarray:
    """Tall trees (densest in canopy districts) whose crowns may reach over roofs and streets, and trees in
    courtyards, back gardens, patios and squares."""
    area_km2 = canvas.extent_m**2 / 1e6
    per_km2 = np.array([_TRAITS[name].big_trees_per_km2 for name in layout.districts])[layout.zones]
    peak = float(per_km2.max())
    points = rng.uniform(0, canvas.extent_m, size=(rng.poisson(peak * area_km2), 2))
    points = points[rng.random(len(points)) * peak < per_km2[canvas.pixel_of(points[:, 0], points[:, 1])]]
    tall = _crowns(rng, points, rng.uniform(14.0, 30.0, size=len(points)), (4.0, 9.0), 0.1)
    tall = _fitting(tall, canvas, clearance, wall_share=0.15, road_share=0.15)
    gardens = canvas.rasterize([(garden, 1) for garden in layout.gardens], "uint8") > 0
    points = rng.uniform(0, canvas.extent_m, size=(rng.poisson(6000 * area_km2), 2))
    points = points[gardens[canvas.pixel_of(points[:, 0], points[:, 1])]]
    small = _crowns(rng, points, rng.uniform(5.0, 20.0, size=len(points)), (2.0, 7.0), 0.15)
    return np.vstack([tall, _fitting(small, canvas, clearance, wall_share=0.3)])


def _lay_out_districts(rng: np.random.Generator, canvas: _Canvas, style: str) -> _Layout:
    """Relief, districts, streets, water and buildings of a scene of any style but "suburban"."""
    relief = _random_relief(rng, canvas.extent_m)
    districts, zones = _district_map(rng, canvas, style)
    density = _district_density(rng, canvas, districts, zones)
    traits = _TRAITS[districts[0]]
    network, theta = _road_network(rng, canvas.extent_m, _STREETS[districts[0]])
    network, canal = _with_canal(rng, network) if rng.random() < traits.canal_p else (network, None)
    roads = _clip_roads(network, canvas.extent_m)
    water, ponds = _district_water(rng, canvas.extent_m, roads, canal, traits.pond_p)
    hollows = [pond.buffer(3.0) for pond in ponds] + ([] if canal is None else [canal.buffer(1.0)])
    filled, claimed = _fill_blocks(rng, network, hollows, canvas, districts, zones)
    buildings = filled.buildings
    if any(name in DETACHED for name in districts):
        houses = _place_buildings(rng, roads, water, density, canvas, claimed)
        buildings += [replace(house, district=_district_at(canvas, districts, zones, house.footprint))
                      for house in houses]
    buildings = [_decorated(rng, building) for building in buildings]
    return _Layout(relief, density, roads, theta, water, buildings, banks=ponds, gardens=filled.gardens,
                   vehicles=filled.vehicles, districts=districts, zones=zones, survey=True)


# ----------------------------------------------------------------------------------------------
# rasters: ground, roofs, vegetation, cars


def _road_ground(relief: _Relief, roads: list[_Road], canvas: _Canvas,
                 terrain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bare earth with the roads cut in: (dtm, road mask, distance to the nearest road in m).

    The road surface follows the smoothed terrain at the nearest centreline point, crowned 2 %;
    beyond its edge a kerb step and a sidewalk, then an embankment blends back into the terrain.
    Done on a grid padded by ROAD_PAD_M so that roads just outside the scene shape its edge too.
    """
    pad = canvas.pad_px
    inner = (slice(pad, pad + canvas.size_px),) * 2
    profile = relief.sample(canvas.xs_m(pad), canvas.ys_m(pad), roads_only=True)
    centre_ids = canvas.rasterize([(road.line, 1) for road in roads], "uint8", pad)
    to_centre_px, (rows, cols) = ndimage.distance_transform_edt(centre_ids == 0, return_indices=True)
    road_level = profile[rows, cols] - 0.02 * to_centre_px * canvas.pixel_size_m
    road_ids = canvas.rasterize([(road.polygon, index + 1) for index, road in enumerate(roads)], "uint16",
                                pad)
    to_road_px, (rows, cols) = ndimage.distance_transform_edt(road_ids == 0, return_indices=True)
    nearest = road_ids[rows, cols][inner].astype(int) - 1
    edge_level = road_level[rows, cols][inner]
    road_level = road_level[inner]
    to_road_m = to_road_px[inner] * canvas.pixel_size_m
    kerb_m, sidewalk_m, ramp_m = (np.array([getattr(road, name) for road in roads])[nearest]
                                  for name in ("kerb_m", "sidewalk_m", "ramp_m"))
    walk_level = edge_level + kerb_m + 0.02 * np.minimum(to_road_m, sidewalk_m)
    blend = np.clip((to_road_m - sidewalk_m) / ramp_m, 0.0, 1.0)
    blend = blend * blend * (3 - 2 * blend)
    road_mask = road_ids[inner] > 0
    dtm = np.where(road_mask, road_level, (1 - blend) * walk_level + blend * terrain)
    return dtm, road_mask, to_road_m


def _roof_heights(buildings: list[_Building], ids: np.ndarray, canvas: _Canvas) -> np.ndarray:
    """Height of the roof surface above the building's ground level, for every building pixel."""
    rows, cols = np.nonzero(ids)
    index = ids[rows, cols] - 1
    x_m, y_m = canvas.xs_m()[cols], canvas.ys_m()[rows]
    attr = {name: np.array([getattr(b, name) for b in buildings], dtype=float)[index]
            for name in ("eave_m", "tan_pitch", "half_short_m", "half_frontage_m", "half_depth_m",
                         "parapet_m")}
    centre = np.array([b.centre for b in buildings])[index]
    direction = np.array([b.frontage_dir for b in buildings])[index]
    dx, dy = x_m - centre[:, 0], y_m - centre[:, 1]
    u = np.abs(dx * direction[:, 0] + dy * direction[:, 1])
    v = np.abs(-dx * direction[:, 1] + dy * direction[:, 0])
    inside_m = ndimage.distance_transform_edt(ids > 0)[rows, cols] * canvas.pixel_size_m
    # compare names once per building, not once per pixel
    roof, shape, ridge = (np.array([getattr(b, name) for b in buildings])
                          for name in ("roof", "shape", "ridge"))
    ridge_along_frontage = np.where((ridge == "auto")[index], attr["half_frontage_m"] >= attr["half_depth_m"],
                                    (ridge == "along")[index])
    gable = np.where(ridge_along_frontage, attr["half_depth_m"] - v, attr["half_frontage_m"] - u)
    rect_hip = np.minimum(attr["half_depth_m"] - v, attr["half_frontage_m"] - u)
    hip = np.where((shape == "rect")[index], rect_hip, inside_m)
    run_m = np.where((roof == "gable")[index], gable, np.where((roof == "hip")[index], hip, 0.0))
    if np.isin(ridge, ["mass", "unit"]).any():
        run_m = np.where((ridge == "mass")[index], inside_m, run_m)
        run_m = np.where((ridge == "unit")[index], _inside_units_m(ids, canvas)[rows, cols], run_m)
        run_m = np.where((roof == "flat")[index], 0.0, run_m)
    rise_m = np.clip(run_m, 0.0, attr["half_short_m"]) * attr["tan_pitch"]
    parapet = np.where(inside_m <= max(canvas.pixel_size_m, 0.5) + 1e-6, attr["parapet_m"], 0.0)
    heights = np.zeros(ids.shape)
    heights[rows, cols] = attr["eave_m"] + rise_m + parapet
    units = [unit for b in buildings for unit in b.rooftop_units]
    heights = heights + canvas.rasterize(units, "float32") * (ids > 0)
    return _with_details(heights, buildings, ids > 0, canvas)


def _inside_units_m(ids: np.ndarray, canvas: _Canvas) -> np.ndarray:
    """Distance into each building from its own outline, walls shared with neighbours included."""
    inner = ids > 0
    inner[1:] &= ids[1:] == ids[:-1]
    inner[:-1] &= ids[:-1] == ids[1:]
    inner[:, 1:] &= ids[:, 1:] == ids[:, :-1]
    inner[:, :-1] &= ids[:, :-1] == ids[:, 1:]
    return (ndimage.distance_transform_edt(inner) + (ids > 0)) * canvas.pixel_size_m


def _with_details(heights: np.ndarray, buildings: list[_Building], inside: np.ndarray,
                  canvas: _Canvas) -> np.ndarray:
    """Roofs raised by chimneys, dormers and huts, and lowered by terraces, within the footprints."""
    raised = sorted((detail for b in buildings for detail in b.raised), key=lambda detail: detail[1])
    if raised:
        tops = canvas.rasterize(raised, "float32")
        heights = np.where(inside & (tops > 0), np.maximum(heights, tops), heights)
    lowered = sorted((detail for b in buildings for detail in b.lowered), key=lambda detail: -detail[1])
    if lowered:
        tops = canvas.rasterize(lowered, "float32")
        heights = np.where(inside & (tops > 0), np.minimum(heights, tops), heights)
    return heights


def _trees(rng: np.random.Generator, roads: list[_Road], canvas: _Canvas, density: np.ndarray,
           clearance: dict[str, np.ndarray]) -> np.ndarray:
    """Tree rows along some roads (crowns over the carriageway) and garden, park and copse trees.

    Returns (N, 6): x_m, y_m, crown radius, height, crown base fraction, conifer flag.
    """
    avenues = _fitting(_avenue_trees(rng, roads), canvas, clearance, road_share=None)
    others = _fitting(_free_trees(rng, canvas, density), canvas, clearance)
    return np.vstack([avenues, others])


def _fitting(trees: np.ndarray, canvas: _Canvas, clearance: dict[str, np.ndarray], wall_share: float = 0.6,
             road_share: float | None = 0.4) -> np.ndarray:
    """Trees whose trunk stands in the scene, clear of walls, water and roads by these shares of the crown
    radius (``road_share`` None: street trees, planted beside the road on purpose)."""
    trees = trees[np.all((trees[:, :2] > 0) & (trees[:, :2] < canvas.extent_m), axis=1)]
    pixel = canvas.pixel_of(trees[:, 0], trees[:, 1])
    radius_m = trees[:, 2]
    fits = clearance["building"][pixel] > wall_share * radius_m
    fits &= clearance["water"][pixel] > 0.3 * radius_m
    if road_share is not None:
        fits &= clearance["road"][pixel] > road_share * radius_m
    return trees[fits]


def _avenue_trees(rng: np.random.Generator, roads: list[_Road]) -> np.ndarray:
    """Street trees on the sidewalk of some roads, their crowns reaching over the carriageway."""
    chosen = [road for road in roads if rng.random() < (0.9 if road.kind == "quay" else 0.45)] \
        or [max(roads, key=lambda road: road.line.length)]
    avenues = []
    for road in chosen:
        start = rng.uniform(0.0, 0.4) * road.line.length
        stops = np.arange(start, start + rng.uniform(0.5, 1.0) * road.line.length, rng.uniform(7.0, 12.0))
        stops = stops[stops < road.line.length]
        for side in (1, -1) if rng.random() < 0.6 else (int(rng.choice([1, -1])),):
            offset_m = side * (road.width_m / 2 + rng.uniform(0.3, 1.5))
            for distance_m in stops:
                point, tangent = _point_and_tangent(road.line, float(distance_m))
                height_m = rng.uniform(8.0, 22.0)
                radius_m = float(np.clip(0.3 * height_m + rng.uniform(-1.0, 1.5), 3.0, 7.0))
                where = point + offset_m * np.array([-tangent[1], tangent[0]])
                avenues.append([where[0], where[1], radius_m, height_m, rng.uniform(0.3, 0.5), 0.0])
    return np.array(avenues).reshape(-1, 6)


def _free_trees(rng: np.random.Generator, canvas: _Canvas, density: np.ndarray) -> np.ndarray:
    """Scattered garden and park trees (fewer downtown) plus a few copses."""
    area_km2 = canvas.extent_m**2 / 1e6
    points = rng.uniform(0, canvas.extent_m, size=(int(rng.uniform(1500, 4500) * area_km2), 2))
    rows, cols = canvas.pixel_of(points[:, 0], points[:, 1])
    points = points[rng.random(len(points)) > density[rows, cols]]
    copses = []
    for _ in range(rng.poisson(12 * area_km2)):
        centre, spread_m = rng.uniform(0, canvas.extent_m, size=2), rng.uniform(8.0, 25.0)
        copses.append(centre + rng.normal(0.0, spread_m, size=(int(rng.integers(6, 30)), 2)))
    points = np.vstack([points, *copses])
    heights = rng.uniform(5.0, 25.0, size=len(points))
    radii = np.clip(0.25 * heights + rng.uniform(-1.0, 2.0, size=len(points)), 2.0, 7.0)
    base = rng.uniform(0.3, 0.6, size=len(points))
    conifer = (rng.random(len(points)) < 0.2).astype(float)
    return np.column_stack([points, radii, heights, base, conifer])


def _canopy_heights(trees: np.ndarray, canvas: _Canvas) -> np.ndarray:
    """Crowns above ground, the highest one wins: domes for broadleaves, cones for conifers."""
    canopy = np.zeros(canvas.shape, dtype=np.float32)
    xs_m, ys_m = canvas.xs_m(), canvas.ys_m()
    px = canvas.pixel_size_m
    for x_m, y_m, radius_m, height_m, base_fraction, conifer in trees:
        c0, c1 = max(int((x_m - radius_m) / px), 0), min(int((x_m + radius_m) / px) + 1, canvas.size_px)
        r0 = max(int((canvas.extent_m - y_m - radius_m) / px), 0)
        r1 = min(int((canvas.extent_m - y_m + radius_m) / px) + 1, canvas.size_px)
        if c0 >= c1 or r0 >= r1:
            continue
        r2 = ((xs_m[c0:c1][None, :] - x_m) ** 2 + (ys_m[r0:r1][:, None] - y_m) ** 2) / radius_m**2
        if conifer:
            crown = height_m * (1.0 - 0.75 * np.sqrt(np.minimum(r2, 1.0)))
        else:
            base_m = base_fraction * height_m
            crown = base_m + (height_m - base_m) * np.sqrt(np.clip(1.0 - r2, 0.0, None))
        window = canopy[r0:r1, c0:c1]
        np.maximum(window, np.where(r2 < 1.0, crown, 0.0), out=window)
    return canopy


def _hedges(rng: np.random.Generator, roads: list[_Road], canvas: _Canvas, theta: float) -> np.ndarray:
    """Hedges (1-3 m, about a metre thick) behind the sidewalks of some roads and along field edges."""
    pieces = []
    for road in roads:
        if road.kind == "main" or rng.random() < 0.65:
            continue
        for side in (1, -1):
            offset_m = side * (road.width_m / 2 + road.sidewalk_m + rng.uniform(0.8, 2.0))
            for edge in shapely.get_parts(shapely.offset_curve(road.line, offset_m)):
                distance_m = rng.uniform(0.0, 20.0)
                while distance_m < edge.length:
                    length_m = rng.uniform(8.0, 35.0)
                    pieces.append(substring(edge, distance_m, distance_m + length_m))
                    distance_m += length_m + rng.uniform(4.0, 25.0)
    for _ in range(rng.poisson(6 * canvas.extent_m**2 / 1e6)):
        heading = theta + rng.integers(4) * np.pi / 2 + rng.normal(0.0, 0.05)
        start = rng.uniform(0, canvas.extent_m, size=2)
        end = start + rng.uniform(20.0, 80.0) * np.array([math.cos(heading), math.sin(heading)])
        pieces.append(LineString([start, end]))
    shapes = [(piece.buffer(rng.uniform(0.4, 0.8), cap_style="flat"), rng.uniform(1.0, 3.0))
              for piece in pieces if piece.length > 1.0]
    return canvas.rasterize(sorted(shapes, key=lambda item: item[1]), "float32")


def _cars(rng: np.random.Generator, roads: list[_Road], canvas: _Canvas) -> np.ndarray:
    """Cars and vans in lanes and parked at the kerb, always wholly on the carriageway."""
    shapes = []
    for road in roads:
        surface = road.polygon
        shapely.prepare(surface)
        for distance_m in rng.uniform(0.0, road.line.length, size=rng.poisson(road.line.length / 35.0)):
            point, tangent = _point_and_tangent(road.line, float(distance_m))
            van = rng.random() < 0.1
            length_m, width_m = (rng.uniform(5.5, 7.0), rng.uniform(2.0, 2.3)) if van else \
                (rng.uniform(4.0, 4.9), rng.uniform(1.7, 1.9))
            kerbside_m = road.width_m / 2 - width_m / 2 - 0.3
            lane_m = rng.choice([-1, 1]) * rng.choice([road.width_m / 4, kerbside_m])
            centre = point + lane_m * np.array([-tangent[1], tangent[0]])
            car = affinity.rotate(box(-length_m / 2, -width_m / 2, length_m / 2, width_m / 2),
                                  math.atan2(tangent[1], tangent[0]), use_radians=True)
            car = affinity.translate(car, *centre)
            if surface.contains(car):
                shapes.append((car, rng.uniform(2.0, 2.8) if van else rng.uniform(1.35, 1.6)))
    return canvas.rasterize(shapes, "float32")


# ----------------------------------------------------------------------------------------------
# one scene


def _check_size(size_px, pixel_size_m) -> None:
    if isinstance(size_px, bool) or not isinstance(size_px, (int, np.integer)) or size_px < MIN_SIZE_PX:
        raise DemsegError(f"size_px must be an integer of at least {MIN_SIZE_PX} pixels, got {size_px!r}")
    if isinstance(pixel_size_m, bool) or not isinstance(pixel_size_m, (int, float, np.number)) \
            or not (0 < pixel_size_m <= MAX_PIXEL_SIZE_M):
        raise DemsegError(f"pixel_size_m must be a number in (0, {MAX_PIXEL_SIZE_M:g}] metres, "
                          f"got {pixel_size_m!r}")


def _check_seed(seed, name: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DemsegError(f"{name} must be a non-negative integer, got {seed!r}")


def _check_style(style) -> None:
    if not isinstance(style, str) or style not in STYLES:
        raise DemsegError(f"style must be one of {', '.join(STYLES)}, got {style!r}")


@dataclass
class _Layout:
    """Everything placed in map space before rasterising: relief, roads, water, buildings."""

    relief: _Relief
    density: np.ndarray
    roads: list[_Road]
    theta: float
    water: list[Polygon]
    buildings: list[_Building]
    banks: list[Polygon] | None = None  # water the ground dips towards (None: all; canals have quay walls)
    gardens: list[Polygon] = field(default_factory=list)  # courtyards, back gardens, patios, squares
    vehicles: list[tuple[Polygon, float]] = field(default_factory=list)  # parked off the road, with heights
    districts: tuple[str, ...] = ("suburban",)
    zones: np.ndarray | None = None  # per pixel, the index of its district
    survey: bool = False  # roof details, crowns over roofs, LiDAR footprint and dropouts (all but version 1)


def _lay_out(rng: np.random.Generator, canvas: _Canvas) -> _Layout:
    """The layout of generator version 1 (style "suburban")."""
    relief = _random_relief(rng, canvas.extent_m)
    downtown = _SmoothField(rng, 120.0, canvas.extent_m).sample(canvas.xs_m(), canvas.ys_m())
    density = 1.0 / (1.0 + np.exp(-(1.6 * downtown + rng.uniform(-1.8, 1.2))))
    network, theta = _road_network(rng, canvas.extent_m)
    roads = _clip_roads(network, canvas.extent_m)
    water = _water_bodies(rng, canvas.extent_m, roads)
    buildings = _place_buildings(rng, roads, water, density, canvas)
    return _Layout(relief, density, roads, theta, water, buildings)


def _cover(rng: np.random.Generator, layout: _Layout, canvas: _Canvas, road_mask: np.ndarray,
           clearance: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heights above the ground of tree crowns, hedges and vehicles."""
    trees = _trees(rng, layout.roads, canvas, layout.density, clearance)
    if layout.survey:
        trees = np.vstack([trees, _district_trees(rng, layout, canvas, clearance)])
    canopy = _canopy_heights(trees, canvas)
    canopy = np.where(canopy > 0, np.maximum(canopy + _roughness(rng, canvas, 0.45), 0.5), 0.0)
    hedges = _hedges(rng, layout.roads, canvas, layout.theta)
    hedges *= (clearance["building"] > 1.0) & (clearance["road"] > 0.5)
    if layout.survey:
        hedges *= layout.density < 0.8  # no field hedges downtown
    hedges = np.where(hedges > 0, hedges + _roughness(rng, canvas, 0.15), 0.0)
    cars = _cars(rng, layout.roads, canvas) * road_mask
    if layout.vehicles:
        parked = canvas.rasterize(sorted(layout.vehicles, key=lambda vehicle: vehicle[1]), "float32")
        cars = np.maximum(cars, parked * (clearance["building"] > 0))
    return canopy, hedges, cars


def generate_scene(seed: int, size_px: int = 896, pixel_size_m: float = 0.5,
                   style: str = DEFAULT_STYLE) -> SynthScene:
    """Generate one synthetic city scene in memory (no I/O); the same seed and style give identical arrays."""
    _check_seed(seed)
    _check_size(size_px, pixel_size_m)
    _check_style(style)
    rng = np.random.default_rng(seed)
    canvas = _Canvas(int(size_px), float(pixel_size_m))
    layout = _lay_out(rng, canvas) if style == "suburban" else _lay_out_districts(rng, canvas, style)
    water_mask = canvas.rasterize([(pond, 1) for pond in layout.water], "uint8") > 0
    to_water_m = ndimage.distance_transform_edt(~water_mask) * canvas.pixel_size_m
    terrain = layout.relief.sample(canvas.xs_m(), canvas.ys_m()) - _banks_m(rng, layout, canvas, to_water_m)
    dtm, road_mask, to_road_m = _road_ground(layout.relief, layout.roads, canvas, terrain)
    building_ids = canvas.rasterize([(b.footprint, i + 1) for i, b in enumerate(layout.buildings)], "int32")
    to_building_m = ndimage.distance_transform_edt(building_ids == 0) * canvas.pixel_size_m
    clearance = {"building": to_building_m, "water": to_water_m, "road": to_road_m}
    canopy, hedges, cars = _cover(rng, layout, canvas, road_mask, clearance)
    dsm = dtm + np.maximum(np.maximum(canopy, hedges), cars) * (building_ids == 0)
    dsm = _add_buildings(dsm, dtm, layout.buildings, building_ids, canvas)
    vegetation = ((canopy > 0) | (hedges > 0)) & ~water_mask
    nodata_mask = water_mask
    if layout.survey:
        crowns_over_roofs = (building_ids > 0) & (canopy > 0) & (dtm + canopy > dsm)
        dsm = np.where(crowns_over_roofs, dtm + canopy, dsm)
        vegetation = vegetation & ((building_ids == 0) | crowns_over_roofs)
        dsm, dropouts = _lidar_survey(rng, dsm, canvas)
        nodata_mask = water_mask | dropouts
    dsm = dsm + rng.normal(0.0, rng.uniform(0.05, 0.1), size=canvas.shape)
    labels = np.where(building_ids > 0, BUILDING, np.where(road_mask, ROAD, 0)).astype(np.uint8)
    labels[nodata_mask] = LABEL_NODATA
    surveyed = (_as_survey(dsm, nodata_mask), _as_survey(dtm, nodata_mask))
    return _synth_scene(seed, style, layout, canvas, *surveyed, labels, vegetation & ~nodata_mask,
                        (cars > 0) & ~nodata_mask)


def _synth_scene(seed: int, style: str, layout: _Layout, canvas: _Canvas, dsm: np.ndarray, dtm: np.ndarray,
                 labels: np.ndarray, vegetation_mask: np.ndarray, car_mask: np.ndarray) -> SynthScene:
    scene_box = box(0, 0, canvas.extent_m, canvas.extent_m)
    return SynthScene(
        seed=int(seed), pixel_size_m=canvas.pixel_size_m, style=style, districts=layout.districts,
        dsm=dsm, dtm=dtm, labels=labels,
        buildings=_object_array([b.footprint for b in layout.buildings]),
        building_heights_m=np.array([b.height_m for b in layout.buildings], dtype=float),
        building_roofs=np.array([b.roof for b in layout.buildings], dtype=object),
        building_districts=np.array([b.district for b in layout.buildings], dtype=object),
        road_centrelines=_object_array([road.line for road in layout.roads]),
        road_widths_m=np.array([road.width_m for road in layout.roads], dtype=float),
        road_polygons=_object_array([road.polygon.intersection(scene_box) for road in layout.roads]),
        water=_object_array(layout.water), vegetation_mask=vegetation_mask, car_mask=car_mask,
    )


def _banks_m(rng: np.random.Generator, layout: _Layout, canvas: _Canvas,
             to_water_m: np.ndarray) -> np.ndarray | float:
    """How far the ground dips towards ponds (by up to 2 m); canals have quay walls instead."""
    if layout.banks is None:
        return rng.uniform(0.5, 2.0) * np.exp(-to_water_m / 4.0)
    if not layout.banks:
        return 0.0
    ponds = canvas.rasterize([(pond, 1) for pond in layout.banks], "uint8") > 0
    return rng.uniform(0.5, 2.0) * np.exp(-ndimage.distance_transform_edt(~ponds) * canvas.pixel_size_m / 4.0)


def _lidar_survey(rng: np.random.Generator, dsm: np.ndarray,
                  canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
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


def _roughness(rng: np.random.Generator, canvas: _Canvas, sigma_m: float) -> np.ndarray:
    """Leafy surface noise: white noise blurred over about a pixel."""
    return ndimage.gaussian_filter(rng.normal(0.0, sigma_m * 1.6, size=canvas.shape), 0.7)


def _add_buildings(dsm: np.ndarray, dtm: np.ndarray, buildings: list[_Building], ids: np.ndarray,
                   canvas: _Canvas) -> np.ndarray:
    """Roofs stand on one ground level per building (its mean bare-earth height), as houses do on slopes."""
    if not buildings:
        return dsm
    inside = ids > 0
    counts = np.bincount(ids[inside], minlength=len(buildings) + 1)
    sums = np.bincount(ids[inside], weights=dtm[inside], minlength=len(buildings) + 1)
    ground = sums / np.maximum(counts, 1)
    roofs = _roof_heights(buildings, ids, canvas)
    return np.where(inside, ground[ids] + roofs, dsm)


def _as_survey(elevation: np.ndarray, nodata_mask: np.ndarray) -> np.ndarray:
    """float32 at centimetre precision as LiDAR products are delivered; NaN where there is no return."""
    surveyed = np.round(elevation, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    surveyed[nodata_mask] = np.nan
    return surveyed.astype(np.float32)


def _object_array(geometries: list) -> np.ndarray:
    array = np.empty(len(geometries), dtype=object)
    array[:] = geometries
    return array


# ----------------------------------------------------------------------------------------------
# a world on disk


def scene_seed(world_seed: int, index: int) -> int:
    """The seed of scene ``index`` of a world: independent streams for every (world seed, index)."""
    return int(np.random.SeedSequence([world_seed, index]).generate_state(1)[0])


def scene_grid(index: int, size_px: int, pixel_size_m: float) -> GridSpec:
    """The map grid of scene ``index``: scenes sit on rows of ten, SCENE_GAP_M apart, never overlapping."""
    step_m = size_px * pixel_size_m + SCENE_GAP_M
    left_m = WORLD_ORIGIN_M[0] + (index % SCENES_PER_ROW) * step_m
    top_m = WORLD_ORIGIN_M[1] + (index // SCENES_PER_ROW) * step_m + size_px * pixel_size_m
    return GridSpec(CRS.from_string(WORLD_CRS), Affine(pixel_size_m, 0.0, left_m, 0.0, -pixel_size_m, top_m),
                    size_px, size_px)


def _check_world(scenes, val_fraction) -> None:
    if isinstance(scenes, bool) or not isinstance(scenes, (int, np.integer)) or scenes < 1:
        raise DemsegError(f"scenes must be a positive integer, got {scenes!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.number)) \
            or not 0.0 <= val_fraction < 1.0:
        raise DemsegError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")


def _val_indices(seed: int, scenes: int, val_fraction: float) -> set[int]:
    """About val_fraction of the scenes, at least one when there are two or more, chosen by the seed."""
    if scenes < 2 or val_fraction == 0:
        return set()
    count = int(np.clip(round(val_fraction * scenes), 1, scenes - 1))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2**32 - 1]))  # a stream no scene index uses
    return {int(index) for index in rng.choice(scenes, size=count, replace=False)}


def generate_world(out_dir: str | os.PathLike, scenes: int = 20, size_px: int = 896,
                   pixel_size_m: float = 0.5,
                   seed: int = 0, val_fraction: float = 0.2, progress: bool = True,
                   style: str = DEFAULT_STYLE) -> Path:
    """Write a world of ``scenes`` georeferenced scenes of ``style`` to ``out_dir``; returns its dataset.yaml.

    The world is built in a hidden folder beside ``out_dir`` and moved there only once complete, so a
    failure (a full disk, an interrupt) leaves no partial world, and an earlier world in ``out_dir`` is kept
    as it was.
    An existing ``out_dir`` is updated in place: the files of its scene folders of the same names, world.json
    and dataset.yaml are replaced and anything else is left alone (e.g. scenes past ``scenes`` of a larger
    earlier world, which dataset.yaml then no longer lists).
    """
    _check_world(scenes, val_fraction)
    _check_size(size_px, pixel_size_m)
    _check_seed(seed)
    _check_style(style)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DemsegError(f"output is a file, not a folder: {out_dir}")
    val = _val_indices(seed, scenes, val_fraction)
    with _staging(out_dir) as staging:
        entries, districts = [], {}
        for index in tqdm(range(scenes), desc="synth", unit="scene", disable=not progress):
            scene_id = f"s{index:03d}"
            scene = generate_scene(scene_seed(seed, index), size_px, pixel_size_m, style)
            write_scene(staging / scene_id, scene, scene_grid(index, size_px, pixel_size_m))
            entries.append((scene_id, "val" if index in val else "train"))
            districts[scene_id] = list(scene.districts)
        params = dict(generator="demseg.data.synth", version=GENERATOR_VERSION, style=style, scenes=scenes,
                      size_px=size_px, pixel_size_m=pixel_size_m, seed=seed, val_fraction=val_fraction,
                      crs=WORLD_CRS, val_scenes=[scene_id for scene_id, split in entries if split == "val"],
                      districts=districts)
        description = (f"Synthetic LiDAR city DEMs from demseg synth (style {style}, seed {seed}, {scenes} "
                       f"scenes of {size_px} px at {pixel_size_m:g} m, {WORLD_CRS})")
        write_text_atomic(staging / "dataset.yaml", _dataset_yaml(entries, description))
        write_text_atomic(staging / "world.json", json.dumps(params, indent=2) + "\n")
        _publish(staging, out_dir)
    return out_dir / "dataset.yaml"


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside ``out_dir`` to build a world in, removed afterwards whatever happens; a failed
    write inside becomes one DemsegError line."""
    with _write_errors(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_folder(out_dir)
    try:
        with _write_errors(out_dir):
            yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _write_errors(target: Path) -> Iterator[None]:
    """Turn an OSError (raw, or the cause of an atomic writer's DemsegError) into one line on ``target``."""
    try:
        yield
    except OSError as exc:
        raise _write_error(exc, target) from exc
    except DemsegError as exc:
        if not isinstance(exc.__cause__, OSError):
            raise
        raise _write_error(exc.__cause__, target) from exc


def _write_error(exc: OSError, target: Path) -> DemsegError:
    if exc.errno == errno.ENOSPC:
        return DemsegError(f"no space left on device writing {target}")
    return DemsegError(f"could not write {target}: {exc.strerror or exc}")


def _publish(staging: Path, out_dir: Path) -> None:
    """Move a finished world from ``staging`` to ``out_dir``: one rename if ``out_dir`` is new or empty, else
    file by file, with world.json (which marks a complete world) removed first and put back last."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    (out_dir / "world.json").unlink(missing_ok=True)
    for folder in sorted(path for path in staging.iterdir() if path.is_dir()):
        (out_dir / folder.name).mkdir(exist_ok=True)
        for path in folder.iterdir():
            os.replace(path, out_dir / folder.name / path.name)
    os.replace(staging / "dataset.yaml", out_dir / "dataset.yaml")
    os.replace(staging / "world.json", out_dir / "world.json")


def _dataset_yaml(entries: list[tuple[str, str]], description: str) -> str:
    lines = ["name: synthetic-world", f"description: {json.dumps(description)}", "scenes:"]
    for scene_id, split in entries:
        lines += [f"  - id: {scene_id}",
                  f"    dem: {scene_id}/dem.tif",
                  f"    dtm: {scene_id}/dtm.tif",
                  "    labels:",
                  f"      raster: {scene_id}/labels.tif",
                  f"      classes: {{buildings: {BUILDING}, roads: {ROAD}}}",
                  f"      ignore: {LABEL_NODATA}",
                  f"    split: {split}"]
    return "\n".join(lines) + "\n"


def write_scene(folder: str | os.PathLike, scene: SynthScene, grid: GridSpec) -> None:
    """Write a scene's rasters, vectors (map coordinates of ``grid``) and preview into ``folder``."""
    folder = Path(folder)
    tags = {"source": "demseg synthetic world", "seed": str(scene.seed), "style": scene.style}
    for name, elevation in (("dem.tif", scene.dsm), ("dtm.tif", scene.dtm)):
        filled = np.where(np.isnan(elevation), np.float32(ELEVATION_NODATA), elevation).astype(np.float32)
        write_geotiff(folder / name, filled, grid, nodata=ELEVATION_NODATA, tags=tags)
    write_geotiff(folder / "labels.tif", scene.labels, grid, nodata=LABEL_NODATA,
                  tags={**tags, "classes": "0 background, 1 building, 2 road, 255 nodata"})
    left_m, bottom_m = grid.transform.c, grid.transform.f - grid.height * abs(grid.transform.e)

    def to_map(geometries: np.ndarray) -> np.ndarray:
        return shapely.transform(geometries, lambda xy: xy + np.array([left_m, bottom_m]))

    write_gpkg(folder / "buildings.gpkg", {"buildings": VectorLayer(
        to_map(scene.buildings), {"height_m": scene.building_heights_m.round(2), "roof": scene.building_roofs,
                                  "district": scene.building_districts})},
        grid.crs)
    parts, owner = shapely.get_parts(scene.road_polygons, return_index=True)
    write_gpkg(folder / "roads.gpkg", {"roads": VectorLayer(
        to_map(parts), {"road_id": owner.astype(np.int32), "width": scene.road_widths_m[owner].round(2)})},
        grid.crs)
    write_gpkg(folder / "road_centrelines.gpkg", {"road_centrelines": VectorLayer(
        to_map(scene.road_centrelines),
        {"road_id": np.arange(len(scene.road_widths_m), dtype=np.int32),
         "width": scene.road_widths_m.round(2)})},
        grid.crs)
    write_preview(folder / "preview.png", scene)


# ----------------------------------------------------------------------------------------------
# preview


def _outline_segments(geometries: np.ndarray) -> list[np.ndarray]:
    polygons = geometries[~shapely.is_empty(geometries)]
    return [np.asarray(ring.coords)[:, :2] for ring in shapely.get_parts(shapely.boundary(polygons))]


def _draw_scene(axes, scene: SynthScene, smooth: bool) -> None:
    """The DSM hillshade with nodata in blue, buildings outlined in red and roads in yellow, on ``axes``."""
    from matplotlib.collections import LineCollection

    valid = np.isfinite(scene.dsm)
    shade = hillshade(scene.dsm, valid, scene.pixel_size_m)
    image = np.repeat(shade[..., None], 3, axis=2)
    image[~valid] = WATER_RGB
    axes.imshow(image, extent=(0, scene.extent_m, 0, scene.extent_m),
                interpolation="bilinear" if smooth else "nearest")
    roads = np.array([shapely.union_all(scene.road_polygons)], dtype=object)
    axes.add_collection(LineCollection(_outline_segments(roads), colors="#ffd21f", linewidths=0.7))
    axes.add_collection(LineCollection(_outline_segments(scene.buildings), colors="#ff3b30", linewidths=0.7))
    axes.set_xlim(0, scene.extent_m)
    axes.set_ylim(0, scene.extent_m)
    axes.set_axis_off()


def write_preview(path: str | os.PathLike, scene: SynthScene, max_size_px: int = 896) -> Path:
    """A PNG of the DSM hillshade, nodata in blue, buildings outlined in red and roads in yellow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    side_px = min(scene.size_px, max_size_px)
    figure = Figure(figsize=(side_px / 100, side_px / 100), dpi=100)
    FigureCanvasAgg(figure)
    _draw_scene(figure.add_axes((0, 0, 1, 1)), scene, smooth=side_px != scene.size_px)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    return Path(path)


def write_style_sheet(path: str | os.PathLike, seed: int = 0, size_px: int = 512,
                      pixel_size_m: float = 0.5) -> Path:
    """A PNG of one scene of each district style, three to a row: hillshade, buildings red, roads yellow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns, rows = 3, math.ceil(len(DISTRICTS) / 3)
    figure = Figure(figsize=(4.0 * columns, 4.3 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for index, style in enumerate(DISTRICTS):
        row, column = divmod(index, columns)
        axes = figure.add_axes((column / columns + 0.004, 1 - (row + 1) / rows, 1 / columns - 0.008,
                                0.93 / rows))
        scene = generate_scene(scene_seed(seed, index), size_px, pixel_size_m, style)
        _draw_scene(axes, scene, smooth=False)
        built, paved = (scene.labels == BUILDING).mean(), (scene.labels == ROAD).mean()
        axes.set_title(f"{style}: {built:.0%} buildings, {paved:.0%} roads", fontsize=11)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 6})
    return Path(path)
