"""Road networks from masks against the true synthetic road network: APLS and path agreement.

A small synthetic world (``demseg.data.synth.generate_world``, 0.5 m) gives per scene the label
raster (2 = road) and the true centrelines (``road_centrelines.gpkg``). Per scene:

- perfect mask: the TRUE road mask is vectorised by demseg (``vectorise_mask``, centrelines)
  and scored as raw centrelines and as ``road_network`` (an upper bound for vectoriser + graph);
- cut mask: the same mask with gaps of 3-8 m cut across the roads (one per 150 m of road, at
  random points not within 15 m of a junction), as ``road_network`` with and without gap
  bridging (``bridge_gap_m`` 8 m vs 0).

Scores (``demseg.evaluate.topology.apls``): APLS (harmonic mean of both directions), both
directions, and the share of control-node pairs whose shortest paths agree within 5 %. Both
networks are clipped to the scene shrunk by 10 m, so that the roads' ends at the scene edge
(true lines run half a width past it, skeletons stop half a width inside) do not count.

Run: .venv/bin/python benchmarks/bench_roads.py [--scenes 3] [--seed 7] [--run ROADS_RUN]
Writes benchmarks/results/roads.md and roads.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import rasterio
import shapely
from common import save
from rasterio import features

from demseg.data.synth import generate_world
from demseg.evaluate.topology import apls
from demseg.io.raster import GridSpec, write_geotiff
from demseg.io.vector import read_vector
from demseg.predict import road_centrelines
from demseg.predict.roadgraph import build_graph, road_network

ROAD = 2
EDGE_MARGIN_M = 10.0
CUT_EVERY_M = 150.0
CUT_CLEAR_OF_JUNCTIONS_M = 15.0


def road_mask(labels: np.ndarray) -> np.ndarray:
    """0/1/255 road mask of a label raster."""
    return np.where(labels == 255, 255, labels == ROAD).astype(np.uint8)


def cut_roads(mask: np.ndarray, truth: list, widths: np.ndarray, grid: GridSpec,
              rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The mask with 3-8 m gaps cut across the true roads, away from junctions; and how many."""
    graph = build_graph(truth, widths)
    junctions = [shapely.Point(xy) for node, xy in graph.nodes.items() if graph.degree(node) >= 3]
    keep_out = shapely.union_all([p.buffer(CUT_CLEAR_OF_JUNCTIONS_M) for p in junctions])
    scene = shapely.box(*grid.bounds).buffer(-EDGE_MARGIN_M)
    edges = [graph.edges[e] for e in sorted(graph.edges)]
    lengths = np.array([edge.length_m for edge in edges])
    cuts = []
    for _ in range(int(lengths.sum() // CUT_EVERY_M)):
        for _attempt in range(20):  # a random point of the network, clear of junctions and the edge
            edge = edges[rng.choice(len(edges), p=lengths / lengths.sum())]
            along, gap_m = rng.uniform(0, edge.length_m), rng.uniform(3.0, 8.0)
            centre = edge.line.interpolate(along)
            if scene.contains(centre) and not keep_out.contains(centre):
                piece = shapely.ops.substring(edge.line, along - gap_m / 2, along + gap_m / 2)
                cuts.append(piece.buffer(edge.width_m, cap_style="flat"))
                break
    if not cuts:
        return mask, 0
    burnt = features.rasterize(((c, 1) for c in cuts), out_shape=mask.shape, transform=grid.transform,
                               dtype="uint8").astype(bool)
    return np.where(burnt & (mask == 1), 0, mask).astype(np.uint8), len(cuts)


def clipped(lines, area) -> list:
    parts = shapely.get_parts(shapely.intersection(np.asarray(lines, dtype=object), area))
    return [p for p in parts if p.geom_type == "LineString" and p.length > 0]


def centrelines(mask: np.ndarray, grid: GridSpec, folder: Path, name: str):
    path = write_geotiff(folder / f"{name}.tif", mask, grid, nodata=255)
    lines, widths = road_centrelines(path)
    return lines, np.asarray(widths)


def network_lines(lines: list, widths: np.ndarray, bridge_gap_m: float) -> list:
    return list(road_network(lines, widths, bridge_gap_m=bridge_gap_m)[0].geometries)


def dead_ends(lines: list) -> int:
    graph = build_graph(lines)
    return sum(graph.degree(node) == 1 for node in graph.nodes)


def predicted_mask(run: Path, scene: Path, folder: Path) -> tuple[np.ndarray, float]:
    """The road mask a trained run predicts for a scene's DEM, and its pixel IoU with the true roads."""
    from demseg.predict import predict_scene

    paths = predict_scene(run, scene / "dem.tif", folder / "predicted", dtm_path=scene / "dtm.tif", progress=False)
    with rasterio.open(paths["mask"]) as src:
        mask = src.read(1)
    with rasterio.open(scene / "labels.tif") as src:
        labels = src.read(1)
    known = (labels != 255) & (mask != 255)
    prediction, truth = (mask == 1) & known, (labels == 2) & known
    return (mask == 1).astype(np.uint8), float((prediction & truth).sum() / max(1, (prediction | truth).sum()))


def score_scene(scene: Path, rng, run: Path | None = None) -> list[dict]:
    with rasterio.open(scene / "labels.tif") as src:
        labels = src.read(1)
        grid = GridSpec(src.crs, src.transform, src.width, src.height)
    truth_layer = read_vector(scene / "road_centrelines.gpkg")
    truth, widths = list(truth_layer.geometries), np.asarray(truth_layer.attributes["width"], float)
    area = shapely.box(*grid.bounds).buffer(-EDGE_MARGIN_M, join_style="mitre")
    true_lines = clipped(truth, area)
    mask = road_mask(labels)
    cut, cuts = cut_roads(mask, truth, widths, grid, rng)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        masks = [("perfect", mask), (f"cut ({cuts} gaps of 3-8 m)", cut)]
        if run is not None:
            predicted, iou = predicted_mask(run, scene, Path(tmp))
            masks.append((f"predicted (pixel IoU {iou:.3f})", predicted))
        for mask_name, values in masks:
            lines, line_widths = centrelines(values, grid, Path(tmp), "mask")
            variants = {"raw centrelines": lambda lines=lines: lines}
            for bridge in ((8.0,) if mask_name == "perfect" else (0.0, 8.0)):
                name = f"road_network, bridge {bridge:g} m"
                variants[name] = partial(network_lines, lines, line_widths, bridge)
            for name, make in variants.items():
                start = time.perf_counter()
                predicted = make()
                seconds = time.perf_counter() - start
                score = apls(true_lines, clipped(predicted, area))
                rows.append({"scene": scene.name, "mask": mask_name, "network": name, "seconds": seconds,
                             "dead_ends": dead_ends(clipped(predicted, area)),
                             "true_dead_ends": dead_ends(true_lines), **score})
    return rows


def markdown(rows: list[dict], summary: list[dict]) -> str:
    lines = ["# Road networks vs the true synthetic network (APLS)", "",
             "| mask | network | APLS | true->pred | pred->true | paths within 5 % | dead ends (true) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in summary:
        lines.append(f"| {r['mask']} | {r['network']} | {r['apls']:.3f} | {r['apls_true_to_pred']:.3f} | "
                     f"{r['apls_pred_to_true']:.3f} | {r['path_agreement']:.3f} | "
                     f"{r['dead_ends']:.0f} ({r['true_dead_ends']:.0f}) |")
    lines += ["", "Means over scenes; dead ends summed. Per scene:", "",
              "| scene | mask | network | APLS | paths within 5 % | dead ends | seconds |",
              "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scene']} | {r['mask']} | {r['network']} | {r['apls']:.3f} | "
                     f"{r['path_agreement']:.3f} | {r['dead_ends']} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def summarise(rows: list[dict]) -> list[dict]:
    keys = ("apls", "apls_true_to_pred", "apls_pred_to_true", "path_agreement")
    out = []
    for mask, network in dict.fromkeys((r["mask"].split(" (")[0], r["network"]) for r in rows):
        group = [r for r in rows if r["mask"].split(" (")[0] == mask and r["network"] == network]
        means = {key: float(np.mean([r[key] for r in group])) for key in keys}
        out.append({"mask": mask, "network": network, **means,
                    "dead_ends": sum(r["dead_ends"] for r in group),
                    "true_dead_ends": sum(r["true_dead_ends"] for r in group)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--run", type=Path, help="also score the road mask this trained roads run predicts")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        generate_world(tmp, scenes=args.scenes, seed=args.seed, progress=False)
        rows = [row for scene in sorted(Path(tmp).glob("s[0-9]*")) for row in score_scene(scene, rng, args.run)]
    summary = summarise(rows)
    save("roads", {"scenes": args.scenes, "seed": args.seed, "summary": summary, "rows": rows},
         markdown(rows, summary))


if __name__ == "__main__":
    main()
