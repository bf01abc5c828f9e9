"""Rasterise classified point clouds (LAS/LAZ/COPC) into a demseg scene: DSM, DTM, nDSM, labels, counts.

One grid covers all inputs (their header extents, origin snapped to a multiple of the pixel size),
or the grid of an existing raster (``like``). Points stream through in chunks of
``chunk_points``, so memory grows with the grid, never with the point count: ~30 bytes a cell of
accumulators (up to 44 more for the LiDAR channels) and 60-100 bytes a cell at the peak (the DTM's
triangulation is built block by block, so sparse data, where most ground cells border a gap, does
not blow it up).
The rules for each raster are in :mod:`demseg.lidar.surfaces`; in short: DSM = highest non-water
return per cell, empty cells filled from the nearest cell with points within ``fill_radius_m``;
DTM = mean ground height per cell, linearly interpolated (Delaunay) under buildings and gaps;
nDSM = DSM - DTM; labels = per-cell majority of the configured classes against "other".
The LiDAR channels (``returns``, ``fml``, ``vegshare``, ``intensity``; rules in
:mod:`demseg.lidar.channels`) are per-cell means filled and masked like the DSM; a channel the
data cannot make (no return numbers, constant intensity, no vegetation class) is skipped with a
warning, or refused before anything is written when the config names the channels explicitly.

The output folder holds ``dsm.tif``, ``dtm.tif``, ``ndsm.tif`` (float32, nodata -9999),
``labels.tif`` (uint8: 0 background, 1 buildings, 2 roads, 255 no data), ``point_count.tif``
(uint32), one ``NAME.tif`` per channel made (float32, nodata -9999), ``dataset.yaml`` (loads with
:func:`demseg.data.spec.load_spec`; the channels under the scene's ``channels:``) and ``manifest.json``.
It is written into a hidden folder beside ``out_dir`` and renamed at the end: a failure leaves
nothing half-written.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from demseg import __version__
from demseg.data.spec import DEFAULT_CLASSES
from demseg.errors import DemsegError
from demseg.io.atomic import atomic_folder
from demseg.io.folders import MARKER, check_output_path, made_by
from demseg.io.provenance import file_sha256, provenance
from demseg.io.raster import GridSpec, write_geotiff
from demseg.lidar.accumulate import CellAccumulator
from demseg.lidar.channels import channel_raster, choose_channels
from demseg.lidar.config import RasterizeConfig
from demseg.lidar.grid import like_grid, union_grid
from demseg.lidar.sources import PointFile, iter_points, read_header, resolve_crs
from demseg.lidar.surfaces import (
    LABEL_NODATA,
    check_ground,
    height_model,
    label_raster,
    surface_model,
    terrain_model,
)

NODATA = -9999.0  # float rasters
MANIFEST = "manifest.json"


def rasterize(points: Sequence[str | os.PathLike], config: RasterizeConfig | None = None,
              out_dir: str | os.PathLike = "rasterized", overwrite: bool = False,
              progress: bool = True) -> dict:
    """Write the rasters, ``dataset.yaml`` and ``manifest.json`` of ``points`` into ``out_dir``.

    Returns the manifest (also written as ``manifest.json``) plus ``out_dir``.
    """
    started = time.perf_counter()
    config = config or RasterizeConfig()
    if not points:
        raise DemsegError("no point cloud files given")
    _check_distinct(points)
    check_output_path(out_dir, [*points, config.like])
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    files = [read_header(path) for path in points]
    crs, vertical_crs = resolve_crs(files, config.crs)
    grid = _output_grid(files, crs, config)
    acc = CellAccumulator(grid, list(config.classes.values()), config.ground_class, config.water_class,
                          config.drop_classes, close_far_edges=config.like is None, channels=config.channels)
    _stream(files, acc, config.chunk_points, progress)
    _check_tally(acc, config)
    check_ground(acc)  # before anything is written
    channels, skipped = _choose_channels(acc, config)  # a named channel the data lacks: refused here too
    with atomic_folder(out_dir, before_publish=lambda: _check_out_dir(out_dir, overwrite)) as staging:
        summary = _write_rasters(staging, acc, config, channels)
        tasks = _write_spec(staging / "dataset.yaml", out_dir, summary["labels_present"], config, channels)
        manifest = _manifest(files, config, grid, vertical_crs, acc, summary, tasks, skipped)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        (staging / MARKER).write_text("rasterize")
    return {**manifest, "out_dir": str(out_dir)}


def _check_distinct(points: Sequence[str | os.PathLike]) -> None:
    """Refuse a point file given twice (also by another name or a link): its points would count twice."""
    seen: dict[tuple[int, int], str] = {}
    for path in points:
        try:
            stat = os.stat(path)
        except OSError:
            continue  # read_header says what is wrong with it
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            same = "" if str(seen[key]) == str(path) else f" (the same file as {seen[key]})"
            raise DemsegError(f"point cloud {path} is given twice{same}: its points would count twice; name each "
                              "file once")
        seen[key] = path


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a path that is a file, a folder demseg rasterize did not make, or (without --overwrite) one it did."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DemsegError(f"output path exists and is not a folder: {out_dir}")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not _own_output(out_dir):
            raise DemsegError(f"output folder exists and holds more than an earlier demseg rasterize output: "
                              f"{out_dir} (demseg never replaces such a folder, even with --overwrite: give a new "
                              "folder)")
        if not overwrite:
            raise DemsegError(f"output folder exists: {out_dir} (pass --overwrite to replace it)")


def _own_output(out_dir: Path) -> bool:
    """True when ``out_dir`` holds an earlier rasterize output and nothing else (its manifest lists every file)."""
    if made_by(out_dir) not in (None, "rasterize"):
        return False
    try:
        listed = set(json.loads((out_dir / MANIFEST).read_text()).get("outputs", []))
    except (OSError, ValueError, AttributeError):
        return False
    present = {entry.name for entry in out_dir.iterdir() if not entry.name.startswith(".demseg")}
    return bool(listed) and present <= listed | {MANIFEST}


def _output_grid(files: list[PointFile], crs, config: RasterizeConfig) -> GridSpec:
    if config.like is None:
        return union_grid(files, crs, config.pixel_size_m)
    grid = like_grid(config.like, crs)
    if "pixel_size_m" in config.model_fields_set and abs(grid.pixel_size_m - config.pixel_size_m) > 1e-9:
        raise DemsegError(f"--pixel-size-m {config.pixel_size_m} contradicts the --like raster's pixel size "
                          f"{grid.pixel_size_m:g}: {config.like}; leave it out to use the raster's")
    return grid


def _stream(files: list[PointFile], acc: CellAccumulator, chunk_points: int, progress: bool) -> None:
    total = sum(f.point_count for f in files)
    with tqdm(total=total, unit="pt", unit_scale=True, desc="rasterize", disable=not progress) as bar:
        for point_file in files:
            for chunk in iter_points(point_file, chunk_points):
                acc.add(chunk)
                bar.update(len(chunk))


def _check_tally(acc: CellAccumulator, config: RasterizeConfig) -> None:
    tally = acc.tally
    if tally.used == 0:
        where = f"the --like grid {config.like}" if config.like else "the grid"
        raise DemsegError(f"no usable point: {tally.read} read, {tally.dropped} of dropped classes "
                          f"{config.drop_classes} or withheld, {tally.off_grid} outside {where}")
    if tally.off_grid and config.like is None:
        warnings.warn(f"{tally.off_grid} point(s) lie outside their files' header bounds and were skipped",
                      stacklevel=3)
    for task, code in config.classes.items():
        if tally.per_class[code] == 0:
            warnings.warn(f"no point has ASPRS class {code} ({task}); {task} is left out of the labels",
                          stacklevel=3)


def _choose_channels(acc: CellAccumulator, config: RasterizeConfig) -> tuple[list[str], dict[str, str]]:
    """The channels to write, and those skipped with the reason (each warned about in one line)."""
    if acc.channels is None:
        return [], {}
    channels, skipped = choose_channels(acc.channels, explicit=config.channels_named)
    for channel, reason in skipped.items():
        warnings.warn(f"channel {channel!r} is not written: {reason}", stacklevel=3)
    return channels, skipped


def _write_rasters(folder: Path, acc: CellAccumulator, config: RasterizeConfig, channels: list[str]) -> dict:
    """Compute and write each raster in turn (few full-grid arrays alive at once); returns their cell counts."""
    def write(name: str, array: np.ndarray, nodata: float | None = NODATA) -> None:
        if array.dtype.kind == "f":
            array[np.isnan(array)] = NODATA
        write_geotiff(folder / f"{name}.tif", array, acc.grid, nodata=nodata)

    dsm = surface_model(acc, config.fill_radius_m)
    dsm_valid = np.isfinite(dsm)
    labels = label_raster(acc, [DEFAULT_CLASSES[task] for task in config.classes], dsm_valid)
    codes, counts = np.unique(labels, return_counts=True)
    write("labels", labels, float(LABEL_NODATA))
    del labels
    write("point_count", acc.shaped(acc.count), None)
    dtm = terrain_model(acc, dsm_valid)
    write("ndsm", height_model(dsm, dtm))
    with_points = acc.shaped(acc.count) > 0
    cells = {"total": int(dsm.size), "with_points": int(with_points.sum()), "dsm_valid": int(dsm_valid.sum()),
             "dsm_filled": int((dsm_valid & ~with_points).sum()), "dtm_valid": int(np.isfinite(dtm).sum()),
             "with_ground_points": int((acc.ground_count > 0).sum())}
    write("dtm", dtm)
    write("dsm", dsm)
    del dsm, dtm
    channel_stats = {}
    for channel in channels:
        values, measured = channel_raster(acc.channels, channel, acc.grid, dsm_valid, config.fill_radius_m)
        valid = np.isfinite(values)
        channel_stats[channel] = {
            "file": f"{channel}.tif", "valid_cells": int(valid.sum()), "measured_cells": measured,
            "filled_cells": int(valid.sum()) - measured,
            "mean": round(float(values[valid].mean()), 4) if valid.any() else None}
        write(channel, values)
    return {"cells": cells, "labels_present": {int(c) for c in codes}, "channels": channel_stats,
            "cells_per_label": {str(int(c)): int(n) for c, n in zip(codes, counts, strict=True)}}


def _write_spec(path: Path, out_dir: Path, present: set[int], config: RasterizeConfig,
                channels: list[str]) -> dict[str, int]:
    """Write a one-scene ``dataset.yaml``; returns the task -> label code of the classes the labels hold."""
    tasks = {task: DEFAULT_CLASSES[task] for task in config.classes if DEFAULT_CLASSES[task] in present}
    name = out_dir.resolve().name or "scene"
    scene: dict = {"id": name, "dem": "dsm.tif", "dtm": "dtm.tif"}
    if channels:
        scene["channels"] = {channel: f"{channel}.tif" for channel in channels}
    if tasks:
        scene["labels"] = {"raster": "labels.tif", "classes": tasks, "ignore": LABEL_NODATA}
    spec = {"name": name, "scenes": [scene],
            "description": "rasterised from point clouds by demseg rasterize (see manifest.json)"}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return tasks


def _manifest(files: list[PointFile], config: RasterizeConfig, grid: GridSpec, vertical_crs: str | None,
              acc: CellAccumulator, summary: dict, tasks: dict[str, int], skipped: dict[str, str]) -> dict:
    traits = acc.channels.files if acc.channels is not None else {}
    return {
        **provenance("rasterize", config.model_dump(mode="json")), "demseg_version": __version__,
        "inputs": [{"path": str(f.path.resolve()), "sha256": file_sha256(f.path), "points": f.point_count,
                    "las_version": f.version, "point_format": f.point_format,
                    "declared_crs": f.declared_crs.to_string() if f.declared_crs is not None else None,
                    **({"carries": traits[f.path].as_dict()} if f.path in traits else {})}
                   for f in files],
        "crs": grid.crs.to_string(), "vertical_crs": vertical_crs,
        "grid": {"width": grid.width, "height": grid.height, "pixel_size_m": grid.pixel_size_m,
                 "transform": list(grid.transform)[:6], "bounds": list(grid.bounds)},
        "points_bounds": [min(f.mins[0] for f in files), min(f.mins[1] for f in files),
                          max(f.maxs[0] for f in files), max(f.maxs[1] for f in files)],
        "points": acc.tally.as_dict(),
        "cells": summary["cells"],
        "labels": {"classes": tasks, "ignore": LABEL_NODATA, "cells_per_code": summary["cells_per_label"]},
        "channels": {"requested": config.channels, "named": config.channels_named,
                     "written": summary["channels"], "skipped": skipped},
        "outputs": [f"{name}.tif" for name in ("dsm", "dtm", "ndsm", "labels", "point_count", *summary["channels"])]
                   + ["dataset.yaml", MANIFEST],
    }


