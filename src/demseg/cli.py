"""The ``demseg`` command line: parses flags, calls the stage, maps errors to exit codes.

Every user-facing failure is a :class:`DemsegError`: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from demseg.errors import DemsegError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise DemsegError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}") from None


def int_list(text: str) -> list[int]:
    values = [positive_int(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("needs at least one number")
    return values


def name_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("needs at least one name")
    return values


# ---------------------------------------------------------------- commands


def _cmd_synth(args: argparse.Namespace) -> int:
    from demseg.data.synth import generate_world

    spec_path = generate_world(args.out, scenes=args.scenes, size_px=args.size_px, pixel_size_m=args.pixel_size_m,
                               seed=args.seed, val_fraction=args.val_fraction, progress=not args.quiet)
    print(f"wrote {args.scenes} scene(s) and {spec_path}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from demseg.data.check import check_spec, format_reports
    from demseg.data.spec import load_spec

    spec = load_spec(args.spec, crs=args.crs)
    reports = check_spec(spec, tile_size_px=args.tile_size_px, min_valid_fraction=args.min_valid_fraction,
                         road_width_m=args.road_width_m)
    print(format_reports(reports))
    errors = [r for r in reports if r.error]
    if errors:
        raise DemsegError(f"{len(errors)} of {len(reports)} scene(s) failed: {errors[0].problems[0]}")
    return 0


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile-size-px", type=positive_int, default=224, help="tile side in pixels (default 224)")
    parser.add_argument("--min-valid-fraction", type=fraction, default=0.75,
                        help="drop tiles with less valid elevation than this (default 0.75)")
    parser.add_argument("--crs", help="CRS for rasters that declare none, e.g. EPSG:2154")
    parser.add_argument("--road-width-m", type=positive_float, help="width to buffer road lines that carry none")


def build_parser() -> argparse.ArgumentParser:
    """The full ``demseg`` command tree."""
    parser = _Parser(prog="demseg", description="Segment LiDAR elevation models into buildings and roads.")
    from demseg import __version__

    parser.add_argument("--version", action="version", version=f"demseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    synth = commands.add_parser("synth", help="generate a synthetic DEM world with labels",
                                description="Generate georeferenced synthetic city DEMs, labels (raster and vector), "
                                            "previews and a dataset spec.")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--scenes", type=positive_int, default=20, help="number of scenes (default 20)")
    synth.add_argument("--size-px", type=positive_int, default=896, help="scene side in pixels (default 896)")
    synth.add_argument("--pixel-size-m", type=positive_float, default=0.5, help="pixel size in metres (default 0.5)")
    synth.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    synth.add_argument("--val-fraction", type=fraction, default=0.2, help="share of validation scenes (default 0.2)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)

    data = commands.add_parser("data", help="inspect datasets", description="Inspect dataset specs.")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=_Parser)
    data_commands.required = True
    check = data_commands.add_parser("check", help="load every scene of a spec and print a table",
                                     description="Load every scene of a dataset spec (YAML or folder) and print "
                                                 "size, pixel size, CRS, valid and label fractions, tiles and "
                                                 "problems. Exits 2 if any scene fails to load.")
    check.add_argument("spec", help="dataset spec (YAML) or folder of scenes")
    _add_data_flags(check)
    check.set_defaults(func=_cmd_data_check)

    _add_pretrain(commands)
    _add_train(commands)
    _add_evaluate(commands)
    _add_experiment(commands)
    _add_demo(commands)
    _add_probe(commands)
    _add_predict(commands)
    return parser


def _add_probe(commands) -> None:
    p = commands.add_parser("probe", help="linear probe of frozen backbones on building patches",
                            description="Fit a logistic regression on frozen patch features (is this 16x16 patch "
                                        "mostly building?) on the training tiles of the spatial split and score "
                                        "it on the validation tiles, for each backbone weights given.")
    p.add_argument("spec", help="dataset spec (YAML) or folder with building labels")
    p.add_argument("--backbone-weights", type=name_list, default=["dem-tiny", "random"],
                   help="weights to compare, comma-separated (default dem-tiny,random)")
    p.add_argument("--arch", choices=["tiny", "small", "base"], default="tiny", help="ViT size (default tiny)")
    p.add_argument("--recipe", default="relief+slope", help="normalisation recipe (default relief+slope)")
    p.add_argument("--val-tiles", type=non_negative_int, default=50, help="validation tiles (default 50)")
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args: argparse.Namespace) -> int:
    from demseg.evaluate.probe import linear_probe

    rows = linear_probe(args.spec, args.backbone_weights, args.arch, args.recipe, val_tiles=args.val_tiles)
    print("| weights | accuracy | balanced accuracy | train patches | val patches |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['weights']} | {row['accuracy']:.3f} | {row['balanced_accuracy']:.3f} | "
              f"{row['train_patches']} | {row['val_patches']} |")
    return 0


def _add_pretrain(commands) -> None:
    p = commands.add_parser("pretrain", help="MAE pre-training on unlabelled DEMs",
                            description="Pre-train a Masked-AutoEncoder ViT on random crops of unlabelled DEMs "
                                        "(dataset specs, folders searched for dem.tif/dsm.tif, or files). Runs "
                                        "under torchrun --nproc_per_node N as well.")
    p.add_argument("sources", nargs="+", help="dataset spec(s), folder(s) or DEM file(s)")
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--arch", choices=["tiny", "small", "base"], default="tiny", help="ViT size (default tiny)")
    p.add_argument("--recipe", default="relief+slope", help="normalisation recipe (default relief+slope)")
    p.add_argument("--tile-size-px", type=positive_int, default=224,
                   help="tiles are normalised at this size, as downstream (default 224)")
    p.add_argument("--crop-size-px", type=positive_int,
                   help="random crops of the normalised tiles that the MAE sees (default: the tile size)")
    p.add_argument("--patch-size", type=positive_int, default=16, help="patch size (default 16)")
    p.add_argument("--mask-ratio", type=fraction, default=0.75, help="masked share of patches (default 0.75)")
    p.add_argument("--decoder-layers", type=positive_int, default=4, help="decoder blocks (default 4; paper 8)")
    p.add_argument("--decoder-width", type=positive_int, default=256, help="decoder width (default 256; paper 512)")
    p.add_argument("--steps", type=positive_int, default=2000, help="optimisation steps (default 2000)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="global batch (default 32)")
    p.add_argument("--base-lr", type=positive_float, default=1.5e-4, help="lr = base-lr x batch / 256")
    p.add_argument("--pool-size", type=positive_int, default=2048, help="random crops drawn once (default 2048)")
    p.add_argument("--checkpoint-every", type=positive_int, default=200, help="steps between checkpoints")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="autocast precision (auto: bf16 only where the CPU/GPU computes it natively)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device (default cpu)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_pretrain)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from demseg.pretrain.mae import PretrainConfig, pretrain, resolve_precision

    config = PretrainConfig(arch=args.arch, recipe=args.recipe, tile_size_px=args.tile_size_px,
                            crop_size_px=args.crop_size_px,
                            patch_size=args.patch_size, mask_ratio=args.mask_ratio,
                            decoder_layers=args.decoder_layers, decoder_width=args.decoder_width, steps=args.steps,
                            batch_size=args.batch_size, base_lr=args.base_lr, pool_size=args.pool_size,
                            checkpoint_every=args.checkpoint_every, seed=args.seed,
                            precision=resolve_precision(args.precision, args.device), device=args.device)
    summary = pretrain(args.sources, config, args.out, resume=args.resume, overwrite=args.overwrite,
                       progress=not args.quiet)
    if summary.get("rank", 0) == 0:
        print(f"pre-trained {summary['steps_done']} steps, final loss {summary['final_loss']:.4f}; "
              f"encoder: {args.out}/encoder.safetensors")
    return 0


def _add_train_flags(p: argparse.ArgumentParser, single: bool) -> None:
    p.add_argument("--iters", type=_int, default=3000, help="optimisation steps (default 3000, the paper's)")
    p.add_argument("--val-tiles", type=non_negative_int, default=50, help="validation tiles (default 50)")
    p.add_argument("--arch", choices=["tiny", "small", "base"], default="tiny", help="MAE ViT size (default tiny)")
    p.add_argument("--recipe", default="relief+slope", help="normalisation recipe (default relief+slope)")
    p.add_argument("--head-width", type=positive_int, default=64,
                   help="UperNet width (default 64, CPU-sized; the paper's MMSegmentation head is 512)")
    p.add_argument("--neck-width", type=non_negative_int, default=64,
                   help="project tokens to this width before the pyramid (default 64; 0 keeps the ViT width)")
    p.add_argument("--unet-width", type=positive_int, default=16, help="UNet base width (default 16)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="tiles per step (default 8)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--val-every", type=positive_int, default=150, help="validate every N steps (default 150)")
    p.add_argument("--tile-size-px", type=positive_int, default=224, help="tile side (default 224)")
    p.add_argument("--split-seed", type=non_negative_int, default=0, help="seed of the spatial split (default 0)")
    p.add_argument("--no-cache", action="store_true", help="run the backbone every step (slow; for comparison)")
    p.add_argument("--backbone-dtype", choices=["auto", "bf16", "fp32"], default="auto",
                   help="frozen backbone precision (auto: bf16 only with native CPU support)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _train_config(args: argparse.Namespace, **fields):
    from demseg.train.config import TrainConfig

    if args.iters <= 0:
        raise DemsegError(f"--iters must be positive, got {args.iters}")
    return TrainConfig(iters=args.iters, val_tiles=args.val_tiles, arch=args.arch, recipe=args.recipe,
                       head_width=args.head_width, neck_width=args.neck_width or None,
                       unet_width=args.unet_width, batch_size=args.batch_size,
                       lr=args.lr, val_every=min(args.val_every, args.iters), tile_size_px=args.tile_size_px,
                       split_seed=args.split_seed, cached=not args.no_cache, backbone_dtype=args.backbone_dtype,
                       **fields)


def _add_train(commands) -> None:
    p = commands.add_parser("train", help="train one model on a dataset spec",
                            description="Train MAE+UperNet (frozen backbone) or a UNet on N training tiles of a "
                                        "spec and write a run folder (weights, config, metrics, manifest).")
    p.add_argument("spec", help="dataset spec (YAML) or folder")
    p.add_argument("--task", choices=["buildings", "roads"], default="buildings", help="target class")
    p.add_argument("--model", choices=["mae-upernet", "unet"], default="mae-upernet", help="model")
    p.add_argument("--backbone-weights", default="dem-tiny",
                   help="dem-tiny (shipped), random, a HF dir or hub id, an MAE .pth, or demseg .safetensors")
    p.add_argument("--train-tiles", type=positive_int, default=10, help="training tiles (default 10)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed (default 0)")
    p.add_argument("--out", required=True, help="run folder")
    _add_train_flags(p, single=True)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from demseg.train.run import train_run

    config = _train_config(args, task=args.task, model=args.model, backbone_weights=args.backbone_weights,
                           train_tiles=args.train_tiles, seed=args.seed)
    scores = train_run(args.spec, config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"best_iter={scores['best_iter']} iou={scores['iou']:.3f} f1={scores['f1']:.3f} "
          f"precision={scores['precision']:.3f} recall={scores['recall']:.3f}  run: {args.out}")
    return 0


def _add_evaluate(commands) -> None:
    p = commands.add_parser("evaluate", help="score a run on a spec's validation tiles",
                            description="Score a trained run on the validation tiles of a spec (all tiles of "
                                        "scenes marked split: val), possibly another city.")
    p.add_argument("run", help="run folder made by demseg train")
    p.add_argument("spec", help="dataset spec (YAML) or folder")
    p.add_argument("--task", choices=["buildings", "roads"], help="task (default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from demseg.evaluate.score import evaluate_run

    scores = evaluate_run(args.run, args.spec, args.task, progress=not args.quiet)
    print(f"iou={scores['iou']:.3f} f1={scores['f1']:.3f} precision={scores['precision']:.3f} "
          f"recall={scores['recall']:.3f}  ({scores['val_tiles']} tiles)")
    return 0


def _add_experiment(commands) -> None:
    p = commands.add_parser("experiment", help="label-budget protocol with tables, plots and CIs",
                            description="Run tasks x models x training tiles x seeds on a spec and write "
                                        "results.csv, summary.md, curves.png, previews and a manifest. Rerun the "
                                        "same command to resume an interrupted experiment.")
    p.add_argument("spec", help="dataset spec (YAML) or folder")
    p.add_argument("--task", type=name_list, default=["buildings"], help="tasks, comma-separated")
    p.add_argument("--train-tiles", type=int_list, default=[10, 50, 200, 450], help="budgets, comma-separated")
    p.add_argument("--models", type=name_list, default=["mae-upernet", "unet"], help="models, comma-separated")
    p.add_argument("--backbone-weights", type=name_list, default=["dem-tiny"],
                   help="backbone weights to compare, comma-separated (dem-tiny, random, paths...)")
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds per cell (default 3)")
    p.add_argument("--out", required=True, help="experiment folder")
    _add_train_flags(p, single=False)
    p.set_defaults(func=_cmd_experiment)


def _cmd_experiment(args: argparse.Namespace) -> int:
    from demseg.evaluate.experiment import ExperimentConfig, format_table, run_experiment

    unknown = sorted(set(args.task) - {"buildings", "roads"}) + sorted(set(args.models) - {"mae-upernet", "unet"})
    if unknown:
        raise DemsegError(f"unknown task or model: {', '.join(unknown)}")
    config = ExperimentConfig(tasks=args.task, models=args.models, backbone_weights=args.backbone_weights,
                              train_tiles=args.train_tiles, seeds=args.seeds, base=_train_config(args))
    rows = run_experiment(args.spec, config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(format_table(rows))
    print(f"results: {args.out}/results.csv, {args.out}/summary.md, {args.out}/curves.png")
    return 0


def _add_demo(commands) -> None:
    p = commands.add_parser("demo", help="the main job on the embedded synthetic world (~10 min on 2 cores)",
                            description="Generate the synthetic DEM world, then run the label-budget protocol "
                                        "for buildings and roads at 10 and 50 tiles, MAE+UperNet (shipped "
                                        "DEM-pretrained encoder) vs UNet, and print the IoU table.")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's protocol instead: 10/50/200/450 tiles, 3000 iterations, 3 seeds, width 256")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from demseg.evaluate.demo import run_demo

    print(run_demo(args.out, paper=args.paper, progress=not args.quiet))
    return 0


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def _add_predict(commands) -> None:
    p = commands.add_parser("predict", help="segment whole scenes with a trained run",
                            description="Predict whole DEMs with a trained run: overlapping windows blended "
                                        "smoothly, written row block by row block (memory does not grow with the "
                                        "scene). Writes <stem>_mask.tif and <stem>_prob.tif (Cloud-Optimized "
                                        "GeoTIFFs on the DEM's grid), <stem>_vectors.gpkg (buildings, or roads and "
                                        "road_centrelines), <stem>_preview.png and <stem>_done.json. A rerun skips "
                                        "scenes whose outputs are complete.")
    p.add_argument("run", help="run folder made by demseg train")
    p.add_argument("inputs", nargs="+", help="DEM GeoTIFF(s) and/or dataset spec(s) (each scene's dem and dtm)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dtm", help="bare-earth DTM on the DEM's grid (one DEM only): gives mean_height_m")
    p.add_argument("--band", type=positive_int, help="elevation band of multi-band DEMs (1-based)")
    p.add_argument("--crs", help="CRS for DEMs that declare none, e.g. EPSG:2154")
    p.add_argument("--overlap", type=fraction, default=0.25, help="window overlap, 0 to below 1 (default 0.25)")
    p.add_argument("--tta", action="store_true", help="average the 8 flips and rotations (8x slower)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--min-area-m2", type=non_negative_float, default=10.0,
                   help="drop polygons smaller than this (default 10)")
    p.add_argument("--simplify-m", type=non_negative_float,
                   help="simplification tolerance in metres (default: the pixel size; 0: none)")
    p.add_argument("--regularise", action="store_true",
                   help="polygons filling >= 85%% of their minimum rotated rectangle become that rectangle")
    p.add_argument("--block-rows", type=positive_int, help="rows per vectorising block (default: ~4 Mpx blocks)")
    p.add_argument("--allow-resolution-mismatch", action="store_true",
                   help="predict DEMs whose pixel size is more than 10%% off the run's (default: refuse)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="scenes in parallel on a local Dask cluster of N processes (default 1: no Dask)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--overwrite", action="store_true", help="predict complete scenes again")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from demseg.predict import predict_many

    results = predict_many(args.run, args.inputs, args.out, workers=args.workers, scheduler=args.scheduler,
                           overwrite=args.overwrite, progress=not args.quiet, overlap=args.overlap, tta=args.tta,
                           batch_size=args.batch_size, block_rows=args.block_rows, min_area_m2=args.min_area_m2,
                           simplify_m=args.simplify_m, regularise=args.regularise,
                           allow_resolution_mismatch=args.allow_resolution_mismatch, dtm_path=args.dtm,
                           band=args.band, crs=args.crs)
    for stem, paths in results.items():
        print(f"{stem}: {paths['mask']} {paths['prob']} {paths['vectors']} {paths['preview']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except DemsegError as exc:
        print(f"demseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("demseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
