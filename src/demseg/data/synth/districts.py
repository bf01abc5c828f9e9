"""District kinds, what each looks like (traits), how a style mixes them, where each lies in a scene and
the blocks they fill."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.polygon import orient

from demseg.data.synth.blocks import FILLERS, Filled
from demseg.data.synth.buildings import clipped_to_scene
from demseg.data.synth.canvas import Canvas, SmoothField
from demseg.data.synth.geometry import polygon_parts
from demseg.data.synth.roads import Road

DISTRICTS = ("suburban", "canopy", "rowhouse", "perimeter", "oldtown", "industrial")
STYLES = ("mixed", "dense", "streets", *DISTRICTS)
DEFAULT_STYLE = "mixed"
DETACHED = ("suburban", "canopy")  # houses placed along the roads, as generator version 1 does
BLOCK_MARGIN_M = 30.0  # blocks are filled this far past the scene edge, so edge blocks look like inner ones


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


TRAITS = {
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
    "streets": _Mix(_ANY_DISTRICT, 0.6, _ANY_DISTRICT),  # mixed, with parking bays, cycle paths, tram beds
    "dense": _Mix({"perimeter": 0.55, "oldtown": 0.45}, 0.5,
                  {"perimeter": 0.4, "oldtown": 0.4, "rowhouse": 0.2}),
    **{name: _Mix({name: 1.0}, 0.0, {}) for name in DISTRICTS},
}


def _pick(rng: np.random.Generator, weights: dict[str, float], leave_out: str = "") -> str:
    names = [name for name in weights if name != leave_out]
    chances = np.array([weights[name] for name in names])
    return names[int(rng.choice(len(names), p=chances / chances.sum()))]


def district_map(rng: np.random.Generator, canvas: Canvas,
                 style: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The scene's districts (the main one first) and per pixel the index of the district it lies in."""
    mix = _MIXES[style]
    districts = (_pick(rng, mix.weights),)
    zones = np.zeros(canvas.shape, dtype=np.uint8)
    if rng.random() < mix.second_p:
        districts += (_pick(rng, mix.second_weights, leave_out=districts[0]),)
        zone_field = SmoothField(rng, 150.0, canvas.extent_m).sample(canvas.xs_m(), canvas.ys_m())
        zones[zone_field > np.quantile(zone_field[::8, ::8], 1.0 - rng.uniform(0.25, 0.5))] = 1
    return districts, zones


def district_density(rng: np.random.Generator, canvas: Canvas, districts: tuple[str, ...],
                     zones: np.ndarray) -> np.ndarray:
    """Per pixel how built-up its district is, 0 (suburb) to 1 (downtown)."""
    downtown = SmoothField(rng, 120.0, canvas.extent_m).sample(canvas.xs_m(), canvas.ys_m())
    suburban = 1.0 / (1.0 + np.exp(-(1.6 * downtown + rng.uniform(-2.4, 0.6))))
    levels = [suburban if TRAITS[name].density < 0 else np.full(canvas.shape, TRAITS[name].density)
              for name in districts]
    return np.choose(zones, levels)


def district_at(canvas: Canvas, districts: tuple[str, ...], zones: np.ndarray, geometry) -> str:
    point = geometry.representative_point()
    row, col = canvas.pixel_of(point.x, point.y)
    return districts[int(zones[row, col])]


def _blocks(network: list[Road], hollows: list[Polygon], extent_m: float) -> list[Polygon]:
    """The land between streets (with sidewalks) and water, a little past the scene edge: CCW polygons."""
    area = box(-BLOCK_MARGIN_M, -BLOCK_MARGIN_M, extent_m + BLOCK_MARGIN_M, extent_m + BLOCK_MARGIN_M)
    cuts = [road.line.buffer(road.width_m / 2 + road.verge_m, cap_style="flat") for road in network]
    land = area.difference(shapely.union_all(cuts + hollows))
    return [orient(part, 1.0) for part in polygon_parts(land) if part.area > 80.0]


def fill_blocks(rng: np.random.Generator, network: list[Road], hollows: list[Polygon], canvas: Canvas,
                districts: tuple[str, ...], zones: np.ndarray,
                open_p: float = 0.0) -> tuple[Filled, Polygon | None]:
    """Everything built block by block (all districts but the detached ones), and the land it claims.

    With ``open_p`` a block is left open instead (a lawn, a playing field or a paved square: bare ground
    between the streets, no building, no garden tree), as open space lies between real streets.
    """
    scene = box(0, 0, canvas.extent_m, canvas.extent_m)
    filled, claimed = Filled(), []
    for block in _blocks(network, hollows, canvas.extent_m):
        district = district_at(canvas, districts, zones, block)
        if open_p and rng.random() < open_p:
            claimed.append(block)
            continue
        if district in DETACHED or block.intersection(scene).area < 20.0:
            continue
        claimed.append(block)
        filled.extend(FILLERS[district](rng, block))
    filled.buildings = clipped_to_scene(filled.buildings, canvas)
    return filled, shapely.union_all(claimed) if claimed else None
