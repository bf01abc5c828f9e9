"""A scene's layout: relief, districts, streets, water and buildings in map space, not yet rasterised."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from shapely.geometry import Polygon

from demseg.data.synth.buildings import Building, place_buildings
from demseg.data.synth.canvas import Canvas, Relief, SmoothField, random_relief
from demseg.data.synth.districts import (
    DETACHED,
    TRAITS,
    district_at,
    district_density,
    district_map,
    fill_blocks,
)
from demseg.data.synth.roads import STREETS, Road, clip_roads, road_network, street_cross_sections
from demseg.data.synth.roofs import decorated
from demseg.data.synth.water import district_water, water_bodies, with_canal

OPEN_BLOCK_P = 0.15  # style "streets": blocks left open (lawns, squares) between the streets


@dataclass
class Layout:
    """Everything placed in map space before rasterising: relief, roads, water, buildings."""

    relief: Relief
    density: np.ndarray
    roads: list[Road]
    theta: float
    water: list[Polygon]
    buildings: list[Building]
    banks: list[Polygon] | None = None  # water the ground dips towards (None: all; canals have quay walls)
    gardens: list[Polygon] = field(default_factory=list)  # courtyards, back gardens, patios, squares
    vehicles: list[tuple[Polygon, float]] = field(default_factory=list)  # parked off the road, with heights
    districts: tuple[str, ...] = ("suburban",)
    zones: np.ndarray | None = None  # per pixel, the index of its district
    # roof details, version 3 trees, crowns over roofs, LiDAR footprint, dropouts and interpolated water: all
    # styles but "suburban" (version 1)
    survey: bool = False


def lay_out(rng: np.random.Generator, canvas: Canvas) -> Layout:
    """The layout of generator version 1 (style "suburban")."""
    relief = random_relief(rng, canvas.extent_m)
    downtown = SmoothField(rng, 120.0, canvas.extent_m).sample(canvas.xs_m(), canvas.ys_m())
    density = 1.0 / (1.0 + np.exp(-(1.6 * downtown + rng.uniform(-1.8, 1.2))))
    network, theta = road_network(rng, canvas.extent_m)
    roads = clip_roads(network, canvas.extent_m)
    water = water_bodies(rng, canvas.extent_m, roads)
    buildings = place_buildings(rng, roads, water, density, canvas)
    return Layout(relief, density, roads, theta, water, buildings)


def lay_out_districts(rng: np.random.Generator, canvas: Canvas, style: str) -> Layout:
    """Relief, districts, streets, water and buildings of a scene of any style but "suburban"."""
    relief = random_relief(rng, canvas.extent_m)
    districts, zones = district_map(rng, canvas, style)
    density = district_density(rng, canvas, districts, zones)
    traits = TRAITS[districts[0]]
    network, theta = road_network(rng, canvas.extent_m, STREETS[districts[0]])
    network, canal = with_canal(rng, network) if rng.random() < traits.canal_p else (network, None)
    if style == "streets":
        street_cross_sections(rng, network)
    roads = clip_roads(network, canvas.extent_m)
    water, ponds = district_water(rng, canvas.extent_m, roads, canal, traits.pond_p)
    hollows = [pond.buffer(3.0) for pond in ponds] + ([] if canal is None else [canal.buffer(1.0)])
    filled, claimed = fill_blocks(rng, network, hollows, canvas, districts, zones,
                                  open_p=OPEN_BLOCK_P if style == "streets" else 0.0)
    buildings = filled.buildings
    if any(name in DETACHED for name in districts):
        houses = place_buildings(rng, roads, water, density, canvas, claimed)
        buildings += [replace(house, district=district_at(canvas, districts, zones, house.footprint))
                      for house in houses]
    buildings = [decorated(rng, building) for building in buildings]
    return Layout(relief, density, roads, theta, water, buildings, banks=ponds, gardens=filled.gardens,
                  vehicles=filled.vehicles, districts=districts, zones=zones, survey=True)
