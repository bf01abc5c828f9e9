"""Road centrelines as a connected network: nodes at junctions and dead ends, edges between them.

Recipe (:func:`road_network`, lengths in map units, metres):

1. Node the lines (:func:`build_graph`): line ends all within ``snap_m`` of one another become one
   node (their mean; complete linkage, so a dense tangle of short skeleton pieces cannot chain
   into one star node metres wide); a dead end within ``snap_m`` of another line is extended
   onto it; the lines are then split wherever they meet or cross (GEOS noding on a 1 mm grid),
   chains through nodes of degree 2 are merged into single edges, and junctions joined by an
   edge shorter than ``snap_m`` (noding slivers where lines cross near an end) become one.
2. Prune spurs: an edge from a junction (degree >= 3) to a dead end that reaches less than
   ``min_spur_m`` beyond the edge of the widest road at the junction (or is shorter than its
   width: a skeleton's corner branch) is removed, until none is left.
3. Bridge gaps: a dead end is joined to another dead end, or to the nearest point of another
   edge, when the gap is at most ``bridge_gap_m`` plus the roads' half widths (a skeleton stops
   about half a road width before the end of its mask) and the gap runs ahead of the road:
   within ``bridge_angle_deg`` of its direction, or inside a corridor of the road's half width
   around it (both roads' for two dead ends). Shortest gaps first; every dead end is used once.
4. Isolated edges shorter than ``min_spur_m`` are dropped; chains are merged again.

Edges carry length_m, width_m (length-weighted), mean_probability (length-weighted over the
parts where it is known, NaN elsewhere), bridged_m (length of bridged gaps) and from_node /
to_node; nodes carry node_id and degree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import LineString

from demseg.errors import DemsegError
from demseg.io.vector import VectorLayer

DEFAULT_SNAP_M = 2.0
DEFAULT_MIN_SPUR_M = 6.0
DEFAULT_BRIDGE_GAP_M = 8.0
DEFAULT_BRIDGE_ANGLE_DEG = 35.0
NODING_GRID_M = 1e-3
_DIRECTION_BACK_M = 10.0  # how far back along a road its direction at a dead end is measured


@dataclass
class RoadEdge:
    """One edge: a polyline from node ``u`` to node ``v`` with its width and probability sums."""

    u: int
    v: int
    coords: np.ndarray
    width_m: float = np.nan
    probability_sum: float = 0.0  # probability x length, over the parts where it is known
    probability_length_m: float = 0.0
    bridged_m: float = 0.0

    @property
    def length_m(self) -> float:
        return float(np.hypot(*np.diff(self.coords, axis=0).T).sum())

    @property
    def line(self) -> LineString:
        return LineString(self.coords)


@dataclass
class RoadGraph:
    """Nodes (id -> (x, y)) and edges (id -> :class:`RoadEdge`), with each node's edge ends."""

    nodes: dict[int, np.ndarray] = field(default_factory=dict)
    edges: dict[int, RoadEdge] = field(default_factory=dict)
    ends: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    _next_node: int = 0
    _next_edge: int = 0

    def add_node(self, xy) -> int:
        self.nodes[self._next_node] = np.asarray(xy, float)
        self._next_node += 1
        return self._next_node - 1

    def add_edge(self, edge: RoadEdge) -> int:
        self.edges[self._next_edge] = edge
        self.ends[edge.u].append(self._next_edge)
        self.ends[edge.v].append(self._next_edge)
        self._next_edge += 1
        return self._next_edge - 1

    def remove_edge(self, edge_id: int) -> RoadEdge:
        """Remove an edge (its nodes stay until :meth:`drop_bare_nodes`)."""
        edge = self.edges.pop(edge_id)
        for node in (edge.u, edge.v):
            self.ends[node].remove(edge_id)
            if not self.ends[node]:
                del self.ends[node]
        return edge

    def drop_bare_nodes(self) -> None:
        """Forget nodes no edge ends at."""
        for node in [node for node in self.nodes if not self.ends.get(node)]:
            del self.nodes[node]

    def degree(self, node: int) -> int:
        return len(self.ends.get(node, ()))


# ------------------------------------------------------------------------------------------ noding


def _end_clusters(ends: np.ndarray, snap_m: float) -> np.ndarray:
    """A cluster id per end point: clusters grow closest pair first, and only while every two of
    their ends stay within ``snap_m`` (complete linkage: no chaining across a tangle of ends)."""
    pairs = cKDTree(ends).query_pairs(snap_m, output_type="ndarray")
    gaps = np.hypot(*(ends[pairs[:, 0]] - ends[pairs[:, 1]]).T)
    cluster = np.arange(len(ends))
    members = {i: [i] for i in range(len(ends))}
    for i, j in pairs[np.lexsort((pairs[:, 1], pairs[:, 0], gaps))].tolist():
        a, b = cluster[i], cluster[j]
        if a == b:
            continue
        spread = ends[members[a]][:, None, :] - ends[members[b]][None, :, :]
        if np.hypot(spread[..., 0], spread[..., 1]).max() > snap_m:
            continue
        members[a] += members.pop(b)
        cluster[members[a]] = a
    return cluster


def _merge_close_ends(lines: list[np.ndarray], snap_m: float) -> list[np.ndarray]:
    """Lines whose end points lie all within ``snap_m`` of one another are moved to their mean."""
    ends = np.array([line[index] for line in lines for index in (0, -1)])
    roots = _end_clusters(ends, snap_m)
    means = {r: ends[roots == r].mean(axis=0) for r in np.unique(roots)}
    out = []
    for index, line in enumerate(lines):
        line = line.copy()
        line[0], line[-1] = means[roots[2 * index]], means[roots[2 * index + 1]]
        if roots[2 * index] != roots[2 * index + 1] or np.hypot(*np.diff(line, axis=0).T).sum() > snap_m:
            out.append(line)
    return out


def _extend_dead_ends(lines: list[np.ndarray], snap_m: float) -> list[np.ndarray]:
    """Lines with an end that touches nothing extended onto another line within ``snap_m``."""
    geometries = np.array([LineString(line) for line in lines], dtype=object)
    tree = shapely.STRtree(geometries)
    out = [line.copy() for line in lines]
    for index, line in enumerate(lines):
        for at in (0, -1):
            end = shapely.Point(line[at])
            near = [j for j in tree.query(end, predicate="dwithin", distance=snap_m) if j != index]
            if not near or any(shapely.distance(geometries[j], end) < NODING_GRID_M for j in near):
                continue
            target = min(near, key=lambda j: (shapely.distance(geometries[j], end), j))
            foot = np.asarray(shapely.get_coordinates(shapely.shortest_line(end, geometries[target]))[1])
            out[index] = np.vstack([foot, out[index]]) if at == 0 else np.vstack([out[index], foot])
    return out


def build_graph(lines: Sequence[LineString], widths_m: Sequence[float] | None = None,
                probabilities: Sequence[float] | None = None, snap_m: float = DEFAULT_SNAP_M) -> RoadGraph:
    """A road graph from any lines: ends snapped, lines split where they meet, degree-2 chains merged."""
    count = len(lines)
    widths = np.full(count, np.nan) if widths_m is None else np.asarray(widths_m, float)
    chances = np.full(count, np.nan) if probabilities is None else np.asarray(probabilities, float)
    if len(widths) != count or len(chances) != count:
        raise DemsegError(f"{count} lines but {len(widths)} widths and {len(chances)} probabilities")
    parts, keep = [], []  # every LineString part, and the input line it came from
    for index, line in enumerate(lines):
        for part in shapely.get_parts(line) if line is not None else []:
            if part.geom_type == "LineString" and part.length > 0:
                parts.append(part)
                keep.append(index)
    graph = RoadGraph()
    if not parts:
        return graph
    sources = [np.asarray(shapely.get_coordinates(part)) for part in parts]
    arrays = _extend_dead_ends(_merge_close_ends(sources, snap_m), snap_m) if snap_m > 0 else sources
    noded = shapely.get_parts(shapely.union_all([LineString(a) for a in arrays], grid_size=NODING_GRID_M))
    noded = [part for part in noded if part.geom_type == "LineString" and part.length > 0]
    source_tree = shapely.STRtree(parts)
    middles = shapely.line_interpolate_point(noded, 0.5, normalized=True)
    owners = source_tree.query_nearest(middles, return_distance=False, all_matches=False)[1]
    node_at: dict[tuple[float, float], int] = {}

    def node(xy: np.ndarray) -> int:
        key = (round(float(xy[0]), 3), round(float(xy[1]), 3))
        if key not in node_at:
            node_at[key] = graph.add_node(xy)
        return node_at[key]

    for part, owner in zip(noded, owners, strict=True):
        coords = np.asarray(shapely.get_coordinates(part))
        source = keep[int(owner)]
        edge = RoadEdge(node(coords[0]), node(coords[-1]), coords, float(widths[source]))
        if np.isfinite(chances[source]):
            edge.probability_sum, edge.probability_length_m = chances[source] * edge.length_m, edge.length_m
        graph.add_edge(edge)
    merge_chains(graph)
    if snap_m > 0:
        contract_short_links(graph, snap_m)
    return graph


# ----------------------------------------------------------------------------------------- editing


def _oriented(edge: RoadEdge, start: int) -> np.ndarray:
    """The edge's coordinates starting at node ``start``."""
    return edge.coords if edge.u == start else edge.coords[::-1]


def _joined(first: RoadEdge, second: RoadEdge, at: int) -> RoadEdge:
    """Two edges meeting at node ``at`` as one."""
    start = first.v if first.u == at else first.u
    stop = second.v if second.u == at else second.u
    coords = np.vstack([_oriented(first, start), _oriented(second, at)[1:]])
    lengths = np.array([first.length_m, second.length_m])
    widths = np.array([first.width_m, second.width_m])
    known = np.isfinite(widths) & (lengths > 0)
    width = float((widths[known] * lengths[known]).sum() / lengths[known].sum()) if known.any() else np.nan
    return RoadEdge(start, stop, coords, width, first.probability_sum + second.probability_sum,
                    first.probability_length_m + second.probability_length_m,
                    first.bridged_m + second.bridged_m)


def merge_chains(graph: RoadGraph) -> None:
    """Merge, in place, the two edges at every node of degree 2 into one edge."""
    for node in sorted(graph.nodes):
        ends = list(graph.ends.get(node, []))
        if len(ends) != 2 or ends[0] == ends[1]:
            continue
        first, second = graph.remove_edge(ends[0]), graph.remove_edge(ends[1])
        graph.add_edge(_joined(first, second, node))
    graph.drop_bare_nodes()


def _move_node(graph: RoadGraph, node: int, xy: np.ndarray) -> None:
    """Move a node and the ends of its edges there."""
    graph.nodes[node] = xy
    for edge_id in set(graph.ends.get(node, ())):
        edge = graph.edges[edge_id]
        if edge.u == node:
            edge.coords[0] = xy
        if edge.v == node:
            edge.coords[-1] = xy


def contract_short_links(graph: RoadGraph, max_length_m: float) -> int:
    """Make, in place, junctions joined by an edge shorter than ``max_length_m`` one junction (at
    their midpoint), and drop loops shorter than that; returns how many edges went."""
    removed = 0
    while True:
        short = sorted((edge.length_m, edge_id) for edge_id, edge in graph.edges.items()
                       if edge.length_m < max_length_m
                       and (edge.u == edge.v or min(graph.degree(edge.u), graph.degree(edge.v)) >= 3))
        if not short:
            break
        edge = graph.remove_edge(short[0][1])
        removed += 1
        if edge.u != edge.v:
            keep, gone = edge.u, edge.v
            for edge_id in dict.fromkeys(graph.ends.get(gone, ())):  # a loop is listed twice
                moved = graph.remove_edge(edge_id)
                moved.u = keep if moved.u == gone else moved.u
                moved.v = keep if moved.v == gone else moved.v
                graph.add_edge(moved)
            _move_node(graph, keep, (graph.nodes[keep] + graph.nodes[gone]) / 2)
        graph.drop_bare_nodes()
    merge_chains(graph)
    return removed


def prune_spurs(graph: RoadGraph, min_spur_m: float) -> int:
    """Remove, in place, dead-end edges off a junction that reach less than ``min_spur_m`` beyond the
    edge of the widest road there (or are shorter than its width), until none is left; returns how
    many went."""
    removed = 0
    while True:
        spurs = []
        for edge_id, edge in graph.edges.items():
            degrees = (graph.degree(edge.u), graph.degree(edge.v))
            if sorted(degrees)[0] != 1 or max(degrees) < 3:
                continue
            junction = edge.u if degrees[0] >= 3 else edge.v
            widths = [graph.edges[other].width_m for other in graph.ends[junction] if other != edge_id]
            widest = max((w for w in widths if np.isfinite(w)), default=0.0)
            if edge.length_m < max(min_spur_m + widest / 2, widest):
                spurs.append(edge_id)
        if not spurs:
            return removed
        # one spur per junction per round: two short arms of a small junction are not both spurs
        seen: set[int] = set()
        for edge_id in sorted(spurs, key=lambda e: (graph.edges[e].length_m, e)):
            edge = graph.edges[edge_id]
            junction = edge.u if graph.degree(edge.u) >= 3 else edge.v
            if junction in seen or graph.degree(junction) < 3:
                continue
            seen.add(junction)
            graph.remove_edge(edge_id)
            removed += 1
        merge_chains(graph)


def _dead_end_direction(graph: RoadGraph, node: int) -> np.ndarray:
    """Unit vector pointing out of the road at dead end ``node``, measured along the
    ``_DIRECTION_BACK_M`` before the last half width (where a skeleton may bend to a corner)."""
    edge = graph.edges[graph.ends[node][0]]
    line = LineString(_oriented(edge, node))
    near = min(_half_width(edge.width_m), line.length / 3)
    far = min(near + _DIRECTION_BACK_M, line.length)
    points = shapely.get_coordinates(line.interpolate([near, far]))
    direction = points[0] - points[1]
    norm = np.hypot(*direction)
    return direction / norm if norm > 0 else np.zeros(2)


def _ahead(direction: np.ndarray, gap: np.ndarray, max_angle_deg: float, corridor_m: float) -> bool:
    """Whether ``gap`` heads within ``max_angle_deg`` of ``direction`` or runs ahead inside a corridor
    of half-width ``corridor_m`` around it."""
    norm = np.hypot(*gap)
    forward = float(direction @ gap)
    if norm == 0 or forward <= 0:
        return False
    sideways = abs(float(direction[0] * gap[1] - direction[1] * gap[0]))
    return forward / norm >= np.cos(np.radians(max_angle_deg)) or sideways <= corridor_m


def _half_width(width_m: float) -> float:
    return width_m / 2 if np.isfinite(width_m) else 0.0


def _best_bridge(graph: RoadGraph, bridge_gap_m: float, max_angle_deg: float) -> tuple | None:
    """The shortest allowed gap as (length, kind, dead end, other dead end or -1 - edge id, point)."""
    dead = [node for node in sorted(graph.nodes) if graph.degree(node) == 1]
    if not dead:
        return None
    own = {node: graph.ends[node][0] for node in dead}
    half = {node: _half_width(graph.edges[own[node]].width_m) for node in dead}
    direction = {node: _dead_end_direction(graph, node) for node in dead}
    points = np.array([graph.nodes[node] for node in dead])
    edge_ids = sorted(graph.edges)
    tree, near = shapely.STRtree([graph.edges[e].line for e in edge_ids]), cKDTree(points)
    candidates = []
    for index, node in enumerate(dead):
        at, reach = points[index], bridge_gap_m + half[node]
        for other_index in near.query_ball_point(at, reach + max(half.values())):
            other = dead[other_index]
            gap = points[other_index] - at
            corridor = max(half[node], half[other])
            if other != node and own[other] != own[node] and np.hypot(*gap) <= reach + half[other] and \
                    _ahead(direction[node], gap, max_angle_deg, corridor) and \
                    _ahead(direction[other], -gap, max_angle_deg, corridor):
                candidates.append((float(np.hypot(*gap)), 0, node, other, points[other_index]))
        for tree_index in tree.query(shapely.Point(at), predicate="dwithin", distance=reach):
            edge_id = edge_ids[int(tree_index)]
            line = graph.edges[edge_id].line
            foot = shapely.get_coordinates(shapely.shortest_line(shapely.Point(at), line))[1]
            if edge_id != own[node] and _ahead(direction[node], foot - at, max_angle_deg, half[node]):
                candidates.append((float(np.hypot(*(foot - at))), 1, node, -1 - edge_id, foot))
    return min(candidates, key=lambda c: c[:4]) if candidates else None


def _split_edge(graph: RoadGraph, edge_id: int, point: np.ndarray) -> int:
    """Split an edge at the point on it nearest ``point``; returns the node there."""
    edge = graph.edges[edge_id]
    line = edge.line
    along = float(line.project(shapely.Point(point)))
    if along <= NODING_GRID_M:
        return edge.u
    if along >= line.length - NODING_GRID_M:
        return edge.v
    graph.remove_edge(edge_id)
    cumulative = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(edge.coords, axis=0).T))])
    cut = np.asarray(shapely.get_coordinates(line.interpolate(along))[0])
    inside = (cumulative > along) & (cumulative < line.length)
    head = np.vstack([edge.coords[cumulative < along], cut])
    tail = np.vstack([cut, edge.coords[inside], edge.coords[-1:]])
    node = graph.add_node(cut)
    share = along / line.length
    for u, v, coords, part in ((edge.u, node, head, share), (node, edge.v, tail, 1 - share)):
        graph.add_edge(RoadEdge(u, v, coords, edge.width_m, edge.probability_sum * part,
                                edge.probability_length_m * part, edge.bridged_m * part))
    return node


def bridge_gaps(graph: RoadGraph, bridge_gap_m: float,
                max_angle_deg: float = DEFAULT_BRIDGE_ANGLE_DEG) -> int:
    """Join, in place, dead ends across gaps (shortest first, see the module recipe); returns how many."""
    bridges = 0
    while (best := _best_bridge(graph, bridge_gap_m, max_angle_deg)) is not None:
        length, kind, node, target, point = best
        own_width = graph.edges[graph.ends[node][0]].width_m
        if kind == 0:
            other_width = graph.edges[graph.ends[target][0]].width_m
            widths = [w for w in (own_width, other_width) if np.isfinite(w)]
            graph.add_edge(RoadEdge(node, target, np.vstack([graph.nodes[node], graph.nodes[target]]),
                                    float(np.mean(widths)) if widths else np.nan, bridged_m=length))
        else:
            far = _split_edge(graph, -1 - target, point)
            graph.add_edge(RoadEdge(node, far, np.vstack([graph.nodes[node], graph.nodes[far]]), own_width,
                                    bridged_m=length))
        bridges += 1
    merge_chains(graph)
    return bridges


def drop_short_fragments(graph: RoadGraph, min_length_m: float) -> int:
    """Remove, in place, edges with two dead ends shorter than ``min_length_m``; returns how many."""
    fragments = [edge_id for edge_id, edge in graph.edges.items()
                 if graph.degree(edge.u) == 1 and graph.degree(edge.v) == 1 and edge.length_m < min_length_m]
    for edge_id in fragments:
        graph.remove_edge(edge_id)
    graph.drop_bare_nodes()
    return len(fragments)


# ------------------------------------------------------------------------------------------ layers


def graph_layers(graph: RoadGraph, crs: str | None = None) -> tuple[VectorLayer, VectorLayer]:
    """The graph as an ``edges`` line layer and a ``nodes`` point layer, nodes numbered from 0."""
    number = {node: index for index, node in enumerate(sorted(n for n in graph.nodes if graph.degree(n)))}
    edge_ids = sorted(graph.edges)
    edges = [graph.edges[e] for e in edge_ids]
    geometries = np.empty(len(edges), dtype=object)
    geometries[:] = [edge.line for edge in edges]
    probability = [edge.probability_sum / edge.probability_length_m if edge.probability_length_m > 0
                   else np.nan for edge in edges]
    edge_layer = VectorLayer(geometries, {
        "from_node": np.array([number[edge.u] for edge in edges], np.int32),
        "to_node": np.array([number[edge.v] for edge in edges], np.int32),
        "length_m": np.round(np.array([edge.length_m for edge in edges], float), 2),
        "width_m": np.round(np.array([edge.width_m for edge in edges], float), 2),
        "mean_probability": np.round(np.array(probability, float), 3),
        "bridged_m": np.round(np.array([edge.bridged_m for edge in edges], float), 2)}, crs)
    points = np.empty(len(number), dtype=object)
    points[:] = [shapely.Point(graph.nodes[node]) for node in number]
    degrees = np.array([graph.degree(node) for node in number], np.int32)
    node_ids = np.arange(len(number), dtype=np.int32)
    node_layer = VectorLayer(points, {"node_id": node_ids, "degree": degrees}, crs)
    return edge_layer, node_layer


def road_network(lines: Sequence[LineString], widths_m: Sequence[float] | None,
                 probabilities: Sequence[float] | None = None, bridge_gap_m: float = DEFAULT_BRIDGE_GAP_M,
                 min_spur_m: float = DEFAULT_MIN_SPUR_M, snap_m: float = DEFAULT_SNAP_M,
                 crs: str | None = None) -> tuple[VectorLayer, VectorLayer]:
    """The road network of centreline pieces as (edges, nodes) layers; see the module recipe."""
    for name, value in (("bridge_gap_m", bridge_gap_m), ("min_spur_m", min_spur_m), ("snap_m", snap_m)):
        if not value >= 0:
            raise DemsegError(f"{name} must be zero or more, got {value}")
    graph = build_graph(lines, widths_m, probabilities, snap_m)
    prune_spurs(graph, min_spur_m)
    if bridge_gap_m > 0:
        bridge_gaps(graph, bridge_gap_m)
    drop_short_fragments(graph, min_spur_m)
    merge_chains(graph)
    return graph_layers(graph, crs)
