"""Block fillers of the built-up districts: perimeter blocks round courtyards, terraces of row houses,
old-town lots round patios and convents, industrial halls amid parking lots."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from demseg.data.synth.buildings import Building
from demseg.data.synth.geometry import (
    frame_box,
    frame_boxes,
    frame_of,
    largest_polygon,
    point_and_tangent,
    polygon_parts,
)
from demseg.data.synth.vehicles import lorries_at_halls, parked_cars


@dataclass
class Filled:
    """What a block filler built: buildings, gardens (room for trees) and parked vehicles (shape, height)."""

    buildings: list[Building] = field(default_factory=list)
    gardens: list[Polygon] = field(default_factory=list)
    vehicles: list[tuple[Polygon, float]] = field(default_factory=list)

    def extend(self, other: Filled) -> None:
        self.buildings += other.buildings
        self.gardens += other.gardens
        self.vehicles += other.vehicles


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
            in zip(units, points, along, widths, strict=True)
            for part in polygon_parts(unit) if part.area > 4.0]


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


def _perimeter_block(rng: np.random.Generator, block: Polygon) -> Filled:
    """Units sharing walls along a block's whole street front, 12-30 m tall, round a courtyard and annexes."""
    *_, width_m = frame_of(block)
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
        buildings.append(Building(unit, shape="lot", centre=tuple(centre), frontage_dir=tuple(along),
                                  half_frontage_m=frontage_m / 2, half_depth_m=depth_m / 2,
                                  district="perimeter", **roof))
    filled = Filled(buildings)
    if not inner.is_empty:
        filled.extend(_courtyard(rng, inner))
    return filled


def _courtyard(rng: np.random.Generator, inner) -> Filled:
    """Low annexes against the back walls of a courtyard, which is a garden for trees."""
    annexes: list[Building] = []
    for yard in polygon_parts(inner):
        yard = orient(yard, 1.0)
        count = min(int(rng.poisson(yard.area / 300.0)), 8) if rng.random() < 0.6 else 0
        for _ in range(count):
            point, along = point_and_tangent(yard.exterior, rng.uniform(0.0, yard.exterior.length))
            inward = np.array([-along[1], along[0]])
            half_width_m, depth_m = rng.uniform(1.5, 4.5), rng.uniform(3.0, 8.0)
            # from half a metre inside the wall, cut back to the courtyard: it touches the wall exactly
            box_m = frame_box(point, along, inward, -half_width_m, half_width_m, -0.5, depth_m)
            shape = largest_polygon(box_m.intersection(yard))
            if shape is None or shape.area < 10.0 or any(shape.distance(a.footprint) < 1.0 for a in annexes):
                continue
            annexes.append(Building(shape, roof="flat", eave_m=rng.uniform(3.0, 5.0), tan_pitch=0.0,
                                    half_short_m=0.0, shape="lot",
                                    centre=tuple(point + inward * depth_m / 2),
                                    frontage_dir=tuple(along), half_frontage_m=half_width_m,
                                    half_depth_m=depth_m / 2, district="perimeter"))
    return Filled(annexes, polygon_parts(inner))


def _row_houses(rng: np.random.Generator, block: Polygon) -> Filled:
    """Terraces of narrow houses sharing walls along a block's sides, back gardens between them."""
    origin, along, inward, length_m, width_m = frame_of(block)
    setback_m, depth_m = rng.uniform(1.5, 6.0), rng.uniform(8.0, 12.0)
    row_m = setback_m + depth_m
    if width_m < row_m + 2.0 or length_m < 20.0:
        return Filled([], [block])
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
    gardens = polygon_parts(block.difference(built)) if houses else [block]
    return Filled(houses, gardens)


def _terraces(rng: np.random.Generator, inside: Polygon, front: np.ndarray, along: np.ndarray, end_m: float,
              setback_m: float, depth_m: float, skip_m: float = 0.0) -> list[Building]:
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
            footprint = frame_box(front, along, inward, u_m, u_m + unit_m, setback_m, setback_m + depth_m)
            if u_m + unit_m > end_m or not inside.contains(footprint):
                break
            step_m = rng.uniform(-1.0, 1.5) if rng.random() < 0.35 else 0.0
            if form == "flat":
                roof = dict(roof="flat", tan_pitch=0.0, half_short_m=0.0, parapet_m=rng.uniform(0.2, 0.5))
            else:
                half_short_m = (depth_m if form == "along" else unit_m) / 2
                roof = dict(roof="gable", ridge=form, tan_pitch=tan_pitch, half_short_m=half_short_m)
            centre = front + along * (u_m + unit_m / 2) + inward * (setback_m + depth_m / 2)
            houses.append(Building(footprint, eave_m=max(eave_m + step_m, 3.0), shape="rect",
                                   centre=tuple(centre), frontage_dir=tuple(along),
                                   half_frontage_m=unit_m / 2, half_depth_m=depth_m / 2, district="rowhouse",
                                   **roof))
            u_m += unit_m
        u_m += rng.uniform(2.0, 6.0)
    return houses


def _old_town_block(rng: np.random.Generator, block: Polygon) -> Filled:
    """Lots of 2-5 storeys along a block's street front, reaching to its middle or to an inner garden (in
    large blocks often a convent round a cloister), many round a patio; a few blocks are small squares."""
    if rng.random() < 0.15:
        return Filled([], [block])
    *_, width_m = frame_of(block)
    depth_m = rng.uniform(12.0, 26.0)
    inner = block.buffer(-depth_m, join_style="mitre") if depth_m < width_m / 2 else Polygon()
    inner = inner if inner.area > 60.0 else Polygon()
    filled = Filled()
    for lot, point, along, frontage_m in _front_units(rng, block, block.difference(inner), (6.0, 15.0)):
        filled.extend(_old_town_lot(rng, lot, point, along, frontage_m, min(depth_m, width_m / 2)))
    for garden in polygon_parts(inner):
        filled.extend(_cloister(rng, garden) if garden.area > 1200.0 and rng.random() < 0.5
                      else Filled([], [garden]))
    return filled


def _cloister(rng: np.random.Generator, garden: Polygon) -> Filled:
    """A convent filling a block's interior: 8-12 m deep wings with tiled roofs round a cloister garden."""
    cloister = largest_polygon(garden.buffer(-rng.uniform(8.0, 12.0), join_style="mitre"))
    if cloister is None or cloister.area < 50.0:
        return Filled([], [garden])
    origin, along, inward, length_m, width_m = frame_of(garden)
    frame = dict(shape="lot", centre=tuple(origin + along * length_m / 2 + inward * width_m / 2),
                 frontage_dir=tuple(along), half_frontage_m=length_m / 2, half_depth_m=width_m / 2,
                 district="oldtown")
    wings = [Building(part, roof="hip", ridge="mass", eave_m=int(rng.integers(2, 4)) * rng.uniform(3.4, 4.0),
                      tan_pitch=math.tan(math.radians(rng.uniform(20.0, 30.0))), half_short_m=4.0, **frame)
             for part in polygon_parts(garden.difference(cloister))]
    return Filled(wings, [cloister])


def _old_town_lot(rng: np.random.Generator, lot: Polygon, point: np.ndarray, along: np.ndarray,
                  frontage_m: float, depth_m: float) -> Filled:
    """One old-town house: a flat roof with a parapet or a tiled hip roof, often round a patio (a hole)."""
    if rng.random() < 0.18:
        return Filled([], [lot])
    footprint, gardens = lot, []
    if lot.area > 90.0 and rng.random() < 0.7:
        patio = largest_polygon(lot.buffer(-rng.uniform(3.0, 5.0), join_style="mitre"))
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
    houses = [Building(part, eave_m=eave_m, **roof, **frame) for part in polygon_parts(footprint)]
    return Filled(houses, gardens)


def _industrial_block(rng: np.random.Generator, block: Polygon) -> Filled:
    """Halls of 40-150 m set back in a block, some with an office wing, amid parking lots and lorries."""
    origin, along, inward, length_m, width_m = frame_of(block)
    inset_m = rng.uniform(6.0, 18.0)
    inside = block.buffer(-3.0)
    buildings, halls, u_m = [], [], inset_m
    while u_m < length_m - inset_m - 30.0 and width_m - 2 * inset_m >= 20.0:
        hall_m = min(rng.uniform(40.0, 150.0), length_m - inset_m - u_m)
        span_m = min(rng.uniform(30.0, 100.0), width_m - 2 * inset_m)
        v_m = inset_m + rng.uniform(0.0, width_m - 2 * inset_m - span_m)
        footprint = largest_polygon(frame_box(origin, along, inward, u_m, u_m + hall_m, v_m, v_m + span_m)
                                    .intersection(inside))
        if footprint is not None and footprint.area > max(400.0, 0.8 * hall_m * span_m):
            if rng.random() < 0.35:
                office = frame_box(origin, along, inward, u_m, u_m + rng.uniform(8.0, 14.0), v_m,
                                   v_m + min(span_m, rng.uniform(12.0, 25.0))).intersection(footprint)
                buildings += [_office(rng, part) for part in polygon_parts(office)]
                footprint = largest_polygon(footprint.difference(office))
            centre = origin + along * (u_m + hall_m / 2) + inward * (v_m + span_m / 2)
            halls.append(_hall(rng, footprint, centre, along, hall_m, span_m))
        u_m += hall_m + rng.uniform(10.0, 30.0)
    taken = shapely.union_all([building.footprint for building in buildings + halls])
    vehicles = parked_cars(rng, block.buffer(-2.0).difference(taken.buffer(4.0)), origin, along, inward)
    vehicles += lorries_at_halls(rng, halls, block.buffer(-1.0).difference(taken.buffer(0.5)))
    return Filled(buildings + halls, [], vehicles)


def _office(rng: np.random.Generator, footprint: Polygon) -> Building:
    origin, along, inward, length_m, width_m = frame_of(footprint)
    centre = origin + along * length_m / 2 + inward * width_m / 2
    return Building(footprint, roof="flat", eave_m=int(rng.integers(2, 5)) * 3.4 + rng.uniform(0.0, 1.0),
                    tan_pitch=0.0, half_short_m=0.0, shape="rect", centre=tuple(centre),
                    frontage_dir=tuple(along), half_frontage_m=length_m / 2, half_depth_m=width_m / 2,
                    parapet_m=rng.uniform(0.3, 0.8), district="industrial")


def _hall(rng: np.random.Generator, footprint: Polygon, centre: np.ndarray, along: np.ndarray, hall_m: float,
          span_m: float) -> Building:
    """A warehouse 6-15 m tall: a flat roof with rooftop units, or a low-pitched roof along its length."""
    eave_m = rng.uniform(6.0, 13.0)
    frame = dict(shape="rect", centre=tuple(centre), frontage_dir=tuple(along), half_frontage_m=hall_m / 2,
                 half_depth_m=span_m / 2, district="industrial")
    if rng.random() < 0.3:
        tan_pitch = min(math.tan(math.radians(rng.uniform(4.0, 12.0))), 3.0 / (span_m / 2))
        return Building(footprint, roof="gable", ridge="along", eave_m=eave_m, tan_pitch=tan_pitch,
                        half_short_m=span_m / 2, **frame)
    return Building(footprint, roof="flat", eave_m=eave_m, tan_pitch=0.0, half_short_m=0.0,
                    parapet_m=rng.uniform(0.3, 0.9), rooftop_units=_hall_units(rng, footprint, along),
                    **frame)


def _hall_units(rng: np.random.Generator, footprint: Polygon, along: np.ndarray) -> tuple:
    """Air handling units and skylight boxes on a flat hall roof: (Polygon, height above the roof in m)."""
    count = min(int(rng.poisson(footprint.area / 250.0)), 40)
    left, bottom, right, top = footprint.bounds
    centres = rng.uniform([left, bottom], [right, top], size=(count, 2))
    half_m = rng.uniform(0.8, 2.5, size=(count, 2))
    heights_m = rng.uniform(0.8, 2.5, size=count)
    units = frame_boxes(centres, along, np.array([-along[1], along[0]]),
                        np.column_stack([-half_m[:, 0], half_m[:, 0]]),
                        np.column_stack([-half_m[:, 1], half_m[:, 1]]))
    fits = shapely.contains(footprint.buffer(-2.0), units)
    return tuple(zip(units[fits], heights_m[fits], strict=True))


FILLERS = {"rowhouse": _row_houses, "perimeter": _perimeter_block, "oldtown": _old_town_block,
           "industrial": _industrial_block}
