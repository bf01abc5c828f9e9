"""Where trees stand and how tall and wide they grow (generator version 3).

Street trees and waterside trees are planted in rows, one species a row, so their crowns mostly touch and
form a continuous ribbon along the street or the bank: the shape a DSM shares with a row of roofs. Parks
hold groves and solitary trees on open lawns; gardens, courtyards and squares hold smaller trees; leafy
districts hold tall trees whose crowns reach over roofs and streets.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import LineString, Polygon

from demseg.data.synth.canvas import Canvas, SmoothField
from demseg.data.synth.districts import TRAITS
from demseg.data.synth.layout import Layout
from demseg.data.synth.roads import Road

FORMS = ("round", "spreading", "columnar", "conifer")
ROUND, SPREADING, COLUMNAR, CONIFER = range(len(FORMS))
RADIUS_SHARE = np.array([0.3, 0.42, 0.13, 0.22])  # crown radius over tree height, per form
FORM_P = np.array([0.5, 0.25, 0.08, 0.17])  # a free-standing tree's form
STREET_FORM_P = np.array([0.55, 0.3, 0.1, 0.05])  # a row's form: few conifers along streets
BROAD_FORM_P = np.array([0.5, 0.35, 0.05, 0.1])  # tall and solitary trees: mostly broad crowns
MIN_HEIGHT_M, MAX_HEIGHT_M = 3.0, 30.0
MIN_RADIUS_M, MAX_RADIUS_M = 1.0, 12.0
STREET_ROW_P = {"main": 0.5, "street": 0.45, "lane": 0.2, "winding": 0.35, "quay": 0.9}
WATERSIDE_ROW_P = 0.8
PARK_MAX_DENSITY = 0.85  # no parks in districts built denser than this (blocks leave no open land)


@dataclass
class Trees:
    """Trees as aligned arrays: trunk position, size, crown form and what planted them."""

    xy_m: np.ndarray  # (N, 2) trunk positions in the scene's local frame
    height_m: np.ndarray  # top of the crown above the ground
    crown_radius_m: np.ndarray
    base_fraction: np.ndarray  # height of the lowest branches as a share of the tree's height
    form: np.ndarray  # index into FORMS
    kind: np.ndarray  # "street", "waterside", "park", "garden" or "tall"

    def __len__(self) -> int:
        return len(self.height_m)

    def subset(self, keep: np.ndarray) -> Trees:
        """The trees where ``keep`` (a boolean mask or indices) selects them."""
        return Trees(*(getattr(self, item.name)[keep] for item in fields(self)))

    @staticmethod
    def joined(groups: list[Trees]) -> Trees:
        """All trees of ``groups`` in one set, in order."""
        groups = [group for group in groups if len(group)] or [no_trees()]
        return Trees(*(np.concatenate([getattr(group, item.name) for group in groups])
                       for item in fields(Trees)))


def no_trees() -> Trees:
    """An empty set of trees."""
    return Trees(np.empty((0, 2)), np.empty(0), np.empty(0), np.empty(0), np.empty(0, dtype=int),
                 np.empty(0, dtype=object))


def grow(rng: np.random.Generator, xy_m: np.ndarray, height_m: np.ndarray, kind: str,
         form_p: np.ndarray = FORM_P) -> Trees:
    """Free-standing trees at ``xy_m``: a form each, a crown as wide as the form makes a tree that tall."""
    count = len(xy_m)
    form = rng.choice(len(FORMS), size=count, p=form_p)
    height_m = np.clip(height_m, MIN_HEIGHT_M, MAX_HEIGHT_M)
    radius_m = np.clip(RADIUS_SHARE[form] * height_m * rng.uniform(0.8, 1.2, size=count), MIN_RADIUS_M,
                       MAX_RADIUS_M)
    base = np.where(form == CONIFER, rng.uniform(0.05, 0.2, size=count), rng.uniform(0.2, 0.5, size=count))
    return Trees(np.reshape(xy_m, (-1, 2)), height_m, radius_m, base, form,
                 np.full(count, kind, dtype=object))


@dataclass(frozen=True)
class Footing:
    """How far a trunk stands from walls, roads and water: metres plus a share of its crown radius (crowns
    may reach over all three)."""

    wall_m: float = 0.0
    wall_share: float = 0.6
    road_m: float = 0.0
    road_share: float = 0.4
    water_m: float = 0.0
    water_share: float = 0.3


IN_GARDEN = Footing()
ON_SIDEWALK = Footing(wall_m=1.0, wall_share=0.0, road_m=0.2, road_share=0.0, water_m=0.5, water_share=0.0)
ON_BANK = Footing(wall_m=1.5, wall_share=0.0, road_m=0.3, road_share=0.0, water_m=0.3, water_share=0.0)
IN_PARK = Footing(wall_m=2.0, wall_share=0.3, road_m=1.0, road_share=0.3)
IN_COURTYARD = Footing(wall_share=0.3)
OVER_ROOFS = Footing(wall_share=0.15, road_share=0.15)  # tall trees of leafy districts


@dataclass(frozen=True)
class _Species:
    """What one row is planted with: a form, a typical height and crown radius, and the spacing."""

    form: int
    height_m: float
    radius_m: float
    spacing_m: float


def _species(rng: np.random.Generator) -> _Species:
    """A row's species; in four rows of five the crowns touch (spacing under the crown's width)."""
    form = int(rng.choice(len(FORMS), p=STREET_FORM_P))
    height_m = rng.uniform(6.0, 24.0)
    radius_m = float(np.clip(RADIUS_SHARE[form] * height_m * rng.uniform(0.9, 1.1), 1.5, 9.0))
    touching = rng.random() < 0.8
    spacing_m = 2 * radius_m * (rng.uniform(0.6, 1.0) if touching else rng.uniform(1.2, 1.8))
    return _Species(form, height_m, radius_m, max(spacing_m, 3.0))


def _row(rng: np.random.Generator, xy_m: np.ndarray, species: _Species, kind: str) -> Trees:
    """A row of one species at ``xy_m``, each tree a little different, now and then one missing."""
    count = len(xy_m)
    planted = rng.random(count) > 0.07
    height_m = np.clip(species.height_m * rng.uniform(0.85, 1.12, size=count), MIN_HEIGHT_M, MAX_HEIGHT_M)
    radius_m = np.clip(species.radius_m * rng.uniform(0.85, 1.15, size=count), MIN_RADIUS_M, MAX_RADIUS_M)
    base = rng.uniform(*((0.05, 0.2) if species.form == CONIFER else (0.25, 0.45)), size=count)
    trees = Trees(np.reshape(xy_m, (-1, 2)), height_m, radius_m, base, np.full(count, species.form),
                  np.full(count, kind, dtype=object))
    return trees.subset(planted)


def _beside(line: LineString, distances_m: np.ndarray, offset_m: float) -> np.ndarray:
    """Points ``offset_m`` to the left of ``line`` (right if negative) at ``distances_m`` along it."""
    points = shapely.get_coordinates(shapely.line_interpolate_point(line, distances_m))
    ahead = shapely.get_coordinates(shapely.line_interpolate_point(line, distances_m + 1.0))
    behind = shapely.get_coordinates(shapely.line_interpolate_point(line, distances_m - 1.0))
    tangent = ahead - behind
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)[:, None]
    return points + offset_m * np.column_stack([-tangent[:, 1], tangent[:, 0]])


def street_rows(rng: np.random.Generator, roads: list[Road]) -> Trees:
    """Rows of street trees on the sidewalks of some roads, on one side or both, along part of the road or
    all of it; their crowns reach over the carriageway."""
    rows = []
    for road in roads:
        if rng.random() >= STREET_ROW_P[road.kind]:
            continue
        species = _species(rng)
        length_m = road.line.length
        start_m = rng.uniform(0.0, 0.3) * length_m
        stops_m = np.arange(start_m, start_m + rng.uniform(0.5, 1.0) * length_m, species.spacing_m)
        stops_m = stops_m[stops_m < length_m]
        for side in (1, -1) if rng.random() < 0.6 else (int(rng.choice([1, -1])),):
            offset_m = side * (road.width_m / 2 + rng.uniform(0.4, max(road.verge_m, 0.6)))
            rows.append(_row(rng, _beside(road.line, stops_m, offset_m), species, "street"))
    return Trees.joined(rows)


def waterside_rows(rng: np.random.Generator, water: list[Polygon]) -> Trees:
    """Rows along the banks of canals and ponds, a metre or two from the water, crowns reaching over it."""
    rows = []
    for body in water:
        if rng.random() >= WATERSIDE_ROW_P:
            continue
        species = _species(rng)
        bank = body.buffer(rng.uniform(0.8, 2.0)).exterior
        start_m = rng.uniform(0.0, bank.length)
        stops_m = np.arange(start_m, start_m + rng.uniform(0.4, 1.0) * bank.length, species.spacing_m)
        xy_m = shapely.get_coordinates(shapely.line_interpolate_point(bank, stops_m % bank.length))
        rows.append(_row(rng, xy_m, species, "waterside"))
    return Trees.joined(rows)


def park_trees(rng: np.random.Generator, canvas: Canvas, density: np.ndarray,
               clearance: dict[str, np.ndarray]) -> Trees:
    """Groves (a few to thirty trees of about one height, crowns merging) and solitary trees on the open land
    of parks: stretches of land clear of buildings, roads and water where a smooth field runs high."""
    open_land = (clearance["building"] > 6.0) & (clearance["road"] > 4.0) & (clearance["water"] > 2.0)
    open_land &= density < PARK_MAX_DENSITY
    parkness = SmoothField(rng, 90.0, canvas.extent_m).sample(canvas.xs_m(), canvas.ys_m())
    park = np.flatnonzero(open_land & (parkness > rng.uniform(-0.3, 0.9)))
    xs_m, ys_m = canvas.xs_m(), canvas.ys_m()
    area_km2 = park.size * canvas.pixel_size_m**2 / 1e6
    groups = []
    for _ in range(rng.poisson(rng.uniform(150.0, 450.0) * area_km2)):
        row, col = divmod(int(rng.choice(park)), canvas.size_px)
        centre = np.array([xs_m[col], ys_m[row]])
        count = int(rng.integers(3, 31))
        xy_m = centre + rng.normal(0.0, rng.uniform(4.0, 14.0), size=(count, 2))
        groups.append(grow(rng, xy_m, rng.uniform(10.0, 28.0) * rng.uniform(0.7, 1.1, size=count), "park"))
    solitary = rng.choice(park, size=rng.poisson(rng.uniform(150.0, 500.0) * area_km2))
    rows, cols = np.divmod(solitary, canvas.size_px)
    xy_m = np.column_stack([xs_m[cols], ys_m[rows]])
    groups.append(grow(rng, xy_m, rng.uniform(12.0, 30.0, size=len(xy_m)), "park", BROAD_FORM_P))
    return Trees.joined(groups)


def garden_trees(rng: np.random.Generator, canvas: Canvas, density: np.ndarray) -> Trees:
    """Scattered garden trees and shrubs (fewer downtown) and a few copses."""
    area_km2 = canvas.extent_m**2 / 1e6
    points = rng.uniform(0, canvas.extent_m, size=(int(rng.uniform(1500, 4500) * area_km2), 2))
    points = points[rng.random(len(points)) > density[canvas.pixel_of(points[:, 0], points[:, 1])]]
    copses = [rng.uniform(0, canvas.extent_m, size=2)
              + rng.normal(0.0, rng.uniform(6.0, 20.0), size=(int(rng.integers(6, 25)), 2))
              for _ in range(rng.poisson(12 * area_km2))]
    points = np.vstack([points, *copses])
    return grow(rng, points, rng.uniform(3.0, 22.0, size=len(points)), "garden")


def district_trees(rng: np.random.Generator, layout: Layout, canvas: Canvas) -> Trees:
    """Tall trees (densest in canopy districts), and trees in courtyards, back gardens, patios and squares."""
    area_km2 = canvas.extent_m**2 / 1e6
    per_km2 = np.array([TRAITS[name].big_trees_per_km2 for name in layout.districts])[layout.zones]
    peak = float(per_km2.max())
    points = rng.uniform(0, canvas.extent_m, size=(rng.poisson(peak * area_km2), 2))
    points = points[rng.random(len(points)) * peak < per_km2[canvas.pixel_of(points[:, 0], points[:, 1])]]
    tall = grow(rng, points, rng.uniform(14.0, 30.0, size=len(points)), "tall", BROAD_FORM_P)
    gardens = canvas.rasterize([(garden, 1) for garden in layout.gardens], "uint8") > 0
    points = rng.uniform(0, canvas.extent_m, size=(rng.poisson(6000 * area_km2), 2))
    points = points[gardens[canvas.pixel_of(points[:, 0], points[:, 1])]]
    return Trees.joined([tall, grow(rng, points, rng.uniform(3.0, 20.0, size=len(points)), "garden")])


def standing(trees: Trees, canvas: Canvas, clearance: dict[str, np.ndarray], footing: Footing) -> Trees:
    """The trees whose trunk stands in the scene with the ``footing`` their planting asks for."""
    trees = trees.subset(np.all((trees.xy_m > 0) & (trees.xy_m < canvas.extent_m), axis=1))
    pixel = canvas.pixel_of(trees.xy_m[:, 0], trees.xy_m[:, 1])
    radius_m = trees.crown_radius_m
    fits = clearance["building"][pixel] > footing.wall_m + footing.wall_share * radius_m
    fits &= clearance["road"][pixel] > footing.road_m + footing.road_share * radius_m
    fits &= clearance["water"][pixel] > footing.water_m + footing.water_share * radius_m
    return trees.subset(fits)


def apart_from(trees: Trees, others: Trees, distance_m: float) -> Trees:
    """The trees standing at least ``distance_m`` from every one of ``others`` (no two trunks in one spot)."""
    if not len(trees) or not len(others):
        return trees
    nearest_m, _ = cKDTree(others.xy_m).query(trees.xy_m)
    return trees.subset(nearest_m >= distance_m)


def scene_trees(rng: np.random.Generator, layout: Layout, canvas: Canvas,
                clearance: dict[str, np.ndarray]) -> Trees:
    """Every tree of a scene: street and waterside rows, parks, gardens and the district's tall trees."""
    streets = standing(street_rows(rng, layout.roads), canvas, clearance, ON_SIDEWALK)
    banks = standing(waterside_rows(rng, layout.water), canvas, clearance, ON_BANK)
    rows = Trees.joined([streets, apart_from(banks, streets, 3.0)])
    parks = standing(park_trees(rng, canvas, layout.density, clearance), canvas, clearance, IN_PARK)
    gardens = standing(garden_trees(rng, canvas, layout.density), canvas, clearance, IN_GARDEN)
    district = district_trees(rng, layout, canvas)
    tall = standing(district.subset(district.kind == "tall"), canvas, clearance, OVER_ROOFS)
    courtyards = standing(district.subset(district.kind == "garden"), canvas, clearance, IN_COURTYARD)
    return Trees.joined([rows, apart_from(parks, rows, 2.0), gardens, tall, courtyards])
