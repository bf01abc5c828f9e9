"""Regularised building outlines: straight, mostly right-angled walls instead of pixel stairs.

Recipe, per building (lengths in pixels of the mask, converted with ``pixel_size_m``):

1. Fill holes under ``min_hole_px`` pixels. A noisy outline (its Douglas-Peucker simplification
   keeps more than ``noisy_vertices_per_px`` vertices per pixel of perimeter: clean pixel stairs
   keep ~0.05, a LiDAR class mask ~0.18) is first closed then opened with radius ``smooth_px``
   and mitred corners (right angles survive at any orientation).
2. Simplify with Douglas-Peucker (``simplify_px``); every simplified edge owns the run of the
   smoothed outline between its two vertices, and its line is fitted to that run (through the
   run's length-weighted centroid, along its principal axis).
3. Orientations: peaks of a length-weighted histogram of edge angles mod 90 deg (triangular
   kernel of half-width ``angle_tolerance_deg``), at most ``max_orientations`` of them, each
   holding at least ``min_orientation_share`` of the outline; each is refined to the principal
   axis of the runs snapped to it (runs on the perpendicular turned by 90 deg first).
4. An edge within ``angle_tolerance_deg`` of an orientation or its perpendicular takes it when
   that adds at most ``snap_rms_px`` RMS distance to its run (long walls keep real small angles,
   short noisy ones snap); others stay diagonal.
5. Consecutive parallel lines closer than ``min_edge_px`` merge, farther ones get a
   perpendicular step; consecutive lines are intersected into vertices; walls shorter than
   ``min_edge_px`` (diagonal ones: ``min_diagonal_px``; simplified edges under ``min_wall_px``
   are not fitted at all) are dropped, shortest first, and their neighbours intersected instead.
6. Fallback to the simplified outline when less than ``min_rectilinear_share`` of the outline is
   snapped (round or organic shapes), when the ring collapses, or when the result (repaired to
   its largest valid part if it crosses itself) has an IoU with the input below ``min_iou``.

Holes (courtyards) get steps 2 and 4-5 with their building's orientations. Neighbours: once every
building is regularised, in input order, a vertex within ``snap_px`` of an earlier touching
neighbour's outline is moved onto it (shared walls stay shared) and any overlap with earlier
polygons is cut from the later one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry import LinearRing, Polygon

from demseg.errors import DemsegError

_QUARTER = np.pi / 2


class RegulariseOptions(BaseModel):
    """How far outlines may be straightened; lengths in pixels of the source mask."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    noisy_vertices_per_px: float = Field(0.14, gt=0, description="An outline whose simplification keeps "
                                         "more vertices than this per pixel of perimeter is noisy...")
    smooth_px: float = Field(1.0, ge=0, description="...and is closed then opened with this radius first.")
    min_hole_px: float = Field(40.0, ge=0, description="Holes smaller than this many pixels are filled.")
    simplify_px: float = Field(1.25, gt=0, description="Douglas-Peucker tolerance before fitting walls.")
    angle_tolerance_deg: float = Field(15.0, gt=0, lt=45, description="Edges this close to an orientation "
                                       "or its perpendicular may be snapped to it...")
    snap_rms_px: float = Field(0.5, ge=0, description="...and are, when that adds at most this RMS distance "
                               "between the wall's line and its outline.")
    max_orientations: int = Field(2, ge=1, description="Orientations per building (blocks of several).")
    min_orientation_share: float = Field(0.2, ge=0, le=1, description="Share of the outline a second "
                                         "orientation must hold.")
    min_wall_px: float = Field(3.0, ge=0, description="Simplified edges shorter than this are taken as "
                               "noise: their neighbours are extended to meet instead.")
    min_edge_px: float = Field(1.5, ge=0, description="Shorter walls (and smaller steps between parallel "
                               "walls) are removed.")
    min_diagonal_px: float = Field(4.0, ge=0, description="Diagonal walls shorter than this are taken as "
                                   "noise at a corner and dropped.")
    min_rectilinear_share: float = Field(0.6, ge=0, le=1, description="Share of the outline that must be "
                                         "snapped, else the outline is only simplified.")
    min_iou: float = Field(0.8, ge=0, le=1, description="Below this IoU with the input the simplified "
                           "outline is kept instead.")
    snap_px: float = Field(1.0, ge=0, description="Vertices this close to an earlier touching neighbour's "
                           "outline are moved onto it.")


@dataclass
class _Line:
    """A wall line through ``point`` along unit ``direction``; ``end`` is the outline vertex where it ends."""

    point: np.ndarray
    direction: np.ndarray
    weight: float
    end: np.ndarray
    family: int  # index of the orientation it is snapped to, -1 when diagonal
    chord: float = 0.0  # length of the simplified edge it came from
    scatter: np.ndarray | None = None  # second moment (2, 2) of its run of outline about ``point``

    @property
    def snapped(self) -> bool:
        return self.family >= 0


def vertex_count(polygon) -> int:
    """Number of distinct vertices of a (multi)polygon, holes included (closing points not counted)."""
    parts = shapely.get_parts(polygon)
    rings = int(np.sum(1 + shapely.get_num_interior_rings(parts))) if len(parts) else 0
    return int(shapely.get_num_coordinates(polygon)) - rings


def regularise_footprints(polygons: Sequence[Polygon], pixel_size_m: float,
                          options: RegulariseOptions | None = None) -> list[Polygon]:
    """Regularised copies of building polygons (map coordinates), in input order, without overlaps."""
    if not pixel_size_m > 0:
        raise DemsegError(f"pixel size must be positive, got {pixel_size_m}")
    options = options or RegulariseOptions()
    regular = [regularise_polygon(polygon, pixel_size_m, options) for polygon in polygons]
    return _keep_neighbours_apart(list(polygons), regular, options.snap_px * pixel_size_m)


def regularise_polygon(polygon: Polygon, pixel_size_m: float,
                       options: RegulariseOptions | None = None) -> Polygon:
    """One building's regularised outline, or its simplified outline where regularising does not fit."""
    options = options or RegulariseOptions()
    if not isinstance(polygon, Polygon) or polygon.is_empty:
        return polygon
    # work in pixels from the polygon's corner: the options' units, and small numbers to intersect
    origin = np.array(polygon.bounds[:2])
    local = shapely.transform(polygon, lambda xy: (xy - origin) / pixel_size_m)
    return shapely.transform(_regularised_px(local, options), lambda xy: xy * pixel_size_m + origin)


def _regularised_px(polygon: Polygon, options: RegulariseOptions) -> Polygon:
    smooth = _smoothed(polygon, options)
    simplified = shapely.simplify(smooth, options.simplify_px, preserve_topology=True)
    exterior = _open_ring(smooth.exterior)
    keep = _douglas_peucker_ring(exterior, options.simplify_px)
    if len(keep) < 4:
        return simplified
    thetas = _orientations(_edge_lines(exterior, keep, [], options), options)
    thetas = _refined_angles(_edge_lines(exterior, keep, thetas, options), thetas, options)
    lines = _walls(_edge_lines(exterior, keep, thetas, options), options)
    snapped = sum(line.weight for line in lines if line.snapped)
    if snapped < options.min_rectilinear_share * sum(line.weight for line in lines):
        return simplified
    shell = _ring_from_lines(lines, options)
    if shell is None:
        return simplified
    holes = [_regular_hole(ring, thetas, options) for ring in smooth.interiors]
    result = Polygon(shell, [hole for hole in holes if hole is not None])
    if not result.is_valid:
        result = Polygon(shell, [hole.coords for hole in simplified.interiors])
    if not result.is_valid:
        result = _largest_polygon(shapely.make_valid(result))
    if result is None or _iou(result, polygon) < options.min_iou:
        return simplified
    return result


def _without_small_holes(polygon: Polygon, min_hole_px: float) -> Polygon:
    holes = [ring for ring in polygon.interiors if Polygon(ring).area >= min_hole_px]
    return Polygon(polygon.exterior, holes)


def _smoothed(polygon: Polygon, options: RegulariseOptions) -> Polygon:
    """The polygon with small holes filled and, if its outline is noisy, closed then opened with mitred
    corners (the input when that breaks it)."""
    shape = _without_small_holes(polygon, options.min_hole_px)
    kept = len(_douglas_peucker_ring(_open_ring(polygon.exterior), options.simplify_px))
    if options.smooth_px > 0 and kept > options.noisy_vertices_per_px * polygon.exterior.length:
        radius = options.smooth_px
        closed = shape.buffer(radius, join_style="mitre").buffer(-radius, join_style="mitre")
        opened = closed.buffer(-radius, join_style="mitre").buffer(radius, join_style="mitre")
        shape = _largest_polygon(opened)
        if shape is None:
            return polygon
        shape = _without_small_holes(shape, options.min_hole_px)
    return shapely.normalize(shapely.simplify(shape, 0.0))


def _regular_hole(ring: LinearRing, thetas: list[float], options: RegulariseOptions):
    """A hole's regularised ring, its simplified ring, or None when it collapses."""
    points = _open_ring(ring)
    keep = _douglas_peucker_ring(points, options.simplify_px)
    if len(keep) >= 4:
        shell = _ring_from_lines(_walls(_edge_lines(points, keep, thetas, options), options), options)
        if shell is not None and Polygon(shell).is_valid:
            return shell
    if len(keep) >= 3 and Polygon(points[keep]).is_valid and Polygon(points[keep]).area > 0:
        return points[keep]
    return None


def _iou(a: Polygon, b: Polygon) -> float:
    union = a.union(b).area
    return a.intersection(b).area / union if union > 0 else 0.0


def _open_ring(ring: LinearRing) -> np.ndarray:
    """Ring vertices (N, 2) without the closing repeat."""
    return np.asarray(ring.coords)[:-1, :2]


# ------------------------------------------------------------------------------------- simplification


def _douglas_peucker_ring(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Sorted indices of the vertices Douglas-Peucker keeps on a closed ring.

    The ring is split at two far-apart vertices (the farthest from the centroid and the farthest
    from that one): extreme corners, never a point in the middle of a wall.
    """
    count = len(points)
    if count < 4:
        return np.arange(count)
    first = int(np.argmax(np.hypot(*(points - points.mean(axis=0)).T)))
    second = int(np.argmax(np.hypot(*(points - points[first]).T)))
    keep = {first, second}
    stack = [(first, second), (second, first)]
    while stack:
        start, stop = stack.pop()
        inner = (np.arange(start + 1, start + (stop - start) % count) % count)
        if len(inner) == 0:
            continue
        distance = _segment_distance(points[inner], points[start], points[stop])
        worst = int(np.argmax(distance))
        if distance[worst] > tolerance:
            split = int(inner[worst])
            keep.add(split)
            stack += [(start, split), (split, stop)]
    return np.array(sorted(keep))


def _segment_distance(points: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    delta = stop - start
    length2 = float(delta @ delta)
    if length2 == 0:
        return np.hypot(*(points - start).T)
    t = np.clip((points - start) @ delta / length2, 0.0, 1.0)
    return np.hypot(*(points - start - t[:, None] * delta).T)


# ------------------------------------------------------------------------------------------- walls


def _axis_angle(direction: np.ndarray) -> float:
    """The direction's angle mod 90 degrees, in radians [0, pi/2)."""
    return float(np.arctan2(direction[1], direction[0]) % _QUARTER)


def _angle_gap(a, b):
    """Absolute difference of angles mod 90 degrees (radians, at most pi/4)."""
    return np.abs((np.asarray(a) - np.asarray(b) + _QUARTER / 2) % _QUARTER - _QUARTER / 2)


def _orientations(lines: list[_Line], options: RegulariseOptions) -> list[float]:
    """Dominant wall orientations mod 90 degrees (radians), strongest first.

    Edges vote with their length squared: long walls set the orientation, short edges along the
    pixel grid (noise) do not add a second one.
    """
    angles = np.array([_axis_angle(line.direction) for line in lines])
    weights = np.array([line.weight * line.chord for line in lines])
    total = weights.sum()
    tolerance = np.radians(options.angle_tolerance_deg)
    candidates = np.radians(np.arange(0.0, 90.0, 0.5))
    thetas: list[float] = []
    while len(thetas) < options.max_orientations and weights.sum() > 0:
        gap = _angle_gap(angles[None, :], candidates[:, None])
        scores = (weights[None, :] * np.clip(1.0 - gap / tolerance, 0.0, None)).sum(axis=1)
        near = gap[int(np.argmax(scores))] <= tolerance
        if thetas and weights[near].sum() < options.min_orientation_share * total:
            break
        # circular mean of period 90 degrees: angles x 4 on the unit circle
        x = float((weights[near] * np.cos(4 * angles[near])).sum())
        y = float((weights[near] * np.sin(4 * angles[near])).sum())
        thetas.append(float(np.arctan2(y, x) / 4 % _QUARTER))
        weights = np.where(near, 0.0, weights)
    return thetas


def _refined_angles(lines: list[_Line], thetas: list[float], options: RegulariseOptions) -> list[float]:
    """Each orientation fitted to the runs snapped to it (their pooled principal axis).

    Runs on the perpendicular are turned by 90 degrees first, so every snapped run votes for the
    same axis; long runs pin the angle far better than the simplified edges' end points.
    """
    turn = np.array([[0.0, -1.0], [1.0, 0.0]])
    refined = []
    for family, theta in enumerate(thetas):
        pooled = np.zeros((2, 2))
        for line in lines:
            if line.family == family and line.scatter is not None:
                across = round((np.arctan2(line.direction[1], line.direction[0]) - theta) / _QUARTER) % 2
                pooled += turn @ line.scatter @ turn.T if across else line.scatter
        values, vectors = np.linalg.eigh(pooled)
        angle = _axis_angle(vectors[:, int(np.argmax(values))])
        close = pooled.any() and _angle_gap(angle, theta) <= np.radians(options.angle_tolerance_deg)
        refined.append(angle if close else theta)
    return refined


def _edge_lines(points: np.ndarray, keep: np.ndarray, thetas: list[float],
                options: RegulariseOptions) -> list[_Line]:
    """One line per simplified edge, fitted to its run of outline and snapped to the nearest
    orientation in ``thetas`` (or its perpendicular) when close enough."""
    tolerance = np.radians(options.angle_tolerance_deg)
    max_excess = options.snap_rms_px**2
    lines = []
    for k, start in enumerate(keep):
        stop = keep[(k + 1) % len(keep)]
        run = points[np.arange(start, start + (stop - start - 1) % len(points) + 2) % len(points)]
        steps = np.diff(run, axis=0)
        lengths = np.hypot(*steps.T)
        weight = float(lengths.sum())
        if weight == 0:
            continue
        middles = (run[:-1] + run[1:]) / 2
        centroid = (middles * lengths[:, None]).sum(axis=0) / weight
        offsets = middles - centroid
        # second moment of the run as a curve: its segments' midpoints plus each segment's own extent
        scatter = (offsets.T * lengths) @ offsets + (steps.T * lengths / 12) @ steps
        direction = _principal_direction(scatter, points[stop] - points[start])
        family = -1
        if thetas:
            gaps = _angle_gap(_axis_angle(direction), np.array(thetas))
            nearest = int(np.argmin(gaps))
            offset = (_axis_angle(direction) - thetas[nearest] + _QUARTER / 2) % _QUARTER - _QUARTER / 2
            angle = np.arctan2(direction[1], direction[0]) - offset
            candidate = np.array([np.cos(angle), np.sin(angle)])
            fits = _excess_rms2(scatter, direction, candidate, weight) <= max_excess
            if gaps[nearest] <= tolerance and fits:
                direction, family = candidate, nearest
        chord = float(np.hypot(*(points[stop] - points[start])))
        lines.append(_Line(centroid, direction, weight, points[stop].copy(), family, chord, scatter))
    return lines


def _walls(lines: list[_Line], options: RegulariseOptions) -> list[_Line]:
    """The lines of edges at least ``min_wall_px`` long, ``min_diagonal_px`` if diagonal (all lines
    if fewer than four are)."""
    diagonal = max(options.min_wall_px, options.min_diagonal_px)
    walls = [line for line in lines if line.chord >= (options.min_wall_px if line.snapped else diagonal)]
    return walls if len(walls) >= 4 else lines


def _principal_direction(scatter: np.ndarray, chord: np.ndarray) -> np.ndarray:
    """The run's best-fit direction (major axis of its second moment), pointing along ``chord``."""
    values, vectors = np.linalg.eigh(scatter)
    direction = vectors[:, int(np.argmax(values))]
    return direction if direction @ chord >= 0 else -direction


def _excess_rms2(scatter: np.ndarray, free: np.ndarray, snapped: np.ndarray, weight: float) -> float:
    """Mean squared distance of the run from the snapped line minus that from its best-fit line."""
    normal_free, normal_snapped = np.array([-free[1], free[0]]), np.array([-snapped[1], snapped[0]])
    return float((normal_snapped @ scatter @ normal_snapped - normal_free @ scatter @ normal_free) / weight)


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _parallel(a: _Line, b: _Line) -> bool:
    return abs(_cross(a.direction, b.direction)) < 1e-6


def _offset(a: _Line, b: _Line) -> float:
    """Distance between two parallel lines."""
    return abs(_cross(a.direction, b.point - a.point))


def _intersection(a: _Line, b: _Line) -> np.ndarray:
    t = _cross(b.point - a.point, b.direction) / _cross(a.direction, b.direction)
    return a.point + t * a.direction


def _merged(a: _Line, b: _Line) -> _Line:
    """One line for two consecutive parallel lines: the weighted mean position, ending where ``b`` ends."""
    weight = a.weight + b.weight
    point = (a.point * a.weight + b.point * b.weight) / weight if weight > 0 else (a.point + b.point) / 2
    return _Line(point, a.direction, weight, b.end, a.family if a.snapped else b.family, a.chord + b.chord)


def _step(a: _Line, b: _Line, through: np.ndarray | None = None) -> _Line:
    """A wall perpendicular to ``a`` heading towards ``b``, through ``through`` (default: ``a``'s end)."""
    through = a.end if through is None else through
    normal = np.array([-a.direction[1], a.direction[0]])
    foot_on_b = b.point + ((through - b.point) @ b.direction) * b.direction
    if (foot_on_b - a.point) @ normal < 0:
        normal = -normal
    return _Line(through, normal, 0.0, a.end, max(a.family, 0))


def _merge_parallel(lines: list[_Line], min_edge: float) -> list[_Line]:
    """Consecutive parallel lines closer than ``min_edge`` merged into one, and an out-and-back pair
    that close (a spike or a slit) dropped, round the ring until nothing changes."""
    lines = list(lines)
    k = unchanged = 0
    while len(lines) > 1 and unchanged < len(lines):
        k %= len(lines)
        following = (k + 1) % len(lines)
        a, b = lines[k], lines[following]
        if not (_parallel(a, b) and _offset(a, b) < min_edge):
            k, unchanged = k + 1, unchanged + 1
            continue
        if a.direction @ b.direction > 0:
            lines[k] = _merged(a, b)
            del lines[following]
        else:
            for index in sorted({k, following}, reverse=True):
                del lines[index]
        k = (k - (1 if following < k else 0) - 1) % max(len(lines), 1)
        unchanged = 0
    return lines


def _with_steps(lines: list[_Line], min_edge: float) -> list[_Line]:
    """A perpendicular step wherever consecutive lines are parallel or meet far from their stair vertex."""
    out: list[_Line] = []
    for k, line in enumerate(lines):
        out.append(line)
        following = lines[(k + 1) % len(lines)]
        if _parallel(line, following) or \
                np.hypot(*(_intersection(line, following) - line.end)) > 2 * min_edge:
            out.append(_step(line, following))
    return out


def _vertices(lines: list[_Line]) -> np.ndarray:
    """Vertex k is where line k-1 meets line k."""
    return np.array([_intersection(lines[k - 1], lines[k]) if not _parallel(lines[k - 1], lines[k])
                     else lines[k - 1].end for k in range(len(lines))])


def _removable(before: _Line, after: _Line, at: np.ndarray, min_edge: float) -> bool:
    """Whether the wall between ``before`` and ``after`` (near ``at``) can go without a big jump
    (parallel neighbours must then be close enough to merge, or to drop as a spike)."""
    if _parallel(before, after):
        return _offset(before, after) < min_edge
    return bool(np.hypot(*(_intersection(before, after) - at)) <= 2 * min_edge)


def _ring_from_lines(lines: list[_Line], options: RegulariseOptions) -> np.ndarray | None:
    """Ring vertices from wall lines, dropping short walls; None if the ring collapses.

    Walls on the dominant axes must be ``min_edge`` long, diagonal ones ``min_diagonal``; the
    shortest offender goes first and its neighbours are intersected instead. A wall running
    backwards that cannot go becomes a perpendicular step between its neighbours.
    """
    min_edge, min_diagonal = max(options.min_edge_px, 1e-9), options.min_diagonal_px
    lines = _merge_parallel(lines, min_edge)
    lines = _merge_parallel(_with_steps(lines, min_edge), min_edge) if len(lines) > 1 else lines
    for _ in range(4 * len(lines)):
        if len(lines) <= 3:
            return None
        vertices = _vertices(lines)
        signed = np.array([(vertices[(k + 1) % len(lines)] - vertices[k]) @ lines[k].direction
                           for k in range(len(lines))])
        required = np.array([min_edge if line.snapped else max(min_edge, min_diagonal) for line in lines])
        for k in np.argsort(signed, kind="stable"):
            if signed[k] >= required[k]:
                continue
            before, after = lines[k - 1], lines[(k + 1) % len(lines)]
            middle = (vertices[k] + vertices[(k + 1) % len(lines)]) / 2
            if _removable(before, after, middle, min_edge):
                rest = [line for i, line in enumerate(lines) if i != k]
                lines = _merge_parallel(rest[k:] + rest[:k], min_edge)
                break
            if signed[k] < 0 and abs(before.direction @ lines[k].direction) > 1e-6:
                lines[k] = _step(before, after, lines[k].point)
                break
        else:
            return vertices if signed.min() > 0 else None
    return None


# ----------------------------------------------------------------------------------------- neighbours


def _largest_polygon(geometry) -> Polygon | None:
    polygons = [part for part in shapely.get_parts(geometry) if isinstance(part, Polygon) and part.area > 0]
    return max(polygons, key=lambda part: part.area) if polygons else None


def _snap_onto(polygon: Polygon, neighbour: Polygon, tolerance: float) -> Polygon:
    """``polygon`` with vertices within ``tolerance`` of the neighbour's outline moved onto it."""
    boundary = neighbour.boundary

    def move(coords: np.ndarray) -> np.ndarray:
        points = shapely.points(coords)
        close = shapely.distance(points, boundary) < tolerance
        if close.any():
            nearest = shapely.get_point(shapely.shortest_line(points[close], boundary), 1)
            coords = coords.copy()
            coords[close] = shapely.get_coordinates(nearest)
        return coords

    moved = shapely.transform(polygon, move)
    moved = shapely.snap(moved, neighbour, tolerance)
    return moved if moved.is_valid else polygon


def _keep_neighbours_apart(originals: list, regular: list, snap_m: float) -> list:
    """Later polygons snapped onto earlier touching ones and cut where they overlap them."""
    if not regular:
        return []
    polygons = np.empty(len(regular), dtype=object)
    polygons[:] = regular
    before = np.empty(len(originals), dtype=object)
    before[:] = originals
    touching = shapely.STRtree(before).query(before, predicate="intersects")
    touching = {(int(i), int(j)) for i, j in touching.T}
    near = shapely.STRtree(polygons).query(polygons, predicate="dwithin", distance=snap_m)
    overlapping = {(int(i), int(j)) for i, j in near.T}
    earlier: dict[int, list[int]] = {}
    for i, j in sorted(touching | overlapping):
        if i < j:
            earlier.setdefault(j, []).append(i)
    for j, neighbours in sorted(earlier.items()):
        polygon = polygons[j]
        if not isinstance(polygon, Polygon) or polygon.is_empty:
            continue
        for i in neighbours:
            if (i, j) in touching and snap_m > 0:
                polygon = _snap_onto(polygon, polygons[i], snap_m)
        taken = shapely.union_all([polygons[i] for i in neighbours])
        cut = polygon.difference(taken)
        if not cut.equals(polygon):
            # a polygon swallowed by earlier ones falls back to its input outline less theirs
            cut = _largest_polygon(shapely.make_valid(cut)) or \
                _largest_polygon(shapely.make_valid(originals[j].difference(taken)))
        polygons[j] = polygon if cut is None else cut
    return list(polygons)

