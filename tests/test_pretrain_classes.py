"""Supervised pre-training on the synthetic world's classes: the loss, the crops, the run, and downstream use."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest
import torch
from conftest import write_raster
from safetensors.torch import load_file
from test_hostile_inputs import one_line_error

from demseg.cli import main
from demseg.pretrain.mae import PretrainConfig, build_mae
from demseg.pretrain.objectives import (
    CLASS_NAMES,
    OBJECTIVES,
    class_weights,
    classes_loss,
    patchify,
    pretext_loss,
)

TINY = dict(arch="tiny", tile_size_px=48, crop_size_px=32, patch_size=16, steps=4, batch_size=4, pool_size=8,
            checkpoint_every=2, decoder_layers=1, decoder_width=32, precision="fp32")
TINY_FLAGS = ["--arch", "tiny", "--tile-size-px", "48", "--crop-size-px", "32", "--steps", "3", "--batch-size", "4",
              "--pool-size", "8", "--decoder-layers", "1", "--decoder-width", "32", "--checkpoint-every", "3",
              "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def dem_folder(tmp_path_factory):
    """One unlabelled 96 px DSM (no DTM, no labels)."""
    folder = tmp_path_factory.mktemp("dems")
    (folder / "a").mkdir()
    write_raster(folder / "a" / "dsm.tif", np.random.default_rng(0).normal(20, 3, (96, 96)).astype(np.float32),
                 pixel_size_m=0.5)
    return folder


def _logits_for(labels: torch.Tensor, right: bool) -> torch.Tensor:
    """(B, L, p*p*K) logits, 10 on each pixel's class (``right``) or on the next class (wrong), codes 255 -> 0."""
    codes = torch.where(labels < len(CLASS_NAMES), labels.long(), 0)
    chosen = codes if right else (codes + 1) % len(CLASS_NAMES)
    one_hot = torch.nn.functional.one_hot(chosen, len(CLASS_NAMES)).permute(0, 3, 1, 2).float() * 10.0
    return patchify(one_hot, 16)


def test_class_names_are_the_synthetic_worlds_label_codes():
    from demseg.data.spec import LABEL_CODES
    from demseg.data.synth.scene import LABEL_NODATA

    assert all(CLASS_NAMES[code] == name for name, code in LABEL_CODES.items()) and len(CLASS_NAMES) == 4
    assert LABEL_NODATA == 255 and CLASS_NAMES[0] == "background"
    assert typing.get_args(PretrainConfig.model_fields["objective"].annotation) == OBJECTIVES


def test_classes_loss_is_low_for_right_logits_high_for_wrong_ones_and_ignores_unknown_pixels():
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (2, 32, 32)).astype(np.uint8))
    labels[0, :8] = 255
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    valid[1, :, :5] = False
    right, wrong = _logits_for(labels, True), _logits_for(labels, False)
    assert float(classes_loss(right, labels, valid, 16)) < 1e-3
    assert float(classes_loss(wrong, labels, valid, 16)) > 9.0
    # wrong logits only where the label is 255 or the elevation invalid: nothing changes
    unknown = patchify(((labels == 255) | ~valid)[:, None].float(), 16).repeat_interleave(4, -1).bool()
    mixed = torch.where(unknown, wrong, right)
    assert float(classes_loss(mixed, labels, valid, 16)) == pytest.approx(float(classes_loss(right, labels, valid,
                                                                                             16)))


def test_classes_loss_weighs_each_class_present_equally():
    labels = torch.zeros(1, 32, 32, dtype=torch.uint8)
    labels[0, 3, 4] = 2  # one road pixel among 1023 background pixels
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    target = labels.reshape(-1).long()
    weights = class_weights(target, torch.ones_like(target, dtype=torch.bool), 4)
    assert torch.allclose(weights, torch.tensor([1024 / (2 * 1023), 0.0, 1024 / 2, 0.0]))
    # wrong on the one road pixel only: half the loss of being wrong everywhere, not 1/1024 of it
    only_road_wrong = torch.where(patchify((labels == 2)[:, None].float(), 16).repeat_interleave(4, -1).bool(),
                                  _logits_for(labels, False), _logits_for(labels, True))
    everything_wrong = float(classes_loss(_logits_for(labels, False), labels, valid, 16))
    assert float(classes_loss(only_road_wrong, labels, valid, 16)) == pytest.approx(everything_wrong / 2, rel=1e-3)
    assert float(classes_loss(_logits_for(labels, True), labels, torch.zeros_like(valid), 16)) == 0.0


@pytest.mark.parametrize("objective, masked, ground", [("classes", False, False), ("classes+ground", False, True),
                                                        ("mae+classes", True, False)])
def test_each_classes_objective_masks_only_with_mae_and_classifies_every_pixel(objective, masked, ground):
    model = build_mae(PretrainConfig(**{**TINY, "objective": objective}))
    x = torch.randn(2, 2, 32, 32)
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 4, (2, 32, 32)).astype(np.uint8))
    loss, parts = pretext_loss(model, x, valid, torch.rand(2, 32, 32), torch.rand(2, 4), 0.5, labels=labels)
    assert parts["logits"].shape == (2, 4, 16 * 16 * 2 + (16 * 16 if ground else 0) + 16 * 16 * 4)
    assert model.classes_part(parts["logits"]).shape == (2, 4, 16 * 16 * 4)
    assert bool(parts["mask"].any()) == masked
    assert "classes" in parts and ("ground" in parts) == ground and ("reconstruction" in parts) == masked
    loss.backward()
    assert model.mae.vit.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="labels"):
        pretext_loss(model, x, valid, torch.rand(2, 32, 32), torch.rand(2, 4), 0.5)


def test_synthetic_crops_carry_their_labels_and_coarsened_crops_keep_them_where_still_valid():
    from demseg.data.normalise import recipe_channels
    from demseg.pretrain.sources import UNKNOWN_LABEL, CropPool, _cut, crops_from, synthetic_rasters

    raster = synthetic_rasters(5, 1, 96)[0]
    pool = crops_from([raster], 64, "relief", 3, np.random.default_rng(0), coarsen=[4])
    for labels, valid in zip(pool.labels, pool.valid, strict=True):
        assert set(np.unique(labels[valid])) <= {0, 1, 2, 3} and (labels[~valid] == UNKNOWN_LABEL).all()
    window = (slice(16, 80), slice(16, 80))
    same = CropPool.empty(2, recipe_channels("relief"), 64)
    _cut(raster, window, 1, "relief", False, same, 0)
    _cut(raster, window, 4, "relief", False, same, 1)
    coarse_valid = same.valid[1]
    assert (same.labels[1][coarse_valid] == raster.labels[window][coarse_valid]).all()
    sharp, smooth = (np.nanmean(np.abs(np.diff(same.ground[i].astype(np.float32), axis=1))) for i in (0, 1))
    assert smooth < 0.8 * sharp  # the 2 m version of the crop has softer edges


def test_classes_pretraining_through_the_cli_feeds_a_frozen_encoder_to_a_tiny_train_run(dem_folder, tmp_path):
    from demseg.data.synth import generate_world

    out = tmp_path / "pt"
    code = main(["pretrain", str(dem_folder), "--out", str(out), "--objective", "classes", "--synthetic-scenes", "2",
                 "--synthetic-size-px", "96", "--refresh-every", "2", "--coarsen", "2", *TINY_FLAGS])
    assert code == 0
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["objective"] == "classes" and meta["input_dtm"] is True
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps_done"] == 3 and sum(manifest["class_pixel_shares"].values()) == pytest.approx(1, abs=1e-3)
    assert (out / "reconstruction.png").exists()

    world = generate_world(tmp_path / "world", scenes=2, size_px=128, seed=3, val_fraction=0.5, progress=False)
    run = tmp_path / "run"
    code = main(["train", "--paper", str(world), "--backbone-weights", str(out / "encoder.safetensors"), "--tile-size-px", "64",
                 "--iters", "2", "--val-every", "2", "--train-tiles", "2", "--val-tiles", "2", "--head-width", "16",
                 "--neck-width", "16", "--batch-size", "2", "--views", "1", "--backbone-dtype", "fp32",
                 "--out", str(run), "--quiet"])
    assert code == 0
    pretrained, used = load_file(str(out / "encoder.safetensors")), load_file(str(run / "backbone.safetensors"))
    # the frozen encoder is the pre-trained one (the position table differs: regenerated for 64 px)
    assert all(torch.equal(pretrained[key], used[key]) for key in pretrained if key.startswith("layers."))


def test_the_classes_objective_without_synthetic_scenes_is_one_line(dem_folder, tmp_path, capsys):
    one_line_error(capsys, ["pretrain", dem_folder, "--out", tmp_path / "pt", "--objective", "classes", *TINY_FLAGS],
                   "only synthetic scenes carry them")
