"""Regularised footprints: pixel stairs become straight, right-angled walls; neighbours stay apart."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio import features
from shapely import affinity

from demseg.errors import DemsegError
from demseg.predict.regularise import (
    RegulariseOptions,
    regularise_footprints,
    regularise_polygon,
    vertex_count,
)

PIXEL_M = 0.5
TRANSFORM = Affine(PIXEL_M, 0.0, 500000.0, 0.0, -PIXEL_M, 5700000.0)  # map coordinates, north up


def to_map(geometry):
    """A shape drawn in pixel coordinates (column, row), in map coordinates."""
    return shapely.transform(geometry, lambda xy: np.column_stack(TRANSFORM * (xy[:, 0], xy[:, 1])))


def traced(truths: list, size_px: int = 96) -> list:
    """Pixel-stair outlines (map coordinates) of shapes burnt into a mask, one per shape, as vectorise
    makes them."""
    labels = features.rasterize([(t, i + 1) for i, t in enumerate(truths)], out_shape=(size_px, size_px),
                                transform=TRANSFORM, dtype="int32")
    outlines = {int(v): shapely.geometry.shape(g)
                for g, v in features.shapes(labels, mask=labels > 0, connectivity=4, transform=TRANSFORM)}
    return [shapely.simplify(outlines[i + 1], 0.0) for i in range(len(truths))]


def corner_angles_deg(polygon) -> np.ndarray:
    points = np.asarray(polygon.exterior.coords)[:-1]
    incoming, outgoing = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
    cosine = (incoming * outgoing).sum(axis=1) / (np.hypot(*incoming.T) * np.hypot(*outgoing.T))
    return np.degrees(np.arccos(np.clip(cosine, -1, 1)))


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def test_rotated_rectangle_comes_back_as_four_right_angles_close_to_the_truth():
    truth = to_map(affinity.rotate(shapely.box(25, 30, 70, 58), 23, origin="centroid"))
    stairs = traced([truth])[0]
    assert vertex_count(stairs) > 40
    result = regularise_polygon(stairs, PIXEL_M)
    assert result.is_valid
    assert vertex_count(result) == 4
    assert corner_angles_deg(result) == pytest.approx([90.0] * 4, abs=0.5)
    assert iou(result, truth) > 0.95


def test_l_shape_gives_six_right_angled_corners():
    ell = shapely.union_all([shapely.box(15, 15, 75, 38), shapely.box(15, 15, 38, 80)])
    truth = to_map(affinity.rotate(ell, 10, origin="centroid"))
    result = regularise_polygon(traced([truth])[0], PIXEL_M)
    assert vertex_count(result) == 6
    assert corner_angles_deg(result) == pytest.approx([90.0] * 6, abs=0.5)
    assert iou(result, truth) > 0.95


def test_courtyard_block_keeps_its_hole():
    truth = to_map(affinity.rotate(shapely.box(10, 10, 86, 86).difference(shapely.box(30, 28, 62, 66)), 7,
                                   origin="centroid"))
    result = regularise_polygon(traced([truth])[0], PIXEL_M)
    assert len(result.interiors) == 1
    assert vertex_count(result) == 8
    assert iou(result, truth) > 0.95


def test_noise_holes_are_filled_but_courtyards_are_not():
    block = to_map(shapely.box(10, 10, 86, 86).difference(shapely.box(40, 40, 60, 60)).difference(
        shapely.box(20, 20, 23, 22)))
    stairs = traced([block])[0]
    assert len(stairs.interiors) == 2
    result = regularise_polygon(stairs, PIXEL_M, RegulariseOptions(min_hole_px=40))
    assert len(result.interiors) == 1
    assert shapely.Polygon(result.interiors[0]).area == pytest.approx(400 * PIXEL_M**2, rel=0.05)


def test_touching_buildings_do_not_overlap_and_still_touch():
    left = to_map(affinity.rotate(shapely.box(20, 30, 50, 52), 17, origin=(50, 41)))
    right = to_map(affinity.rotate(shapely.box(50, 26, 72, 56), 17, origin=(50, 41)))
    stairs = traced([left, right])
    assert stairs[0].touches(stairs[1])
    first, second = regularise_footprints(stairs, PIXEL_M)
    assert first.is_valid and second.is_valid
    assert first.intersection(second).area < 1e-6
    assert first.distance(second) < PIXEL_M
    assert first.boundary.intersection(second.boundary).length > 10.0  # most of the 11 m shared wall
    assert vertex_count(first) == 4


def test_round_blob_is_simplified_not_squared():
    truth = to_map(shapely.Point(48, 48).buffer(30))
    stairs = traced([truth])[0]
    result = regularise_polygon(stairs, PIXEL_M)
    assert result.is_valid
    assert vertex_count(result) > 8
    assert iou(result, truth) > 0.95
    assert iou(result, shapely.minimum_rotated_rectangle(stairs)) < 0.9


def test_outputs_are_valid_deterministic_and_in_input_order():
    rng = np.random.default_rng(3)
    truths = [to_map(affinity.rotate(shapely.box(x, y, x + w, y + h), angle, origin="centroid"))
              for x, y, w, h, angle in zip(range(5, 90, 22), rng.integers(5, 60, 4), rng.integers(8, 16, 4),
                                           rng.integers(10, 30, 4), rng.uniform(0, 90, 4), strict=False)]
    stairs = traced(truths, size_px=120)
    first = regularise_footprints(stairs, PIXEL_M)
    again = regularise_footprints(stairs, PIXEL_M)
    assert [p.wkb for p in first] == [p.wkb for p in again]
    assert all(p.is_valid for p in first)
    assert [iou(p, t) > 0.8 for p, t in zip(first, truths, strict=True)] == [True] * len(truths)


def test_vertex_count_counts_holes_and_not_closing_points():
    ring = shapely.box(0, 0, 10, 10).difference(shapely.box(2, 2, 4, 4))
    assert vertex_count(ring) == 8
    assert vertex_count(shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)])) == 8


def test_non_positive_pixel_size_is_refused():
    with pytest.raises(DemsegError):
        regularise_footprints([shapely.box(0, 0, 1, 1)], 0.0)


def test_no_footprint_regularises_to_none():  # a scene without buildings (or one all building) once crashed here
    assert regularise_footprints([], 0.5) == []
