"""Roof details (chimneys, dormers, huts, terraces) and the roof surface of every building pixel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage
from shapely.geometry import Polygon

from demseg.data.synth.buildings import Building
from demseg.data.synth.canvas import Canvas
from demseg.data.synth.districts import TRAITS
from demseg.data.synth.geometry import frame_box, polygon_parts


def decorated(rng: np.random.Generator, building: Building) -> Building:
    """The building with its district's roof details, cut to its footprint: chimneys and dormers on pitched
    roofs, stair huts and terraces on flat ones."""
    traits = TRAITS[building.district]
    along = np.array(building.frontage_dir)
    inward = np.array([-along[1], along[0]])
    centre = np.array(building.centre)
    front = centre - inward * building.half_depth_m
    half_m = building.half_frontage_m
    raised, lowered = [], []
    if building.tan_pitch > 0:
        rise_m = building.height_m - building.eave_m
        if rng.random() < traits.chimney_p:
            u, size = rng.choice([-1.0, 1.0]) * max(half_m - 0.5, 0.0), rng.uniform(0.3, 0.5)
            raised.append((frame_box(centre, along, inward, u - size, u + size, -size, size),
                           building.height_m + rng.uniform(0.6, 1.4)))
        if rng.random() < traits.dormer_p and half_m >= 2.0 and rise_m > 2.4:
            width_m = min(rng.uniform(0.7, 1.4), half_m - 0.8)
            dormer_m = 0.4 + rng.uniform(1.4, 2.4)
            raised.append((frame_box(front, along, inward, -width_m, width_m, 0.4, dormer_m),
                           building.eave_m + rng.uniform(1.6, rise_m - 0.3)))
    else:
        if rng.random() < traits.hut_p:
            u, v = rng.uniform(-0.5, 0.5, size=2) * (half_m, building.half_depth_m)
            half_u, half_v = rng.uniform(1.0, 1.8, size=2)
            hut = frame_box(centre, along, inward, u - half_u, u + half_u, v - half_v, v + half_v)
            raised.append((hut, building.eave_m + building.parapet_m + rng.uniform(2.2, 2.8)))
        if rng.random() < traits.terrace_p and building.eave_m > 9.0 and building.half_depth_m > 4.0:
            lowered.append((frame_box(front, along, inward, -half_m, half_m, -0.5, rng.uniform(2.0, 3.5)),
                            building.eave_m - rng.uniform(2.8, 3.2)))
    return replace(building, raised=_cut_to(raised, building.footprint),
                   lowered=_cut_to(lowered, building.footprint))


def _cut_to(details: list[tuple[Polygon, float]], footprint: Polygon) -> tuple:
    return tuple((part, top) for shape, top in details
                 for part in polygon_parts(shape.intersection(footprint)))


def _roof_heights(buildings: list[Building], ids: np.ndarray, canvas: Canvas) -> np.ndarray:
    """Height of the roof surface above the building's ground level, for every building pixel."""
    rows, cols = np.nonzero(ids)
    index = ids[rows, cols] - 1
    x_m, y_m = canvas.xs_m()[cols], canvas.ys_m()[rows]
    attr = {name: np.array([getattr(b, name) for b in buildings], dtype=float)[index]
            for name in ("eave_m", "tan_pitch", "half_short_m", "half_frontage_m", "half_depth_m",
                         "parapet_m")}
    centre = np.array([b.centre for b in buildings])[index]
    direction = np.array([b.frontage_dir for b in buildings])[index]
    dx, dy = x_m - centre[:, 0], y_m - centre[:, 1]
    u = np.abs(dx * direction[:, 0] + dy * direction[:, 1])
    v = np.abs(-dx * direction[:, 1] + dy * direction[:, 0])
    inside_m = ndimage.distance_transform_edt(ids > 0)[rows, cols] * canvas.pixel_size_m
    # compare names once per building, not once per pixel
    roof, shape, ridge = (np.array([getattr(b, name) for b in buildings])
                          for name in ("roof", "shape", "ridge"))
    ridge_along_frontage = np.where((ridge == "auto")[index], attr["half_frontage_m"] >= attr["half_depth_m"],
                                    (ridge == "along")[index])
    gable = np.where(ridge_along_frontage, attr["half_depth_m"] - v, attr["half_frontage_m"] - u)
    rect_hip = np.minimum(attr["half_depth_m"] - v, attr["half_frontage_m"] - u)
    hip = np.where((shape == "rect")[index], rect_hip, inside_m)
    run_m = np.where((roof == "gable")[index], gable, np.where((roof == "hip")[index], hip, 0.0))
    if np.isin(ridge, ["mass", "unit"]).any():
        run_m = np.where((ridge == "mass")[index], inside_m, run_m)
        run_m = np.where((ridge == "unit")[index], _inside_units_m(ids, canvas)[rows, cols], run_m)
        run_m = np.where((roof == "flat")[index], 0.0, run_m)
    rise_m = np.clip(run_m, 0.0, attr["half_short_m"]) * attr["tan_pitch"]
    parapet = np.where(inside_m <= max(canvas.pixel_size_m, 0.5) + 1e-6, attr["parapet_m"], 0.0)
    heights = np.zeros(ids.shape)
    heights[rows, cols] = attr["eave_m"] + rise_m + parapet
    units = [unit for b in buildings for unit in b.rooftop_units]
    heights = heights + canvas.rasterize(units, "float32") * (ids > 0)
    return _with_details(heights, buildings, ids > 0, canvas)


def _inside_units_m(ids: np.ndarray, canvas: Canvas) -> np.ndarray:
    """Distance into each building from its own outline, walls shared with neighbours included."""
    inner = ids > 0
    inner[1:] &= ids[1:] == ids[:-1]
    inner[:-1] &= ids[:-1] == ids[1:]
    inner[:, 1:] &= ids[:, 1:] == ids[:, :-1]
    inner[:, :-1] &= ids[:, :-1] == ids[:, 1:]
    return (ndimage.distance_transform_edt(inner) + (ids > 0)) * canvas.pixel_size_m


def _with_details(heights: np.ndarray, buildings: list[Building], inside: np.ndarray,
                  canvas: Canvas) -> np.ndarray:
    """Roofs raised by chimneys, dormers and huts, and lowered by terraces, within the footprints."""
    raised = sorted((detail for b in buildings for detail in b.raised), key=lambda detail: detail[1])
    if raised:
        tops = canvas.rasterize(raised, "float32")
        heights = np.where(inside & (tops > 0), np.maximum(heights, tops), heights)
    lowered = sorted((detail for b in buildings for detail in b.lowered), key=lambda detail: -detail[1])
    if lowered:
        tops = canvas.rasterize(lowered, "float32")
        heights = np.where(inside & (tops > 0), np.minimum(heights, tops), heights)
    return heights


def add_buildings(dsm: np.ndarray, dtm: np.ndarray, buildings: list[Building], ids: np.ndarray,
                  canvas: Canvas) -> np.ndarray:
    """Roofs stand on one ground level per building (its mean bare-earth height), as houses do on slopes."""
    if not buildings:
        return dsm
    inside = ids > 0
    counts = np.bincount(ids[inside], minlength=len(buildings) + 1)
    sums = np.bincount(ids[inside], weights=dtm[inside], minlength=len(buildings) + 1)
    ground = sums / np.maximum(counts, 1)
    roofs = _roof_heights(buildings, ids, canvas)
    return np.where(inside, ground[ids] + roofs, dsm)
