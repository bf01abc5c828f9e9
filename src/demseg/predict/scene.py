"""Predict one whole scene: mask and probability COGs, vectors, a preview and a done record.

Every output is written under a temporary name and renamed only when all of them are complete,
so a failed or killed run leaves no file that looks finished (temporary names start with a dot
and contain ``.partial``; the next run of the scene removes those a hard kill left behind).
``<stem>_done.json`` is written last. A lock file (``.<stem>.lock``, held with ``flock``) stops
two processes from predicting the same scene into the same folder at once.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import rasterio
import torch
from rasterio.errors import RasterioError
from torch import nn

from demseg.errors import DemsegError
from demseg.io.atomic import atomic_path, safe_name
from demseg.io.folders import folder_lock, make_dir, os_error_message
from demseg.io.styles import default_styles
from demseg.io.vector import write_gpkg
from demseg.models.encoders import resolve_model_dir
from demseg.predict.config import PredictConfig
from demseg.predict.onnx import ONNX_FILE, RUN_FILES, load_onnx_run, run_weights_digest
from demseg.predict.outputs import output_paths, write_cog, write_done, write_preview
from demseg.predict.sliding import DemInput, StageTimer, as_input, predict_rasters, window_stride
from demseg.predict.vectorise import vectorise_mask
from demseg.runs.config import TrainConfig
from demseg.runs.folder import MAX_PIXEL_SIZE_MISMATCH, check_resolution, load_run

logger = logging.getLogger("demseg.predict")



@dataclass
class LoadedRun:
    """A trained model ready for inference, with what identifies it in the done records."""

    model: nn.Module
    config: TrainConfig
    source: str  # the run folder, or "in-memory model"
    digest: str  # SHA-256 of the run's config and weights
    training_crs: list[str] = field(default_factory=list)


_LOADED: dict[tuple, LoadedRun] = {}  # per process: a worker loads each run once


GDAL_CACHE_MB = 256  # MB; GDAL reads values below 100000 as megabytes


def _model_digest(model: nn.Module, config: TrainConfig) -> str:
    digest = hashlib.sha256(config.model_dump_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _training_crs(run_dir: Path) -> list[str]:
    """The CRSs of the run's tiles (from its tile index), or [] if the run does not record them."""
    try:
        with open(run_dir / "tiles.csv", newline="") as handle:
            return sorted({row["crs"] for row in csv.DictReader(handle) if row.get("crs")})
    except (OSError, KeyError, csv.Error):
        return []


def resolve_run(run, engine: str = "torch") -> LoadedRun:
    """A :class:`LoadedRun` from a run folder, a shipped model's name, a (model, config) pair or a LoadedRun.

    With ``engine="onnx"`` a run folder's network is its exported ``model.onnx`` in onnxruntime.
    """
    if isinstance(run, LoadedRun):
        return run
    if isinstance(run, tuple) and len(run) == 2 and isinstance(run[1], TrainConfig):
        model, config = run
        model.eval()
        return LoadedRun(model, config, "in-memory model", _model_digest(model, config))
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(f"run must be a run folder or a (model, TrainConfig) pair, got {type(run).__name__}")
    run_dir = resolve_model_dir(run).resolve()
    stamps = tuple((run_dir / name).stat().st_mtime_ns if (run_dir / name).exists() else 0
                   for name in (*RUN_FILES, ONNX_FILE))
    key = (str(run_dir), stamps, engine)
    if key not in _LOADED:
        model, config = load_onnx_run(run_dir) if engine == "onnx" else load_run(run_dir)
        _LOADED.clear()
        _LOADED[key] = LoadedRun(model, config, str(run_dir), run_weights_digest(run_dir), _training_crs(run_dir))
    return _LOADED[key]


def remove_stale_partials(paths: dict[str, Path]) -> None:
    """Delete the temporary files a killed earlier run of this scene left (hidden ``.partial`` names)."""
    out_dir = next(iter(paths.values())).parent
    stem = paths["done"].name[:-len("_done.json")]
    stale = [out_dir.glob(f".{safe_name(path.stem)}.*.partial*") for path in paths.values()]
    stale.append(out_dir.glob(f".{safe_name(stem)}.scratch.*.partial"))
    for leftover in (item for found in stale for item in found):
        with contextlib.suppress(OSError):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()


def scene_settings(loaded: LoadedRun, source: DemInput, config: PredictConfig) -> dict:
    """What decides a scene's outputs: a done record made with other settings does not count."""
    def stamp(path: Path | None) -> dict | None:
        if path is None:
            return None
        stat = Path(path).stat()
        return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    return {"run": loaded.digest, "dem": stamp(source.dem), "dtm": stamp(source.dtm), "band": source.band,
            "crs": source.crs, "nodata": source.nodata,
            "channels": {name: stamp(path) for name, path in source.channels}, **config.output_settings()}


def _write_outputs(loaded: LoadedRun, source: DemInput, grid, paths: dict[str, Path], config: PredictConfig,
                   progress: bool, timer: StageTimer) -> tuple[int, dict]:
    """Write mask, probability, vectors and preview under temporary names; rename them all only at the end."""
    run_config = loaded.config
    tags = {"demseg_task": run_config.task, "demseg_run": loaded.source, "demseg_run_sha256": loaded.digest,
            "demseg_recipe": run_config.recipe}
    with contextlib.ExitStack() as stack:
        temporary = {name: stack.enter_context(atomic_path(path)) for name, path in paths.items() if name != "done"}
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=f".{safe_name(source.name)}.scratch.", suffix=".partial", dir=paths["done"].parent)))
        raw_mask, raw_prob = scratch / "mask.tif", scratch / "prob.tif"
        valid_pixels = predict_rasters(loaded.model, run_config, source, grid, raw_mask, raw_prob, config.overlap,
                                       config.tta, config.batch_size, progress, timer, tags)
        if valid_pixels == 0:
            raise DemsegError(f"the DEM has no valid elevation (all nodata): {source.dem}")
        with timer("cog"):
            for name, raw, resampling in (("mask", raw_mask, "nearest"), ("prob", raw_prob, "average")):
                try:
                    write_cog(raw, temporary[name], resampling)
                except (OSError, RasterioError) as exc:
                    raise DemsegError(os_error_message(exc, str(paths[name]))) from exc
        layers = vectorise_mask(temporary["mask"], run_config.task, temporary["prob"], source, config, timer)
        with timer("vectors"):
            write_gpkg(temporary["vectors"], layers, grid.crs, styles=default_styles(layers))
        with timer("preview"):
            write_preview(temporary["preview"], source, temporary["mask"], run_config.task)
    return valid_pixels, layers


def check_dtm_has_ground(source: DemInput, block_pixels: int = 1 << 22) -> None:
    """Refuse a DTM without one valid pixel: predict would fall back to a local ground estimate without a word.

    Reads row blocks of about ``block_pixels`` and stops at the first that holds ground.
    """
    from rasterio.windows import Window

    from demseg.io.raster import open_grid, read_dem

    crs = source.crs or source.native_grid().crs
    grid = open_grid(source.dtm, crs, "DTM")
    rows = max(1, block_pixels // max(1, grid.width))
    for row_off in range(0, grid.height, rows):
        window = Window(0, row_off, grid.width, min(rows, grid.height - row_off))
        if read_dem(source.dtm, crs=crs, window=window, what="DTM").valid_mask.any():
            return
    raise DemsegError(f"the DTM has no valid elevation (all nodata): {source.dtm}; give a DTM with ground "
                      "heights, or leave it out (heights above ground then come from a local ground estimate)")


def at_run_resolution(source: DemInput, run_config: TrainConfig, config: PredictConfig) -> DemInput:
    """``source`` read at the run's pixel size when its own is more than 10 % off and ``config.resample``."""
    trained = run_config.pixel_size_m
    if not config.resample or trained is None or source.pixel_size_m is not None:
        return source
    own = source.native_grid().pixel_size_m
    if abs(own - trained) <= MAX_PIXEL_SIZE_MISMATCH * trained:
        return source
    logger.info("%s has %g m pixels, the run %g m: resampling it as it is read", source.dem, own, trained)
    return replace(source, pixel_size_m=trained)


def predict_scene(run, dem_path: str | os.PathLike | DemInput, out_dir: str | os.PathLike,
                  config: PredictConfig | None = None, dtm_path: str | os.PathLike | None = None,
                  progress: bool = True, timer: StageTimer | None = None) -> dict[str, Path]:
    """Segment a whole DEM with a trained run; returns the paths of its outputs in ``out_dir``.

    ``run`` is a run folder, a (model, TrainConfig) pair or a :class:`LoadedRun`. Outputs, all on
    the DEM's grid and CRS: ``<stem>_mask.tif`` (COG, uint8: 1 target, 0 other, 255 nodata),
    ``<stem>_prob.tif`` (COG, uint8 target probability in percent 0-100, 255 nodata),
    ``<stem>_vectors.gpkg``, ``<stem>_preview.png`` and ``<stem>_done.json`` (written last).
    """
    config = config or PredictConfig()
    loaded = resolve_run(run, config.engine)
    source = at_run_resolution(as_input(dem_path, dtm_path), loaded.config, config)
    window_stride(loaded.config.tile_size_px, config.overlap)
    grid = source.grid()
    if source.dtm is not None:
        check_dtm_has_ground(source)
    mismatch = check_resolution(grid.pixel_size_m, loaded.config, config.allow_resolution_mismatch)
    crs_text = grid.crs.to_string()
    crs_differs = bool(loaded.training_crs) and crs_text not in loaded.training_crs
    if crs_differs:
        logger.info("%s is in %s, the run was trained on %s (models are CRS-agnostic)", source.dem, crs_text,
                    ", ".join(loaded.training_crs))
    out_dir = make_dir(out_dir)
    paths = output_paths(out_dir, source.name)
    timer = timer or StageTimer()
    with folder_lock(out_dir, safe_name(source.name)):
        remove_stale_partials(paths)
        paths["done"].unlink(missing_ok=True)  # until the new outputs are complete
        # GDAL's block cache defaults to 5 % of RAM and would grow with the scene: cap it
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            valid_pixels, layers = _write_outputs(loaded, source, grid, paths, config, progress, timer)
        record = {"task": loaded.config.task, "run": loaded.source, "crs": crs_text,
                  "training_crs": loaded.training_crs, "crs_differs_from_training": crs_differs,
                  "pixel_size_m": grid.pixel_size_m, "training_pixel_size_m": loaded.config.pixel_size_m,
                  "resampled_from_m": source.native_grid().pixel_size_m if source.pixel_size_m else None,
                  "resolution_warning": mismatch, "width_px": grid.width, "height_px": grid.height,
                  "area_km2": grid.width * grid.height * grid.pixel_size_m ** 2 / 1e6,
                  "valid_pixels": valid_pixels, "features": {name: len(layer) for name, layer in layers.items()},
                  "encoding": {"mask": "uint8: 1 target, 0 other, 255 nodata",
                               "prob": "uint8: target probability in percent (0-100), 255 nodata"},
                  "seconds": dict(timer.seconds)}
        write_done(paths, scene_settings(loaded, source, config), record)
    return paths


def done_record(paths: dict[str, Path]) -> dict:
    """The parsed ``_done.json`` of a scene."""
    return json.loads(paths["done"].read_text())
