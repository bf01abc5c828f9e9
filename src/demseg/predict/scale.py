"""Predict many scenes: in this process, on a local Dask cluster, or on an existing one.

Scenes are the unit of work (a worker predicts whole scenes; large scenes are not split across
workers). Each worker process loads the model once: a run folder is loaded on first use and
kept, an in-memory model is broadcast to every worker once. A rerun skips scenes whose
``_done.json`` says their outputs are complete and were made with the same run and settings.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from demseg.cluster import dask_client, require_dask, worker_threads
from demseg.errors import DemsegError
from demseg.io.folders import make_dir
from demseg.predict.config import PredictConfig
from demseg.predict.outputs import is_done, output_paths
from demseg.predict.scene import (
    LoadedRun,
    at_run_resolution,
    done_record,
    predict_scene,
    resolve_run,
    scene_settings,
)
from demseg.predict.sliding import DemInput, window_stride
from demseg.runs.folder import check_resolution

SPEC_SUFFIXES = (".yaml", ".yml")


def scene_inputs(inputs: Iterable[str | os.PathLike | DemInput], dtm_path: str | os.PathLike | None = None,
                 band: int | None = None, crs: str | None = None) -> list[DemInput]:
    """The scenes named by DEM paths, dataset specs (each scene's dem, dtm, band, crs, nodata) or DemInputs.

    ``dtm_path`` goes with a single DEM path; ``band`` and ``crs`` apply to DEM paths (specs
    carry their own). Outputs are named by the DEM's file stem (a spec's scene id); stems shared
    by several inputs get their folder name in front (``s000/dem.tif`` -> ``s000_dem``).
    """
    from demseg.data.spec import load_spec
    from demseg.io.raster import parse_crs

    parse_crs(crs)  # a bad --crs is refused even where only specs (which carry their own) are given
    inputs = list(inputs)
    is_spec = [not isinstance(i, DemInput) and (Path(i).is_dir() or Path(i).suffix.lower() in SPEC_SUFFIXES)
               for i in inputs]
    if dtm_path is not None and (len(inputs) != 1 or is_spec[0] or isinstance(inputs[0], DemInput)):
        raise DemsegError("a DTM goes with exactly one DEM file; list the DTMs of several scenes in a dataset spec")
    sources: list[DemInput] = []
    for item, spec_file in zip(inputs, is_spec, strict=True):
        if isinstance(item, DemInput):
            sources.append(item)
        elif spec_file:
            spec = load_spec(item)
            sources += [DemInput(spec.path(s.dem), spec.path(s.dtm) if s.dtm else None, s.band, s.crs, s.nodata,
                                 s.id, tuple((name, spec.path(path)) for name, path in s.channels.items()))
                        for s in spec.scenes]
        else:
            sources.append(DemInput(Path(item), Path(dtm_path) if dtm_path is not None else None, band, crs))
    if not sources:
        raise DemsegError("no scene to predict")
    counts = Counter(source.name for source in sources)
    sources = [replace(s, stem=f"{Path(s.dem).resolve().parent.name}_{s.name}") if counts[s.name] > 1 else s
               for s in sources]
    clashes = sorted(name for name, n in Counter(s.name for s in sources).items() if n > 1)
    if clashes:
        raise DemsegError(f"several inputs would write the same outputs: {', '.join(clashes)} "
                          "(rename the DEMs or predict them into different folders)")
    return sources


def _scene_job(run, source: DemInput, out_dir: str, config: PredictConfig) -> tuple[str, dict[str, str], float]:
    """One scene on a Dask worker: (stem, output paths, area in km2)."""
    worker_threads()
    paths = predict_scene(run, source, out_dir, config, progress=False)
    return source.name, {name: str(path) for name, path in paths.items()}, done_record(paths)["area_km2"]


def predict_many(run, inputs: Iterable[str | os.PathLike | DemInput], out_dir: str | os.PathLike,
                 config: PredictConfig | None = None, dtm_path: str | os.PathLike | None = None,
                 band: int | None = None, crs: str | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict[str, dict[str, Path]]:
    """Predict every scene of ``inputs`` into ``out_dir``; returns each scene's output paths by stem.

    ``config.workers=1`` without ``config.scheduler`` runs here, one scene after another;
    ``workers=N`` starts a local Dask cluster of N processes with one thread each;
    ``scheduler="tcp://host:8786"`` uses an existing cluster. Complete scenes are skipped unless
    ``overwrite``. The options and every input (grid, pixel size) are checked before any work
    starts; a scene that fails later does not stop the others, and the failures are raised
    together at the end. ``dtm_path``, ``band`` and ``crs``: see :func:`scene_inputs`. A script
    that starts a local cluster needs the usual ``if __name__ == "__main__":`` guard.
    """
    config = config or PredictConfig()
    sources = scene_inputs(inputs, dtm_path, band, crs)
    loaded = resolve_run(run, config.engine)
    window_stride(loaded.config.tile_size_px, config.overlap)
    sources = [at_run_resolution(source, loaded.config, config) for source in sources]
    for source in sources:
        check_resolution(source.grid().pixel_size_m, loaded.config, config.allow_resolution_mismatch)
    if config.scheduler or config.workers > 1:
        require_dask()
    out_dir = make_dir(out_dir)  # once every input is known good: a refused input leaves no folder
    results: dict[str, dict[str, Path]] = {}
    todo = []
    for source in sources:
        paths = output_paths(out_dir, source.name)
        if not overwrite and is_done(paths, scene_settings(loaded, source, config)):
            results[source.name] = paths
        else:
            todo.append(source)
    if len(results):
        logging.getLogger("demseg.predict").info("%d scene(s) already complete, skipped", len(results))
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=len(todo), desc="predict", unit="scene", disable=not progress or not todo)
    started, area_km2 = time.perf_counter(), 0.0

    def finished(stem: str, paths: dict[str, Path], area: float) -> None:
        nonlocal area_km2
        results[stem] = paths
        area_km2 += area
        hours = (time.perf_counter() - started) / 3600
        bar.update(1)
        bar.set_postfix_str(f"{area_km2 / max(hours, 1e-9):.2f} km2/h")

    try:
        if config.scheduler is None and config.workers == 1:
            for source in todo:
                try:
                    paths = predict_scene(loaded, source, out_dir, config, progress=progress)
                except DemsegError as exc:
                    failures.append((source.name, str(exc)))
                    continue
                finished(source.name, paths, done_record(paths)["area_km2"])
        elif todo:
            _predict_on_dask(run, loaded, todo, out_dir, config, finished, failures)
    finally:
        bar.close()
    if failures:
        stem, message = failures[0]
        raise DemsegError(f"{len(failures)} of {len(sources)} scene(s) failed; {stem}: {message}")
    return {source.name: results[source.name] for source in sources}


def _predict_on_dask(run, loaded: LoadedRun, todo: list[DemInput], out_dir: Path, config: PredictConfig,
                     finished, failures: list) -> None:
    from dask.distributed import as_completed

    client, cluster = dask_client(config.workers, config.scheduler, config.scheduler_timeout_s)
    try:
        # a run folder is loaded by each worker (once); an in-memory model is sent to each worker once
        if isinstance(run, (str, os.PathLike)):
            run_arg = str(Path(run).resolve())
        else:
            run_arg = client.scatter(loaded, broadcast=True)
        futures = [client.submit(_scene_job, run_arg, source, str(out_dir), config, pure=False,
                                 key=f"predict-{source.name}-{os.getpid()}-{time.time_ns()}") for source in todo]
        names = {future.key: source.name for future, source in zip(futures, todo, strict=True)}
        for future in as_completed(futures):
            try:
                stem, paths, area = future.result()
            except DemsegError as exc:
                failures.append((names[future.key], str(exc)))
                continue
            finished(stem, {name: Path(path) for name, path in paths.items()}, area)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
