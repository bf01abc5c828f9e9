"""Hedges of every style, and the trees of generator version 1 (style "suburban"), kept bit for bit.

Version 1 trees are smooth domes and cones over a little leafy noise; the trees of all other styles are in
:mod:`demseg.data.synth.trees` and :mod:`demseg.data.synth.canopy`.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import LineString
from shapely.ops import substring

from demseg.data.synth.canvas import Canvas
from demseg.data.synth.geometry import point_and_tangent
from demseg.data.synth.roads import Road
from demseg.data.synth.trees import CONIFER, ROUND, Trees


def version_1_trees(rng: np.random.Generator, roads: list[Road], canvas: Canvas, density: np.ndarray,
                    clearance: dict[str, np.ndarray]) -> Trees:
    """Tree rows along some roads (crowns over the carriageway) and garden, park and copse trees."""
    avenues = _fitting(_avenue_trees(rng, roads), canvas, clearance, road_share=None)
    others = _fitting(_free_trees(rng, canvas, density), canvas, clearance)
    return Trees.joined([_as_trees(avenues, "street"), _as_trees(others, "garden")])


def _as_trees(columns: np.ndarray, kind: str) -> Trees:
    """Trees from version 1's (N, 6) array: x_m, y_m, crown radius, height, crown base fraction, conifer."""
    form = np.where(columns[:, 5] > 0, CONIFER, ROUND)
    return Trees(columns[:, :2], columns[:, 3], columns[:, 2], columns[:, 4], form,
                 np.full(len(columns), kind, dtype=object))


def _fitting(trees: np.ndarray, canvas: Canvas, clearance: dict[str, np.ndarray], wall_share: float = 0.6,
             road_share: float | None = 0.4) -> np.ndarray:
    """Trees whose trunk stands in the scene, clear of walls, water and roads by these shares of the crown
    radius (``road_share`` None: street trees, planted beside the road on purpose)."""
    trees = trees[np.all((trees[:, :2] > 0) & (trees[:, :2] < canvas.extent_m), axis=1)]
    pixel = canvas.pixel_of(trees[:, 0], trees[:, 1])
    radius_m = trees[:, 2]
    fits = clearance["building"][pixel] > wall_share * radius_m
    fits &= clearance["water"][pixel] > 0.3 * radius_m
    if road_share is not None:
        fits &= clearance["road"][pixel] > road_share * radius_m
    return trees[fits]


def _avenue_trees(rng: np.random.Generator, roads: list[Road]) -> np.ndarray:
    """Street trees on the sidewalk of some roads, their crowns reaching over the carriageway."""
    chosen = [road for road in roads if rng.random() < (0.9 if road.kind == "quay" else 0.45)] \
        or [max(roads, key=lambda road: road.line.length)]
    avenues = []
    for road in chosen:
        start = rng.uniform(0.0, 0.4) * road.line.length
        stops = np.arange(start, start + rng.uniform(0.5, 1.0) * road.line.length, rng.uniform(7.0, 12.0))
        stops = stops[stops < road.line.length]
        for side in (1, -1) if rng.random() < 0.6 else (int(rng.choice([1, -1])),):
            offset_m = side * (road.width_m / 2 + rng.uniform(0.3, 1.5))
            for distance_m in stops:
                point, tangent = point_and_tangent(road.line, float(distance_m))
                height_m = rng.uniform(8.0, 22.0)
                radius_m = float(np.clip(0.3 * height_m + rng.uniform(-1.0, 1.5), 3.0, 7.0))
                where = point + offset_m * np.array([-tangent[1], tangent[0]])
                avenues.append([where[0], where[1], radius_m, height_m, rng.uniform(0.3, 0.5), 0.0])
    return np.array(avenues).reshape(-1, 6)


def _free_trees(rng: np.random.Generator, canvas: Canvas, density: np.ndarray) -> np.ndarray:
    """Scattered garden and park trees (fewer downtown) plus a few copses."""
    area_km2 = canvas.extent_m**2 / 1e6
    points = rng.uniform(0, canvas.extent_m, size=(int(rng.uniform(1500, 4500) * area_km2), 2))
    rows, cols = canvas.pixel_of(points[:, 0], points[:, 1])
    points = points[rng.random(len(points)) > density[rows, cols]]
    copses = []
    for _ in range(rng.poisson(12 * area_km2)):
        centre, spread_m = rng.uniform(0, canvas.extent_m, size=2), rng.uniform(8.0, 25.0)
        copses.append(centre + rng.normal(0.0, spread_m, size=(int(rng.integers(6, 30)), 2)))
    points = np.vstack([points, *copses])
    heights = rng.uniform(5.0, 25.0, size=len(points))
    radii = np.clip(0.25 * heights + rng.uniform(-1.0, 2.0, size=len(points)), 2.0, 7.0)
    base = rng.uniform(0.3, 0.6, size=len(points))
    conifer = (rng.random(len(points)) < 0.2).astype(float)
    return np.column_stack([points, radii, heights, base, conifer])


def dome_canopy(trees: Trees, canvas: Canvas) -> np.ndarray:
    """Version 1 crowns above ground, the highest one wins: domes for broadleaves, cones for conifers."""
    canopy = np.zeros(canvas.shape, dtype=np.float32)
    xs_m, ys_m = canvas.xs_m(), canvas.ys_m()
    px = canvas.pixel_size_m
    columns = zip(trees.xy_m[:, 0], trees.xy_m[:, 1], trees.crown_radius_m, trees.height_m,
                  trees.base_fraction, trees.form == CONIFER, strict=True)
    for x_m, y_m, radius_m, height_m, base_fraction, conifer in columns:
        c0, c1 = max(int((x_m - radius_m) / px), 0), min(int((x_m + radius_m) / px) + 1, canvas.size_px)
        r0 = max(int((canvas.extent_m - y_m - radius_m) / px), 0)
        r1 = min(int((canvas.extent_m - y_m + radius_m) / px) + 1, canvas.size_px)
        if c0 >= c1 or r0 >= r1:
            continue
        r2 = ((xs_m[c0:c1][None, :] - x_m) ** 2 + (ys_m[r0:r1][:, None] - y_m) ** 2) / radius_m**2
        if conifer:
            crown = height_m * (1.0 - 0.75 * np.sqrt(np.minimum(r2, 1.0)))
        else:
            base_m = base_fraction * height_m
            crown = base_m + (height_m - base_m) * np.sqrt(np.clip(1.0 - r2, 0.0, None))
        window = canopy[r0:r1, c0:c1]
        np.maximum(window, np.where(r2 < 1.0, crown, 0.0), out=window)
    return canopy


def hedge_heights(rng: np.random.Generator, roads: list[Road], canvas: Canvas, theta: float) -> np.ndarray:
    """Hedges (1-3 m, about a metre thick) behind the sidewalks of some roads and along field edges."""
    pieces = []
    for road in roads:
        if road.kind == "main" or rng.random() < 0.65:
            continue
        for side in (1, -1):
            offset_m = side * (road.width_m / 2 + road.verge_m + rng.uniform(0.8, 2.0))
            for edge in shapely.get_parts(shapely.offset_curve(road.line, offset_m)):
                distance_m = rng.uniform(0.0, 20.0)
                while distance_m < edge.length:
                    length_m = rng.uniform(8.0, 35.0)
                    pieces.append(substring(edge, distance_m, distance_m + length_m))
                    distance_m += length_m + rng.uniform(4.0, 25.0)
    for _ in range(rng.poisson(6 * canvas.extent_m**2 / 1e6)):
        heading = theta + rng.integers(4) * np.pi / 2 + rng.normal(0.0, 0.05)
        start = rng.uniform(0, canvas.extent_m, size=2)
        end = start + rng.uniform(20.0, 80.0) * np.array([math.cos(heading), math.sin(heading)])
        pieces.append(LineString([start, end]))
    shapes = [(piece.buffer(rng.uniform(0.4, 0.8), cap_style="flat"), rng.uniform(1.0, 3.0))
              for piece in pieces if piece.length > 1.0]
    return canvas.rasterize(sorted(shapes, key=lambda item: item[1]), "float32")


def leafy_roughness(rng: np.random.Generator, canvas: Canvas, sigma_m: float) -> np.ndarray:
    """Leafy surface noise: white noise blurred over about a pixel."""
    return ndimage.gaussian_filter(rng.normal(0.0, sigma_m * 1.6, size=canvas.shape), 0.7)
