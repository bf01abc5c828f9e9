"""Buildings as footprints and roof parameters, and detached houses placed along both sides of roads."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import Polygon, box

from demseg.data.synth.canvas import Canvas
from demseg.data.synth.geometry import point_and_tangent, polygon_parts
from demseg.data.synth.roads import Road


@dataclass
class Building:
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


@dataclass
class _Site:
    """What building placement needs to know about the scene."""

    extent_m: float
    obstacles: object  # prepared shapely geometry buildings must keep out of
    density: np.ndarray  # (H, W) in [0, 1]: 0 suburb, 1 downtown
    canvas: Canvas
    occupancy: _Occupancy

    def density_at(self, point: np.ndarray) -> float:
        rows, cols = self.canvas.pixel_of(point[0], point[1])
        return float(self.density[rows, cols])

    def inside(self, point: np.ndarray, margin_m: float) -> bool:
        return bool(np.all(point > -margin_m) and np.all(point < self.extent_m + margin_m))


def _try_building(rng: np.random.Generator, site: _Site, road: Road, side: int, row: int,
                  distance_m: float, plan: _Plan, density: float) -> Building | None:
    point, tangent = point_and_tangent(road.line, distance_m)
    normal = side * np.array([-tangent[1], tangent[0]])
    setback_m = road.verge_m + (rng.uniform(0.5, 2.0) * (1 + 3 * (1 - density)) if row == 0
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
    return Building(footprint, shape=plan.shape, centre=(float(centre[0]), float(centre[1])),
                    frontage_dir=(float(tangent[0]), float(tangent[1])), half_frontage_m=plan.frontage_m / 2,
                    half_depth_m=plan.depth_m / 2, rooftop_units=units, **roof)


def _buildings_along(rng: np.random.Generator, site: _Site, road: Road, side: int,
                     row: int) -> list[Building]:
    """Walk along one side of a road, proposing a row of buildings facing it."""
    buildings = []
    distance_m = rng.uniform(0.0, 12.0)
    while distance_m < road.line.length:
        point, _ = point_and_tangent(road.line, distance_m)
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


def place_buildings(rng: np.random.Generator, roads: list[Road], water: list[Polygon], density: np.ndarray,
                    canvas: Canvas, claimed: Polygon | None = None) -> list[Building]:
    """Houses along both sides of every road, in a front row and sometimes a back row, outside ``claimed``."""
    keep_clear = [road.polygon.buffer(road.verge_m + 0.5) for road in roads]
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


def clipped_to_scene(buildings: list[Building], canvas: Canvas) -> list[Building]:
    """Buildings cut to the scene (a building cut in two becomes two); slivers dropped."""
    inside = shapely.intersection(np.array([b.footprint for b in buildings], dtype=object),
                                  box(0, 0, canvas.extent_m, canvas.extent_m))
    min_area_m2 = max(8.0, 4 * canvas.pixel_size_m**2)
    return [replace(building, footprint=part) for building, footprint in zip(buildings, inside, strict=True)
            for part in polygon_parts(footprint) if part.area >= min_area_m2]
