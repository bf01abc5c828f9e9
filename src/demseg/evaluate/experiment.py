"""The label-budget protocol: tasks x models x training tiles x seeds, with shared feature caches.

The backbone runs once per (tile, view) for the union of all training subsets of a task, and
once per validation tile; every head then trains from that cache. Finished runs are recorded in
``EXP/runs/<key>/metrics.json`` and not redone when an interrupted experiment is started again.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from demseg.data.normalise import hillshade
from demseg.data.tiles import eligible_tiles, training_subset
from demseg.errors import DemsegError
from demseg.evaluate.report import plot_curves, write_preview, write_results_csv, write_summary
from demseg.io.atomic import write_text_atomic
from demseg.train.config import TrainConfig
from demseg.train.features import encode_views
from demseg.train.loop import CACHE_DTYPES, fit, predict_head, predict_images
from demseg.train.manifest import write_manifest
from demseg.train.run import PreparedData, build_model, pixel_size_of, prepare_data
from demseg.train.tiles import tile_arrays


class ExperimentConfig(BaseModel):
    """The protocol's grid and the training settings shared by its runs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    tasks: list[str] = Field(["buildings"], description="Tasks to run.")
    models: list[str] = Field(["mae-upernet", "unet"], description="Models to compare.")
    backbone_weights: list[str] = Field(["random"], description="Backbone weights to compare (mae-upernet).")
    train_tiles: list[int] = Field([10, 50, 200, 450], description="Label budgets (nested subsets).")
    seeds: int = Field(3, gt=0, description="Seeds per cell (seeds 0..N-1).")
    base: TrainConfig = Field(default_factory=TrainConfig, description="Settings shared by every run.")
    preview_tiles: int = Field(4, ge=0, description="Validation tiles shown in each preview PNG.")


def run_key(task: str, model: str, weights: str, train_tiles: int, seed: int) -> str:
    """A folder-safe id of one run of the protocol."""
    name = model if model == "unet" else f"{model}@{Path(weights).stem if weights not in ('random',) else weights}"
    return f"{task}__{name.replace('/', '_')}__{train_tiles:04d}tiles__seed{seed}"


def _check_out(out: Path, config: ExperimentConfig, overwrite: bool) -> None:
    saved = out / "experiment.json"
    if out.exists() and any(out.iterdir()):
        if saved.exists() and json.loads(saved.read_text()) == json.loads(config.model_dump_json()):
            return  # same experiment: resume
        if not overwrite:
            raise DemsegError(f"output folder exists with a different experiment: {out} "
                              "(pass --overwrite to replace it, or rerun the same command to resume)")
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, config.model_dump_json(indent=2))


def run_experiment(spec_path: str | Path, config: ExperimentConfig, out: str | Path, overwrite: bool = False,
                   progress: bool = True) -> list[dict]:
    """Run (or resume) the protocol and write results.csv, summary.md, curves.png, previews, manifest."""
    out = Path(out)
    if config.base.iters <= 0:
        raise DemsegError("--iters must be positive")
    _check_out(out, config, overwrite)
    base = config.base
    data = prepare_data(spec_path, config.tasks, base.tile_size_px, base.val_tiles, max(config.train_tiles),
                        base.split_seed, base.min_valid_fraction, progress)
    base = base.model_copy(update={"pixel_size_m": pixel_size_of(data)})
    plan = _plan(data, config)
    todo = [p for p in plan if not (out / "runs" / p["key"] / "metrics.json").exists()]
    if progress and len(todo) < len(plan):
        print(f"resuming: {len(plan) - len(todo)} of {len(plan)} runs already done")
    started = time.perf_counter()
    with tqdm(total=len(plan), initial=len(plan) - len(todo), desc="experiment", unit="run",
              disable=not progress, position=0) as bar:
        for task in config.tasks:
            for weights in _weights_for(config):
                runs = [p for p in todo if p["task"] == task and p["weights"] == weights]
                if runs:
                    _run_group(data, config, base, task, weights, runs, out, progress)
                    bar.update(len(runs))
    rows = collect_results(out)
    _write_outputs(out, rows, config, data, spec_path, time.perf_counter() - started)
    return rows


def _weights_for(config: ExperimentConfig) -> list[str]:
    weights = list(config.backbone_weights) if "mae-upernet" in config.models else []
    return weights + (["-"] if "unet" in config.models else [])


def _plan(data: PreparedData, config: ExperimentConfig) -> list[dict]:
    plan = []
    for task in config.tasks:
        available = len(eligible_tiles(data.tiles, "train", task, config.base.min_labelled_fraction))
        too_many = [n for n in config.train_tiles if n > available]
        if too_many:
            raise DemsegError(f"asked for {max(too_many)} training tiles for {task} but the split has only "
                              f"{available}")
        for weights in _weights_for(config):
            model = "unet" if weights == "-" else "mae-upernet"
            for n in config.train_tiles:
                for seed in range(config.seeds):
                    plan.append({"task": task, "model": model, "weights": weights, "train_tiles": n, "seed": seed,
                                 "key": run_key(task, model, weights, n, seed)})
    return plan


def _run_group(data: PreparedData, config: ExperimentConfig, base: TrainConfig, task: str, weights: str,
               runs: list[dict], out: Path, progress: bool) -> None:
    """All runs of one task and one backbone (or the UNet), sharing data arrays and feature caches."""
    model_name = runs[0]["model"]
    subsets = {(r["train_tiles"], r["seed"]): training_subset(data.tiles, r["train_tiles"], r["seed"], task,
                                                              base.min_labelled_fraction) for r in runs}
    union = sorted({t.id: t for tiles in subsets.values() for t in tiles}.values(), key=lambda t: t.id)
    position = {t.id: i for i, t in enumerate(union)}
    val_tiles = eligible_tiles(data.tiles, "val", task, base.min_labelled_fraction)
    if not val_tiles:
        raise DemsegError(f"the split left no validation tile labelled for {task}")
    train_all = tile_arrays(data.scenes, union, task, base.recipe)
    val = tile_arrays(data.scenes, val_tiles, task, base.recipe)
    run_base = base.model_copy(update={"task": task, "model": model_name,
                                       "backbone_weights": weights if weights != "-" else base.backbone_weights})
    caches, backbone = None, None
    cache_seconds = 0.0
    if model_name == "mae-upernet":
        backbone = build_model(run_base, train_all.inputs.shape[1]).backbone
    if model_name == "mae-upernet" and run_base.cached:
        started = time.perf_counter()
        dtype = CACHE_DTYPES[run_base.cache_dtype]
        caches = (encode_views(backbone, train_all.inputs, train_all.targets, run_base.views, dtype=dtype,
                               progress=progress,
                               desc=f"caching {task} train features ({len(union)} tiles x {run_base.views} views)"),
                  encode_views(backbone, val.inputs, val.targets, 1, dtype=dtype, progress=progress,
                               desc=f"caching {task} val features"))
        cache_seconds = time.perf_counter() - started
    for r in runs:
        tiles = subsets[(r["train_tiles"], r["seed"])]
        rows = [position[t.id] for t in tiles]
        train = type(train_all)([t.id for t in tiles], train_all.inputs[rows], train_all.targets[rows])
        run_config = run_base.model_copy(update={"train_tiles": r["train_tiles"], "seed": r["seed"]})
        model = build_model(run_config, train.inputs.shape[1], backbone=backbone)
        result = fit(run_config, model, train, val,
                     train_cache=caches[0].select_tiles(rows) if caches else None,
                     val_cache=caches[1] if caches else None, progress=progress)
        # the shared cache cost is charged to each run in proportion to its tiles, so runs stay comparable
        share = len(tiles) * run_config.views / max(1, len(union) * run_config.views)
        train_seconds = result.train_seconds + (cache_seconds * share if caches else 0.0)
        run_dir = out / "runs" / r["key"]
        if r["seed"] == 0 and r["train_tiles"] == max(config.train_tiles) and config.preview_tiles:
            _preview(run_dir / "preview.png", model, run_config, caches, val, val_tiles, data)
        record = {"task": task, "model": model_name, "backbone_weights": run_config.backbone_weights
                  if model_name == "mae-upernet" else "-", "train_tiles": r["train_tiles"], "seed": r["seed"],
                  "iters": run_config.iters, "best_iter": result.best_iter, **result.best_scores,
                  "train_seconds": train_seconds, "val_tiles": len(val_tiles), "arch": run_config.arch
                  if model_name == "mae-upernet" else f"unet{run_config.unet_width}", "recipe": run_config.recipe,
                  "train_tile_ids": [t.id for t in tiles], "history": result.history}
        write_text_atomic(run_dir / "metrics.json", json.dumps(record, indent=1, default=float))


def _preview(path: Path, model, config: TrainConfig, caches, val, val_tiles, data: PreparedData) -> None:
    n = min(len(val_tiles), 4)
    if caches is not None:
        predictions = predict_head(model.head, caches[1], tuple(val.targets.shape[-2:]), config.use_amp())[:n]
    else:
        predictions = predict_images(model, val.inputs[:n], config.use_amp())
    shades = []
    for tile in val_tiles[:n]:
        scene = data.scenes[tile.scene_id]
        window = tile.window()
        shades.append(hillshade(scene.dem.elevation[window], scene.valid_mask[window], scene.grid.pixel_size_m))
    label = config.model if config.model == "unet" else f"{config.model} [{config.backbone_weights}]"
    write_preview(path, shades, list(val.targets[:n]), predictions,
                  f"{config.task}: {label}, {config.train_tiles} tiles, seed {config.seed}")


def collect_results(out: Path) -> list[dict]:
    """Every finished run's record under ``out/runs``."""
    rows = []
    for path in sorted((out / "runs").glob("*/metrics.json")):
        rows.append(json.loads(path.read_text()))
    return rows


def _write_outputs(out: Path, rows: list[dict], config: ExperimentConfig, data: PreparedData,
                   spec_path: str | Path, seconds: float) -> None:
    write_results_csv(rows, out / "results.csv")
    val_counts = sorted({r["val_tiles"] for r in rows})
    notes = [f"spec: {spec_path}; {config.seeds} seed(s); {config.base.iters} iterations, batch "
             f"{config.base.batch_size}, validation every {config.base.val_every}; best validation IoU reported "
             "(as in the paper).",
             f"validation tiles: {', '.join(map(str, val_counts))} (spatially disjoint from training tiles).",
             f"backbone: ViT-{config.base.arch}, frozen, blocks {config.base.tap_blocks}; recipe "
             f"{config.base.recipe}; weights: {', '.join(config.backbone_weights)}.",
             "95 % CI: Student t over seeds; cells with n=1 have no interval."]
    write_summary(rows, out / "summary.md", f"demseg experiment: {data.spec.name}", notes)
    plot_curves(rows, out / "curves.png")
    write_manifest(out / "manifest.json", json.loads(config.model_dump_json()), data.spec,
                   {"split": {t.id: t.split for t in data.tiles}}, argv=sys.argv,
                   extra={"runs": len(rows), "seconds_this_invocation": round(seconds, 1)})


def format_table(rows: list[dict]) -> str:
    """A plain-text IoU table for the terminal (mean over seeds, %)."""
    from demseg.evaluate.report import summary_table

    return summary_table(rows, "iou")

