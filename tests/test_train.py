"""Training: feature cache equivalence, run folders, reproducibility, evaluation, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from demseg.data.dataset import load_split
from demseg.data.synth import generate_world
from demseg.errors import DemsegError
from demseg.evaluate.metrics import SegmentationScorer
from demseg.models import build
from demseg.models.features import encode_views
from demseg.runs.config import TrainConfig
from demseg.runs.folder import load_run
from demseg.train.loop import fit
from demseg.train.run import run_arrays, train_run

TILE = 64


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Six 256 px synthetic scenes (5 train, 1 val): 16 tiles of 64 px each."""
    out = tmp_path_factory.mktemp("world")
    return generate_world(out, scenes=6, size_px=256, seed=3, val_fraction=0.2, progress=False)


def tiny_config(**fields) -> TrainConfig:
    base = dict(task="buildings", model="mae-upernet", arch="tiny", tile_size_px=TILE, train_tiles=4, val_tiles=6,
                iters=6, val_every=3, head_width=16, neck_width=16, unet_width=4, batch_size=4, views=2,
                backbone_dtype="fp32", amp="off", min_valid_fraction=0.5)
    base.update(fields)
    return TrainConfig(**base)


def prepared(world, config: TrainConfig):
    """The split data, arrays and a pixel-size-stamped config of a test world."""
    data = load_split(world, [config.task], config.split_config(), progress=False)
    config = config.model_copy(update={"pixel_size_m": data.pixel_size_m()})
    return data, config, *run_arrays(data, config)[2:]


def auto_spec(world, tmp_path):
    """The test world as a spec whose scenes all use the automatic spatial split."""
    auto = tmp_path / "auto.yaml"
    auto.write_text(world.read_text().replace("split: val", "split: auto").replace("split: train", "split: auto")
                    .replace(": s0", f": {world.parent}/s0").replace(f"id: {world.parent}/s0", "id: s0"))
    return auto


def test_cached_and_uncached_training_see_the_same_features_and_losses(world):
    data, config, train, val = prepared(world, tiny_config())
    model = build(config)
    cache = encode_views(model.backbone, train.inputs, train.targets, views=2, dtype=torch.float32)
    from demseg.data.augment import dihedral

    direct = model.backbone(dihedral(torch.from_numpy(train.inputs[1]), 1)[None])
    cached_maps = model.backbone.tuned_forward(cache.batch(np.array([1 * 2 + 1]))[0])
    for level, feature in enumerate(direct):
        assert torch.allclose(cached_maps[level][0], feature[0], atol=1e-5)
    uncached = fit(config.model_copy(update={"cached": False}), build(config), train, val, SegmentationScorer,
                   progress=False)
    exact = fit(config.model_copy(update={"cache_dtype": "fp32"}), build(config), train, val, SegmentationScorer,
                progress=False)
    assert np.allclose(exact.losses, uncached.losses, rtol=1e-4, atol=1e-5)
    # the cache stores features in bf16 by default: equal to bf16 tolerance
    cached = fit(config, build(config), train, val, SegmentationScorer, progress=False)
    assert np.allclose(cached.losses, uncached.losses, rtol=2e-2, atol=2e-3)


def test_flipping_cached_tokens_is_not_the_same_as_encoding_the_flipped_tile(world):
    _, config, train, _ = prepared(world, tiny_config())
    model = build(config)
    x = torch.from_numpy(train.inputs[:4])
    encoded_flip = model.backbone(torch.flip(x, dims=(-1,)))[3]
    flipped_tokens = torch.flip(model.backbone(x)[3], dims=(-1,))
    cosine = torch.nn.functional.cosine_similarity(encoded_flip, flipped_tokens, dim=1).mean()
    assert cosine < 0.99  # hence one cache entry per view


def test_train_run_writes_a_complete_reproducible_run_folder(world, tmp_path):
    config = tiny_config()
    first = train_run(world, config, tmp_path / "a", SegmentationScorer, progress=False)
    second = train_run(world, config, tmp_path / "b", SegmentationScorer, progress=False)
    first.pop("train_seconds")
    second.pop("train_seconds")
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)  # NaN-safe equality
    for name in ("config.json", "model.safetensors", "backbone.safetensors", "metrics.json", "tiles.csv",
                 "manifest.json", "history.csv"):
        assert (tmp_path / "a" / name).exists(), name
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert len(manifest["tiles"]["train"]) == 4 and manifest["data"]["sha256"]
    assert manifest["versions"]["torch"].startswith("2.")
    model, loaded = load_run(tmp_path / "a")
    assert loaded.pixel_size_m == 0.5 and not any(p.requires_grad for p in model.backbone.parameters())


def test_unet_trains_and_evaluates_on_the_validation_scenes(world, tmp_path, capsys):
    from demseg.cli import main

    code = main(["train", "--paper", str(world), "--model", "unet", "--train-tiles", "4", "--iters", "4", "--val-every", "2",
                 "--tile-size-px", str(TILE), "--unet-width", "4", "--val-tiles", "6", "--out", str(tmp_path / "u"),
                 "--quiet"])
    assert code == 0
    code = main(["evaluate", str(tmp_path / "u"), str(world), "--quiet"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0 and out.startswith("iou=") and "f1=" in out and "precision=" in out and "recall=" in out
    (folder,) = (tmp_path / "u" / "evaluations").glob("synthetic-world-*")  # the spec's name and path hash
    assert out.endswith(str(folder))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["validation"] == "the run's own validation tiles" and metrics["val_tiles"] > 0
    assert (folder / "preview.png").exists()


@pytest.mark.parametrize("argv, pattern", [
    (["--train-tiles", "500"], "only"),
    (["--task", "roads", "--spec-without-roads"], "no scene"),
    (["--iters", "0"], "--iters"),
    (["--backbone-weights", "CORRUPT"], "corrupt|not|cannot"),
    (["--backbone-weights", "PICKLE"], "refus|unsafe|weights_only|code"),
    (["--recipe", "minmax+ndvi"], "unknown normalisation"),
])
def test_bad_training_inputs_give_one_line_and_exit_2(world, tmp_path, capsys, argv, pattern):
    from demseg.cli import main

    spec = str(world)
    argv = list(argv)
    if "--spec-without-roads" in argv:
        argv.remove("--spec-without-roads")
        text = world.read_text().replace("roads: 2, ", "")
        spec = str(tmp_path / "no_roads.yaml")
        (tmp_path / "no_roads.yaml").write_text(text.replace(": s0", f": {world.parent}/s0")
                                                .replace(f"id: {world.parent}/s0", "id: s0"))
    if "CORRUPT" in argv:
        bad = tmp_path / "enc.safetensors"
        bad.write_bytes(b"\x10\x00\x00\x00not really safetensors")
        argv[argv.index("CORRUPT")] = str(bad)
    if "PICKLE" in argv:
        marker = tmp_path / "executed"

        class Evil:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        torch.save({"model": Evil()}, tmp_path / "evil.pth")
        argv[argv.index("PICKLE")] = str(tmp_path / "evil.pth")
    code = main(["train", "--paper", spec, "--tile-size-px", str(TILE), "--iters", "2", "--train-tiles", "2",
                 "--out", str(tmp_path / "run"), "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    import re

    assert re.search(pattern, err, re.IGNORECASE), err
    assert not (tmp_path / "executed").exists()
    assert not (tmp_path / "run" / "config.json").exists()


def test_existing_output_folder_is_refused_without_overwrite(world, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    with pytest.raises(DemsegError, match="exists"):
        train_run(world, tiny_config(), tmp_path / "run", SegmentationScorer, progress=False)
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_wrong_architecture_run_weights_are_refused(world, tmp_path):
    train_run(world, tiny_config(model="unet"), tmp_path / "u", SegmentationScorer, progress=False)
    config = json.loads((tmp_path / "u" / "config.json").read_text())
    config["unet_width"] = 8
    (tmp_path / "u" / "config.json").write_text(json.dumps(config))
    with pytest.raises(DemsegError, match="do not fit"):
        load_run(tmp_path / "u")


def test_evaluating_on_the_training_data_never_scores_a_training_tile(world, tmp_path):
    from demseg.evaluate.score import evaluate_run

    auto = auto_spec(world, tmp_path)
    train_run(auto, tiny_config(model="unet", val_tiles=6), tmp_path / "run", SegmentationScorer, progress=False)
    scores = evaluate_run(tmp_path / "run", auto, progress=False)
    record = json.loads(next((tmp_path / "run" / "evaluations").glob("*/metrics.json")).read_text())
    trained = set(json.loads((tmp_path / "run" / "manifest.json").read_text())["tiles"]["train"])
    assert record["validation"] == "the run's own validation tiles"
    assert scores["val_tiles"] > 0 and not trained & set(record["tile_ids"])
    assert set(record["tile_ids"]) == set(json.loads((tmp_path / "run" / "manifest.json").read_text())["tiles"]["val"])


def test_validation_tiles_do_not_depend_on_the_training_budget(world, tmp_path):
    from demseg.cli import main

    auto = auto_spec(world, tmp_path)
    val_ids = []
    for budget in ("2", "8"):
        out = tmp_path / f"run{budget}"
        code = main(["train", "--paper", str(auto), "--model", "unet", "--train-tiles", budget, "--iters", "2", "--val-every", "2",
                     "--tile-size-px", str(TILE), "--unet-width", "4", "--val-tiles", "6", "--out", str(out),
                     "--quiet"])
        assert code == 0
        val_ids.append(json.loads((out / "manifest.json").read_text())["tiles"]["val"])
    assert val_ids[0] == val_ids[1] and len(val_ids[0]) > 0


def test_evaluating_a_run_on_other_data_at_another_resolution_is_refused(world, tmp_path):
    from demseg.evaluate.score import evaluate_run

    coarse = generate_world(tmp_path / "coarse", scenes=2, size_px=128, pixel_size_m=1.0, seed=9, progress=False)
    train_run(world, tiny_config(model="unet"), tmp_path / "u", SegmentationScorer, progress=False)
    with pytest.raises(DemsegError, match="pixel size"):
        evaluate_run(tmp_path / "u", coarse, progress=False)
    assert evaluate_run(tmp_path / "u", coarse, progress=False, allow_resolution_mismatch=True)["val_tiles"] > 0


def test_a_run_trained_on_resampled_data_is_scored_on_its_own_validation_tiles_resampled_alike(world, tmp_path):
    from demseg.evaluate.score import evaluate_run

    train_run(world, tiny_config(model="unet", pixel_size_m=1.0), tmp_path / "u", SegmentationScorer, progress=False)
    recorded = json.loads((tmp_path / "u" / "manifest.json").read_text())["tiles"]["val"]
    assert json.loads((tmp_path / "u" / "config.json").read_text())["pixel_size_m"] == 1.0
    scores = evaluate_run(tmp_path / "u", world, progress=False)
    scored = json.loads((Path(scores["out"]) / "metrics.json").read_text())["tile_ids"]
    assert scores["val_tiles"] == len(recorded) and sorted(scored) == sorted(recorded)


def test_top_k_fine_tuning_from_the_block_cache_gives_the_same_losses_as_without_it(world):
    _, config, train, val = prepared(world, tiny_config(finetune="top-2", lp_fraction=0.0, cache_dtype="fp32"))
    cached = fit(config, build(config), train, val, SegmentationScorer, progress=False)
    uncached = fit(config.model_copy(update={"cached": False}), build(config), train, val, SegmentationScorer,
                   progress=False)
    assert np.allclose(cached.losses, uncached.losses, rtol=1e-4, atol=1e-5)
    bf16 = fit(config.model_copy(update={"cache_dtype": "bf16"}), build(config), train, val, SegmentationScorer,
               progress=False)
    assert np.allclose(bf16.losses, uncached.losses, rtol=2e-2, atol=2e-3)


def test_fine_tuning_changes_only_the_tuned_blocks_and_lp_ft_waits_for_the_head(world):
    _, config, train, val = prepared(world, tiny_config(model="mae-detail", finetune="top-2", lp_fraction=0.5,
                                                        detail_width=4))
    model = build(config)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    # an LP stage as long as the run: the tuned blocks never move
    fit(config.model_copy(update={"lp_fraction": 0.99}), model, train, val, SegmentationScorer, progress=False)
    unchanged = [k for k in before if torch.equal(before[k], model.backbone.state_dict()[k])]
    assert len(unchanged) == len(before)
    # one validation at the end, so the kept state is the trained one
    fit(config.model_copy(update={"val_every": config.iters}), model, train, val, SegmentationScorer,
        progress=False)
    after = model.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("encoder.layers.10.", "encoder.layers.11.")) for k in changed)


def test_a_fine_tuned_run_saves_its_tuned_blocks_and_loads_them_back(world, tmp_path):
    from demseg.models.inference import predict_images

    config = tiny_config(model="mae-detail", finetune="top-1", lp_fraction=0.0, detail_width=4)
    train_run(world, config, tmp_path / "ft", SegmentationScorer, progress=False)
    model, loaded = load_run(tmp_path / "ft")
    fresh = build(loaded.model_copy(update={"backbone_weights": "dem-tiny"}))
    block = "encoder.layers.11.mlp.fc1.weight"
    assert not torch.equal(model.backbone.state_dict()[block].float(), fresh.backbone.state_dict()[block].float())
    _, _, _, val = prepared(world, loaded)
    again, _ = load_run(tmp_path / "ft")
    first, second = predict_images(model, val.inputs[:2], False), predict_images(again, val.inputs[:2], False)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_init_starts_from_another_run_and_refuses_a_mismatch(world, tmp_path, capsys):
    from demseg.cli import main
    from demseg.train.run import apply_init, resolve_init

    train_run(world, tiny_config(model="unet"), tmp_path / "synthetic", SegmentationScorer, progress=False)
    config = resolve_init(tiny_config(model="unet", init=str(tmp_path / "synthetic")))
    model = build(config, seed=5)
    apply_init(model, config)
    saved, _ = load_run(tmp_path / "synthetic")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values(),
                                                  strict=True))
    base = ["train", "--paper", str(world), "--tile-size-px", str(TILE), "--iters", "2", "--train-tiles", "2", "--unet-width",
            "4", "--out", str(tmp_path / "run"), "--quiet", "--init", str(tmp_path / "synthetic")]
    for extra, pattern in ((["--model", "unet", "--recipe", "minmax"], "recipe"),
                           (["--model", "unet", "--task", "roads"], "task"),
                           (["--model", "mae-upernet"], "model")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert pattern in err and len(err.strip().splitlines()) == 1
    assert main(base[:-1] + ["no-such-start", "--model", "unet"]) == 2
    err = capsys.readouterr().err
    assert "no run folder and no shipped model" in err and len(err.strip().splitlines()) == 1


def test_init_compares_only_the_settings_that_shape_the_models_weights():
    from demseg.train.run import _shapes_weights

    assert _shapes_weights("unet_width", "unet") and not _shapes_weights("unet_width", "mae-detail")
    assert _shapes_weights("detail_width", "mae-detail") and not _shapes_weights("detail_width", "mae-upernet")
    assert _shapes_weights("head_width", "mae-upernet") and not _shapes_weights("head_width", "unet")
    assert all(_shapes_weights(name, model) for name in ("model", "task", "recipe")
               for model in ("unet", "mae-upernet", "mae-detail"))
    # a ViT's position table is sized by its tiles; a UNet is fully convolutional
    assert _shapes_weights("tile_size_px", "mae-detail") and not _shapes_weights("tile_size_px", "unet")


def test_a_shipped_starting_point_names_its_encoder_instead_of_copying_it(world, tmp_path, monkeypatch):
    import shutil

    from demseg.models import encoders
    from demseg.train.run import apply_init, resolve_init

    train_run(world, tiny_config(model="mae-detail", backbone_weights="dem-tiny"), tmp_path / "synthetic",
              SegmentationScorer, progress=False)
    folder = tmp_path / "weights" / "start"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):  # no backbone.safetensors: the config names dem-tiny
        shutil.copy(tmp_path / "synthetic" / name, folder / name)
    for shipped_file in encoders.WEIGHTS_DIR.glob("dem_mae_tiny*"):  # the encoder stays where it is
        (tmp_path / "weights" / shipped_file.name).symlink_to(shipped_file)
    monkeypatch.setattr(encoders, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setitem(encoders.SHIPPED_MODELS, "tiny-start", encoders.ShippedModel(
        "tiny-start", "start", "mae-detail", "buildings", "dem-tiny", "test"))
    config = resolve_init(tiny_config(model="mae-detail", init="tiny-start"))
    assert config.backbone_weights == "dem-tiny"
    model = build(config, seed=1)
    apply_init(model, config)
    saved, _ = load_run(tmp_path / "synthetic")
    assert all(torch.equal(a, b) for a, b in zip(model.head.state_dict().values(), saved.head.state_dict().values(),
                                                  strict=True))


def test_finetuning_more_blocks_than_the_encoder_has_is_one_line(world, tmp_path, capsys):
    from demseg.cli import main

    code = main(["train", "--paper", str(world), "--tile-size-px", str(TILE), "--iters", "2", "--train-tiles", "2",
                 "--finetune", "top-13", "--backbone-weights", "random", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "top 13 blocks of a 12-block" in err and len(err.strip().splitlines()) == 1


def test_mix_draws_a_share_of_every_batch_from_the_second_dataset(world, tmp_path):
    import json

    from demseg.data.arrays import TileArrays
    from demseg.data.synth import generate_world
    from demseg.train.loop import _batch_tiles

    arrays = TileArrays([str(i) for i in range(10)], np.zeros((10, 1, 4, 4), np.float32),
                        np.zeros((10, 4, 4), np.uint8), mixed=6)
    rows = _batch_tiles(np.random.default_rng(0), arrays, tiny_config(batch_size=8, mix_share=0.25))
    assert (rows < 4).sum() == 6 and (rows >= 4).sum() == 2  # 2 of 8 from the 6 mixed-in rows
    plain = TileArrays(arrays.ids, arrays.inputs, arrays.targets)
    assert np.array_equal(_batch_tiles(np.random.default_rng(0), plain, tiny_config(batch_size=8)),
                          np.random.default_rng(0).integers(0, 10, 8))  # no mix: the draws of before

    other = generate_world(tmp_path / "other", scenes=2, size_px=192, seed=11, progress=False)
    config = tiny_config(iters=2, val_every=2, train_tiles=2, mix=str(other), mix_tiles=3)
    train_run(world, config, tmp_path / "run", SegmentationScorer, progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["tiles"]["mix"]) == 3 and not set(manifest["tiles"]["mix"]) & set(manifest["tiles"]["val"])
    with pytest.raises(DemsegError, match="shares files"):
        train_run(world, tiny_config(iters=2, val_every=2, mix=str(world)), tmp_path / "run2", SegmentationScorer,
                  progress=False)


def test_crops_cut_images_and_targets_at_the_same_place_in_every_view():
    from demseg.models.inference import view_images

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (3, 32, 32)).astype(np.uint8)
    inputs = np.stack([targets.astype(np.float32), -targets.astype(np.float32)], axis=1)  # (3, 2, 32, 32)
    tiles, views = np.array([0, 2, 1, 2]), np.array([0, 3, 5, 7])
    corners = np.array([[0, 0], [16, 3], [5, 16], [16, 16]])
    images = view_images(inputs, tiles, views, corners, 16)
    cut = view_images(targets, tiles, views, corners, 16)
    assert images.shape == (4, 2, 16, 16) and cut.shape == (4, 16, 16)
    assert torch.equal(images[:, 0], cut.float()) and torch.equal(images[:, 1], -cut.float())
    row, col = corners[1]
    assert torch.equal(cut[1], torch.rot90(torch.from_numpy(targets[2, row:row + 16, col:col + 16]), 3))
    edge = view_images(targets, np.array([0]), np.array([0]), np.array([[16, 16]]), 16)
    assert torch.equal(edge[0], torch.from_numpy(targets[0, 16:, 16:]))  # the last corner reaches the far edge


def test_crop_training_feeds_crops_and_validates_on_whole_tiles(world):
    data, config, train, val = prepared(world, tiny_config(model="unet", crop_px=32, iters=4, val_every=2))
    model = build(config, seed=0)
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append((module.training, args[0].shape[-1])))
    result = fit(config, model, train, val, SegmentationScorer, progress=False)
    assert {size for training, size in sizes if training} == {32}
    assert {size for training, size in sizes if not training} == {TILE}
    batches = []
    model.register_forward_pre_hook(lambda module, args: batches.append(args[0].clone()) if module.training else None)
    fit(config, model, train, val, SegmentationScorer, progress=False)
    assert not torch.equal(batches[0], batches[1])  # a new crop every step
    assert result.best_iter in (2, 4) and all(np.isfinite(result.losses))
    again = fit(config, build(config, seed=0), train, val, SegmentationScorer, progress=False)
    assert again.losses == result.losses  # the crop corners come from the seed


@pytest.mark.parametrize("crop, pattern", [(40, "multiple of 16"), (2 * TILE, f"at most the tile size ({TILE})")])
def test_a_crop_that_does_not_fit_the_tile_is_one_line(world, tmp_path, capsys, crop, pattern):
    from demseg.cli import main

    code = main(["train", str(world), "--tile-size-px", str(TILE), "--crop-px", str(crop), "--iters", "2",
                 "--train-tiles", "2", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and pattern in err and not (tmp_path / "run").exists()


def test_crops_are_refused_for_a_backbone_model(world):
    data, config, train, val = prepared(world, tiny_config(crop_px=32))
    with pytest.raises(DemsegError, match="--crop-px is for the unet"):
        fit(config, build(config, seed=0), train, val, SegmentationScorer, progress=False)
