"""Cars, vans and buses on the roads, cars in parking bays and lots, and lorries at industrial halls."""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import Polygon, box

from demseg.data.synth.buildings import Building
from demseg.data.synth.canvas import Canvas
from demseg.data.synth.geometry import frame_boxes, point_and_tangent
from demseg.data.synth.roads import Road


def parked_cars(rng: np.random.Generator, lot, origin: np.ndarray, along: np.ndarray,
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
    cars = frame_boxes(origin, along, inward, np.column_stack([u - 0.9, u + 0.9]),
                       np.column_stack([v - half_length_m, v + half_length_m]))
    shapely.prepare(lot)
    fits = shapely.contains(lot, cars)
    return list(zip(cars[fits], heights_m[fits], strict=True))


def lorries_at_halls(rng: np.random.Generator, halls: list[Building], yard) -> list[tuple[Polygon, float]]:
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
        trailers = frame_boxes(np.array(hall.centre), along, np.array([-along[1], along[0]]),
                               np.column_stack([u - 1.25, u + 1.25]), np.tile(v, (count, 1)))
        parked = trailers[shapely.contains(yard, trailers)]
        lorries += [(trailer, rng.uniform(3.6, 4.1)) for trailer in parked]
    return lorries


def _box_at(centre: np.ndarray, tangent: np.ndarray, length_m: float, width_m: float) -> Polygon:
    shape = affinity.rotate(box(-length_m / 2, -width_m / 2, length_m / 2, width_m / 2),
                            math.atan2(tangent[1], tangent[0]), use_radians=True)
    return affinity.translate(shape, *centre)


def _in_bays(rng: np.random.Generator, road: Road) -> list[tuple[Polygon, float]]:
    """Cars parked along a road's parking bays (both sides), about 5.5 m apart, some bays empty."""
    if road.parking_m <= 0:
        return []
    shapes = []
    occupied = rng.uniform(0.4, 0.95)
    for side in (1.0, -1.0):
        for distance_m in np.arange(rng.uniform(0.0, 5.5), road.line.length, 5.5):
            if rng.random() >= occupied:
                continue
            point, tangent = point_and_tangent(road.line, float(distance_m))
            offset_m = side * (road.width_m / 2 + road.parking_m / 2)
            car = _box_at(point + offset_m * np.array([-tangent[1], tangent[0]]), tangent,
                          rng.uniform(4.0, 4.9), rng.uniform(1.7, 1.9))
            shapes.append((car, rng.uniform(1.35, 1.65)))
    return shapes


def car_heights(rng: np.random.Generator, roads: list[Road], canvas: Canvas) -> np.ndarray:
    """Cars and vans in lanes and parked at the kerb, always wholly on the carriageway; buses on main roads;
    cars in the parking bays of roads that have them."""
    shapes = []
    for road in roads:
        surface = road.polygon
        shapely.prepare(surface)
        for distance_m in rng.uniform(0.0, road.line.length, size=rng.poisson(road.line.length / 35.0)):
            point, tangent = point_and_tangent(road.line, float(distance_m))
            van = rng.random() < 0.1
            length_m, width_m = (rng.uniform(5.5, 7.0), rng.uniform(2.0, 2.3)) if van else \
                (rng.uniform(4.0, 4.9), rng.uniform(1.7, 1.9))
            kerbside_m = road.width_m / 2 - width_m / 2 - 0.3
            lane_m = rng.choice([-1, 1]) * rng.choice([road.width_m / 4, kerbside_m])
            car = _box_at(point + lane_m * np.array([-tangent[1], tangent[0]]), tangent, length_m, width_m)
            if surface.contains(car):
                shapes.append((car, rng.uniform(2.0, 2.8) if van else rng.uniform(1.35, 1.6)))
        if road.parking_m > 0 or road.tram_m > 0:  # style "streets" only: other styles draw as before
            shapes += _in_bays(rng, road)
            if road.kind == "main":
                for distance_m in rng.uniform(0.0, road.line.length, size=rng.poisson(road.line.length / 150.0)):
                    point, tangent = point_and_tangent(road.line, float(distance_m))
                    lane_m = rng.choice([-1, 1]) * (road.width_m / 2 - 1.6)
                    bus = _box_at(point + lane_m * np.array([-tangent[1], tangent[0]]), tangent,
                                  rng.uniform(11.5, 18.0), 2.55)
                    if surface.contains(bus):
                        shapes.append((bus, rng.uniform(2.9, 3.3)))
    return canvas.rasterize(shapes, "float32")
