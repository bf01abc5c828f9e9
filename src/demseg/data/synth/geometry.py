"""Small shapely helpers shared by the element modules: frames, boxes, points along lines, polygon parts."""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon
from shapely.geometry.polygon import orient


def chaikin(points: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Corner cutting: a polyline smoothed towards a quadratic B-spline, ends kept."""
    for _ in range(iterations):
        near, far = points[:-1], points[1:]
        middle = np.empty((2 * len(near), 2))
        middle[0::2] = 0.75 * near + 0.25 * far
        middle[1::2] = 0.25 * near + 0.75 * far
        points = np.vstack([points[:1], middle, points[-1:]])
    return points


def point_and_tangent(line: LineString, distance_m: float) -> tuple[np.ndarray, np.ndarray]:
    ahead = np.array(line.interpolate(distance_m + 1.0).coords[0])
    behind = np.array(line.interpolate(distance_m - 1.0).coords[0])
    tangent = ahead - behind
    return np.array(line.interpolate(distance_m).coords[0]), tangent / max(np.linalg.norm(tangent), 1e-9)


def frame_boxes(origin: np.ndarray, along: np.ndarray, inward: np.ndarray, u_m: np.ndarray,
                v_m: np.ndarray) -> np.ndarray:
    """Map polygons of rectangles [u0, u1] x [v0, v1] (rows of ``u_m``, ``v_m``) in frame(s) at ``origin``."""
    u = np.asarray(u_m, dtype=float)[:, [0, 1, 1, 0], None]
    v = np.asarray(v_m, dtype=float)[:, [0, 0, 1, 1], None]
    return shapely.polygons(np.reshape(origin, (-1, 1, 2)) + u * along + v * inward)


def frame_box(origin: np.ndarray, along: np.ndarray, inward: np.ndarray, u0: float, u1: float, v0: float,
              v1: float) -> Polygon:
    return frame_boxes(origin, along, inward, np.array([[u0, u1]]), np.array([[v0, v1]]))[0]


def frame_of(polygon: Polygon) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Corner, long-side direction, inward normal, length and width of a polygon's oriented bounding box."""
    corners = np.asarray(orient(shapely.oriented_envelope(polygon), 1.0).exterior.coords)[:4]
    sides = np.roll(corners, -1, axis=0) - corners
    lengths = np.hypot(sides[:, 0], sides[:, 1])
    first = int(np.argmax(lengths[:2]))
    along = sides[first] / max(lengths[first], 1e-9)
    inward = np.array([-along[1], along[0]])
    return corners[first], along, inward, float(lengths[first]), float(lengths[first + 1])


def polygon_parts(geometry) -> list[Polygon]:
    """The polygons with area in any geometry (shapely ops return collections of mixed parts)."""
    if isinstance(geometry, Polygon):  # the usual case, and the fast one
        return [geometry] if geometry.area > 0 else []
    return [part for part in shapely.get_parts(geometry) if part.geom_type == "Polygon" and part.area > 0]


def largest_polygon(geometry) -> Polygon | None:
    return max(polygon_parts(geometry), key=lambda part: part.area, default=None)


def object_array(geometries: list) -> np.ndarray:
    array = np.empty(len(geometries), dtype=object)
    array[:] = geometries
    return array
