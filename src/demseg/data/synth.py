"""A synthetic city world of LiDAR DEMs with building and road labels, for tests, demos and pre-training.

Each scene is built in metres in a local frame (x east, y north, origin at the scene's south-west
corner): smooth terrain, a street grid with curved and winding roads cut into it (kerbs, sidewalks,
embankments), buildings set back from and aligned to the roads (flat, gable and hip roofs), trees,
hedges, cars and ponds or canals without LiDAR returns. The DSM sees everything, the DTM only the
bare earth, and the labels are burnt from the very polygons that are written as vectors.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.crs import CRS
from scipy import ndimage
from shapely import affinity
from shapely.geometry import LineString, Polygon, box
from shapely.ops import substring
from tqdm import tqdm

from demseg.errors import DemsegError
from demseg.io import GridSpec, VectorLayer, write_geotiff, write_gpkg, write_text_atomic
from demseg.io.atomic import atomic_path

__all__ = ["SynthScene", "generate_scene", "generate_world", "hillshade", "scene_seed"]

GENERATOR_VERSION = 1
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
WATER_RGB = (0.24, 0.50, 0.77)


@dataclass
class SynthScene:
    """One synthetic scene: rasters on a north-up grid and the vectors they were burnt from.

    Vectors are in metres in the scene's local frame: x east, y north, origin at the south-west
    corner of the scene, so they lie in ``[0, extent_m]``. Per-road arrays are aligned.
    """

    seed: int
    pixel_size_m: float
    dsm: np.ndarray  # float32 (H, W), NaN where there is no return (water)
    dtm: np.ndarray  # float32 (H, W), bare earth with the road cut, NaN where the DSM is
    labels: np.ndarray  # uint8 (H, W): 0 background, 1 building, 2 road, 255 nodata
    buildings: np.ndarray  # shapely Polygons
    building_heights_m: np.ndarray  # roof top (ridge or flat roof) above the ground at the footprint
    building_roofs: np.ndarray  # "flat", "gable" or "hip"
    road_centrelines: np.ndarray  # shapely LineStrings, reaching a little past the scene edge
    road_widths_m: np.ndarray
    road_polygons: np.ndarray  # centreline buffered by half its width (flat caps), clipped to the scene
    water: np.ndarray  # shapely Polygons without LiDAR returns
    vegetation_mask: np.ndarray  # bool (H, W): tree crowns and hedges
    car_mask: np.ndarray  # bool (H, W)

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
        rows = np.clip(((self.extent_m - np.asarray(y_m)) / self.pixel_size_m).astype(int), 0, self.size_px - 1)
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
        self.values = np.einsum("ik,lk->il", np.einsum("ij,jk->ik", weights, noise), weights) / math.sqrt(math.pi)

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
        for field, amplitude_m in self.octaves[: self.road_octaves if roads_only else None]:
            height = height + amplitude_m * field.sample(xs_m, ys_m)
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
    kind: str  # "main", "street", "lane" or "winding"
    kerb_m: float = 0.15
    sidewalk_m: float = 2.0
    ramp_m: float = 5.0

    @property
    def polygon(self) -> Polygon:
        return self.line.buffer(self.width_m / 2, cap_style="flat")


def _parallel_lines(rng: np.random.Generator, extent_m: float, along: np.ndarray, across: np.ndarray,
                    spacing_m: float, curvy_probability: float) -> list[LineString]:
    """Lines running along ``along`` every ``spacing_m`` across the scene, some of them gently curved."""
    centre = np.full(2, extent_m / 2)
    half_span_m = extent_m / 2 * (abs(across[0]) + abs(across[1]))
    offsets = np.arange(-half_span_m - spacing_m, half_span_m + spacing_m, spacing_m) + rng.uniform(0, spacing_m)
    offsets = offsets[np.abs(offsets) < half_span_m - 5.0]
    if offsets.size == 0:
        offsets = np.array([rng.uniform(-0.3, 0.3) * half_span_m])
    along_m = np.arange(-extent_m, extent_m + 4.0, 4.0)
    lines = []
    for offset in offsets:
        shift = np.full_like(along_m, offset)
        if rng.random() < curvy_probability:
            wavelength_m = rng.uniform(250.0, 600.0)
            shift += rng.uniform(5.0, 25.0) * np.sin(2 * np.pi * along_m / wavelength_m + rng.uniform(0, 2 * np.pi))
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


def _road_network(rng: np.random.Generator, extent_m: float) -> tuple[list[_Road], float]:
    """Main roads and cross streets on a rotated grid, T-junction streets and sometimes a winding road."""
    theta = rng.uniform(0, np.pi / 2)
    along = np.array([math.cos(theta), math.sin(theta)])
    across = np.array([-along[1], along[0]])
    mains = _keep_some(rng, _parallel_lines(rng, extent_m, along, across, rng.uniform(90, 150), 0.35), 0.9)
    streets = _keep_some(rng, _parallel_lines(rng, extent_m, across, along, rng.uniform(60, 110), 0.15), 0.85)
    roads = [_Road(line, rng.uniform(8.0, 15.0), "main") for line in mains]
    for line in streets:
        if rng.random() < 0.35:
            roads.append(_Road(_between_crossings(rng, line, mains), rng.uniform(4.0, 7.0), "lane"))
        else:
            roads.append(_Road(line, rng.uniform(5.0, 10.0), "street"))
    if rng.random() < 0.5:
        roads.append(_Road(_winding_line(rng, extent_m), rng.uniform(6.0, 12.0), "winding"))
    for road in roads:
        rural = road.kind == "winding" and rng.random() < 0.5
        road.kerb_m = 0.0 if rural else rng.uniform(0.12, 0.18)
        road.sidewalk_m = rng.uniform(0.5, 1.0) if rural else rng.uniform(1.5, 3.0)
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
            if part.geom_type == "LineString" and part.length > 0 and part.buffer(road.width_m / 2).intersects(scene):
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


def _water_bodies(rng: np.random.Generator, extent_m: float, roads: list[_Road]) -> list[Polygon]:
    """One or two ponds clear of the roads, sometimes a canal that roads cross on bridges."""
    keep_clear = shapely.union_all([road.polygon.buffer(road.sidewalk_m + 3.0) for road in roads])
    shapely.prepare(keep_clear)
    scene = box(0, 0, extent_m, extent_m)
    water = []
    for _ in range(1 + int(rng.random() < 0.3)):
        radius_m = float(np.clip(rng.uniform(0.04, 0.09) * extent_m, 5.0, 40.0))
        for _attempt in range(40):
            pond = _blob(rng, rng.uniform(radius_m, extent_m - radius_m, size=2), radius_m)
            if not keep_clear.intersects(pond):
                break
        else:
            pond = pond.difference(keep_clear)  # a crowded scene: the pond takes what is left
        water.append(pond)
    if rng.random() < 0.25:
        canal = _winding_line(rng, extent_m).buffer(rng.uniform(6.0, 14.0) / 2, cap_style="flat")
        bridges = shapely.union_all([road.polygon.buffer(1.0) for road in roads])
        water.append(canal.difference(bridges))
    parts = shapely.get_parts(shapely.intersection(np.array(water, dtype=object), scene))
    return [part for part in parts if part.geom_type == "Polygon" and part.area > 1.0]


# ----------------------------------------------------------------------------------------------
# buildings


@dataclass
class _Building:
    footprint: Polygon  # clipped to the scene
    roof: str  # "flat", "gable" or "hip"
    eave_m: float
    tan_pitch: float
    half_short_m: float  # half the width of the roof wing, so the ridge rises half_short_m * tan_pitch
    shape: str  # "rect", "L" or "court"
    centre: tuple[float, float]  # of the rectangle, with its frontage direction, for analytic roofs
    frontage_dir: tuple[float, float]
    half_frontage_m: float
    half_depth_m: float
    parapet_m: float = 0.0
    rooftop_units: tuple = ()  # (Polygon, height above the roof in m)

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
        return box(-half, 0, half, depth_m).difference(box(-half + wing_m, wing_m, half - wing_m, depth_m - wing_m))
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
    return _Plan(str(shape), frontage_m, depth_m, wing_m, _local_footprint(rng, shape, frontage_m, depth_m, wing_m))


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


def _buildings_along(rng: np.random.Generator, site: _Site, road: _Road, side: int, row: int) -> list[_Building]:
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
                     canvas: _Canvas) -> list[_Building]:
    keep_clear = [road.polygon.buffer(road.sidewalk_m + 0.5) for road in roads]
    keep_clear += [pond.buffer(3.0) for pond in water]
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
    road_ids = canvas.rasterize([(road.polygon, index + 1) for index, road in enumerate(roads)], "uint16", pad)
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
            for name in ("eave_m", "tan_pitch", "half_short_m", "half_frontage_m", "half_depth_m", "parapet_m")}
    centre = np.array([b.centre for b in buildings])[index]
    direction = np.array([b.frontage_dir for b in buildings])[index]
    dx, dy = x_m - centre[:, 0], y_m - centre[:, 1]
    u = np.abs(dx * direction[:, 0] + dy * direction[:, 1])
    v = np.abs(-dx * direction[:, 1] + dy * direction[:, 0])
    inside_m = ndimage.distance_transform_edt(ids > 0)[rows, cols] * canvas.pixel_size_m
    roof = np.array([b.roof for b in buildings])[index]
    shape = np.array([b.shape for b in buildings])[index]
    ridge_along_frontage = attr["half_frontage_m"] >= attr["half_depth_m"]
    gable = np.where(ridge_along_frontage, attr["half_depth_m"] - v, attr["half_frontage_m"] - u)
    hip = np.where(shape == "rect", np.minimum(attr["half_depth_m"] - v, attr["half_frontage_m"] - u), inside_m)
    run_m = np.where(roof == "gable", gable, np.where(roof == "hip", hip, 0.0))
    rise_m = np.clip(run_m, 0.0, attr["half_short_m"]) * attr["tan_pitch"]
    parapet = np.where(inside_m <= max(canvas.pixel_size_m, 0.5) + 1e-6, attr["parapet_m"], 0.0)
    heights = np.zeros(ids.shape)
    heights[rows, cols] = attr["eave_m"] + rise_m + parapet
    units = [unit for b in buildings for unit in b.rooftop_units]
    return heights + canvas.rasterize(units, "float32") * (ids > 0)


def _trees(rng: np.random.Generator, roads: list[_Road], canvas: _Canvas, density: np.ndarray,
           clearance: dict[str, np.ndarray]) -> np.ndarray:
    """Tree rows along some roads (crowns over the carriageway) and garden, park and copse trees.

    Returns (N, 6): x_m, y_m, crown radius, height, crown base fraction, conifer flag.
    """
    avenues = _fitting(_avenue_trees(rng, roads), canvas, clearance, overhang_road=True)
    others = _fitting(_free_trees(rng, canvas, density), canvas, clearance, overhang_road=False)
    return np.vstack([avenues, others])


def _fitting(trees: np.ndarray, canvas: _Canvas, clearance: dict[str, np.ndarray],
             overhang_road: bool) -> np.ndarray:
    """Trees whose trunk stands in the scene, clear of walls and water (and of roads unless street trees)."""
    trees = trees[np.all((trees[:, :2] > 0) & (trees[:, :2] < canvas.extent_m), axis=1)]
    pixel = canvas.pixel_of(trees[:, 0], trees[:, 1])
    radius_m = trees[:, 2]
    fits = (clearance["building"][pixel] > 0.6 * radius_m) & (clearance["water"][pixel] > 0.3 * radius_m)
    if not overhang_road:
        fits &= clearance["road"][pixel] > 0.4 * radius_m
    return trees[fits]


def _avenue_trees(rng: np.random.Generator, roads: list[_Road]) -> np.ndarray:
    """Street trees on the sidewalk of some roads, their crowns reaching over the carriageway."""
    chosen = [road for road in roads if rng.random() < 0.45] or [max(roads, key=lambda road: road.line.length)]
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
            lane_m = rng.choice([-1, 1]) * rng.choice([road.width_m / 4, road.width_m / 2 - width_m / 2 - 0.3])
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
        raise DemsegError(f"pixel_size_m must be a number in (0, {MAX_PIXEL_SIZE_M:g}] metres, got {pixel_size_m!r}")


def _check_seed(seed, name: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DemsegError(f"{name} must be a non-negative integer, got {seed!r}")


@dataclass
class _Layout:
    """Everything placed in map space before rasterising: relief, roads, water, buildings."""

    relief: _Relief
    density: np.ndarray
    roads: list[_Road]
    theta: float
    water: list[Polygon]
    buildings: list[_Building]


def _lay_out(rng: np.random.Generator, canvas: _Canvas) -> _Layout:
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
    """Heights above the ground of tree crowns, hedges and cars."""
    trees = _trees(rng, layout.roads, canvas, layout.density, clearance)
    canopy = _canopy_heights(trees, canvas)
    canopy = np.where(canopy > 0, np.maximum(canopy + _roughness(rng, canvas, 0.45), 0.5), 0.0)
    hedges = _hedges(rng, layout.roads, canvas, layout.theta)
    hedges *= (clearance["building"] > 1.0) & (clearance["road"] > 0.5)
    hedges = np.where(hedges > 0, hedges + _roughness(rng, canvas, 0.15), 0.0)
    cars = _cars(rng, layout.roads, canvas) * road_mask
    return canopy, hedges, cars


def generate_scene(seed: int, size_px: int = 896, pixel_size_m: float = 0.5) -> SynthScene:
    """Generate one synthetic city scene in memory (no I/O); the same seed gives identical arrays."""
    _check_seed(seed)
    _check_size(size_px, pixel_size_m)
    rng = np.random.default_rng(seed)
    canvas = _Canvas(int(size_px), float(pixel_size_m))
    layout = _lay_out(rng, canvas)
    water_mask = canvas.rasterize([(pond, 1) for pond in layout.water], "uint8") > 0
    to_water_m = ndimage.distance_transform_edt(~water_mask) * canvas.pixel_size_m
    banks_m = rng.uniform(0.5, 2.0) * np.exp(-to_water_m / 4.0)  # the ground dips towards the water
    terrain = layout.relief.sample(canvas.xs_m(), canvas.ys_m()) - banks_m
    dtm, road_mask, to_road_m = _road_ground(layout.relief, layout.roads, canvas, terrain)
    building_ids = canvas.rasterize([(b.footprint, i + 1) for i, b in enumerate(layout.buildings)], "int32")
    to_building_m = ndimage.distance_transform_edt(building_ids == 0) * canvas.pixel_size_m
    clearance = {"building": to_building_m, "water": to_water_m, "road": to_road_m}
    canopy, hedges, cars = _cover(rng, layout, canvas, road_mask, clearance)
    dsm = dtm + np.maximum(np.maximum(canopy, hedges), cars) * (building_ids == 0)
    dsm = _add_buildings(dsm, dtm, layout.buildings, building_ids, canvas)
    dsm = dsm + rng.normal(0.0, rng.uniform(0.05, 0.1), size=canvas.shape)
    labels = np.where(building_ids > 0, BUILDING, np.where(road_mask, ROAD, 0)).astype(np.uint8)
    labels[water_mask] = LABEL_NODATA
    scene_box = box(0, 0, canvas.extent_m, canvas.extent_m)
    return SynthScene(
        seed=int(seed), pixel_size_m=canvas.pixel_size_m,
        dsm=_as_survey(dsm, water_mask), dtm=_as_survey(dtm, water_mask), labels=labels,
        buildings=_object_array([b.footprint for b in layout.buildings]),
        building_heights_m=np.array([b.height_m for b in layout.buildings], dtype=float),
        building_roofs=np.array([b.roof for b in layout.buildings], dtype=object),
        road_centrelines=_object_array([road.line for road in layout.roads]),
        road_widths_m=np.array([road.width_m for road in layout.roads], dtype=float),
        road_polygons=_object_array([road.polygon.intersection(scene_box) for road in layout.roads]),
        water=_object_array(layout.water),
        vegetation_mask=((canopy > 0) | (hedges > 0)) & ~water_mask, car_mask=(cars > 0) & ~water_mask,
    )


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
    ground = np.bincount(ids[inside], weights=dtm[inside], minlength=len(buildings) + 1) / np.maximum(counts, 1)
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


def generate_world(out_dir: str | os.PathLike, scenes: int = 20, size_px: int = 896, pixel_size_m: float = 0.5,
                   seed: int = 0, val_fraction: float = 0.2, progress: bool = True) -> Path:
    """Write a synthetic world of ``scenes`` georeferenced scenes to ``out_dir``; returns its dataset.yaml."""
    _check_world(scenes, val_fraction)
    _check_size(size_px, pixel_size_m)
    _check_seed(seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DemsegError(f"output is a file, not a folder: {out_dir}")
    val = _val_indices(seed, scenes, val_fraction)
    entries = []
    for index in tqdm(range(scenes), desc="synth", unit="scene", disable=not progress):
        scene_id = f"s{index:03d}"
        scene = generate_scene(scene_seed(seed, index), size_px, pixel_size_m)
        write_scene(out_dir / scene_id, scene, scene_grid(index, size_px, pixel_size_m))
        entries.append((scene_id, "val" if index in val else "train"))
    params = dict(generator="demseg.data.synth", version=GENERATOR_VERSION, scenes=scenes, size_px=size_px,
                  pixel_size_m=pixel_size_m, seed=seed, val_fraction=val_fraction, crs=WORLD_CRS,
                  val_scenes=[scene_id for scene_id, split in entries if split == "val"])
    write_text_atomic(out_dir / "world.json", json.dumps(params, indent=2) + "\n")
    description = (f"Synthetic LiDAR city DEMs from demseg synth (seed {seed}, {scenes} scenes of {size_px} px "
                   f"at {pixel_size_m:g} m, {WORLD_CRS})")
    return write_text_atomic(out_dir / "dataset.yaml", _dataset_yaml(entries, description))


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
    tags = {"source": "demseg synthetic world", "seed": str(scene.seed)}
    for name, elevation in (("dem.tif", scene.dsm), ("dtm.tif", scene.dtm)):
        filled = np.where(np.isnan(elevation), np.float32(ELEVATION_NODATA), elevation).astype(np.float32)
        write_geotiff(folder / name, filled, grid, nodata=ELEVATION_NODATA, tags=tags)
    write_geotiff(folder / "labels.tif", scene.labels, grid, nodata=LABEL_NODATA,
                  tags={**tags, "classes": "0 background, 1 building, 2 road, 255 nodata"})
    left_m, bottom_m = grid.transform.c, grid.transform.f - grid.height * abs(grid.transform.e)

    def to_map(geometries: np.ndarray) -> np.ndarray:
        return shapely.transform(geometries, lambda xy: xy + np.array([left_m, bottom_m]))

    write_gpkg(folder / "buildings.gpkg", {"buildings": VectorLayer(
        to_map(scene.buildings), {"height_m": scene.building_heights_m.round(2), "roof": scene.building_roofs})},
        grid.crs)
    parts, owner = shapely.get_parts(scene.road_polygons, return_index=True)
    write_gpkg(folder / "roads.gpkg", {"roads": VectorLayer(
        to_map(parts), {"road_id": owner.astype(np.int32), "width": scene.road_widths_m[owner].round(2)})}, grid.crs)
    write_gpkg(folder / "road_centrelines.gpkg", {"road_centrelines": VectorLayer(
        to_map(scene.road_centrelines),
        {"road_id": np.arange(len(scene.road_widths_m), dtype=np.int32), "width": scene.road_widths_m.round(2)})},
        grid.crs)
    write_preview(folder / "preview.png", scene)


# ----------------------------------------------------------------------------------------------
# preview


def hillshade(elevation: np.ndarray, pixel_size_m: float, azimuth_deg: float = 315.0,
              altitude_deg: float = 45.0) -> np.ndarray:
    """Shaded relief in [0, 1] lit from ``azimuth_deg`` (clockwise from north); NaN where elevation is."""
    nodata = np.isnan(elevation)
    filled = np.where(nodata, np.nanmedian(elevation) if not nodata.all() else 0.0, elevation)
    d_row, d_col = np.gradient(filled.astype(float), pixel_size_m)
    azimuth, altitude = math.radians(azimuth_deg), math.radians(altitude_deg)
    light = np.array([math.cos(altitude) * math.sin(azimuth), math.cos(altitude) * math.cos(azimuth),
                      math.sin(altitude)])
    # rows run south, so the northward slope is -d_row
    shade = (-d_col * light[0] + d_row * light[1] + light[2]) / np.sqrt(d_col**2 + d_row**2 + 1.0)
    return np.where(nodata, np.nan, np.clip(shade, 0.0, 1.0))


def _outline_segments(geometries: np.ndarray) -> list[np.ndarray]:
    polygons = geometries[~shapely.is_empty(geometries)]
    return [np.asarray(ring.coords)[:, :2] for ring in shapely.get_parts(shapely.boundary(polygons))]


def write_preview(path: str | os.PathLike, scene: SynthScene, max_size_px: int = 896) -> Path:
    """A PNG of the DSM hillshade, water in blue, buildings outlined in red and roads in yellow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    side_px = min(scene.size_px, max_size_px)
    figure = Figure(figsize=(side_px / 100, side_px / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    extent = (0, scene.extent_m, 0, scene.extent_m)
    shade = hillshade(scene.dsm, scene.pixel_size_m)
    image = np.repeat(shade[..., None], 3, axis=2)
    image[np.isnan(shade)] = WATER_RGB
    axes.imshow(image, extent=extent, interpolation="nearest" if side_px == scene.size_px else "bilinear")
    roads = np.array([shapely.union_all(scene.road_polygons)], dtype=object)
    axes.add_collection(LineCollection(_outline_segments(roads), colors="#ffd21f", linewidths=0.7))
    axes.add_collection(LineCollection(_outline_segments(scene.buildings), colors="#ff3b30", linewidths=0.7))
    axes.set_xlim(0, scene.extent_m)
    axes.set_ylim(0, scene.extent_m)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    return Path(path)
