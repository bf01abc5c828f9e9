"""Shipped models: names that work wherever a run folder does, the pre-train -> ship -> fine-tune round trip,
resumable long training, and AdaBN."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from demseg.cli import main
from demseg.data.synth import generate_world
from demseg.errors import DemsegError
from demseg.evaluate.metrics import SegmentationScorer
from demseg.models import encoders
from demseg.runs.config import TrainConfig
from demseg.train.run import train_run

REPO = Path(__file__).resolve().parents[1]
TILE = 64


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Six 256 px synthetic scenes at 0.5 m (5 train, 1 val): 16 tiles of 64 px each."""
    return generate_world(tmp_path_factory.mktemp("world"), scenes=6, size_px=256, seed=5, val_fraction=0.2,
                          progress=False)


@pytest.fixture(scope="module")
def coarse_world(tmp_path_factory):
    """A second world at 1 m pixels: data a 0.5 m start must be resampled for."""
    return generate_world(tmp_path_factory.mktemp("coarse"), scenes=4, size_px=192, pixel_size_m=1.0, seed=6,
                          val_fraction=0.25, progress=False)


def tiny(**fields) -> TrainConfig:
    base = dict(task="buildings", model="unet", recipe="relief+slope", tile_size_px=TILE, train_tiles=4, val_tiles=4,
                iters=4, val_every=2, unet_width=4, batch_size=2, views=2, amp="off", min_valid_fraction=0.5)
    return TrainConfig(**{**base, **fields})


def tiny_flags(world) -> list[str]:
    return [str(world), "--preset", "scratch", "--model", "unet", "--recipe", "relief+slope", "--mix", "none",
            "--coarsen", "none", "--auxiliary", "none", "--tile-size-px", str(TILE), "--train-tiles", "4",
            "--val-tiles", "4", "--iters", "4", "--val-every", "2", "--unet-width", "4", "--batch-size", "2",
            "--views", "2", "--quiet"]


@pytest.fixture
def shipped_tiny(world, tmp_path, monkeypatch):
    """A tiny model pre-trained on ``world``, shipped by scripts/ship_model.py as 'tiny' into a private weights dir."""
    train_run(world, tiny(), tmp_path / "pretrained", SegmentationScorer, progress=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    for installed in encoders.WEIGHTS_DIR.iterdir():  # the package's own weights stay where they are
        (weights / installed.name).symlink_to(installed)
    spec = importlib.util.spec_from_file_location("ship_model", REPO / "scripts" / "ship_model.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    monkeypatch.setattr(ship, "PACKAGE_WEIGHTS", weights)
    monkeypatch.setattr("sys.argv", ["ship_model.py", str(tmp_path / "pretrained"), "tiny", "--spec", str(world),
                                     "--command", "demseg train WORLD ..."])
    ship.main()
    monkeypatch.setattr(encoders, "WEIGHTS_DIR", weights)
    monkeypatch.setitem(encoders.SHIPPED_MODELS, "tiny", encoders.ShippedModel(
        "tiny", "tiny", "unet", "buildings", None, "a tiny test model"))
    return weights / "tiny"


def test_a_shipped_model_carries_a_sidecar_with_its_command_data_and_pixel_sizes(shipped_tiny):
    sidecar = json.loads((shipped_tiny / "start.json").read_text())
    assert sidecar["command"] == "demseg train WORLD ..." and sidecar["pixel_size_m"] == 0.5
    assert sidecar["data"]["sha256"] and sidecar["train_tiles"] == 4 and sidecar["pixel_sizes_seen_m"] == [0.5]
    # trained on a synthetic world alone: the world is its data (no real scene, no city)
    assert sidecar["scenes"] == [] and sidecar["synthetic"]["seed"] == 5 and sidecar["synthetic"]["style"] == "mixed"
    assert (shipped_tiny / "manifest.json").is_file() and (shipped_tiny / "model.safetensors").stat().st_size > 0


def test_a_shipped_models_name_predicts_a_dem_without_labels(shipped_tiny, world, tmp_path, capsys):
    dem = Path(world).parent / "s000" / "dem.tif"
    assert main(["predict", "tiny", str(dem), "--dtm", str(dem.with_name("dtm.tif")), "--out",
                 str(tmp_path / "pred"), "--quiet"]) == 0
    done = json.loads((tmp_path / "pred" / "dem_done.json").read_text())
    assert done["run"] == str(shipped_tiny.resolve()) and done["training_pixel_size_m"] == 0.5
    assert (tmp_path / "pred" / "dem_mask.tif").is_file() and done["valid_pixels"] > 0


def test_a_folder_named_like_a_shipped_model_wins_over_the_name(shipped_tiny, world, tmp_path, monkeypatch):
    from demseg.models.encoders import resolve_model_dir

    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("tiny") == shipped_tiny
    train_run(world, tiny(iters=2, seed=3), tmp_path / "tiny", SegmentationScorer, progress=False)
    assert resolve_model_dir("tiny") == Path("tiny")


def test_an_unknown_model_name_is_one_line_listing_the_shipped_ones(world, tmp_path, capsys):
    dem = Path(world).parent / "s000" / "dem.tif"
    for argv in (["predict", "no-such-model", str(dem), "--out", str(tmp_path / "p")],
                 ["evaluate", "no-such-model", str(world)],
                 ["export", "no-such-model", "--onnx", "--out", str(tmp_path / "m.onnx")],
                 ["train", *tiny_flags(world), "--init", "no-such-model", "--out", str(tmp_path / "r")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "no shipped model of that name" in err and "buildings" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p").exists() and not (tmp_path / "r").exists()


def test_evaluating_a_shipped_model_needs_an_out_folder_and_never_writes_into_the_package(shipped_tiny, world,
                                                                                        tmp_path, capsys):
    before = sorted(p.name for p in shipped_tiny.iterdir())
    assert main(["evaluate", "tiny", str(world), "--quiet"]) == 2
    assert "pass --out" in capsys.readouterr().err
    assert main(["evaluate", "tiny", str(world), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert 0.0 <= metrics["iou"] <= 1.0 and "raised_fp_rate" in metrics
    assert sorted(p.name for p in shipped_tiny.iterdir()) == before


def test_finetuning_from_a_shipped_model_starts_from_its_weights_and_resamples_to_its_pixels(
        shipped_tiny, coarse_world, tmp_path):
    from demseg.runs.folder import read_run_config

    assert main(["train", *tiny_flags(coarse_world), "--iters", "1", "--lr", "1e-12", "--init", "tiny",
                 "--out", str(tmp_path / "ft")]) == 0
    config = read_run_config(tmp_path / "ft")
    assert config.pixel_size_m == 0.5 and config.init == "tiny"  # the 1 m data went in at the start's 0.5 m
    tuned, start = load_file(str(tmp_path / "ft" / "model.safetensors")), load_file(str(shipped_tiny / "model.safetensors"))
    weights = [k for k in start if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(tuned[k].float(), start[k].float(), atol=1e-6) for k in weights)


def test_init_refuses_a_start_made_for_another_pixel_size_task_or_recipe(shipped_tiny, world, tmp_path, capsys):
    base = ["train", *tiny_flags(world), "--init", "tiny", "--out", str(tmp_path / "r")]
    for extra, words in ((["--pixel-size-m", "2"], "works at 0.5 m"), (["--task", "roads"], "task"),
                         (["--recipe", "relief+slope+roughness"], "recipe"), (["--unet-width", "8"], "unet_width")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists() or not any(p for p in (tmp_path / "r").iterdir()
                                                    if not p.name.startswith(".demseg"))


def test_models_lists_the_shipped_models_with_what_they_learnt_from(shipped_tiny, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "buildings" in out and "dem-tiny" in out
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    tiny_entry = next(m for m in listed["models"] if m["name"] == "tiny")
    assert tiny_entry["command"] == "demseg train WORLD ..." and tiny_entry["pixel_size_m"] == 0.5


def test_a_stopped_training_run_resumes_to_exactly_the_uninterrupted_result(world, tmp_path, monkeypatch):
    from demseg.train import loop

    config = tiny(iters=6, val_every=3, checkpoint_every=2)
    train_run(world, config, tmp_path / "whole", SegmentationScorer, progress=False)
    saved = loop.save_checkpoint
    calls = []

    def stop_after_the_second_save(*args, **kwargs):
        saved(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", stop_after_the_second_save)
    with pytest.raises(KeyboardInterrupt):
        train_run(world, config, tmp_path / "stopped", SegmentationScorer, progress=False)
    assert (tmp_path / "stopped" / "checkpoint.pt").is_file() and not (tmp_path / "stopped" / "config.json").exists()
    monkeypatch.setattr(loop, "save_checkpoint", saved)
    train_run(world, config, tmp_path / "stopped", SegmentationScorer, progress=False, resume=True)
    whole, resumed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("whole", "stopped"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not (tmp_path / "stopped" / "checkpoint.pt").exists()  # a finished run keeps no checkpoint
    histories = [(tmp_path / name / "history.csv").read_text() for name in ("whole", "stopped")]
    assert histories[0] == histories[1]


def test_resuming_with_other_settings_or_without_a_checkpoint_is_one_line(world, tmp_path, capsys, monkeypatch):
    from demseg.train import loop

    def stop(*args, **kwargs):
        loop_save(*args, **kwargs)
        raise KeyboardInterrupt

    loop_save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", stop)
    with pytest.raises(KeyboardInterrupt):
        train_run(world, tiny(iters=6, checkpoint_every=2), tmp_path / "r", SegmentationScorer, progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", loop_save)
    with pytest.raises(DemsegError, match="other settings: lr"):
        train_run(world, tiny(iters=6, checkpoint_every=2, lr=5e-4), tmp_path / "r", SegmentationScorer,
                  progress=False, resume=True)
    assert main(["train", *tiny_flags(world), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing to resume" in err and len(err.splitlines()) == 1


def test_a_diverging_loss_stops_training_with_one_line_and_nothing_finished(world, tmp_path, capsys):
    assert main(["train", *tiny_flags(world), "--lr", "1e30", "--out", str(tmp_path / "nan")]) == 2
    err = capsys.readouterr().err.strip()
    assert "training diverged" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "nan" / "config.json").exists()


def test_adabn_reestimates_batchnorm_statistics_on_the_new_data_and_keeps_the_weights():
    from demseg.models.inference import adapt_batchnorm
    from demseg.models.unet import UNet

    model = UNet(2, 2, base_width=4).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    inputs = (np.random.default_rng(0).normal(3.0, 2.0, (4, 2, 32, 32))).astype(np.float32)
    assert adapt_batchnorm(model, inputs, batch_size=2) == 4
    first = model.inc[0][1] if hasattr(model, "inc") else next(m for m in model.modules()
                                                                if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(first.running_mean, torch.zeros_like(first.running_mean))
    assert first.momentum == 0.1 and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_the_recommended_preset_starts_from_a_shipped_model_it_fits():
    from demseg.models.encoders import SHIPPED_MODELS
    from demseg.train.presets import preset_config, start_misfit

    config = preset_config("recommended", task="buildings")
    assert config.init in SHIPPED_MODELS and start_misfit(config.init, config) == ""


def test_train_without_flags_fine_tunes_the_presets_shipped_model_and_a_misfit_trains_from_scratch(
        shipped_tiny, world, tmp_path, monkeypatch, capsys):
    from demseg.runs.folder import read_run_config
    from demseg.train.presets import PRESETS

    small = {"model": "unet", "recipe": "relief+slope", "unet_width": 4, "tile_size_px": TILE, "batch_size": 2,
             "views": 2, "val_tiles": 4, "train_tiles": 4}
    monkeypatch.setitem(PRESETS["recommended"], "buildings", {**small, "init": "tiny", "iters": 2, "val_every": 2,
                                                              "lr": 3e-4})
    monkeypatch.setitem(PRESETS["scratch"], "buildings", {**small, "iters": 3, "val_every": 3})
    assert main(["train", str(world), "--quiet", "--out", str(tmp_path / "default")]) == 0
    assert read_run_config(tmp_path / "default").init == "tiny"
    assert main(["train", str(world), "--quiet", "--unet-width", "8", "--out", str(tmp_path / "wider")]) == 0
    assert "not starting from the shipped model 'tiny'" in capsys.readouterr().err
    wider = read_run_config(tmp_path / "wider")
    assert wider.init is None and (wider.iters, wider.lr) == (3, 1e-3)  # from scratch: the scratch preset's schedule
    assert main(["train", str(world), "--quiet", "--init", "none", "--out", str(tmp_path / "scratch")]) == 0
    assert read_run_config(tmp_path / "scratch").init is None


def test_class_weighting_none_keeps_plain_cross_entropy(world, tmp_path, monkeypatch):
    from demseg.train import loop

    def never(*args, **kwargs):
        raise AssertionError("frequency weights were computed")

    monkeypatch.setattr(loop, "class_weights", never)
    train_run(world, tiny(iters=2, class_weighting="none"), tmp_path / "plain", SegmentationScorer, progress=False)
    with pytest.raises(AssertionError, match="frequency weights"):
        train_run(world, tiny(iters=2), tmp_path / "weighted", SegmentationScorer, progress=False)
