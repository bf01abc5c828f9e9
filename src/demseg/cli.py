"""The ``demseg`` command line: parses flags, calls the stage, maps errors to exit codes.

Every user-facing failure is a :class:`DemsegError`: one line on stderr, exit code 2. Flags of
the configurable stages are made from their pydantic configs (:mod:`demseg.cli_flags`), so the
defaults and help texts live in one place; :func:`parse_configs` returns the configs a command
line would run with, without running it.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import warnings
from collections.abc import Sequence

from demseg.cli_flags import (
    add_config_flags,
    bounded,
    config_from_args,
    config_values,
    list_of,
    make_config,
    mapping_of,
)
from demseg.errors import DemsegError

EXIT_USER_ERROR = 2

positive_int = bounded(int, low=0, low_inclusive=False)
positive_float = bounded(float, low=0, low_inclusive=False)
name_list = list_of(str)

# the training flags train and experiment share, by group (their help shows them so)
TRAIN_GROUPS = {
    "data": ["val_tiles", "tile_size_px", "pixel_size_m", "split_seed", "min_train_fraction", "min_valid_fraction",
             "label_noise"],
    "model": ["init", "arch", "recipe", "head_width", "neck_width", "unet_width", "unet_context", "detail_width",
              "aux_head", "auxiliary"],
    "training": ["iters", "batch_size", "lr", "class_weighting", "connectivity", "val_every", "finetune",
                 "layer_decay", "lp_fraction", "views", "crop_px", "coarsen", "mix", "mix_tiles", "mix_share"],
    "compute": ["cached", "backbone_dtype"],
}
TRAIN_FIELDS = [name for names in TRAIN_GROUPS.values() for name in names]
FLAG_NAMES = {"cached": "--no-cache", "tasks": "--task"}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise DemsegError(f"{self.prog}: {message}")


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


# ---------------------------------------------------------------- synth and data


def _add_synth(commands) -> None:
    from demseg.data.synth import generate_world

    p = commands.add_parser("synth", help="generate a synthetic DEM world with labels",
                            description="Generate georeferenced synthetic city DEMs, labels (raster and vector), "
                                        "previews and a dataset spec.")
    p.add_argument("-o", "--out", dest="out_flag", metavar="OUT", help="output folder (a new one, or a world to "
                                                                        "replace with --overwrite)")
    p.add_argument("out", nargs="?", help=argparse.SUPPRESS)  # older command lines: demseg synth OUT
    for flag, kind, name, text in (("--scenes", positive_int, "scenes", "number of scenes"),
                                   ("--size-px", positive_int, "size_px", "scene side in pixels"),
                                   ("--pixel-size-m", positive_float, "pixel_size_m", "pixel size in metres"),
                                   ("--seed", bounded(int, low=0), "seed", "random seed"),
                                   ("--val-fraction", bounded(float, 0, True, 1, True), "val_fraction",
                                    "share of validation scenes")):
        default = _default(generate_world, name)
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    from demseg.data.synth import STYLES

    p.add_argument("--style", choices=list(STYLES), default=_default(generate_world, "style"),
                   help=f"urban form: mixed districts, dense old towns, streets (mixed, with parking bays, cycle "
                        f"paths and tram beds: for roads), or one district kind (default {_default(generate_world, 'style')})")
    p.add_argument("--overwrite", action="store_true", help="replace a synthetic world already in the folder")
    _chatter(p)
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from demseg.data.synth import generate_world

    if (args.out is None) == (args.out_flag is None):
        raise DemsegError("demseg synth: give the output folder once, with -o/--out")
    spec_path = generate_world(args.out or args.out_flag, scenes=args.scenes, size_px=args.size_px, pixel_size_m=args.pixel_size_m,
                               seed=args.seed, val_fraction=args.val_fraction, progress=not args.quiet,
                               style=args.style, overwrite=args.overwrite)
    print(f"wrote {args.scenes} scene(s) and {spec_path}")
    return 0


def _add_data(commands) -> None:
    from demseg.data.tiles import SplitConfig

    data = commands.add_parser("data", help="inspect datasets", description="Inspect dataset specs.")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=_Parser)
    data_commands.required = True
    check = data_commands.add_parser("check", help="load every scene of a spec and print a table",
                                     description="Load every scene of a dataset spec (YAML or folder) and print "
                                                 "size, pixel size, CRS, valid and label fractions, tiles and "
                                                 "problems. Exits 2 if any scene fails to load.")
    check.add_argument("spec", help="dataset spec (YAML) or folder of scenes")
    add_config_flags(check, SplitConfig, ["tile_size_px", "min_valid_fraction"])
    check.add_argument("--crs", help="CRS for rasters that declare none, e.g. EPSG:2154")
    check.add_argument("--road-width-m", type=positive_float, help="width to buffer road lines that carry none")
    _chatter(check, progress=False)
    check.set_defaults(func=_cmd_data_check, configs=lambda a: {"split": config_from_args(SplitConfig, a)})


def _cmd_data_check(args: argparse.Namespace) -> int:
    from demseg.data.check import check_spec, format_reports
    from demseg.data.spec import load_spec

    split = args.configs(args)["split"]
    spec = load_spec(args.spec, crs=args.crs)
    reports = check_spec(spec, tile_size_px=split.tile_size_px, min_valid_fraction=split.min_valid_fraction,
                         road_width_m=args.road_width_m)
    print(format_reports(reports))
    errors = [r for r in reports if r.error]
    if errors:
        raise DemsegError(f"{len(errors)} of {len(reports)} scene(s) failed: {errors[0].problems[0]}")
    return 0


# ---------------------------------------------------------------- rasterize


def _add_rasterize(commands) -> None:
    from demseg.lidar import RasterizeConfig

    p = commands.add_parser("rasterize", help="classified LAS/LAZ/COPC point clouds to DSM, DTM, nDSM and labels",
                            description="Rasterise classified point clouds onto one grid: dsm.tif, dtm.tif, "
                                        "ndsm.tif, labels.tif (0 background, 1 buildings, 2 roads, 255 no data), "
                                        "point_count.tif, LiDAR channel rasters (see --channels), dataset.yaml (a "
                                        "demseg spec) and manifest.json, written "
                                        "atomically. Points stream in chunks: memory does not grow with the "
                                        "number of points.")
    p.add_argument("points", nargs="+", help="LAS/LAZ/COPC files; one grid covers them all")
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_config_flags(p, RasterizeConfig, ["pixel_size_m", "crs", "like", "ground_class", "water_class",
                                          "drop_classes", "fill_radius_m", "chunk_points"])
    classes = RasterizeConfig.model_fields["classes"]
    default = ",".join(f"{task}={code}" for task, code in classes.get_default(call_default_factory=True).items())
    p.add_argument("--classes", dest="classes", type=mapping_of, default=argparse.SUPPRESS, metavar="TASK=CODE,...",
                   help=f"{classes.description} (default {default})")
    channels = RasterizeConfig.model_fields["channels"]
    p.add_argument("--channels", dest="channels", type=_channel_names, default=argparse.SUPPRESS,
                   metavar="NAME,...|none", help=f"{channels.description} (default "
                   f"{','.join(channels.get_default(call_default_factory=True))})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _chatter(p)
    p.set_defaults(func=_cmd_rasterize, configs=lambda a: {"rasterize": config_from_args(RasterizeConfig, a)})


def _channel_names(text: str) -> list[str]:
    """--channels: comma-separated channel names; "none" (or nothing) for no channel."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    return [] if names == ["none"] else names


def _cmd_rasterize(args: argparse.Namespace) -> int:
    from demseg.lidar import rasterize

    manifest = rasterize(args.points, args.configs(args)["rasterize"], args.out, overwrite=args.overwrite,
                         progress=not args.quiet)
    grid, points = manifest["grid"], manifest["points"]
    channels = ", ".join(manifest["channels"]["written"]) or "none"
    print(f"rasterised {points['used']:,} points onto {grid['width']} x {grid['height']} cells of "
          f"{grid['pixel_size_m']:g} m ({manifest['crs']}), channels {channels}, in {manifest['seconds']:.1f} s: "
          f"{args.out}")
    return 0


# ---------------------------------------------------------------- pretrain


def _add_pretrain(commands) -> None:
    from demseg.pretrain.mae import PretrainConfig

    p = commands.add_parser("pretrain", help="MAE pre-training on unlabelled DEMs",
                            description="Pre-train a Masked-AutoEncoder ViT on random crops of unlabelled DEMs "
                                        "(dataset specs, folders searched for dem.tif/dsm.tif, or files). Runs "
                                        "under torchrun --nproc_per_node N as well.")
    p.add_argument("sources", nargs="+", help="dataset spec(s), folder(s) or DEM file(s)")
    p.add_argument("-o", "--out", required=True, help="checkpoint folder")
    add_config_flags(p, PretrainConfig, [name for name in PretrainConfig.model_fields],
                     {"steps": "--iters", "crop_size_px": "--crop-px"})
    p.add_argument("--steps", dest="steps", type=positive_int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--crop-size-px", dest="crop_size_px", type=positive_int, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _chatter(p)
    p.set_defaults(func=_cmd_pretrain, configs=lambda a: {"pretrain": config_from_args(PretrainConfig, a)})


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from demseg.pretrain.mae import pretrain

    config = args.configs(args)["pretrain"]
    summary = pretrain(args.sources, config, args.out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.quiet)
    if summary.get("rank", 0) == 0:
        print(f"pre-trained {summary['steps_done']} steps, final loss {summary['final_loss']:.4f}; "
              f"encoder: {args.out}/encoder.safetensors")
    return 0


# ---------------------------------------------------------------- train, evaluate, experiment, demo, probe


def _add_train(commands) -> None:
    from demseg.runs.config import TrainConfig
    from demseg.train.presets import DEFAULT_PRESET, PRESETS, preset_default_texts

    p = commands.add_parser("train", help="train one model on a dataset spec",
                            description="Train a model on N training tiles of a spec and write a run folder "
                                        "(weights, config, metrics, manifest). Without flags: the recommended "
                                        "recipe, which for buildings fine-tunes demseg's shipped model "
                                        "'buildings' (pre-trained on several real cities and a synthetic world) "
                                        "for 60 steps; --preset scratch trains the previous default from "
                                        "scratch (300 steps); --paper: the paper's frozen MAE + UperNet. Flags "
                                        "override the preset; 'none' empties a list or option (--mix none).")
    p.add_argument("spec", help="dataset spec (YAML) or folder")
    groups = _train_groups(p)
    groups["model"].add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                                 help=f"recipe that flags are laid over (default {DEFAULT_PRESET})")
    groups["model"].add_argument("--paper", dest="preset", action="store_const", const="paper",
                                 help="the paper's model (frozen MAE ViT + UperNet): the same as --preset paper")
    texts = preset_default_texts()
    add_config_flags(groups["data"], TrainConfig, ["task", "train_tiles"], FLAG_NAMES, texts)
    add_config_flags(groups["model"], TrainConfig, ["model", "backbone_weights"], FLAG_NAMES, texts)
    add_config_flags(groups["training"], TrainConfig, ["seed"], FLAG_NAMES, texts)
    for name, fields in TRAIN_GROUPS.items():
        add_config_flags(groups[name], TrainConfig, fields, FLAG_NAMES, texts)
    add_config_flags(groups["training"], TrainConfig, ["checkpoint_every"])
    groups["training"].add_argument("--resume", action="store_true",
                                    help="continue the unfinished run in --out from its checkpoint (same flags as "
                                         "before)")
    groups["output"].add_argument("-o", "--out", required=True, help="run folder")
    groups["output"].add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    _chatter(groups["output"])
    p.epilog = ("example: demseg train examples/amsterdam.yaml --train-tiles 10 -o RUN   (the default: fine-tune "
                "demseg's shipped model on 10 tiles; --paper for the paper's model)")
    p.set_defaults(func=_cmd_train, configs=_train_configs)


def _train_groups(p: argparse.ArgumentParser) -> dict:
    """The help sections of train and experiment: data, model, training, compute, output."""
    return {name: p.add_argument_group(title) for name, title in (
        ("data", "data (what it learns from and is validated on)"), ("model", "model"),
        ("training", "training (schedule, augmentation, rehearsal)"), ("compute", "compute"),
        ("output", "output"))}


def _train_configs(args: argparse.Namespace) -> dict:
    from demseg.models.registry import uses_backbone
    from demseg.runs.config import TrainConfig
    from demseg.train.presets import laid_over

    given = config_values(args, TrainConfig)
    task = given.get("task", TrainConfig.model_fields["task"].default)
    config = make_config(TrainConfig, laid_over(args.preset, task, given))
    if config.crop_px and uses_backbone(config.model):
        raise DemsegError(f"--crop-px is for the unet; {config.model} trains on whole tiles")
    from demseg.train.run import check_finetune_fits

    check_finetune_fits(config.finetune, [config.model])
    return {"train": config}


def _cmd_train(args: argparse.Namespace) -> int:
    from demseg.evaluate.metrics import SegmentationScorer
    from demseg.train.run import train_run

    scores = train_run(args.spec, args.configs(args)["train"], args.out, SegmentationScorer,
                       overwrite=args.overwrite, progress=not args.quiet, resume=args.resume)
    print(f"best_iter={scores['best_iter']} iou={scores['iou']:.3f} f1={scores['f1']:.3f} "
          f"precision={scores['precision']:.3f} recall={scores['recall']:.3f}  run: {args.out}")
    return 0


def _add_evaluate(commands) -> None:
    p = commands.add_parser("evaluate", help="score a run on its validation tiles, or on another dataset",
                            description="Score a trained run: on the spec it was trained on, exactly the "
                                        "validation tiles it recorded; on data it never saw (another city), "
                                        "every labelled tile.")
    p.add_argument("run", help="run folder made by demseg train, or a shipped model's name (demseg models)")
    p.add_argument("spec", help="dataset spec (YAML) or folder")
    p.add_argument("--task", choices=["buildings", "roads"], help="task (default: the run's)")
    p.add_argument("-o", "--out", help="folder for metrics.json and preview.png (default RUN/evaluations/<spec "
                                       "name>-<8 hex of the spec's path>; needed for a shipped model or a run "
                                       "folder that cannot be written)")
    p.add_argument("--allow-resolution-mismatch", action="store_true",
                   help="score data whose pixel size is more than 10%% off the run's (default: refuse)")
    p.add_argument("--resample", action="store_true",
                   help="data the run never saw: resample it to the run's pixel size and score every labelled "
                        "pixel (overlapping windows blended as in predict), as experiment --score-on does")
    _chatter(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from demseg.evaluate.score import evaluate_run

    scores = evaluate_run(args.run, args.spec, args.task, progress=not args.quiet,
                          allow_resolution_mismatch=args.allow_resolution_mismatch, resample=args.resample,
                          out=args.out)
    print(f"iou={scores['iou']:.3f} f1={scores['f1']:.3f} precision={scores['precision']:.3f} "
          f"recall={scores['recall']:.3f}  ({scores['val_tiles']} {'windows' if args.resample else 'tiles'}): "
          f"{scores['out']}")
    return 0


def _add_experiment(commands) -> None:
    from demseg.runs.config import TrainConfig
    from demseg.train.experiment import ExperimentConfig
    from demseg.train.presets import PRESETS

    p = commands.add_parser("experiment", help="label-budget protocol with tables, plots and CIs",
                            description="Run tasks x models x training tiles x seeds on a spec and write "
                                        "results.csv, summary.md, curves.png, previews and a manifest. Rerun the "
                                        "same command to resume an interrupted experiment.")
    p.add_argument("spec", help="dataset spec (YAML) or folder")
    groups = _train_groups(p)
    grid = p.add_argument_group("the grid (tasks x models x budgets x seeds)")
    add_config_flags(grid, ExperimentConfig, ["tasks", "models", "backbone_weights", "train_tiles", "seeds"],
                     FLAG_NAMES)
    add_config_flags(groups["data"], ExperimentConfig, ["score_on"], FLAG_NAMES)
    groups["model"].add_argument("--preset", choices=list(PRESETS),
                                 help="lay the training flags over a named recipe, as train does (e.g. "
                                      "recommended: its model unless --models says otherwise); one task per "
                                      "experiment where the recipe differs between tasks (default: none, "
                                      "TrainConfig's own defaults)")
    for name, fields in TRAIN_GROUPS.items():
        add_config_flags(groups[name], TrainConfig, fields, FLAG_NAMES)
    groups["compute"].add_argument("--scheduler", help="address of an existing Dask scheduler (e.g. "
                                                       "tcp://host:8786): every run becomes a task of that cluster; "
                                                       "its workers must see the spec, the data and --out on a "
                                                       "shared file system (default: run here)")
    groups["compute"].add_argument("--scheduler-timeout-s", type=positive_float, default=30.0,
                                   help="seconds to wait for the Dask scheduler to answer (default 30)")
    groups["output"].add_argument("-o", "--out", required=True, help="experiment folder (rerun to resume)")
    add_config_flags(groups["output"], ExperimentConfig, ["preview_tiles"], FLAG_NAMES)
    groups["output"].add_argument("--overwrite", action="store_true", help="replace another experiment in --out")
    _chatter(groups["output"])
    p.epilog = ("example: demseg experiment examples/amsterdam.yaml --task buildings --train-tiles 10,50 --models "
                "unet,mae-upernet --seeds 3 --score-on examples/france.yaml -o EXP")
    p.set_defaults(func=_cmd_experiment, configs=_experiment_configs)


def _experiment_configs(args: argparse.Namespace) -> dict:
    from demseg.runs.config import TrainConfig
    from demseg.train.experiment import ExperimentConfig
    from demseg.train.presets import laid_over, preset_values

    given = {k: v for k, v in config_values(args, TrainConfig).items() if k in TRAIN_FIELDS}
    grid = config_values(args, ExperimentConfig)
    if args.preset:
        tasks = grid.get("tasks", ExperimentConfig.model_fields["tasks"].default)
        recipes = [preset_values(args.preset, task) for task in tasks]
        if any(recipe != recipes[0] for recipe in recipes):
            raise DemsegError(f"--preset {args.preset} differs between tasks {','.join(tasks)}: run one --task per "
                              "experiment")
        recipe = dict(recipes[0])
        model = recipe.pop("model", None)
        if model and "models" not in grid:
            grid["models"] = [model]
        if recipe.get("init") and "init" not in given and any(  # a shipped start only where every model fits it
                laid_over(args.preset, tasks[0], {**given, "model": name})["init"] is None
                for name in grid.get("models", [model])):
            recipe["init"] = None
        given = {**recipe, **given}
    base = make_config(TrainConfig, given)
    experiment = make_config(ExperimentConfig, {**grid, "base": base})
    from demseg.train.run import check_finetune_fits

    check_finetune_fits(base.finetune, experiment.models)
    return {"experiment": experiment}


def _cmd_experiment(args: argparse.Namespace) -> int:
    from demseg.evaluate.report import format_table
    from demseg.train.experiment import run_experiment

    rows = run_experiment(args.spec, args.configs(args)["experiment"], args.out, overwrite=args.overwrite,
                          progress=not args.quiet, scheduler=args.scheduler,
                          scheduler_timeout_s=args.scheduler_timeout_s)
    print(format_table(rows))
    print(f"results: {args.out}/results.csv, {args.out}/summary.md, {args.out}/curves.png")
    return 0


def _add_report(commands) -> None:
    p = commands.add_parser("report", help="merge several experiment folders into one table and plot",
                            description="Merge the finished runs of experiment folders (e.g. the same protocol run "
                                        "with and without --finetune or --init) into results.csv, summary.md "
                                        "(a table per dataset scored on, differences to a reference model paired by "
                                        "seed) and curves.png.")
    p.add_argument("experiments", nargs="+", help="experiment folders")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--reference", help="model label the others are compared with, one the experiments ran "
                                       "(default unet, where they ran one)")
    p.add_argument("--title", default="demseg experiments", help="title of summary.md")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    _chatter(p, progress=False)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from demseg.evaluate.report import combine_experiments, summary_table

    rows = combine_experiments(args.experiments, args.out, args.title, args.reference, overwrite=args.overwrite)
    print(summary_table(rows, "iou"))
    print(f"results: {args.out}/results.csv, {args.out}/summary.md, {args.out}/curves.png")
    return 0


def _add_demo(commands) -> None:
    p = commands.add_parser("demo", help="the main job on the embedded synthetic world (a few minutes on 2 cores)",
                            description="Generate a synthetic DEM world, then train on 10 tiles, for buildings and "
                                        "roads: a UNet from scratch, the paper's MAE+UperNet (shipped "
                                        "DEM-pretrained encoder) and demseg's default (for buildings: the shipped "
                                        "model 'buildings' fine-tuned briefly; it is also scored untrained), and "
                                        "print the IoU table.")
    p.add_argument("-o", "--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's protocol instead: 10/50/200/450 tiles, 3000 iterations, 3 seeds, width 256")
    _chatter(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from demseg.train.demo import run_demo

    print(run_demo(args.out, paper=args.paper, progress=not args.quiet))
    return 0


def _add_probe(commands) -> None:
    from demseg.runs.config import TrainConfig

    p = commands.add_parser("probe", help="linear probe of frozen backbones on building patches",
                            description="Fit a logistic regression on frozen patch features (is this 16x16 patch "
                                        "mostly the target class?) on the training tiles of the spatial split and "
                                        "score it on the validation tiles, for each backbone weights given.")
    p.add_argument("spec", help="dataset spec (YAML) or folder with labels")
    p.add_argument("--backbone-weights", dest="compare_weights", type=name_list, default=["dem-tiny", "random"],
                   help="weights to compare, comma-separated (default dem-tiny,random)")
    add_config_flags(p, TrainConfig, ["task", "arch", "recipe", "val_tiles", "split_seed", "min_train_fraction",
                                      "tile_size_px", "backbone_dtype"])
    _chatter(p, progress=False)
    p.set_defaults(func=_cmd_probe, configs=lambda a: {"train": config_from_args(TrainConfig, a)})


def _cmd_probe(args: argparse.Namespace) -> int:
    from demseg.evaluate.probe import linear_probe

    rows = linear_probe(args.spec, args.compare_weights, args.configs(args)["train"])
    print("| weights | accuracy | balanced accuracy | train patches | val patches |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['weights']} | {row['accuracy']:.3f} | {row['balanced_accuracy']:.3f} | "
              f"{row['train_patches']} | {row['val_patches']} |")
    return 0


# ---------------------------------------------------------------- predict


def _add_predict(commands) -> None:
    from demseg.predict.config import PredictConfig

    p = commands.add_parser("predict", help="segment whole scenes with a trained run",
                            description="Predict whole DEMs with a trained run: overlapping windows blended "
                                        "smoothly, written row block by row block (memory does not grow with the "
                                        "scene). Writes <stem>_mask.tif and <stem>_prob.tif (Cloud-Optimized "
                                        "GeoTIFFs on the DEM's grid), <stem>_vectors.gpkg, <stem>_preview.png and "
                                        "<stem>_done.json. A rerun skips scenes whose outputs are complete.")
    p.add_argument("run", help="run folder made by demseg train, or a shipped model's name: demseg predict "
                               "buildings DSM.tif --out PRED needs no labels (demseg models lists them)")
    p.add_argument("inputs", nargs="+", help="DEM GeoTIFF(s) and/or dataset spec(s) (each scene's dem and dtm)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--dtm", help="bare-earth DTM on the DEM's grid (one DEM only): heights above ground come from "
                                 "it (else from a local ground estimate) and footprints get ground_m and height_m")
    p.add_argument("--band", type=positive_int, help="elevation band of multi-band DEMs (1-based)")
    p.add_argument("--crs", help="CRS for DEMs that declare none, e.g. EPSG:2154")
    add_config_flags(p, PredictConfig, list(PredictConfig.model_fields), {"resample": "--no-resample"})
    p.add_argument("--overwrite", action="store_true", help="predict complete scenes again")
    _chatter(p)
    p.set_defaults(func=_cmd_predict, configs=lambda a: {"predict": config_from_args(PredictConfig, a)})


def _cmd_predict(args: argparse.Namespace) -> int:
    from demseg.predict import predict_many

    results = predict_many(args.run, args.inputs, args.out, args.configs(args)["predict"], dtm_path=args.dtm,
                           band=args.band, crs=args.crs, overwrite=args.overwrite, progress=not args.quiet)
    for stem, paths in results.items():
        print(f"{stem}: {paths['mask']} {paths['prob']} {paths['vectors']} {paths['preview']}")
    return 0


def _add_export(commands) -> None:
    p = commands.add_parser("export", help="export a run's network (ONNX) for other runtimes",
                            description="Write the run's whole network (backbone and head, or the UNet) as ONNX: "
                                        "normalised windows (N, C, T, T) in, logits (N, K, T, T) out, dynamic "
                                        "batch. demseg predict RUN ... --engine onnx then runs it in onnxruntime.")
    p.add_argument("run", help="run folder made by demseg train, or a shipped model's name")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="format to write (default onnx, the one "
                                                                      "format today)")
    p.add_argument("--onnx", action="store_true", help=argparse.SUPPRESS)  # older command lines
    p.add_argument("-o", "--out", help="file to write (default RUN/model.onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (never a run's own files)")
    _chatter(p, progress=False)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from demseg.predict.onnx import export_onnx

    print(export_onnx(args.run, args.out, overwrite=args.overwrite))
    return 0


def _add_models(commands) -> None:
    p = commands.add_parser("models", help="list the trained models and encoders shipped with demseg",
                            description="The models shipped inside demseg: each name works wherever a run folder "
                                        "is accepted (demseg predict NAME DEM.tif, evaluate, export, train --init), "
                                        "and a folder of that name wins over it. Then the shipped encoders "
                                        "(--backbone-weights).")
    p.add_argument("--json", action="store_true", help="everything each sidecar says, as JSON")
    _chatter(p, progress=False)
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    import json

    from demseg.models.encoders import SHIPPED_ENCODERS, describe, describe_model, shipped_model_names

    models = [describe_model(name) for name in shipped_model_names()]
    encoders = [describe(name) for name in sorted(SHIPPED_ENCODERS)]
    if args.json:
        print(json.dumps({"models": models, "encoders": encoders}, indent=2, default=str))
        return 0
    print("shipped models (demseg predict NAME DEM.tif --out PRED; demseg train SPEC --init NAME):")
    for entry in models:
        pixel = entry.get("pixel_size_m")
        print(f"  {entry['name']:<24} {entry['task']:<10} {entry['model']:<11}"
              f"{f'{pixel:g} m' if pixel else '':<7} {entry['summary']}")
        world = entry.get("synthetic") or {}
        learnt = list(entry.get("cities") or []) + ([f"a synthetic world (style {world['style']}, seed {world['seed']})"]
                                                    if "style" in world else [])
        if learnt:
            print(f"  {'':<24} trained on: {', '.join(learnt)}")
    print("shipped encoders (--backbone-weights NAME):")
    for entry in encoders:
        print(f"  {entry['name']:<24} ViT-{entry['arch']}, {entry['num_channels']} channels ({entry['recipe']}), "
              f"objective {entry['objective']}: {entry['summary']}")
    return 0


# ---------------------------------------------------------------- the command tree


EXAMPLES = {  # one line at the end of each command's --help
    "synth": "demseg synth -o WORLD --scenes 20 --seed 0",
    "data check": "demseg data check examples/real_data.yaml",
    "rasterize": "demseg rasterize tiles/*.laz --pixel-size-m 0.5 --crs EPSG:28992 -o RAST",
    "pretrain": "demseg pretrain examples/pretrain_real.yaml --arch tiny --iters 2000 -o CKPT",
    "evaluate": "demseg evaluate RUN examples/france.yaml --resample",
    "report": "demseg report EXP1 EXP2 --reference unet -o REPORT",
    "demo": "demseg demo",
    "probe": "demseg probe examples/amsterdam.yaml --backbone-weights dem-tiny,random",
    "predict": "demseg predict buildings DSM.tif --dtm DTM.tif -o PRED   (a shipped model, no labels)",
    "export": "demseg export RUN -o model.onnx",
    "models": "demseg models --json",
    "qgis install": "demseg qgis install",
}


def _add_examples(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                key = f"{prefix}{name}"
                if key in EXAMPLES and not sub.epilog:
                    sub.epilog = f"example: {EXAMPLES[key]}"
                _add_examples(sub, f"{key} ")


def build_parser() -> argparse.ArgumentParser:
    """The full ``demseg`` command tree."""
    from demseg import __version__

    parser = _Parser(prog="demseg", description="Segment LiDAR elevation models into buildings and roads.")
    parser.add_argument("--version", action="version", version=f"demseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for add in (_add_synth, _add_data, _add_rasterize, _add_pretrain, _add_train, _add_evaluate, _add_experiment, _add_report,
                _add_demo, _add_probe, _add_predict, _add_export, _add_models, _add_qgis):
        add(commands)
    _add_examples(parser)
    return parser


def _add_qgis(commands) -> None:
    p = commands.add_parser("qgis", help="put demseg's Processing provider into QGIS",
                            description="demseg in QGIS: a Processing provider (rasterize, train, predict) that runs "
                                        "this environment's demseg.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    install = actions.add_parser("install", help="install and enable the provider in a QGIS profile",
                                 description="Copy the provider plugin into QGIS's default profile (or "
                                             "--plugins-dir), record this demseg command for it, and enable it "
                                             "with qgis_process when QGIS is installed.")
    install.add_argument("--plugins-dir", help="QGIS plugins folder (default: the default profile's)")
    install.add_argument("--no-enable", action="store_true", help="copy only; enable it in QGIS yourself")
    _chatter(install, progress=False)
    install.set_defaults(func=_cmd_qgis_install)


def _cmd_qgis_install(args: argparse.Namespace) -> int:
    from demseg.qgis import install_plugin

    folder, enabled = install_plugin(args.plugins_dir, enable=not args.no_enable)
    print(f"installed the demseg Processing provider in {folder} ({enabled})")
    return 0


def parse_configs(argv: Sequence[str]) -> dict:
    """The configs a command line would run with (e.g. {"train": TrainConfig(...)}), without running it."""
    args = build_parser().parse_args(list(argv))
    return args.configs(args) if hasattr(args, "configs") else {}


def _chatter(p: argparse.ArgumentParser, progress: bool = True) -> None:
    """-q/--quiet (no progress bars) and -v/--verbose (what demseg decides, as it goes), on every command."""
    if progress:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="say what demseg decides as it goes (-vv: and the details)")


class _OneLine(logging.Handler):
    """demseg's log records as one line each on stderr: 'demseg: warning: ...' (or 'demseg: ...' for info)."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        print(f"demseg: {level}{record.getMessage()}", file=sys.stderr)


def _logging(verbose: int) -> None:
    logger = logging.getLogger("demseg")
    logger.handlers = [_OneLine()]
    logger.propagate = False
    logger.setLevel(logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG)


def _one_line_warnings() -> None:
    """demseg's warnings as one line each; the libraries' own (torch, transformers) are silenced."""
    for module in ("torch", "transformers", "huggingface_hub", "dask", "distributed", "rasterio", "pyogrio"):
        warnings.filterwarnings("ignore", module=rf"{module}(\..*)?$")

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"demseg: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def os_error_line(exc: OSError) -> str:
    """One line for an OSError about a path (a name too long, a folder that cannot be read or written)."""
    import errno

    reason = exc.strerror or type(exc).__name__
    names = " -> ".join(str(name) for name in (exc.filename, getattr(exc, "filename2", None)) if name is not None)
    if exc.errno == errno.ENAMETOOLONG:
        reason += " (a file or folder name is longer than the file system allows, usually 255 bytes)"
    return f"{reason}: {names}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    try:
        with warnings.catch_warnings():
            _one_line_warnings()
            args = build_parser().parse_args(argv)
            _logging(getattr(args, "verbose", 0))
            return int(args.func(args) or 0)
    except DemsegError as exc:
        print(f"demseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if getattr(exc, "filename", None) is None:
            raise  # not about a path the user gave: a bug, keep its traceback
        print(f"demseg: error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("demseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
