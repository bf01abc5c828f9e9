"""Ponds and canals (water without LiDAR returns) and the banks that dip towards ponds."""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import Polygon, box

from demseg.data.synth.canvas import Canvas
from demseg.data.synth.roads import Road, winding_line


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


def _road_clearance(roads: list[Road]):
    keep_clear = shapely.union_all([road.polygon.buffer(road.verge_m + 3.0) for road in roads])
    shapely.prepare(keep_clear)
    return keep_clear


def _in_scene(water: list[Polygon], extent_m: float) -> list[Polygon]:
    scene = box(0, 0, extent_m, extent_m)
    parts = shapely.get_parts(shapely.intersection(np.array(water, dtype=object), scene))
    return [part for part in parts if part.geom_type == "Polygon" and part.area > 1.0]


def water_bodies(rng: np.random.Generator, extent_m: float, roads: list[Road]) -> list[Polygon]:
    """One or two ponds clear of the roads, sometimes a canal that roads cross on bridges."""
    keep_clear = _road_clearance(roads)
    water = [_pond(rng, extent_m, keep_clear) for _ in range(1 + int(rng.random() < 0.3))]
    if rng.random() < 0.25:
        canal = winding_line(rng, extent_m).buffer(rng.uniform(6.0, 14.0) / 2, cap_style="flat")
        bridges = shapely.union_all([road.polygon.buffer(1.0) for road in roads])
        water.append(canal.difference(bridges))
    return _in_scene(water, extent_m)


def with_canal(rng: np.random.Generator, network: list[Road]) -> tuple[list[Road], Polygon | None]:
    """A canal in place of a main road, a quay street on either side: (new network, canal polygon)."""
    mains = [index for index, road in enumerate(network) if road.kind == "main"]
    if not mains:
        return network, None
    main = network[mains[int(rng.integers(len(mains)))]]
    canal_m, quay_m = rng.uniform(10.0, 24.0), rng.uniform(5.0, 8.0)
    offset_m = canal_m / 2 + rng.uniform(1.0, 3.0) + quay_m / 2
    sides = [shapely.offset_curve(main.line, side * offset_m) for side in (1, -1)]
    quays = [Road(part, quay_m, "quay", rng.uniform(0.12, 0.18), rng.uniform(1.0, 2.0),
                  rng.uniform(3.0, 6.0))
             for side in sides for part in shapely.get_parts(side)
             if part.geom_type == "LineString" and part.length > 20.0]
    canal = main.line.buffer(canal_m / 2, cap_style="flat")
    return [road for road in network if road is not main] + quays, canal


def district_water(rng: np.random.Generator, extent_m: float, roads: list[Road], canal: Polygon | None,
                   pond_p: tuple[float, float]) -> tuple[list[Polygon], list[Polygon]]:
    """(all water, ponds): ponds clear of the roads, and a canal bridged by the streets crossing it."""
    keep_clear = _road_clearance(roads)
    ponds = [_pond(rng, extent_m, keep_clear) for chance in pond_p if rng.random() < chance]
    water = list(ponds)
    if canal is not None:
        bridges = [road.polygon.buffer(1.0) for road in roads if road.kind != "quay"]
        water.append(canal.difference(shapely.union_all(bridges)) if bridges else canal)
    return _in_scene(water, extent_m), _in_scene(ponds, extent_m) if ponds else []


def banks_m(rng: np.random.Generator, banks: list[Polygon] | None, canvas: Canvas,
            to_water_m: np.ndarray) -> np.ndarray | float:
    """How far the ground dips towards ponds (by up to 2 m); canals have quay walls instead."""
    if banks is None:
        return rng.uniform(0.5, 2.0) * np.exp(-to_water_m / 4.0)
    if not banks:
        return 0.0
    ponds = canvas.rasterize([(pond, 1) for pond in banks], "uint8") > 0
    return rng.uniform(0.5, 2.0) * np.exp(-ndimage.distance_transform_edt(~ponds) * canvas.pixel_size_m / 4.0)
