"""Regularised building outlines against the official BAG footprints (Amsterdam, AHN3 + BAG).

Masks (0.5 m, EPSG:28992, from /work/shared/data/real/ahn3_bag_amsterdam_bag3d/):
- ``labels_class6.tif``: the AHN3 LiDAR building class (what a good model would predict);
- ``labels_bag.tif``: the BAG footprints burnt into the grid (the regulariser's own error alone).
Each mask is vectorised as demseg does (4-connected components traced by
``rasterio.features.shapes``, collinear vertices dropped, < 10 m2 dropped) and written four ways:
pixel stairs, demseg's default Douglas-Peucker at one pixel, a minimum rotated rectangle where
the outline fills >= 85 % of it (a simple baseline), and ``regularise_footprints`` (what
``demseg predict --regularise`` uses; with and without the closing/opening of noisy outlines).

Scores against BAG, inside the valid extent of the mask (no-data cells excluded):
- polygon IoU: exact areas of union(outlines) vs union(BAG);
- boundary IoU: both rasterised at 0.5 m and 0.25 m, IoU inside a 1.5 m band along either
  boundary (as ``demseg.evaluate.metrics``);
- vertices per polygon (BAG's own count per building is given for reference) and the share of
  corners within 10 degrees of a right angle.

With the ``buildingregulariser`` package installed (``.venv/bin/pip install buildingregulariser``, not a
demseg dependency) its regulariser is scored side by side, with its defaults and with the
simplification its README advises.

Run: .venv/bin/python benchmarks/bench_footprints.py [--mask PRED/dsm_mask.tif]
Writes benchmarks/results/footprints.md and footprints.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from common import save
from rasterio import features
from scipy import ndimage
from shapely.geometry import shape

from demseg.evaluate.metrics import boundary_band
from demseg.io.vector import read_vector
from demseg.predict.regularise import RegulariseOptions, regularise_footprints, vertex_count

SCENE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ahn3_bag_amsterdam_bag3d"
MIN_AREA_M2 = 10.0
MRR_MIN_FILL = 0.85
BAND_M = 1.5


def mask_polygons(path: Path) -> tuple[list, Affine, np.ndarray, float]:
    """Outlines (map coordinates) of the mask's 4-connected building components, its transform, valid
    cells and pixel size."""
    with rasterio.open(path) as src:
        labels, transform = src.read(1), src.transform
    labels_cc, _ = ndimage.label(labels == 1, structure=ndimage.generate_binary_structure(2, 1))
    polygons = [shapely.simplify(shape(geometry), 0.0)
                for geometry, _ in features.shapes(labels_cc.astype(np.int32), mask=labels_cc > 0,
                                                   connectivity=4, transform=transform)]
    polygons = [polygon for polygon in polygons if polygon.area >= MIN_AREA_M2]
    return polygons, transform, labels != 255, abs(transform.a)


def valid_area(valid: np.ndarray, transform: Affine):
    return shapely.union_all([shape(g) for g, v in features.shapes(valid.astype(np.uint8), mask=valid,
                                                                   transform=transform)])


def minimum_rectangle_or_simplified(polygon, pixel_size_m: float):
    rectangle = shapely.minimum_rotated_rectangle(polygon)
    if rectangle.area > 0 and polygon.area >= MRR_MIN_FILL * rectangle.area:
        return rectangle
    return shapely.simplify(polygon, pixel_size_m, preserve_topology=True)


def polygon_iou(outlines: list, truth, area) -> float:
    predicted = shapely.union_all(outlines).intersection(area)
    return predicted.intersection(truth).area / predicted.union(truth).area


def burn(geometries: list, shape_px: tuple[int, int], transform: Affine) -> np.ndarray:
    return features.rasterize(((g, 1) for g in geometries), out_shape=shape_px, transform=transform,
                              dtype="uint8").astype(bool)


def boundary_iou(outlines: list, truth: list, valid: np.ndarray, transform: Affine, cell_m: float) -> float:
    """IoU of the two masks inside a BAND_M band along either boundary, rasterised at ``cell_m``."""
    factor = int(round(abs(transform.a) / cell_m))
    fine = transform * Affine.scale(1 / factor)
    shape_px = (valid.shape[0] * factor, valid.shape[1] * factor)
    known = np.kron(valid, np.ones((factor, factor), bool))
    predicted, true = burn(outlines, shape_px, fine) & known, burn(truth, shape_px, fine) & known
    width_px = max(1, int(round(BAND_M / cell_m)))
    band = (boundary_band(predicted, width_px) | boundary_band(true, width_px)) & known
    return float((predicted & true & band).sum() / ((predicted | true) & band).sum())


def right_angle_share(polygons: list, tolerance_deg: float = 10.0) -> float:
    """Share of all corners within ``tolerance_deg`` of 90 degrees."""
    right = total = 0
    for polygon in polygons:
        for part in shapely.get_parts(polygon):
            for ring in [part.exterior, *part.interiors]:
                points = np.asarray(ring.coords)[:-1, :2]
                incoming = points - np.roll(points, 1, axis=0)
                outgoing = np.roll(points, -1, axis=0) - points
                cosine = (incoming * outgoing).sum(axis=1) / np.maximum(
                    np.hypot(*incoming.T) * np.hypot(*outgoing.T), 1e-12)
                angle = np.degrees(np.arccos(np.clip(cosine, -1, 1)))
                right += int((np.abs(angle - 90) <= tolerance_deg).sum())
                total += len(points)
    return right / total if total else float("nan")


def overlapping_pairs(polygons: list, min_area_m2: float = 0.01) -> int:
    """Pairs of outlines sharing more than ``min_area_m2`` (GEOS says "overlaps" for 1e-12 m2 too)."""
    first, second = shapely.STRtree(polygons).query(polygons, predicate="overlaps")
    pairs = [(i, j) for i, j in zip(first.tolist(), second.tolist(), strict=True) if i < j]
    return sum(polygons[i].intersection(polygons[j]).area > min_area_m2 for i, j in pairs)


def score(name: str, mask: str, outlines: list, truth: list, truth_union, area, valid, transform,
          seconds: float) -> dict:
    return {"mask": mask, "outlines": name, "polygons": len(outlines),
            "polygon_iou": polygon_iou(outlines, truth_union, area),
            "boundary_iou_0.5m": boundary_iou(outlines, truth, valid, transform, 0.5),
            "boundary_iou_0.25m": boundary_iou(outlines, truth, valid, transform, 0.25),
            "vertices_per_polygon": float(np.mean([vertex_count(p) for p in outlines])),
            "right_angle_corners": right_angle_share(outlines),
            "overlapping_pairs": overlapping_pairs(outlines), "seconds": seconds}


def buildingregulariser_variants(polygons: list, pixel_size_m: float) -> dict:
    """The `buildingregulariser` package side by side, where it is installed (pip install buildingregulariser).

    Its defaults, and the simplification its README advises (2-3 x the pixel size); one core, as demseg.
    """
    try:
        import geopandas
        from buildingregulariser import regularize_geodataframe
    except ImportError:
        return {}

    def run(**options):
        frame = geopandas.GeoDataFrame(geometry=polygons, crs="EPSG:28992")
        return [g for g in regularize_geodataframe(frame, num_cores=1, **options).geometry]

    return {"buildingregulariser 0.2.5, defaults": lambda: run(),
            "buildingregulariser 0.2.5, simplify 2 px (its README)": lambda: run(
                simplify_tolerance=2 * pixel_size_m)}


def run_mask(mask: str, truth: list, scene: Path) -> list[dict]:
    polygons, transform, valid, pixel_size_m = mask_polygons(scene / mask if not Path(mask).is_absolute()
                                                             else Path(mask))
    area = valid_area(valid, transform)
    truth_union = shapely.union_all(truth).intersection(area)
    variants = {"pixel stairs": lambda: polygons,
                "simplified (DP 1 px, demseg default)": lambda: [
                    shapely.simplify(p, pixel_size_m, preserve_topology=True) for p in polygons],
                "min. rotated rectangle if fill >= 0.85": lambda: [
                    minimum_rectangle_or_simplified(p, pixel_size_m) for p in polygons],
                "regularise_footprints": lambda: regularise_footprints(polygons, pixel_size_m),
                "regularise_footprints, no noise smoothing": lambda: regularise_footprints(
                    polygons, pixel_size_m, RegulariseOptions(smooth_px=0))}
    variants.update(buildingregulariser_variants(polygons, pixel_size_m))
    rows = []
    for name, make in variants.items():
        start = time.perf_counter()
        outlines = make()
        seconds = time.perf_counter() - start
        rows.append(score(name, mask, outlines, truth, truth_union, area, valid, transform, seconds))
    return rows


def markdown(rows: list[dict], bag_vertices: float, bag_right: float) -> str:
    lines = ["# Building outlines vs BAG footprints (Amsterdam, AHN3, 0.5 m)", "",
             "| mask | outlines | polygons | polygon IoU | boundary IoU 0.5 m | boundary IoU 0.25 m | "
             "vertices / polygon | right-angle corners | overlapping pairs | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mask']} | {r['outlines']} | {r['polygons']} | {r['polygon_iou']:.4f} | "
                     f"{r['boundary_iou_0.5m']:.4f} | {r['boundary_iou_0.25m']:.4f} | "
                     f"{r['vertices_per_polygon']:.1f} | {r['right_angle_corners']:.2f} | "
                     f"{r['overlapping_pairs']} | {r['seconds']:.2f} |")
    lines += ["", f"BAG itself: {bag_vertices:.1f} vertices per building, {bag_right:.2f} of corners within "
              "10 degrees of a right angle. One predicted polygon is often a whole block of touching BAG "
              "buildings (a binary mask cannot separate them), so vertex counts compare outlines of "
              "blocks, not buildings. Boundary IoU: 1.5 m band along either boundary, valid cells only."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--mask", action="append", type=Path, default=[],
                        help="also score this mask (e.g. a demseg predict <stem>_mask.tif on the scene's grid)")
    args = parser.parse_args()
    bag = read_vector(args.scene / "raw" / "bag" / "bag_pandactueelbestand.geojson")
    truth = [g for g in shapely.make_valid(bag.geometries) if not g.is_empty]
    rows = []
    for mask in ["labels_class6.tif", "labels_bag.tif", *map(str, (m.resolve() for m in args.mask))]:
        rows += run_mask(mask, truth, args.scene)
    bag_vertices = float(np.mean([vertex_count(g) for g in truth]))
    save("footprints", {"scene": args.scene.name, "min_area_m2": MIN_AREA_M2, "band_m": BAND_M, "rows": rows,
                        "bag_vertices_per_building": bag_vertices},
         markdown(rows, bag_vertices, right_angle_share(truth)))


if __name__ == "__main__":
    main()
