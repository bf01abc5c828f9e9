"""Topology of a predicted road network against the true one: APLS and shortest-path agreement.

Definition (after SpaceNet's APLS, Van Etten et al. 2018, arXiv:1807.01232), one direction,
source graph S onto target graph T:

1. Both line sets are noded into graphs (:func:`demseg.predict.roadgraph.build_graph`).
2. Control nodes on S: every node (junctions, dead ends) and points every
   ``control_spacing_m`` along every edge.
3. Each control node is snapped to the nearest point of T within ``snap_buffer_m`` (inserted
   there as a node of T); control nodes with nothing that close are unmatched.
4. For every pair of control nodes joined by a path in S of length L_S >= ``min_path_m``:
   score = 1 - min(1, |L_S - L_T| / L_S), where L_T is the shortest path between their snapped
   nodes in T; an unmatched node or no path in T scores 0. The pair agrees when both are
   matched, a path exists and |L_S - L_T| <= ``tolerance`` x L_S.
5. The direction's value is the mean score over the pairs (1.0 when S has no pairs).

``apls`` is the harmonic mean of the truth-onto-prediction and prediction-onto-truth values
(SpaceNet's total; 0 when either is 0): the first punishes missing and cut roads, the second
invented roads and shortcuts. ``path_agreement`` is the share of agreeing pairs over both
directions' pairs together. Shortest paths: scipy's Dijkstra on the edge lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from shapely.geometry import LineString

from demseg.predict.roadgraph import DEFAULT_SNAP_M, RoadGraph, build_graph

DEFAULT_CONTROL_SPACING_M = 25.0
DEFAULT_SNAP_BUFFER_M = 4.0
DEFAULT_TOLERANCE = 0.05
DEFAULT_MIN_PATH_M = 1.0
_SAME_POINT_M = 1e-6


@dataclass
class _PathGraph:
    """A graph for shortest paths: node count and {(a, b): length} for a < b."""

    count: int
    lengths: dict[tuple[int, int], float]

    def distances(self, sources: np.ndarray) -> np.ndarray:
        """(len(sources), count) shortest path lengths, inf where there is no path."""
        if not self.lengths:
            out = np.full((len(sources), self.count), np.inf)
            out[np.arange(len(sources)), sources] = 0.0
            return out
        pairs = np.array(list(self.lengths.keys()))
        weights = np.maximum(np.array(list(self.lengths.values())), 1e-9)  # csgraph drops zero weights
        matrix = coo_matrix((weights, (pairs[:, 0], pairs[:, 1])), shape=(self.count, self.count)).tocsr()
        return dijkstra(matrix, directed=False, indices=sources)


def _with_points(graph: RoadGraph, points: list[tuple[int, float]]) -> tuple[_PathGraph, list[int]]:
    """The graph with nodes inserted at (edge id, distance along it); returns it and those nodes' indices."""
    index = {node: i for i, node in enumerate(sorted(graph.nodes))}
    count = len(index)
    on_edge: dict[int, dict[float, int]] = {}
    placed = []
    for edge_id, along in points:
        edge = graph.edges[edge_id]
        if along <= _SAME_POINT_M:
            placed.append(index[edge.u])
        elif along >= edge.length_m - _SAME_POINT_M:
            placed.append(index[edge.v])
        else:
            stops = on_edge.setdefault(edge_id, {})
            if along not in stops:
                stops[along] = count
                count += 1
            placed.append(stops[along])
    lengths: dict[tuple[int, int], float] = {}
    for edge_id, edge in graph.edges.items():
        stops = sorted(on_edge.get(edge_id, {}).items())
        chain = [(0.0, index[edge.u]), *stops, (edge.length_m, index[edge.v])]
        for (start, a), (stop, b) in zip(chain[:-1], chain[1:], strict=True):
            key = (min(a, b), max(a, b))
            if a != b and stop - start < lengths.get(key, np.inf):
                lengths[key] = stop - start
    return _PathGraph(count, lengths), placed


def _control_points(graph: RoadGraph, spacing_m: float) -> list[tuple[int, float]]:
    """(edge id, distance along) of every node and of points every ``spacing_m`` along every edge."""
    points = []
    for node in sorted(graph.nodes):
        edge_id = graph.ends[node][0]
        points.append((edge_id, 0.0 if graph.edges[edge_id].u == node else graph.edges[edge_id].length_m))
    for edge_id in sorted(graph.edges):
        length = graph.edges[edge_id].length_m
        count = int(length // spacing_m)
        points += [(edge_id, k * length / (count + 1)) for k in range(1, count + 1)] if count else []
    return points


def _snapped(source: RoadGraph, points: list[tuple[int, float]], target: RoadGraph,
             buffer_m: float) -> list[tuple[int, float] | None]:
    """Each source point's nearest location on the target, (edge id, distance along), or None."""
    xy = [source.edges[e].line.interpolate(along) for e, along in points]
    if not target.edges or not xy:
        return [None] * len(points)
    edge_ids = sorted(target.edges)
    lines = np.array([target.edges[e].line for e in edge_ids], dtype=object)
    which, _ = shapely.STRtree(lines).query_nearest(xy, max_distance=buffer_m, all_matches=False,
                                                     return_distance=True)
    out: list[tuple[int, float] | None] = [None] * len(points)
    for point_index, line_index in zip(*which, strict=True):
        out[int(point_index)] = (edge_ids[int(line_index)], float(lines[line_index].project(xy[point_index])))
    return out


def one_way_apls(source: RoadGraph, target: RoadGraph, control_spacing_m: float = DEFAULT_CONTROL_SPACING_M,
                 snap_buffer_m: float = DEFAULT_SNAP_BUFFER_M, tolerance: float = DEFAULT_TOLERANCE,
                 min_path_m: float = DEFAULT_MIN_PATH_M) -> dict[str, float]:
    """APLS of ``source`` onto ``target`` (steps 2-5 of the module docstring) with its pair counts."""
    points = _control_points(source, control_spacing_m)
    if not points:
        return {"apls": 1.0, "pairs": 0, "agreeing_pairs": 0, "matched_controls": 0, "controls": 0}
    source_graph, source_nodes = _with_points(source, points)
    matches = _snapped(source, points, target, snap_buffer_m)
    matched = [m for m in matches if m is not None]
    target_graph, target_nodes = _with_points(target, matched)
    target_of = dict(zip([i for i, m in enumerate(matches) if m is not None], target_nodes, strict=True))
    source_lengths = source_graph.distances(np.array(source_nodes))[:, source_nodes]
    true_index = np.array([target_of.get(i, 0) for i in range(len(points))])
    target_lengths = target_graph.distances(true_index)[:, true_index] if target_graph.count else \
        np.full(source_lengths.shape, np.inf)
    is_matched = np.array([m is not None for m in matches])
    upper = np.triu(np.ones(source_lengths.shape, bool), k=1)
    pairs = upper & np.isfinite(source_lengths) & (source_lengths >= min_path_m)
    found = pairs & is_matched[:, None] & is_matched[None, :] & np.isfinite(target_lengths)
    relative = np.where(found, np.abs(source_lengths - np.where(found, target_lengths, 0.0)) /
                        np.where(pairs, source_lengths, 1.0), 1.0)
    scores = 1.0 - np.minimum(1.0, relative)
    count = int(pairs.sum())
    return {"apls": float(scores[pairs].mean()) if count else 1.0, "pairs": count,
            "agreeing_pairs": int((found & (relative <= tolerance)).sum()),
            "matched_controls": int(is_matched.sum()), "controls": len(points)}


def apls(true_lines: Sequence[LineString], predicted_lines: Sequence[LineString],
         control_spacing_m: float = DEFAULT_CONTROL_SPACING_M, snap_buffer_m: float = DEFAULT_SNAP_BUFFER_M,
         tolerance: float = DEFAULT_TOLERANCE, min_path_m: float = DEFAULT_MIN_PATH_M,
         snap_m: float = DEFAULT_SNAP_M) -> dict[str, float]:
    """APLS and the share of shortest paths agreeing within ``tolerance`` between two road networks.

    Returns ``apls`` (harmonic mean of both directions), ``apls_true_to_pred``,
    ``apls_pred_to_true``, ``path_agreement`` and the pair and control-node counts.
    """
    truth, prediction = build_graph(true_lines, snap_m=snap_m), build_graph(predicted_lines, snap_m=snap_m)
    settings = dict(control_spacing_m=control_spacing_m, snap_buffer_m=snap_buffer_m, tolerance=tolerance,
                    min_path_m=min_path_m)
    forward = one_way_apls(truth, prediction, **settings)
    backward = one_way_apls(prediction, truth, **settings)
    both = forward["apls"] > 0 and backward["apls"] > 0
    pairs = forward["pairs"] + backward["pairs"]
    agreeing = forward["agreeing_pairs"] + backward["agreeing_pairs"]
    return {"apls": 2.0 / (1.0 / forward["apls"] + 1.0 / backward["apls"]) if both else 0.0,
            "apls_true_to_pred": forward["apls"], "apls_pred_to_true": backward["apls"],
            "path_agreement": agreeing / pairs if pairs else 1.0, "pairs": pairs,
            "true_controls_matched": forward["matched_controls"] / max(forward["controls"], 1),
            "pred_controls_matched": backward["matched_controls"] / max(backward["controls"], 1)}
