"""Rasterise throughput (points/s) and peak memory of ``demseg.lidar.rasterize`` (run by hand).

Three cases, each in its own subprocess so that its peak RSS is its own:
- the 12 AHN3 LAZ files in ../shared/data/real (1.2 M points, 0.5 m, EPSG:28992);
- a 1 km x 1 km LAZ tile at 30 points/m2 (LAS 1.4, EPSG:2154) written here into a temporary folder
  in chunks: ground, blocks of buildings, roads, trees and a canal;
- the same tile at 10 points/m2: same grid, a third of the points, so the same peak memory if it
  is flat in the point count.
Each case also times a read-only pass (decompress and decode, no binning) to show the I/O ceiling.

    .venv/bin/python benchmarks/bench_rasterize.py          # writes benchmarks/results/rasterize.{md,json}
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AMSTERDAM = ROOT.parent / "shared" / "data" / "real" / "ahn3_bag_amsterdam_bag3d" / "raw" / "ahn3"
TILE_M = 1000
DENSITY = 30  # points per m2
WRITE_CHUNK = 1_000_000
BYTES_PER_POINT_ARRAYS = 3 * 8 + 1  # x, y, z float64 + class uint8, as a whole-file read would hold them


def _peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which unlike ru_maxrss is not inherited at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synthetic_chunk(rng: np.random.Generator, y_from: float, y_to: float, n: int) -> dict[str, np.ndarray]:
    """Points of a strip of the synthetic tile: 60 x 40 m building blocks, roads, tree patches, a canal."""
    x, y = rng.uniform(0, TILE_M, n), rng.uniform(y_from, y_to, n)
    z = 30 + 0.01 * x + 2 * np.sin(y / 100)
    code = np.full(n, 2, np.uint8)
    road = (x % 100 < 10) | (y % 100 < 10)
    code[road] = 11
    building = (x % 100 > 20) & (x % 100 < 80) & (y % 100 > 30) & (y % 100 < 70)
    z[building] += 8 + (np.floor(x[building] / 100) % 5) * 4
    code[building] = 6
    tree = ~road & ~building & ((np.floor(x / 10) * 7 + np.floor(y / 10) * 13) % 11 == 0)
    canopy = tree & (rng.random(n) < 0.6)  # the rest are ground returns below the canopy
    z[canopy] += rng.uniform(3, 15, int(canopy.sum()))
    code[canopy] = 5
    canal = (y > 500) & (y < 515)
    keep = ~canal | (rng.random(n) < 0.02)  # water returns are sparse
    code[canal] = 9
    return {"x": x[keep], "y": y[keep], "z": z[keep], "classification": code[keep]}


def write_synthetic_tile(path: Path, density: int = DENSITY, seed: int = 0) -> int:
    """Write the 1 km2 tile chunk by chunk (memory stays flat); returns its point count."""
    import laspy
    import pyproj

    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([700_000.0, 6_600_000.0, 0.0])
    header.add_crs(pyproj.CRS.from_epsg(2154))
    rng = np.random.default_rng(seed)
    strip_m = WRITE_CHUNK / (density * TILE_M)
    written = 0
    with laspy.open(path, mode="w", header=header) as writer:
        for start in np.arange(0, TILE_M, strip_m):
            chunk = _synthetic_chunk(rng, start, min(start + strip_m, TILE_M), WRITE_CHUNK)
            points = laspy.ScaleAwarePointRecord.zeros(len(chunk["x"]), header=header)
            points.x, points.y = chunk["x"] + 700_000, chunk["y"] + 6_600_000
            points.z, points.classification = chunk["z"], chunk["classification"]
            writer.write_points(points)
            written += len(chunk["x"])
    return written


def run_case(files: list[Path], crs: str | None) -> dict:
    """In this process: a read-only pass, then rasterize; seconds, points/s and peak RSS."""
    from demseg.lidar import RasterizeConfig, rasterize
    from demseg.lidar.sources import iter_points, read_header

    baseline = _peak_rss_mb()
    start = time.perf_counter()
    read = sum(len(chunk) for f in files for chunk in iter_points(read_header(f), 1_000_000))
    read_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        manifest = rasterize(files, RasterizeConfig(crs=crs), Path(out) / "scene", progress=False)
        seconds = time.perf_counter() - start
    grid = manifest["grid"]
    return {"points": read, "grid_px": f"{grid['width']} x {grid['height']}", "seconds": seconds,
            "points_per_s": read / seconds, "read_only_points_per_s": read / read_seconds,
            "baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb(),
            "point_arrays_mb": read * BYTES_PER_POINT_ARRAYS / 2**20}


def _in_subprocess(files: list[Path], crs: str | None) -> dict:
    command = [sys.executable, __file__, "--case-files", *map(str, files)] + (["--crs", crs] if crs else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from common import save  # imports torch: kept out of the measured subprocesses

    results = {}
    if AMSTERDAM.exists():
        results["amsterdam (12 AHN3 LAZ)"] = _in_subprocess(sorted(AMSTERDAM.glob("*.laz")), "EPSG:28992")
    write_seconds = {}
    for density in (DENSITY, DENSITY // 3):
        with tempfile.TemporaryDirectory() as folder:
            tile = Path(folder) / "synthetic_1km2.laz"
            start = time.perf_counter()
            write_synthetic_tile(tile, density)
            write_seconds[density] = time.perf_counter() - start
            results[f"synthetic 1 km2 at {density} pts/m2 (LAZ)"] = _in_subprocess([tile], None)
    rows = ["| case | points | grid (0.5 m) | seconds | points/s | read-only points/s | peak RSS MB | "
            "RSS after imports MB | x,y,z,class arrays MB |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['points']:,} | {r['grid_px']} | {r['seconds']:.1f} | "
                    f"{r['points_per_s']:,.0f} | {r['read_only_points_per_s']:,.0f} | "
                    f"{r['peak_rss_mb']:.0f} | {r['baseline_rss_mb']:.0f} | {r['point_arrays_mb']:.0f} |")
    markdown = ("# rasterize: throughput and peak memory\n\nDefault RasterizeConfig (0.5 m, 250 k-point "
                "chunks, fill 2 m); each case in its own process; seconds include hashing the inputs and "
                "writing the outputs. Peak RSS is VmHWM; the last column is what a whole-file read would "
                "hold in numpy arrays alone.\n\n" + "\n".join(rows))
    payload = {"cases": results, "synthetic_write_seconds_by_density": write_seconds}
    print(json.dumps(payload), flush=True)  # the numbers survive a failure in save()
    save("rasterize", payload, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case-files", nargs="+", type=Path, help="(internal) run one case and print JSON")
    parser.add_argument("--crs")
    args = parser.parse_args()
    if args.case_files:
        print(json.dumps(run_case(args.case_files, args.crs)))
    else:
        main()
