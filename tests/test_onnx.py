"""ONNX export and the onnxruntime engine: the same masks as torch, and one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from conftest import city_dem, write_raster
from test_hostile_inputs import TILE, one_line_error, train_argv

from demseg.cli import main
from demseg.predict.onnx import load_onnx_run
from demseg.runs.folder import load_run


@pytest.fixture(scope="module", params=["unet", "mae-detail"])
def exported_run(request, tmp_path_factory):
    """A tiny trained run of each kind of network, exported to ONNX, with a DEM to predict."""
    folder = tmp_path_factory.mktemp(f"onnx_{request.param}")
    dem, buildings = city_dem(96)
    dem[:6, :6] = -9999.0
    write_raster(folder / "dem.tif", dem)
    write_raster(folder / "labels.tif", buildings, nodata=255)
    (folder / "spec.yaml").write_text("scenes:\n  - id: a\n    dem: dem.tif\n"
                                      "    labels: {raster: labels.tif, classes: {buildings: 1}}\n")
    extra = ["--model", request.param]
    if request.param != "unet":
        extra += ["--backbone-weights", "random", "--head-width", "8", "--neck-width", "8", "--detail-width", "4",
                  "--backbone-dtype", "fp32"]
    argv = [a for a in train_argv(folder / "spec.yaml", folder / "run") if a not in ("--model", "unet")]
    assert main([str(a) for a in argv + extra]) == 0
    assert main(["export", str(folder / "run"), "--onnx"]) == 0
    return folder


def test_onnx_logits_match_torch(exported_run):
    model, config = load_run(exported_run / "run")
    onnx_model, _ = load_onnx_run(exported_run / "run")
    x = torch.randn(3, 2, TILE, TILE)  # a batch size the export never saw
    with torch.no_grad():
        expected = model(x)
    assert np.allclose(onnx_model(x).numpy(), expected.float().numpy(), atol=1e-4)


def test_onnx_engine_predicts_the_same_mask_as_torch(exported_run):
    run, dem = exported_run / "run", exported_run / "dem.tif"
    for engine in ("torch", "onnx"):
        argv = ["predict", run, dem, "--out", exported_run / engine, "--engine", engine, "--quiet"]
        assert main([str(a) for a in argv]) == 0
    with rasterio.open(exported_run / "torch" / "dem_mask.tif") as a, \
            rasterio.open(exported_run / "onnx" / "dem_mask.tif") as b:
        torch_mask, onnx_mask = a.read(1), b.read(1)
    assert ((torch_mask == 255) == (onnx_mask == 255)).all()
    both, either = ((torch_mask == 1) & (onnx_mask == 1)).sum(), ((torch_mask == 1) | (onnx_mask == 1)).sum()
    assert either == 0 or both / either >= 0.999


def test_export_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    one_line_error(capsys, ["export", tmp_path, "--onnx"], "not a demseg run folder")
    assert list(tmp_path.iterdir()) == []


def test_onnx_engine_without_an_export_or_with_a_stale_one_is_one_line(exported_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_run / "run", run)
    (run / "model.onnx").unlink()
    dem = exported_run / "dem.tif"
    one_line_error(capsys, ["predict", run, dem, "--out", tmp_path / "p", "--engine", "onnx", "--quiet"],
                   "export it first")
    shutil.copy(exported_run / "run" / "model.onnx", run / "model.onnx")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "seed": config["seed"] + 1}))  # as if retrained
    one_line_error(capsys, ["predict", run, dem, "--out", tmp_path / "q", "--engine", "onnx", "--quiet"],
                   "export it again")
