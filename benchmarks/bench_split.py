"""One footprint per building: object F1 against the official BAG footprints, with and without splitting.

A predicted mask joins touching buildings (terraces, perimeter blocks) into one polygon; BAG has
one polygon per building. ``demseg predict --split-step-m M`` cuts footprints where the roof
height (DSM) steps by more than M metres (``demseg.predict.split``). This benchmark vectorises
masks of the Amsterdam AHN3 block (0.5 m, EPSG:28992) as ``predict`` does and matches the polygons
one-to-one to BAG (``raw/bag/pandactueelbestaand.gpkg``) at IoU >= 0.5:

- ``labels_bag.tif``: the BAG footprints burnt into the grid, so the only error is the merging of
  touching buildings (what splitting can undo);
- ``labels_class6.tif``: the AHN3 LiDAR building class (what a good model would predict).

Only BAG buildings with at least 90 % of their area inside the mask's valid extent count, and
only polygons inside it. The step is not tuned here: 1.5 m (half a storey) is the default guess,
the other values show how much the choice matters on this one city.

Run: .venv/bin/python benchmarks/bench_split.py
Writes benchmarks/results/split_amsterdam.md and split_amsterdam.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from common import machine, save
from rasterio import features

from demseg.predict.config import PredictConfig
from demseg.predict.sliding import DemInput
from demseg.predict.vectorise import vectorise_mask

BLOCK = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ahn3_bag_amsterdam_bag3d"


def valid_extent(mask_path: Path):
    with rasterio.open(mask_path) as src:
        valid = (src.read(1) != 255).astype(np.uint8)
        shapes = [shapely.geometry.shape(g) for g, v in features.shapes(valid, mask=valid > 0, transform=src.transform)]
    return shapely.union_all(shapes)


def match(predicted: list, reference: list, threshold: float = 0.5) -> tuple[int, list[float]]:
    """One-to-one matches at IoU >= threshold, best pairs first: (count, their IoUs)."""
    tree = shapely.STRtree(reference)
    pairs = []
    for i, polygon in enumerate(predicted):
        for j in tree.query(polygon, predicate="intersects"):
            inter = polygon.intersection(reference[j]).area
            iou = inter / (polygon.area + reference[j].area - inter)
            if iou >= threshold:
                pairs.append((iou, i, int(j)))
    used_p, used_r, ious = set(), set(), []
    for iou, i, j in sorted(pairs, reverse=True):
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            ious.append(iou)
    return len(ious), ious


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="0,1,1.5,2,3", help="split steps in m (0: no splitting)")
    parser.add_argument("--min-part-m2", type=float, default=20.0)
    parser.add_argument("--out", default="split_amsterdam")
    args = parser.parse_args()
    source = DemInput(BLOCK / "dsm.tif", BLOCK / "dtm.tif")
    geometries = pyogrio.raw.read(BLOCK / "raw" / "bag" / "pandactueelbestaand.gpkg", read_geometry=True)[2]
    bag = [shapely.force_2d(g) for g in shapely.from_wkb(geometries)]
    rows, records = [], []
    for mask_name in ("labels_bag.tif", "labels_class6.tif"):
        extent = valid_extent(BLOCK / mask_name)
        reference = [g for g in bag if g.area >= 10 and g.intersection(extent).area >= 0.9 * g.area]
        for step in [float(s) for s in args.steps.split(",")]:
            config = PredictConfig(split_step_m=step or None, min_part_m2=args.min_part_m2)
            started = time.perf_counter()
            layer = vectorise_mask(BLOCK / mask_name, "buildings", None, source, config)["buildings"]
            seconds = time.perf_counter() - started
            predicted = [g for g in layer.geometries if g.intersection(extent).area >= 0.9 * g.area]
            hits, ious = match(predicted, reference)
            precision, recall = hits / max(1, len(predicted)), hits / max(1, len(reference))
            f1 = 2 * precision * recall / max(1e-9, precision + recall)
            record = {"mask": mask_name, "step_m": step, "min_part_m2": args.min_part_m2, "bag": len(reference),
                      "polygons": len(predicted), "matched": hits, "precision": round(precision, 4),
                      "recall": round(recall, 4), "object_f1": round(f1, 4),
                      "median_iou_matched": round(float(np.median(ious)), 4) if ious else None,
                      "seconds": round(seconds, 2)}
            records.append(record)
            rows.append(f"| {mask_name} | {'no split' if not step else f'{step:g} m'} | {len(reference)} | "
                        f"{len(predicted)} | {hits} | {precision:.3f} | {recall:.3f} | **{f1:.3f}** | "
                        f"{record['median_iou_matched']} | {seconds:.1f} |")
            print(rows[-1], flush=True)
    info = machine()
    text = "\n".join([
        "# One footprint per building: object F1 against BAG (Amsterdam, AHN3, 0.5 m)", "",
        f"`.venv/bin/python benchmarks/bench_split.py` on {info['cpu']}, {info['threads']} thread(s). "
        f"Polygons matched one-to-one to BAG buildings at IoU >= 0.5; minimum part {args.min_part_m2:g} m2.", "",
        "| mask | split at roof steps | BAG buildings | polygons | matched | precision | recall | object F1 | "
        "median IoU of matches | seconds |", "|---|---|---|---|---|---|---|---|---|---|", *rows, ""])
    save(args.out, {"records": records}, text)


if __name__ == "__main__":
    main()
