"""MAE pre-training: runs, resumes exactly, runs under torchrun, refuses bad input, feeds downstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import write_raster
from safetensors.torch import load_file

from demseg.errors import DemsegError
from demseg.pretrain.mae import PretrainConfig, build_mae, pretrain

TINY = dict(arch="tiny", tile_size_px=48, crop_size_px=32, patch_size=16, steps=4, batch_size=4, pool_size=8,
            checkpoint_every=2, decoder_layers=1, decoder_width=32, precision="fp32")


@pytest.fixture(scope="module")
def dem_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dems")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (folder / name).mkdir()
        dem = rng.normal(20, 3, (96, 96)).astype(np.float32)
        dem[:10, :10] = -9999.0
        write_raster(folder / name / "dsm.tif", dem, pixel_size_m=0.5)
    return folder


def _encoder(out):
    return load_file(str(out / "encoder.safetensors"))


def test_pretrain_writes_encoder_checkpoint_previews_and_manifest(dem_folder, tmp_path):
    summary = pretrain([dem_folder], PretrainConfig(**TINY), tmp_path / "ckpt", progress=False)
    out = tmp_path / "ckpt"
    for name in ("encoder.safetensors", "encoder.json", "last/mae.safetensors", "last/resume.pt", "manifest.json",
                 "loss.csv", "loss.png", "reconstruction.png"):
        assert (out / name).exists(), name
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["normalisation"] == "relief+slope" and meta["num_channels"] == 2 and meta["arch"] == "tiny"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps_done"] == 4 and len(manifest["sources"]) == 2 and manifest["sources"][0]["sha256"]
    assert summary["world_size"] == 1 and np.isfinite(summary["final_loss"])


def test_fresh_mae_has_nonzero_sincos_position_embeddings():
    model = build_mae(PretrainConfig(**TINY)).mae
    assert model.vit.embeddings.position_embeddings[0, 1:].abs().sum() > 0
    assert model.decoder.decoder_pos_embed[0, 1:].abs().sum() > 0


# --- DEM pretext objectives ------------------------------------------------------------------------


def _batch(size=32, channels=2):
    x = torch.randn(2, channels, size, size)
    valid = torch.ones(2, size, size, dtype=torch.bool)
    ground = torch.rand(2, size, size)
    noise = torch.rand(2, (size // 16) ** 2)
    return x, valid, ground, noise


@pytest.mark.parametrize("objective, masked", [("mae", True), ("ground", False), ("mae+ground", True)])
def test_each_objective_masks_and_predicts_what_it_says(objective, masked):
    from demseg.pretrain.objectives import pretext_loss

    model = build_mae(PretrainConfig(**{**TINY, "objective": objective}))
    x, valid, ground, noise = _batch()
    loss, parts = pretext_loss(model, x, valid, ground, noise, 0.5)
    recon = 16 * 16 * 2
    extra = 16 * 16 if "ground" in objective else 0
    assert parts["logits"].shape == (2, 4, recon + extra)
    assert bool(parts["mask"].any()) == masked  # the ground objective shows the encoder the whole crop
    assert ("ground" in parts) == ("ground" in objective) and ("reconstruction" in parts) == ("mae" in objective)
    loss.backward()
    assert model.mae.vit.layers[0].mlp.fc1.weight.grad.abs().sum() > 0


def test_ground_loss_counts_only_valid_pixels_with_a_known_ground():
    from demseg.pretrain.objectives import ground_loss, patchify

    ground = torch.full((1, 32, 32), 2.0)
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    prediction = patchify(ground[:, None], 16).clone()
    assert float(ground_loss(prediction, ground, valid, 16)) == 0.0
    prediction[0, 0] += 10.0  # wrong in the first patch only
    ground[0, :16, :16] = float("nan")  # ... where the ground is unknown
    assert float(ground_loss(prediction, ground, valid, 16)) == 0.0
    ground[0, :16, :16] = 2.0
    valid[0, :16, :16] = False  # ... or where there is no elevation
    assert float(ground_loss(prediction, ground, valid, 16)) == 0.0
    valid[0, :16, :16] = True
    assert float(ground_loss(prediction, ground, valid, 16)) == pytest.approx(100.0 / 4)


def test_ground_targets_are_the_height_above_the_dtm_and_inputs_never_see_the_dtm(tmp_path):
    from demseg.data.normalise import normalise_tile
    from demseg.pretrain.sources import DemSource, crops_from, load_rasters

    rows, cols = np.mgrid[0:96, 0:96]
    dtm = (10 + 0.05 * rows).astype(np.float32)
    dsm = dtm.copy()
    dsm[30:60, 30:60] += 12.0
    write_raster(tmp_path / "dsm.tif", dsm, pixel_size_m=0.5)
    write_raster(tmp_path / "dtm.tif", dtm, pixel_size_m=0.5)
    rasters, _ = load_rasters([DemSource("a", tmp_path / "dsm.tif", tmp_path / "dtm.tif")], 96)
    pool = crops_from(rasters, 96, "relief", 1, np.random.default_rng(0), input_dtm=False)
    assert np.allclose(pool.ground[0].astype(np.float32), (dsm - dtm) / 10.0, atol=1e-2)
    without_dtm = normalise_tile(dsm, np.ones_like(dsm, bool), "relief", 0.5, None)
    assert np.allclose(pool.inputs[0, 0].astype(np.float32), without_dtm, atol=1e-2)


def test_the_ground_objective_needs_a_dtm_or_synthetic_scenes(dem_folder, tmp_path):
    with pytest.raises(DemsegError, match="no source has a DTM"):
        pretrain([dem_folder], PretrainConfig(**{**TINY, "objective": "ground"}), tmp_path / "g", progress=False)
    config = PretrainConfig(**{**TINY, "objective": "mae+ground", "synthetic_scenes": 1, "synthetic_size_px": 96,
                               "refresh_every": 2})
    summary = pretrain([dem_folder], config, tmp_path / "g", progress=False)
    assert np.isfinite(summary["final_loss"])
    assert json.loads((tmp_path / "g" / "encoder.json").read_text())["objective"] == "mae+ground"


def test_synthetic_refreshes_resume_exactly(tmp_path):
    config = PretrainConfig(**{**TINY, "objective": "ground", "synthetic_scenes": 1, "synthetic_size_px": 96,
                               "refresh_every": 2})
    pretrain([], config, tmp_path / "straight", progress=False)
    pretrain([], config, tmp_path / "resumed", progress=False, stop_after=3)
    pretrain([], config, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = _encoder(tmp_path / "straight"), _encoder(tmp_path / "resumed")
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key


def test_excluded_validation_regions_are_never_cropped(tmp_path):
    from demseg.pretrain.sources import DemSource, _touches, load_rasters

    rows, cols = np.mgrid[0:128, 0:128]
    write_raster(tmp_path / "dsm.tif", (10 + 0.01 * rows).astype(np.float32), pixel_size_m=1.0)
    # the excluded box covers the raster's top-left quarter (origin 500000, 5700000 in conftest)
    region = ("EPSG:32631", (500000.0, 5700000.0 - 64.0, 500064.0, 5700000.0))
    rasters, _ = load_rasters([DemSource("a", tmp_path / "dsm.tif")], 32, [region])
    assert rasters[0].excluded == [(0, 0, 64, 64)]
    assert _touches(rasters[0].excluded, 40, 40, 32) and not _touches(rasters[0].excluded, 64, 0, 32)


def test_resumed_run_equals_an_uninterrupted_one(dem_folder, tmp_path):
    config = PretrainConfig(**TINY)
    pretrain([dem_folder], config, tmp_path / "straight", progress=False)
    pretrain([dem_folder], config, tmp_path / "resumed", progress=False, stop_after=2)
    assert json.loads((tmp_path / "resumed" / "last" / "mae.json").read_text())["step"] == 2
    pretrain([dem_folder], config, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = _encoder(tmp_path / "straight"), _encoder(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-6), key


def test_encoder_made_by_pretrain_loads_downstream_at_224_px(dem_folder, tmp_path):
    from demseg.models.backbone import build_backbone

    pretrain([dem_folder], PretrainConfig(**TINY), tmp_path / "ckpt", progress=False)
    backbone = build_backbone("tiny", str(tmp_path / "ckpt" / "encoder.safetensors"), 2, dtype="fp32",
                              image_size=224)
    maps = backbone(torch.zeros(1, 2, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(1, 192, 14, 14)] * 4


def test_two_processes_under_torchrun_stay_in_sync(dem_folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "demseg.cli", "pretrain", str(dem_folder), "--out", str(tmp_path / "ddp"), "--arch", "tiny",
               "--tile-size-px", "48", "--crop-size-px", "32", "--steps", "4", "--batch-size", "4",
               "--pool-size", "8", "--decoder-layers", "1", "--decoder-width", "32", "--checkpoint-every", "2",
               "--precision", "fp32", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["ranks_in_sync"] is True and manifest["steps_done"] == 4


@pytest.mark.parametrize("case, pattern", [
    ("empty", "no DEM found"),
    ("patch", "multiple of the patch size"),
    ("arch", "cannot resume"),
    ("foreign", "another tool"),
    ("nodata", "no tiles"),
])
def test_bad_pretraining_input_is_one_clear_error(dem_folder, tmp_path, case, pattern):
    config = PretrainConfig(**TINY)
    sources = [dem_folder]
    kwargs = {}
    if case == "empty":
        (tmp_path / "empty").mkdir()
        sources = [tmp_path / "empty"]
    elif case == "patch":
        config = PretrainConfig(**{**TINY, "crop_size_px": 40})
    elif case == "arch":
        pretrain(sources, config, tmp_path / "ckpt", progress=False, stop_after=2)
        config = PretrainConfig(**{**TINY, "arch": "small"})
        kwargs = {"resume": True}
    elif case == "foreign":
        (tmp_path / "ckpt" / "last").mkdir(parents=True)
        (tmp_path / "ckpt" / "last" / "mae.json").write_text(json.dumps({"format": "timm"}))
        (tmp_path / "ckpt" / "last" / "resume.pt").write_bytes(b"")
        kwargs = {"resume": True}
    elif case == "nodata":
        (tmp_path / "holes").mkdir()
        dem = np.full((96, 96), -9999.0, np.float32)
        dem[:5, :5] = 3.0
        write_raster(tmp_path / "holes" / "dsm.tif", dem)
        sources = [tmp_path / "holes"]
    with pytest.raises(DemsegError, match=pattern):
        pretrain(sources, config, tmp_path / "ckpt", progress=False, **kwargs)


def test_downstream_run_refuses_a_normalisation_the_encoder_was_not_pretrained_on(dem_folder, tmp_path):
    from demseg.models import build
    from demseg.runs.config import TrainConfig

    pretrain([dem_folder], PretrainConfig(**TINY), tmp_path / "ckpt", progress=False)
    weights = str(tmp_path / "ckpt" / "encoder.safetensors")
    config = TrainConfig(backbone_weights=weights, recipe="relief+slope", tile_size_px=64, backbone_dtype="fp32")
    assert build(config).backbone.embed_dim == 192
    with pytest.raises(DemsegError, match="pre-trained on 'relief\\+slope'"):
        build(config.model_copy(update={"recipe": "minmax+slope"}))


def test_shipped_encoder_loads_and_names_how_it_was_made():
    from demseg.models.backbone import build_backbone
    from demseg.models.encoders import resolve_weights

    path = resolve_weights("dem-tiny")
    backbone = build_backbone("tiny", path, 2, dtype="fp32")
    meta = backbone.weights_metadata
    assert meta["normalisation"] == "relief+slope" and "demseg pretrain" in meta["command"]
    assert len(meta["data"]) >= 20 and os.path.getsize(path) <= 25 * 2**20
