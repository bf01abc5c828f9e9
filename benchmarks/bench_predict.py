"""Whole-scene prediction: throughput (km2/h), peak memory, where the time goes, and a seam check.

Writes an S x S px synthetic DEM (+ DTM) at 0.5 m by tiling synthetic scenes (rotated and flipped
for variety) block-row by block-row, so even S = 16384 never holds the scene in memory; then
predicts it with a run. Generation (and the smoke run's training, when no --run is given) happen
in child processes, so the peak RSS reported is the prediction's alone.

Seam check: the scene is predicted again without overlap; the IoU of the two masks is reported
separately for pixels within --border-px of a window border of the no-overlap layout and for the
rest. Near-equal values mean window borders cost nothing; a lower border IoU shows what the
overlap and blending repair.

Run: .venv/bin/python benchmarks/bench_predict.py --run RUN_DIR --size 4096 [--threads 2]
Results accumulate per size in benchmarks/results/predict.md and predict.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from common import RESULTS, save
from rasterio.transform import from_origin
from rasterio.windows import Window

SCENE_TILE_PX = 512
PIXEL_SIZE_M = 0.5
NODATA = -9999.0


def _view(array: np.ndarray, view: int) -> np.ndarray:
    array = np.flip(array, axis=1) if view >= 4 else array
    return np.rot90(array, k=view % 4)


def write_synthetic_dem(folder: Path, size_px: int, scenes: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """dem.tif and dtm.tif of size_px x size_px, written one block-row of SCENE_TILE_PX rows at a time."""
    from demseg.data.synth import generate_scene, scene_seed

    folder.mkdir(parents=True, exist_ok=True)
    dem_path, dtm_path = folder / "dem.tif", folder / "dtm.tif"
    sources = [generate_scene(scene_seed(seed, i), SCENE_TILE_PX, PIXEL_SIZE_M) for i in range(scenes)]
    profile = dict(driver="GTiff", width=size_px, height=size_px, count=1, dtype="float32", nodata=NODATA,
                   crs="EPSG:32631", transform=from_origin(500000.0, 5400000.0 + size_px * PIXEL_SIZE_M,
                                                           PIXEL_SIZE_M, PIXEL_SIZE_M),
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", predictor=3, bigtiff="IF_SAFER")
    with rasterio.open(dem_path.with_suffix(".partial.tif"), "w", **profile) as dem_out, \
            rasterio.open(dtm_path.with_suffix(".partial.tif"), "w", **profile) as dtm_out:
        for row_off in range(0, size_px, SCENE_TILE_PX):
            rows = min(SCENE_TILE_PX, size_px - row_off)
            dem_strip = np.empty((rows, size_px), np.float32)
            dtm_strip = np.empty((rows, size_px), np.float32)
            for col_off in range(0, size_px, SCENE_TILE_PX):
                cols = min(SCENE_TILE_PX, size_px - col_off)
                k = (row_off // SCENE_TILE_PX) * 7 + (col_off // SCENE_TILE_PX) * 3
                source = sources[k % scenes]
                view = (k // scenes) % 8
                offset = 50.0 - float(np.nanmedian(source.dtm))  # every tile on about the same ground level
                dem_strip[:, col_off:col_off + cols] = (_view(source.dsm, view) + offset)[:rows, :cols]
                dtm_strip[:, col_off:col_off + cols] = (_view(source.dtm, view) + offset)[:rows, :cols]
            window = Window(0, row_off, size_px, rows)
            dem_out.write(np.where(np.isnan(dem_strip), NODATA, dem_strip).astype(np.float32), 1, window=window)
            dtm_out.write(np.where(np.isnan(dtm_strip), NODATA, dtm_strip).astype(np.float32), 1, window=window)
    dem_path.with_suffix(".partial.tif").rename(dem_path)
    dtm_path.with_suffix(".partial.tif").rename(dtm_path)
    return dem_path, dtm_path


def train_smoke_run(folder: Path) -> Path:
    """A tiny UNet run (64 px tiles, a few iterations) for smoke tests when no --run is given."""
    from demseg.data.synth import generate_world
    from demseg.evaluate.metrics import SegmentationScorer
    from demseg.runs.config import TrainConfig
    from demseg.train.run import train_run

    spec = generate_world(folder / "world", scenes=3, size_px=256, seed=0, progress=False)
    config = TrainConfig(task="buildings", model="unet", unet_width=8, tile_size_px=64, train_tiles=8, val_tiles=4,
                         iters=30, val_every=10, amp="off", min_valid_fraction=0.5)
    train_run(spec, config, folder / "run", SegmentationScorer, overwrite=True, progress=False)
    return folder / "run"


def _in_child(target, *args) -> None:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed in a child process (exit code {process.exitcode})")


def seam_ious(mask_a: Path, mask_b: Path, tile_px: int, border_px: int, block_rows: int = 1024) -> dict:
    """IoU of two masks near window borders of the no-overlap layout vs inside windows, read by row blocks."""
    from demseg.predict.sliding import window_offsets

    sums = {zone: [0, 0] for zone in ("border", "inside")}
    with rasterio.open(mask_a) as a_src, rasterio.open(mask_b) as b_src:
        height, width = a_src.height, a_src.width
        cuts_rows = np.array(window_offsets(height, tile_px, tile_px)[1:])
        cuts_cols = np.array(window_offsets(width, tile_px, tile_px)[1:])

        def near(index: np.ndarray, cuts: np.ndarray) -> np.ndarray:
            if len(cuts) == 0:
                return np.zeros(len(index), bool)
            return np.abs(index[:, None] - cuts[None, :]).min(axis=1) < border_px

        col_near = near(np.arange(width), cuts_cols)
        for row_off in range(0, height, block_rows):
            window = Window(0, row_off, width, min(block_rows, height - row_off))
            a, b = a_src.read(1, window=window), b_src.read(1, window=window)
            known = (a != 255) & (b != 255)
            zone = near(np.arange(row_off, row_off + a.shape[0]), cuts_rows)[:, None] | col_near[None, :]
            for name, where in (("border", zone & known), ("inside", ~zone & known)):
                sums[name][0] += int(((a == 1) & (b == 1) & where).sum())
                sums[name][1] += int((((a == 1) | (b == 1)) & where).sum())
    return {zone: (inter / union if union else float("nan")) for zone, (inter, union) in sums.items()}


STAGE_GROUPS = {"backbone": ("backbone",), "head": ("head", "model"), "I/O": ("read", "write", "cog", "vectors",
                                                                              "preview"),
                "normalise": ("normalise",), "vectorise": ("vectorise",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="scene side in pixels (4096, 16384 for the record)")
    parser.add_argument("--run", help="run folder (default: train a tiny smoke-test UNet)")
    parser.add_argument("--workdir", help="keep the synthetic DEM here and reuse it (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--border-px", type=int, default=8)
    parser.add_argument("--no-seam-check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from demseg.predict import PredictConfig, predict_scene, resolve_run
    from demseg.predict.sliding import DemInput, StageTimer, predict_rasters

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as scratch:
        workdir = Path(args.workdir or scratch) / f"dem_{args.size}"
        dem_path, dtm_path = workdir / "dem.tif", workdir / "dtm.tif"
        started = time.perf_counter()
        if not dem_path.exists():
            _in_child(write_synthetic_dem, workdir, args.size)
        generate_seconds = time.perf_counter() - started
        run = Path(args.run) if args.run else Path(scratch) / "smoke" / "run"
        if not args.run:
            _in_child(train_smoke_run, Path(scratch) / "smoke")
        rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        loaded = resolve_run(run)
        timer = StageTimer()
        started = time.perf_counter()
        paths = predict_scene(loaded, dem_path, Path(scratch) / "out",
                              PredictConfig(tta=args.tta, batch_size=args.batch_size), dtm_path=dtm_path,
                              progress=True, timer=timer)
        seconds = time.perf_counter() - started
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        record = json.loads(paths["done"].read_text())
        seams = None
        if not args.no_seam_check:
            source = DemInput(dem_path, dtm_path)
            no_overlap = Path(scratch) / "no_overlap"
            no_overlap.mkdir()
            predict_rasters(loaded.model, loaded.config, source, source.grid(), no_overlap / "mask.tif",
                            no_overlap / "prob.tif", overlap=0.0, tta=args.tta, batch_size=args.batch_size)
            seams = seam_ious(paths["mask"], no_overlap / "mask.tif", loaded.config.tile_size_px, args.border_px)
    area_km2 = record["area_km2"]
    stage_seconds = dict(timer.seconds)
    total = sum(stage_seconds.values())
    groups = {group: sum(stage_seconds.get(s, 0.0) for s in stages) / total for group, stages in STAGE_GROUPS.items()}
    entry = {"size_px": args.size, "area_km2": area_km2, "seconds": seconds, "km2_per_hour": area_km2 / seconds * 3600,
             "peak_rss_mb": peak_rss_mb, "rss_before_predict_mb": rss_before_mb, "stage_seconds": stage_seconds,
             "stage_fractions": groups, "seam_iou_overlap_vs_none": seams, "border_px": args.border_px,
             "features": record["features"], "run": str(run) if args.run else "smoke-test UNet (width 8, 30 iters)",
             "model": loaded.config.model, "tile_size_px": loaded.config.tile_size_px, "tta": args.tta,
             "threads": args.threads, "batch_size": args.batch_size, "dem_generation_seconds": generate_seconds}
    previous = {}
    if (RESULTS / "predict.json").exists():
        previous = json.loads((RESULTS / "predict.json").read_text()).get("sizes", {})
    previous[str(args.size)] = entry
    save("predict", {"sizes": previous}, _markdown(previous))


def _markdown(sizes: dict) -> str:
    lines = ["# Whole-scene prediction (demseg predict)", "",
             "Synthetic 0.5 m DEM + DTM, S x S px, 25 % overlap, Hann blending; peak RSS is the prediction "
             "process's (ru_maxrss). Time shares: backbone, head (UNet: the whole model), I/O (read, write, "
             "COG, GeoPackage, preview), normalise, vectorise. Seam IoU: mask with vs without overlap, near "
             "window borders vs inside windows.", "",
             "| size px | km2 | model | tile | s | km2/h | peak RSS MB | backbone | head | I/O | normalise | "
             "vectorise | seam IoU border / inside |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in sorted(sizes, key=int):
        e = sizes[size]
        f = e["stage_fractions"]
        seams = e["seam_iou_overlap_vs_none"]
        seam_text = f"{seams['border']:.3f} / {seams['inside']:.3f}" if seams else "-"
        lines.append(f"| {e['size_px']} | {e['area_km2']:.2f} | {e['model']} | {e['tile_size_px']} | "
                     f"{e['seconds']:.0f} | {e['km2_per_hour']:.2f} | {e['peak_rss_mb']:.0f} | "
                     f"{f['backbone']:.0%} | {f['head']:.0%} | {f['I/O']:.0%} | {f['normalise']:.0%} | "
                     f"{f['vectorise']:.0%} | {seam_text} |")
    runs = sorted({sizes[s]["run"] for s in sizes})
    lines += ["", f"Runs: {', '.join(runs)}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
