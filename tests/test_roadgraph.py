"""Road networks from centrelines (nodes, spurs, gaps) and the APLS topology metric."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.crs import CRS
from rasterio.transform import from_origin
from shapely.geometry import LineString

from demseg.errors import DemsegError
from demseg.evaluate.topology import apls
from demseg.io.raster import GridSpec, write_geotiff
from demseg.predict import road_centrelines
from demseg.predict.roadgraph import build_graph, road_network

PIXEL_M = 0.5
SIZE_PX = 300


def centrelines(tmp_path, mask: np.ndarray):
    """Centrelines (map coordinates, metres) and widths that demseg's vectoriser gives for a road mask."""
    grid = GridSpec(CRS.from_epsg(32631), from_origin(500000, 5400000, PIXEL_M, PIXEL_M), SIZE_PX, SIZE_PX)
    path = write_geotiff(tmp_path / "roads.tif", mask, grid, nodata=255)
    return road_centrelines(path)


def band(mask: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    mask[rows, cols] = 1
    return mask


def test_plus_shaped_mask_gives_one_four_way_node_and_four_arms_of_the_right_length(tmp_path):
    mask = np.zeros((SIZE_PX, SIZE_PX), np.uint8)
    band(mask, slice(145, 155), slice(30, 270))  # 120 m x 5 m, centre at column 150
    band(mask, slice(30, 270), slice(145, 155))
    edges, nodes = road_network(*centrelines(tmp_path, mask))
    assert sorted(nodes.attributes["degree"].tolist()) == [1, 1, 1, 1, 4]
    assert len(edges) == 4
    # 60 m from the crossing to each end of the mask, less the skeleton's retreat of about half a width
    assert edges.attributes["length_m"] == pytest.approx([57.5] * 4, abs=1.5)
    assert edges.attributes["width_m"] == pytest.approx([5.0] * 4, abs=0.6)
    centre = nodes.attributes["node_id"][nodes.attributes["degree"] == 4][0]
    pairs = zip(edges.attributes["from_node"], edges.attributes["to_node"], strict=True)
    assert all(centre in pair for pair in pairs)


def test_road_with_a_small_gap_becomes_one_connected_edge(tmp_path):
    mask = band(np.zeros((SIZE_PX, SIZE_PX), np.uint8), slice(145, 155), slice(20, 280))
    mask[:, 140:146] = 0  # a 3 m gap
    lines, widths = centrelines(tmp_path, mask)
    assert len(lines) == 2
    edges, nodes = road_network(lines, widths, bridge_gap_m=8.0)
    assert len(edges) == 1 and len(nodes) == 2
    assert edges.attributes["length_m"][0] == pytest.approx(126.0, abs=2.0)
    assert 3.0 <= edges.attributes["bridged_m"][0] <= 3.0 + 5.0 + 0.5  # gap plus the two retreats
    unbridged, _ = road_network(lines, widths, bridge_gap_m=0.0)
    assert len(unbridged) == 2


def test_dead_ends_that_do_not_face_each_other_are_not_bridged():
    lines = [LineString([(0, 0), (100, 0)]), LineString([(104, 6), (200, 6)]),  # side by side, 6 m apart
             LineString([(0, 50), (100, 50)]), LineString([(101, 53), (101, 150)])]  # leaves at 90 degrees
    edges, _ = road_network(lines, [5.0] * 4, bridge_gap_m=8.0)
    assert len(edges) == 3
    assert edges.attributes["bridged_m"].tolist().count(0.0) == 2


def test_short_spur_is_pruned_and_long_branch_is_kept(tmp_path):
    mask = band(np.zeros((SIZE_PX, SIZE_PX), np.uint8), slice(145, 155), slice(20, 280))
    band(mask, slice(136, 145), slice(100, 104))  # a 4.5 m driveway off the road's side
    band(mask, slice(60, 145), slice(200, 210))  # a 42 m side road
    lines, widths = centrelines(tmp_path, mask)
    assert len(lines) == 5
    edges, nodes = road_network(lines, widths)
    assert sorted(nodes.attributes["degree"].tolist()) == [1, 1, 1, 3]
    assert sorted(edges.attributes["length_m"].round().tolist()) == pytest.approx([36, 42, 90], abs=1.5)


def test_edges_average_probability_by_length_and_name_their_nodes():
    lines = [LineString([(0, 0), (30, 0)]), LineString([(30, 0), (100, 0)]), LineString([(30, 0), (30, 60)])]
    edges, nodes = road_network(lines, [6.0, 6.0, 4.0], [0.9, 0.5, np.nan], min_spur_m=1.0)
    assert len(edges) == 3 and len(nodes) == 4
    by_length = dict(zip(edges.attributes["length_m"], edges.attributes["mean_probability"], strict=True))
    assert by_length[30.0] == pytest.approx(0.9) and by_length[70.0] == pytest.approx(0.5)
    assert np.isnan(by_length[60.0])
    degree = dict(zip(nodes.attributes["node_id"], nodes.attributes["degree"], strict=True))
    ends = np.concatenate([edges.attributes["from_node"], edges.attributes["to_node"]])
    assert all(degree[node] == (ends == node).sum() for node in degree)


def test_graph_of_crossing_lines_is_noded_where_they_cross():
    graph = build_graph([LineString([(0, 0), (100, 0)]), LineString([(50, -50), (50, 50)])])
    assert len(graph.edges) == 4
    assert sorted(graph.degree(node) for node in graph.nodes) == [1, 1, 1, 1, 4]


def test_a_row_of_close_ends_does_not_chain_into_one_star_node():
    # eleven fanned-out pieces whose lower ends sit 1.5 m apart: each pair is within the 2 m snap, the row 15 m
    teeth = [LineString([(1.5 * k, 0), (5.0 * k, 20)]) for k in range(11)]
    graph = build_graph(teeth, snap_m=2.0)
    assert max(graph.degree(node) for node in graph.nodes) <= 3  # a pair, or an end extended onto a line
    ends = np.array([xy for line in teeth for xy in line.coords])
    for xy in graph.nodes.values():  # no node strays farther than the snap from the ends it stands for
        assert np.hypot(*(ends - xy).T).min() <= 2.0


def test_junctions_joined_by_a_sliver_become_one_junction():
    # a side road meets the main road 0.3 m from where a cross road crosses it
    lines = [LineString([(0, 0), (100, 0)]), LineString([(50, -50), (50, 50)]),
             LineString([(80, -50), (50.3, 0)])]
    graph = build_graph(lines, snap_m=2.0)
    assert sorted(graph.degree(node) for node in graph.nodes) == [1, 1, 1, 1, 1, 5]
    assert min(edge.length_m for edge in graph.edges.values()) > 40
    junction = next(node for node in graph.nodes if graph.degree(node) == 5)
    for edge_id in graph.ends[junction]:  # every edge still ends exactly on the junction it names
        edge = graph.edges[edge_id]
        assert np.allclose(edge.coords[0 if edge.u == junction else -1], graph.nodes[junction])


def test_mismatched_widths_are_refused():
    with pytest.raises(DemsegError):
        road_network([LineString([(0, 0), (1, 0)])], [1.0, 2.0])


# ------------------------------------------------------------------------------------------- APLS

GRID = [LineString([(0, y), (300, y)]) for y in (0, 100, 200)] + \
       [LineString([(x, 0), (x, 200)]) for x in (0, 150, 300)]


def test_identical_networks_score_one():
    score = apls(GRID, GRID)
    assert score["apls"] == pytest.approx(1.0)
    assert score["path_agreement"] == pytest.approx(1.0)


def test_a_cut_road_scores_clearly_lower_and_only_from_the_truths_side():
    road = [LineString([(0, 100), (300, 100)])]
    score = apls(road, [LineString([(0, 100), (140, 100)]), LineString([(160, 100), (300, 100)])])
    assert score["apls_pred_to_true"] == pytest.approx(1.0)
    assert 0.3 < score["apls_true_to_pred"] < 0.6  # pairs across the cut, about half, score 0
    assert score["apls"] < 0.75


def test_a_cut_in_a_grid_costs_detours_not_everything():
    cut = GRID[:2] + [LineString([(0, 200), (140, 200)]), LineString([(160, 200), (300, 200)])] + GRID[3:]
    score = apls(GRID, cut)
    assert 0.75 < score["apls"] < 0.95
    assert score["path_agreement"] < score["apls"]


def test_a_network_missing_one_of_two_equal_roads_scores_half_from_the_truths_side():
    roads = [LineString([(0, 0), (200, 0)]), LineString([(0, 500), (200, 500)])]
    score = apls(roads, roads[:1])
    assert score["apls_true_to_pred"] == pytest.approx(0.5)
    assert score["apls_pred_to_true"] == pytest.approx(1.0)
    assert score["apls"] == pytest.approx(2 / 3)


def test_a_road_shifted_within_the_buffer_still_scores_nearly_one():
    shifted = [shapely.affinity.translate(line, 2.0, 1.0) for line in GRID]
    assert apls(GRID, shifted)["apls"] > 0.97
