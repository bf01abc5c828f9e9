"""One set of defaults: the CLI and the Python configs give the same config for the same flags."""

from __future__ import annotations

import argparse

import pytest

from demseg.cli import build_parser, parse_configs
from demseg.data.tiles import SplitConfig
from demseg.lidar import RasterizeConfig
from demseg.predict.config import PredictConfig
from demseg.pretrain.mae import PretrainConfig
from demseg.runs.config import TrainConfig
from demseg.train.experiment import ExperimentConfig
from demseg.train.presets import preset_config

CASES = [
    (["train", "spec.yaml", "--out", "o"], "train", preset_config("recommended")),
    (["train", "spec.yaml", "--out", "o", "--task", "roads"], "train", preset_config("recommended", task="roads")),
    (["train", "spec.yaml", "--out", "o", "--paper"], "train", TrainConfig()),
    (["train", "spec.yaml", "--out", "o", "--mix", "none", "--coarsen", "none", "--auxiliary", "none"], "train",
     preset_config("recommended", mix=None, coarsen=[], auxiliary=[])),
    (["train", "spec.yaml", "--out", "o", "--model", "unet", "--iters", "7", "--no-cache", "--recipe", "minmax",
      "--neck-width", "0", "--backbone-weights", "random", "--train-tiles", "50", "--finetune", "none"], "train",
     preset_config("recommended", model="unet", iters=7, cached=False, recipe="minmax", neck_width=0,
                   backbone_weights="random", train_tiles=50, finetune="none")),
    (["experiment", "spec.yaml", "--out", "o"], "experiment", ExperimentConfig()),
    (["experiment", "spec.yaml", "--out", "o", "--task", "buildings,roads", "--models", "unet", "--seeds", "5",
      "--train-tiles", "10,50", "--iters", "500", "--head-width", "32"], "experiment",
     ExperimentConfig(tasks=["buildings", "roads"], models=["unet"], seeds=5, train_tiles=[10, 50],
                      base=TrainConfig(iters=500, head_width=32))),
    (["experiment", "spec.yaml", "--out", "o", "--preset", "recommended", "--iters", "100"], "experiment",
     ExperimentConfig(models=["unet"], base=preset_config("recommended", iters=100).model_copy(
         update={"model": TrainConfig().model}))),
    (["experiment", "spec.yaml", "--out", "o", "--preset", "recommended", "--task", "roads", "--models",
      "unet,mae-detail", "--crop-px", "128"], "experiment",
     ExperimentConfig(tasks=["roads"], models=["unet", "mae-detail"], base=TrainConfig(
         recipe="relief+slope+microrelief", crop_px=128))),
    (["predict", "run", "dem.tif", "--out", "o"], "predict", PredictConfig()),
    (["predict", "run", "dem.tif", "--out", "o", "--overlap", "0.5", "--tta", "--min-area-m2", "3",
      "--workers", "2", "--regularise"], "predict",
     PredictConfig(overlap=0.5, tta=True, min_area_m2=3, workers=2, regularise=True)),
    (["pretrain", "dems", "--out", "o"], "pretrain", PretrainConfig()),
    (["pretrain", "dems", "--out", "o", "--arch", "small", "--steps", "9", "--crop-size-px", "112"], "pretrain",
     PretrainConfig(arch="small", steps=9, crop_size_px=112)),
    (["probe", "spec.yaml", "--val-tiles", "8", "--arch", "base"], "train", TrainConfig(val_tiles=8, arch="base")),
    (["data", "check", "spec.yaml", "--tile-size-px", "64"], "split", SplitConfig(tile_size_px=64)),
    (["rasterize", "a.laz", "--out", "o"], "rasterize", RasterizeConfig()),
    (["rasterize", "a.laz", "--out", "o", "--pixel-size-m", "1", "--classes", "buildings=6"], "rasterize",
     RasterizeConfig(pixel_size_m=1.0, classes={"buildings": 6})),
]


def commands_with_configs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every (sub)command whose flags are made from a config, as its words, e.g. ("data", "check")."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if "configs" in sub._defaults:
                    found.add((*prefix, name))
                found |= commands_with_configs(sub, (*prefix, name))
    return found


@pytest.mark.parametrize("argv, name, expected", CASES, ids=[" ".join(c[0][:1] + c[0][3:5]) for c in CASES])
def test_the_cli_and_python_build_the_same_config(argv, name, expected):
    assert parse_configs(argv)[name] == expected


def test_every_command_with_a_config_is_compared_with_python():
    covered = {tuple(argv[:2]) if argv[0] == "data" else (argv[0],) for argv, _, _ in CASES}
    assert commands_with_configs(build_parser()) <= covered


def test_a_flag_that_turns_a_default_off_says_what_turning_it_off_does(capsys):
    with pytest.raises(SystemExit):
        parse_configs(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    help_of_no_cache = text.split("--no-cache ", 1)[1][:120]
    assert help_of_no_cache.startswith("Train without the feature cache"), help_of_no_cache


def test_cli_help_shows_the_config_defaults_and_descriptions(capsys):
    with pytest.raises(SystemExit):
        parse_configs(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    field = TrainConfig.model_fields["head_width"]
    assert f"(default {field.default})" in text
    assert " ".join(field.description.split())[:40] in text


def test_the_recommended_preset_differs_from_the_papers_model_and_says_so_in_help(capsys):
    recommended = parse_configs(["train", "spec.yaml", "--out", "o"])["train"]
    assert (recommended.init, recommended.model, recommended.mix, recommended.iters) == ("buildings", "unet",
                                                                                       "rehearsal", 60)
    assert recommended.auxiliary == ["vegetation"] and "roughness" in recommended.recipe
    scratch = parse_configs(["train", "spec.yaml", "--out", "o", "--preset", "scratch"])["train"]
    assert (scratch.init, scratch.coarsen, scratch.iters) == (None, [2, 4], 300)
    assert parse_configs(["train", "spec.yaml", "--out", "o", "--paper", "--iters", "5"])["train"] == TrainConfig(iters=5)
    with pytest.raises(SystemExit):
        parse_configs(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default recommended: unet; scratch: unet; paper: mae-upernet)" in text
    assert "(default recommended: buildings for buildings, none for roads; scratch: none; paper: none)" in text


def test_an_experiment_preset_that_differs_between_its_tasks_is_one_line(capsys):
    from demseg.cli import main

    code = main(["experiment", "spec.yaml", "--preset", "recommended", "--task", "buildings,roads", "--out", "o"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "one --task per experiment" in err
