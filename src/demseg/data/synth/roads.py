"""Street plans of each district, the road network on a rotated grid, and the road cut into the terrain.

A road is a carriageway (``width_m``, a tram bed of ``tram_m`` down its middle where it has one)
and, on each side, a verge: a parking bay at road level (``parking_m``), a kerb, a cycle path a
little above the road (``cycle_m``), a second kerb and a sidewalk (``sidewalk_m``); then an
embankment back into the terrain. Every surface gets its own code in the scene's surface raster
(:data:`SURFACE_CODES`), so a spec chooses carriageways only or all traffic areas. Only style
"streets" draws parking bays, cycle paths and tram beds; the other styles keep carriageway and
sidewalk as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import LineString, Polygon, box
from shapely.ops import substring

from demseg.data.synth.canvas import Canvas, Relief
from demseg.data.synth.geometry import chaikin


@dataclass
class Road:
    line: LineString  # metres, reaching past the scene edge
    width_m: float
    kind: str  # "main", "street", "lane", "winding" or "quay" (along a canal)
    kerb_m: float = 0.15
    sidewalk_m: float = 2.0
    ramp_m: float = 5.0
    parking_m: float = 0.0  # parking bay at road level on each side (0: none)
    cycle_m: float = 0.0  # cycle path beyond the kerb on each side (0: none)
    cycle_rise_m: float = 0.0  # the cycle path above the road's edge (below the sidewalk)
    tram_m: float = 0.0  # tram bed down the middle of the carriageway (0: none)
    tram_rise_m: float = 0.0

    @property
    def polygon(self) -> Polygon:
        return self.line.buffer(self.width_m / 2, cap_style="flat")

    @property
    def traffic_width_m(self) -> float:
        """Across every traffic area: carriageway (with its tram bed), parking bays and cycle paths."""
        return self.width_m + 2 * (self.parking_m + self.cycle_m)

    @property
    def traffic_polygon(self) -> Polygon:
        return self.line.buffer(self.traffic_width_m / 2, cap_style="flat")

    @property
    def verge_m(self) -> float:
        """From the carriageway's edge to the sidewalk's far side: parking bay, cycle path, sidewalk."""
        return self.parking_m + self.cycle_m + self.sidewalk_m

    def cross_section(self) -> tuple[float, ...]:
        return (self.kerb_m, self.sidewalk_m, self.ramp_m, self.parking_m, self.cycle_m, self.cycle_rise_m,
                self.tram_m, self.tram_rise_m)


# the surfaces a scene's surface raster tells apart (traffic areas: carriageway, parking, cycle path, tram)
SURFACE_CODES = {"carriageway": 20, "parking": 21, "cycle_path": 22, "tram": 23, "sidewalk": 24}
TRAFFIC_SURFACES = ("carriageway", "parking", "cycle_path", "tram")


def street_cross_sections(rng: np.random.Generator, roads: list[Road]) -> None:
    """Give some roads parking bays, cycle paths and tram beds, as streets in a European city have them.

    Main roads: a tram bed in a third of them (the carriageway widened by it), cycle paths in most;
    streets: parking bays in most, cycle paths in some; lanes and winding roads: a parking bay at times.
    """
    chances = {"main": (0.35, 0.75, 0.35), "street": (0.7, 0.3, 0.0), "winding": (0.3, 0.4, 0.0),
               "lane": (0.3, 0.0, 0.0), "quay": (0.6, 0.2, 0.0)}
    for road in roads:
        parking_p, cycle_p, tram_p = chances.get(road.kind, (0.3, 0.2, 0.0))
        if road.kerb_m == 0.0:  # a rural road: no kerbs, no bays
            continue
        if rng.random() < parking_p:
            road.parking_m = rng.uniform(2.0, 2.6)
        if rng.random() < cycle_p:
            road.cycle_m = rng.uniform(1.6, 2.6)
            road.cycle_rise_m = rng.uniform(0.3, 0.8) * road.kerb_m
        if rng.random() < tram_p:
            road.tram_m = rng.uniform(6.0, 7.0)
            road.tram_rise_m = rng.uniform(0.08, 0.25)
            road.width_m += road.tram_m


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


STREETS = {
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


def winding_line(rng: np.random.Generator, extent_m: float) -> LineString:
    """An old through-road ignoring the grid: enters on one side, leaves on the other, bending."""
    heading = rng.uniform(0, 2 * np.pi)
    along = np.array([math.cos(heading), math.sin(heading)])
    across = np.array([-along[1], along[0]])
    steps = np.linspace(-0.85, 0.85, 6) * extent_m
    jitter = rng.uniform(-0.22, 0.22, size=6) * extent_m
    jitter[[0, -1]] = 0.0
    controls = extent_m / 2 + steps[:, None] * along + jitter[:, None] * across
    return LineString(chaikin(controls))


def road_network(rng: np.random.Generator, extent_m: float,
                 plan: _StreetPlan = SUBURBAN_STREETS) -> tuple[list[Road], float]:
    """Main roads and cross streets on a rotated grid, T-junction streets and sometimes a winding road."""
    theta = rng.uniform(0, np.pi / 2)
    along = np.array([math.cos(theta), math.sin(theta)])
    across = np.array([-along[1], along[0]])
    mains = _keep_some(rng, _parallel_lines(rng, extent_m, along, across, rng.uniform(*plan.main_spacing_m),
                                            plan.main_curvy_p, plan), plan.main_keep_p)
    streets = _keep_some(rng, _parallel_lines(rng, extent_m, across, along,
                                              rng.uniform(*plan.street_spacing_m),
                                              plan.street_curvy_p, plan), plan.street_keep_p)
    roads = [Road(line, rng.uniform(*plan.main_width_m), "main") for line in mains]
    for line in streets:
        if rng.random() < plan.lane_p:
            roads.append(Road(_between_crossings(rng, line, mains), rng.uniform(*plan.lane_width_m), "lane"))
        else:
            roads.append(Road(line, rng.uniform(*plan.street_width_m), "street"))
    if rng.random() < plan.winding_p:
        roads.append(Road(winding_line(rng, extent_m), rng.uniform(*plan.winding_width_m), "winding"))
    for road in roads:
        rural = road.kind == "winding" and rng.random() < 0.5
        road.kerb_m = 0.0 if rural else rng.uniform(*plan.kerb_m)
        road.sidewalk_m = rng.uniform(0.5, 1.0) if rural else rng.uniform(*plan.sidewalk_m)
        road.ramp_m = rng.uniform(3.0, 8.0)
    return roads, theta


def clip_roads(roads: list[Road], extent_m: float) -> list[Road]:
    """Roads cut to pieces that touch the scene: centrelines run on past the edge by half a width,
    so buffering a written centreline covers exactly the road pixels inside the scene."""
    scene = box(0, 0, extent_m, extent_m)
    pieces = []
    for road in roads:
        reach = scene.buffer(road.width_m / 2 + 1.0, join_style="mitre")
        for part in shapely.get_parts(road.line.intersection(reach)):
            if part.geom_type == "LineString" and part.length > 0 \
                    and part.buffer(road.width_m / 2).intersects(scene):
                pieces.append(Road(part, road.width_m, road.kind, road.kerb_m, road.sidewalk_m, road.ramp_m,
                                   road.parking_m, road.cycle_m, road.cycle_rise_m, road.tram_m, road.tram_rise_m))
    return [piece for piece in pieces if not piece.polygon.intersection(scene).is_empty]


def road_ground(relief: Relief, roads: list[Road], canvas: Canvas,
                terrain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bare earth with the roads cut in: (dtm, distance to the nearest carriageway in m, surface codes of
    :data:`SURFACE_CODES`, 0 elsewhere).

    The road surface follows the smoothed terrain at the nearest centreline point, crowned 2 %, a tram
    bed raised along its middle; beyond its edge a parking bay at road level, a kerb step (part of it up
    to a cycle path, the rest up to the sidewalk) and a sidewalk, then an embankment blends back into
    the terrain. Done on a grid padded by ROAD_PAD_M so that roads just outside the scene shape its
    edge too.
    """
    pad = canvas.pad_px
    inner = (slice(pad, pad + canvas.size_px),) * 2
    profile = relief.sample(canvas.xs_m(pad), canvas.ys_m(pad), roads_only=True)
    centre_ids = canvas.rasterize([(road.line, index + 1) for index, road in enumerate(roads)], "uint16", pad)
    to_centre_px, (rows, cols) = ndimage.distance_transform_edt(centre_ids == 0, return_indices=True)
    road_level = profile[rows, cols] - 0.02 * to_centre_px * canvas.pixel_size_m
    centre_of = centre_ids[rows, cols][inner].astype(int) - 1
    to_centre_m = to_centre_px[inner] * canvas.pixel_size_m
    road_ids = canvas.rasterize([(road.polygon, index + 1) for index, road in enumerate(roads)], "uint16",
                                pad)
    to_road_px, (rows, cols) = ndimage.distance_transform_edt(road_ids == 0, return_indices=True)
    nearest = road_ids[rows, cols][inner].astype(int) - 1
    edge_level = road_level[rows, cols][inner]
    road_level = road_level[inner]
    to_road_m = to_road_px[inner] * canvas.pixel_size_m
    sections = np.array([road.cross_section() for road in roads]).reshape(-1, 8)
    kerb_m, sidewalk_m, ramp_m, parking_m, cycle_m, cycle_rise_m, _, _ = np.moveaxis(sections[nearest], -1, 0)
    tram_m, tram_rise_m = sections[centre_of, 6], sections[centre_of, 7]
    road_mask = road_ids[inner] > 0
    tram = road_mask & (to_centre_m < tram_m / 2)
    road_level = road_level + np.where(tram, tram_rise_m, 0.0)
    in_bay = to_road_m <= parking_m
    on_cycle_path = ~in_bay & (to_road_m <= parking_m + cycle_m)
    walk_from_m = to_road_m - parking_m - cycle_m
    walk_level = edge_level + kerb_m + 0.02 * np.clip(walk_from_m, 0.0, sidewalk_m)
    verge_level = np.select([in_bay, on_cycle_path], [edge_level + 0.01 * to_road_m, edge_level + cycle_rise_m],
                            walk_level)
    blend = np.clip((walk_from_m - sidewalk_m) / ramp_m, 0.0, 1.0)
    blend = blend * blend * (3 - 2 * blend)
    dtm = np.where(road_mask, road_level, (1 - blend) * verge_level + blend * terrain)
    # traffic areas are the roads' traffic polygons, so labels and the written vectors agree pixel for pixel
    traffic = canvas.rasterize([(road.traffic_polygon, 1) for road in roads], "uint8", pad)[inner] > 0
    codes = SURFACE_CODES
    surfaces = np.select(
        [tram, road_mask, traffic & (in_bay | (cycle_m == 0)), traffic, walk_from_m <= sidewalk_m],
        [codes["tram"], codes["carriageway"], codes["parking"], codes["cycle_path"], codes["sidewalk"]],
        0).astype(np.uint8)
    return dtm, to_road_m, surfaces
