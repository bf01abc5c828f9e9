"""Running the label-budget protocol (planned in :mod:`demseg.train.plan`), with shared feature caches.

Every run of an experiment is scored on the one validation region of the spec
(:func:`demseg.data.dataset.load_split`). The backbone runs once per (tile, view) for the union
of all training subsets of a task, and once per validation tile; every head then trains from
that cache. Finished runs are recorded in ``EXP/runs/<key>/metrics.json`` and not redone when an
interrupted experiment is started again.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from demseg.data.arrays import TileArrays, augmented_rows, tile_arrays
from demseg.data.dataset import SplitData, load_split
from demseg.data.normalise import hillshade
from demseg.data.spec import load_spec
from demseg.data.tiles import Tile, eligible_tiles, training_subset
from demseg.errors import DemsegError
from demseg.evaluate.metrics import SegmentationScorer
from demseg.evaluate.plots import plot_curves, plot_noise, write_preview
from demseg.evaluate.report import collect_results
from demseg.evaluate.scenes import SceneWindows, scene_windows, score_windows
from demseg.evaluate.tables import write_results_csv, write_summary
from demseg.io.atomic import write_text_atomic
from demseg.io.folders import out_dir
from demseg.models.features import FeatureCache, encode_views
from demseg.models.inference import predict_cached, predict_images
from demseg.models.registry import build_encoder, uses_backbone
from demseg.runs.config import TrainConfig
from demseg.runs.manifest import spec_file_hashes, write_manifest
from demseg.train.loop import CACHE_DTYPES
from demseg.train.plan import Arm, ExperimentConfig, arms_of, plan_runs, run_key  # noqa: F401 (re-exported)
from demseg.train.run import (
    check_finetune_fits,
    mix_arrays,
    resolve_init,
    run_inputs,
    train_model,
    working_pixel_size,
)


def _finished_runs(folder: Path) -> bool:
    return any(folder.glob("runs/*/metrics.json"))

def _same_experiment(saved: Path, config: ExperimentConfig) -> bool:
    """Whether a saved experiment.json is ``config``; fields added to the configs since take their defaults."""
    try:
        return ExperimentConfig.model_validate_json(saved.read_text()) == config
    except ValueError:  # unreadable, or written by a version whose values no longer validate
        return False

def _open_experiment(out: Path, config: ExperimentConfig, overwrite: bool, inputs: list):
    """The experiment folder, locked: the same experiment resumes; another one needs ``overwrite``.

    A folder that holds no finished run (e.g. a failed earlier command) is reused.
    """
    saved = out / "experiment.json"
    same = saved.exists() and _same_experiment(saved, config)
    if out.is_dir() and not same and _finished_runs(out) and not overwrite:
        raise DemsegError(f"output folder exists with a different experiment: {out} "
                          "(pass --overwrite to replace it, or rerun the same command to resume)")
    return out_dir(out, overwrite=overwrite, finished=_finished_runs, keep=same, command="experiment", inputs=inputs)

def run_experiment(spec_path: str | Path, config: ExperimentConfig, out: str | Path, overwrite: bool = False,
                   progress: bool = True, scheduler: str | None = None, scheduler_timeout_s: float = 30.0
                   ) -> list[dict]:
    """Run (or resume) the protocol and write results.csv, summary.md, curves.png, previews, manifest.

    In this process by default, the runs of each task and model sharing data and feature caches.
    With ``scheduler`` (the address of an existing Dask scheduler) every run is a task of that
    cluster: its workers read the data and write ``runs/<key>/metrics.json`` themselves (the
    spec, the output folder and the data must be on a file system they share), so the grid
    resumes from what they wrote, and a run that fails does not stop the others.
    """
    out = Path(out)
    check_finetune_fits(config.base.finetune, config.models)
    # the inputs are checked before the folder is made: bad input leaves no experiment folder behind
    data = load_split(spec_path, config.tasks, config.base.split_config(), progress,
                      pixel_size_m=working_pixel_size(config.base))
    base = config.base.model_copy(update={"pixel_size_m": data.pixel_size_m()})
    plan = plan_runs(data, config)
    _refuse_shared_score_specs(config.score_on, data)
    inputs = [*run_inputs(data.spec, spec_path, config.base), *config.score_on]
    if scheduler:
        from demseg.cluster import require_dask

        require_dask()
    with _open_experiment(out, config, overwrite, inputs):
        write_text_atomic(out / "experiment.json", config.model_dump_json(indent=2))
        todo = [p for p in plan if not (out / "runs" / p["key"] / "metrics.json").exists()]
        if progress and len(todo) < len(plan):
            print(f"resuming: {len(plan) - len(todo)} of {len(plan)} runs already done")
        started = time.perf_counter()
        with tqdm(total=len(plan), initial=len(plan) - len(todo), desc="experiment", unit="run",
                  disable=not progress, position=0) as bar:
            if scheduler:
                _run_on_dask(spec_path, config, todo, out, scheduler, scheduler_timeout_s, bar)
            else:
                score_sets = {task: _score_sets(config, base, task, progress) for task in config.tasks}
                for task in config.tasks:
                    for arm in arms_of(config):
                        runs = [p for p in todo if p["task"] == task and p["arm"] == arm]
                        if runs:
                            _run_group(data, config, base, task, arm, runs, out, progress, score_sets[task])
                            bar.update(len(runs))
        rows = collect_results(out)
        _write_outputs(out, rows, config, data, spec_path, time.perf_counter() - started)
    return rows

def _absolute(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with its file paths made absolute, for workers that may run in another folder."""
    def resolved(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    base = config.base.model_copy(update={"mix": resolved(config.base.mix), "init": resolved(config.base.init)})
    return config.model_copy(update={"base": base, "score_on": [resolved(s) for s in config.score_on],
                                     "backbone_weights": [resolved(w) for w in config.backbone_weights]})

def _remote_run(spec_path: str, config: ExperimentConfig, item: dict, out: str) -> str:
    """One run of the grid on a Dask worker: it loads the split and writes runs/<key>/metrics.json."""
    from demseg.cluster import worker_threads

    worker_threads()
    data = load_split(spec_path, config.tasks, config.base.split_config(), False,
                      pixel_size_m=working_pixel_size(config.base))
    base = config.base.model_copy(update={"pixel_size_m": data.pixel_size_m()})
    task = item["task"]
    _run_group(data, config, base, task, item["arm"], [item], Path(out), False,
               _score_sets(config, base, task, False))
    return item["key"]

def _run_on_dask(spec_path, config: ExperimentConfig, todo: list[dict], out: Path, scheduler: str,
                 timeout_s: float, bar) -> None:
    from dask.distributed import as_completed

    from demseg.cluster import dask_client

    client, _ = dask_client(1, scheduler, timeout_s)
    failures: list[tuple[str, str]] = []
    try:
        remote_config, spec, folder = _absolute(config), str(Path(spec_path).resolve()), str(out.resolve())
        futures = [client.submit(_remote_run, spec, remote_config, item, folder, pure=False,
                                 key=f"experiment-{item['key']}-{time.time_ns()}") for item in todo]
        keys = {future.key: item["key"] for future, item in zip(futures, todo, strict=True)}
        for future in as_completed(futures):
            try:
                future.result()
            except DemsegError as exc:
                failures.append((keys[future.key], str(exc)))
            bar.update(1)
    finally:
        client.close()
    if failures:
        key, message = failures[0]
        raise DemsegError(f"{len(failures)} of {len(todo)} run(s) failed on the cluster; {key}: {message} "
                          "(rerun the same command to retry them)")

def _refuse_shared_score_specs(score_on: list[str], data: SplitData) -> None:
    """Other cities must be data the runs never saw: no --score-on spec may share a file with the spec."""
    if not score_on:
        return
    trained = set(spec_file_hashes(data.spec).values())
    for spec in score_on:
        if trained & set(spec_file_hashes(load_spec(Path(spec))).values()):
            raise DemsegError(f"--score-on {spec} shares files with the experiment's own spec: other cities must be "
                              "data the runs never saw (the spec's own validation tiles are scored anyway)")

def _score_sets(config: ExperimentConfig, base: TrainConfig, task: str, progress: bool) -> list[SceneWindows]:
    sets = [scene_windows(spec, task, base, progress) for spec in config.score_on]
    names = [s.name for s in sets]
    if len(set(names)) != len(names) or {"validation", "pooled"} & set(names):
        raise DemsegError(f"--score-on specs need distinct names other than 'validation' and 'pooled', got {names}")
    return sets

@dataclass
class _Group:
    """What the runs of one task and one arm share: arrays, the validation tiles, caches, the backbone."""

    config: TrainConfig
    union: TileArrays
    position: dict[str, int]
    val_tiles: list[Tile]
    val: TileArrays
    backbone: object | None = None
    caches: tuple[FeatureCache, FeatureCache] | None = None
    cache_seconds: float = 0.0

def _prepare_group(data: SplitData, base: TrainConfig, task: str, arm: Arm, subsets: dict, progress: bool) -> _Group:
    union_tiles = sorted({t.id: t for tiles in subsets.values() for t in tiles}.values(), key=lambda t: t.id)
    val_tiles = eligible_tiles(data.tiles, "val", task, base.min_labelled_fraction)
    if not val_tiles:
        raise DemsegError(f"the split left no validation tile labelled for {task}")
    run_base = base.model_copy(update={"task": task, "model": arm.model, "backbone_weights":
                                       arm.weights if arm.weights != "-" else base.backbone_weights,
                                       "crop_px": arm.crop_px})
    run_base = resolve_init(run_base)
    union = tile_arrays(data.scenes, union_tiles, task, base.recipe, base.coarsen, base.auxiliary,
                        base.label_noise, base.split_seed)
    mixed = mix_arrays(run_base, data, progress)
    group = _Group(run_base, union.with_mix(mixed) if mixed is not None else union,
                   {t.id: i for i, t in enumerate(union_tiles)}, val_tiles,
                   tile_arrays(data.scenes, val_tiles, task, base.recipe))
    if uses_backbone(arm.model):
        group.backbone = build_encoder(run_base)
    if group.backbone is not None and run_base.cached and group.backbone.cacheable:
        started = time.perf_counter()
        dtype = CACHE_DTYPES[run_base.cache_dtype]
        group.caches = (encode_views(group.backbone, group.union.inputs, group.union.targets, run_base.views,
                                     dtype=dtype, progress=progress, desc=f"caching {task} train features "
                                     f"({len(union_tiles)} tiles x {run_base.views} views)"),
                        encode_views(group.backbone, group.val.inputs, group.val.targets, 1, dtype=dtype,
                                     progress=progress, desc=f"caching {task} val features"))
        group.cache_seconds = time.perf_counter() - started
    return group

def _scores_elsewhere(model, config: TrainConfig, group: _Group, sets: list[SceneWindows]) -> dict[str, dict]:
    """The run's scores on every other dataset (every labelled pixel of its scenes)."""
    found = {}
    for windows in sets:
        if group.caches is not None:
            probabilities = predict_cached(model, windows.cache, windows.arrays.inputs, config.use_amp(),
                                           probabilities=True)
        else:
            probabilities = predict_images(model, windows.arrays.inputs, config.use_amp(), probabilities=True)
        found[windows.name] = score_windows(probabilities, windows, config.task, config.pixel_size_m)
    return found

def _run_group(data: SplitData, config: ExperimentConfig, base: TrainConfig, task: str, arm: Arm,
               runs: list[dict], out: Path, progress: bool, score_sets: list[SceneWindows]) -> None:
    """All runs of one task and one arm, sharing data arrays and feature caches."""
    subsets = {(r["train_tiles"], r["seed"]): training_subset(data.tiles, r["train_tiles"], r["seed"], task,
                                                              base.min_labelled_fraction) for r in runs}
    group = _prepare_group(data, base, task, arm, subsets, progress)
    for score_set in score_sets:
        score_set.cache = (encode_views(group.backbone, score_set.arrays.inputs, score_set.arrays.targets, 1,
                                        dtype=CACHE_DTYPES[base.cache_dtype], progress=progress,
                                        desc=f"caching {score_set.name} features") if group.caches else None)
    for r in runs:
        tiles = subsets[(r["train_tiles"], r["seed"])]
        rows = augmented_rows([group.position[t.id] for t in tiles], len(group.position), base.coarsen)
        rows += list(range(len(group.union) - group.union.mixed, len(group.union)))  # --mix rows, every run
        train = TileArrays([group.union.ids[i] for i in rows], group.union.inputs[rows], group.union.targets[rows],
                           group.union.mixed)
        run_config = group.config.model_copy(update={"train_tiles": r["train_tiles"], "seed": r["seed"]})
        caches = group.caches
        model, result = train_model(run_config, train, group.val, SegmentationScorer, backbone=group.backbone,
                                    train_cache=caches[0].select_tiles(rows) if caches else None,
                                    val_cache=caches[1] if caches else None, progress=progress)
        # the shared cache cost is charged to each run in proportion to its tiles, so runs stay comparable
        share = len(tiles) / max(1, len(group.position))
        run_dir = out / "runs" / r["key"]
        if r["seed"] == 0 and r["train_tiles"] == max(config.train_tiles) and config.preview_tiles:
            _preview(run_dir / "preview.png", model, run_config, caches, group, data, config.preview_tiles)
        record = {"task": task, "model": arm.model, "backbone_weights": arm.weights, "label": arm.label,
                  "finetune": arm.finetune, "init": arm.init or "-",
                  "coarsen": ",".join(map(str, arm.coarsen)) or "-", "mix": arm.mix or "-",
                  "label_noise": arm.label_noise,
                  "train_tiles": r["train_tiles"], "seed": r["seed"], "iters": run_config.iters,
                  "best_iter": result.best_iter, **result.best_scores,
                  "train_seconds": result.train_seconds + group.cache_seconds * share,
                  "val_tiles": len(group.val_tiles), "arch": run_config.arch if arm.weights != "-"
                  else f"unet{run_config.unet_width}", "recipe": run_config.recipe,
                  "train_tile_ids": [t.id for t in tiles], "val_tile_ids": [t.id for t in group.val_tiles],
                  "history": result.history,
                  "scored_on": _scores_elsewhere(model, run_config, group, score_sets)}
        write_text_atomic(run_dir / "metrics.json", json.dumps(record, indent=1, default=float))

def _preview(path: Path, model, config: TrainConfig, caches, group: _Group, data: SplitData, count: int) -> None:
    n = min(len(group.val_tiles), count)
    if caches is not None:
        predictions = predict_cached(model, caches[1], group.val.inputs, config.use_amp())[:n]
    else:
        predictions = predict_images(model, group.val.inputs[:n], config.use_amp())
    shades = []
    for tile in group.val_tiles[:n]:
        scene = data.scenes[tile.scene_id]
        window = tile.window()
        shades.append(hillshade(scene.dem.elevation[window], scene.valid_mask[window], scene.grid.pixel_size_m))
    label = config.model if not uses_backbone(config.model) else f"{config.model} [{config.backbone_weights}]"
    write_preview(path, shades, list(group.val.targets[:n]), predictions,
                  f"{config.task}: {label}, {config.train_tiles} tiles, seed {config.seed}")

def _write_outputs(out: Path, rows: list[dict], config: ExperimentConfig, data: SplitData,
                   spec_path: str | Path, seconds: float) -> None:
    write_results_csv(rows, out / "results.csv")
    val_counts = sorted({r["val_tiles"] for r in rows})
    notes = [f"spec: {spec_path}; {config.seeds} seed(s); {config.base.iters} iterations, batch "
             f"{config.base.batch_size}, validation every {config.base.val_every}"
             + (f", UNets on random {config.base.crop_px} px crops" if config.base.crop_px else "")
             + "; best validation IoU reported (as in the paper).",
             f"validation tiles: {', '.join(map(str, val_counts))} (one spatial region for every budget, model "
             "and seed, disjoint from training tiles).",
             f"backbone: ViT-{config.base.arch}, "
             f"{'frozen' if config.base.finetune == 'none' else 'fine-tuned: ' + config.base.finetune}, blocks "
             f"{config.base.tap_blocks}; recipe "
             f"{config.base.recipe}; weights: {', '.join(config.backbone_weights)}.",
             "95 % CI: Student t over seeds; cells with n=1 have no interval."]
    write_summary(rows, out / "summary.md", f"demseg experiment: {data.spec.name}", notes)
    plot_curves(rows, out / "curves.png")
    plot_noise(rows, out / "noise.png")
    write_manifest(out / "manifest.json", json.loads(config.model_dump_json()), data.spec,
                   {"split": {t.id: t.split for t in data.tiles}}, argv=sys.argv,
                   extra={"runs": len(rows), "seconds_this_invocation": round(seconds, 1)}, tool="experiment")
