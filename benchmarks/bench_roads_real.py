"""Road networks on REAL LiDAR: a run trained on part of the route-planning block, scored where it never trained.

The block (Amsterdam Nieuw-West, AHN + BGT road surfaces, 0.5 m) has no official centrelines, so
the reference network is demseg's own centreline graph of the BGT road mask (``road_centrelines``
then ``road_network`` with 8 m gap bridging): an upper bound for what a perfect mask would give.
The run predicts the whole block (``predict_scene``); both networks and both masks are then cut
to the run's validation region (the union of its validation tiles, never trained on), and scored
with pixel IoU and APLS (``demseg.evaluate.topology.apls``: both directions, paths within 5 %).

Caveat: this block's DSM holds ground and buildings only (no trees, no cars), so it is an easier
road scene than a raw DSM; the region is small (12 tiles of 32 m).

Run: .venv/bin/python benchmarks/bench_roads_real.py --run RUN [--run RUN2 ...]
     (RUN: demseg train examples/amsterdam_routeplanning.yaml --task roads --tile-size-px 64 ...)
Writes benchmarks/results/roads_real.md and roads_real.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import shapely
from common import save
from rasterio import features

from demseg.evaluate.topology import apls
from demseg.io.raster import GridSpec, write_geotiff
from demseg.predict import predict_scene, road_centrelines
from demseg.predict.roadgraph import road_network

BLOCK = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ahn_bgt_amsterdam_routeplanning"
ROAD = 2
BRIDGE_M = 8.0


def network(mask: np.ndarray, grid: GridSpec, folder: Path, name: str) -> list:
    """The road network (lines) demseg builds from a 0/1/255 mask."""
    path = write_geotiff(folder / f"{name}.tif", mask, grid, nodata=255)
    lines, widths = road_centrelines(path)
    return list(road_network(lines, np.asarray(widths), bridge_gap_m=BRIDGE_M)[0].geometries)


def clipped(lines: list, area) -> list:
    parts = shapely.get_parts(shapely.intersection(np.asarray(lines, dtype=object), area))
    return [p for p in parts if p.geom_type == "LineString" and p.length > 0]


def validation_area(run: Path):
    """The union of the run's validation tiles (map coordinates)."""
    boxes = []
    with open(run / "tiles.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "val":
                boxes.append(shapely.box(*(float(row[k]) for k in ("left", "bottom", "right", "top"))))
    return shapely.union_all(boxes)


def score_run(run: Path) -> dict:
    with rasterio.open(BLOCK / "labels.tif") as src:
        labels = src.read(1)
        grid = GridSpec(src.crs, src.transform, src.width, src.height)
    area = validation_area(run)
    inside = features.rasterize([(area, 1)], out_shape=labels.shape, transform=grid.transform,
                                dtype="uint8").astype(bool)
    truth_mask = np.where(labels == 255, 255, labels == ROAD).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        paths = predict_scene(run, BLOCK / "dsm_ground_plus_buildings.tif", Path(tmp) / "pred",
                              dtm_path=BLOCK / "dtm.tif", progress=False)
        with rasterio.open(paths["mask"]) as src:
            predicted_mask = src.read(1)
        known = inside & (labels != 255) & (predicted_mask != 255)
        prediction, truth = (predicted_mask == 1) & known, (truth_mask == 1) & known
        iou = float((prediction & truth).sum() / max(1, (prediction | truth).sum()))
        true_lines = clipped(network(truth_mask, grid, Path(tmp), "truth"), area)
        predicted_lines = clipped(network((predicted_mask == 1).astype(np.uint8), grid, Path(tmp), "pred"), area)
    config = json.loads((run / "config.json").read_text())
    return {"run": str(run), "model": config["model"], "train_tiles": config["train_tiles"],
            "recipe": config["recipe"], "pixel_iou": iou, "true_km": sum(line.length for line in true_lines) / 1e3,
            "predicted_km": sum(line.length for line in predicted_lines) / 1e3,
            **apls(true_lines, predicted_lines)}


def markdown(rows: list[dict]) -> str:
    lines = ["# Road networks on real LiDAR: route-planning block, validation region only", "",
             "| run | model | train tiles | recipe | pixel IoU | APLS | true->pred | pred->true | paths within 5 % | "
             "network km (true) |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['model']} | {r['train_tiles']} | {r['recipe']} | "
                     f"{r['pixel_iou']:.3f} | {r['apls']:.3f} | {r['apls_true_to_pred']:.3f} | "
                     f"{r['apls_pred_to_true']:.3f} | {r['path_agreement']:.3f} | "
                     f"{r['predicted_km']:.2f} ({r['true_km']:.2f}) |")
    lines += ["", "Reference network: demseg's centreline graph of the BGT road mask (no official centrelines "
                  "exist for this block). Validation region: the run's validation tiles."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a roads run (repeatable)")
    args = parser.parse_args()
    rows = [score_run(run) for run in args.run]
    save("roads_real", {"rows": rows}, markdown(rows))


if __name__ == "__main__":
    main()
