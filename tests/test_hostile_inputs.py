"""The bad and hostile inputs a tester found getting through: each gives one line and exit 2, nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from rasterio.transform import from_origin
from torch import nn

from demseg.cli import main
from demseg.errors import DemsegError
from demseg.io.folders import folder_lock
from demseg.predict import PredictConfig, predict_many, predict_scene
from demseg.train.config import TrainConfig

TILE = 32


class ReliefModel(nn.Module):
    """Target where the relief channel says more than 2.5 m above ground."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 20.0 * (x[:, 0] - 0.25)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def oracle(pixel_size_m: float = 1.0):
    return ReliefModel(), TrainConfig(task="buildings", model="unet", tile_size_px=TILE, pixel_size_m=pixel_size_m,
                                      amp="off")


def one_line_error(capsys, argv, pattern):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert pattern.lower() in err.lower(), err
    return err


@pytest.fixture
def spec(scene_dir):
    path = scene_dir / "spec.yaml"
    path.write_text("name: t\nscenes:\n  - id: a\n    dem: dem.tif\n    dtm: dtm.tif\n"
                    "    labels: {raster: labels.tif, classes: {buildings: 1}}\n")
    return path


def train_argv(spec, out, *extra):
    return ["train", spec, "--model", "unet", "--unet-width", "4", "--tile-size-px", TILE, "--train-tiles", "2",
            "--val-tiles", "2", "--iters", "2", "--val-every", "2", "--min-train-fraction", "0.3", "--out", out,
            "--quiet", *extra]


# ------------------------------------------------------------------------------------- predict inputs


def test_an_int16_dem_with_a_nodata_value_predicts(tmp_path):
    rows, cols = np.mgrid[0:80, 0:80]
    dem = (100 + rows // 10).astype(np.int16)
    dem[30:40, 30:40] += 8
    dem[:5, :] = -32768
    path = write_raster(tmp_path / "int16.tif", dem, nodata=-32768)
    paths = predict_scene(oracle(), path, tmp_path / "out", progress=False)
    with rasterio.open(paths["mask"]) as src:
        mask = src.read(1)
    assert (mask[:5] == 255).all() and (mask[32:38, 32:38] == 1).all()


@pytest.mark.parametrize("fill", ["nan", "nodata"])
def test_an_all_nodata_dem_is_refused_and_writes_nothing(tmp_path, fill):
    values = np.full((64, 64), np.nan if fill == "nan" else -9999.0, np.float32)
    path = write_raster(tmp_path / "empty.tif", values, nodata=None if fill == "nan" else -9999.0)
    with pytest.raises(DemsegError, match="no valid elevation"):
        predict_scene(oracle(), path, tmp_path / "out", progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".demseg")] == []


def test_a_dem_name_with_a_semicolon_leaves_no_stray_file(tmp_path):
    rows, _ = np.mgrid[0:64, 0:64]
    path = write_raster(tmp_path / "a;b.tif", (10 + 0.01 * rows).astype(np.float32))
    paths = predict_scene(oracle(), path, tmp_path / "out", progress=False)
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".demseg"))
    assert names == sorted(p.name for p in paths.values())


def test_a_scheduler_that_is_not_dask_fails_within_the_timeout(tmp_path):
    pytest.importorskip("distributed")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    rows, _ = np.mgrid[0:64, 0:64]
    dem = write_raster(tmp_path / "dem.tif", (10 + 0.01 * rows).astype(np.float32))
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    started = time.perf_counter()
    with pytest.raises(DemsegError, match="scheduler"):
        predict_many(oracle(), [dem], tmp_path / "out", PredictConfig(scheduler=address, scheduler_timeout_s=2),
                     progress=False)
    assert time.perf_counter() - started < 20
    listener.close()


# ------------------------------------------------------------------------------------- runs and folders


def test_a_run_config_edited_to_absurd_values_is_refused(spec, tmp_path, capsys):
    assert main([str(a) for a in train_argv(spec, tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**config, "tile_size_px": 65536}))
    one_line_error(capsys, ["evaluate", tmp_path / "run", spec, "--quiet"], "65536 px tiles")
    one_line_error(capsys, ["predict", tmp_path / "run", spec.parent / "dem.tif", "--out", tmp_path / "p",
                            "--quiet"], "65536 px tiles")


def test_train_into_an_existing_file_is_one_line(spec, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    one_line_error(capsys, train_argv(spec, tmp_path / "taken"), "not a folder")
    assert (tmp_path / "taken").read_text() == "a file"


@pytest.mark.parametrize("command", ["train", "experiment", "pretrain"])
def test_an_output_folder_under_a_read_only_parent_is_one_line(spec, tmp_path, capsys, monkeypatch, command):
    blocked = tmp_path / "readonly"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(blocked)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)  # root ignores chmod, so the refusal is simulated
    out = blocked / "out"
    argv = {"train": train_argv(spec, out),
            "experiment": ["experiment", spec, "--models", "unet", "--train-tiles", "2", "--seeds", "1",
                           "--iters", "2", "--tile-size-px", TILE, "--out", out, "--quiet"],
            "pretrain": ["pretrain", spec, "--out", out, "--steps", "1", "--quiet"]}[command]
    one_line_error(capsys, argv, "permission denied")


def test_a_full_disk_while_training_is_one_line_and_leaves_no_run(spec, tmp_path, capsys, monkeypatch):
    import demseg.train.run as run_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_module, "save_file", full)
    one_line_error(capsys, train_argv(spec, tmp_path / "run"), "no space left on the device")
    assert not (tmp_path / "run" / "config.json").exists()
    assert not list((tmp_path / "run").glob(".*partial*"))


def test_a_full_disk_while_predicting_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import demseg.predict.scene as scene_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scene_module, "write_cog", full)
    rows, _ = np.mgrid[0:64, 0:64]
    dem = write_raster(tmp_path / "dem.tif", (10 + 0.01 * rows).astype(np.float32))
    with pytest.raises(DemsegError, match="no space left on the device"):
        predict_scene(oracle(), dem, tmp_path / "out", progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".demseg")] == []


def test_two_trainings_into_one_folder_at_once_are_refused(spec, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out):  # as another demseg process holds it while training
        one_line_error(capsys, train_argv(spec, out), "another demseg process")
    assert main([str(a) for a in train_argv(spec, out)]) == 0


def test_weights_files_are_readable_by_others_as_the_umask_allows(spec, tmp_path):
    previous = os.umask(0o022)
    try:
        assert main([str(a) for a in train_argv(spec, tmp_path / "run")]) == 0
    finally:
        os.umask(previous)
    mode = (tmp_path / "run" / "model.safetensors").stat().st_mode & 0o777
    assert mode == 0o644


# ------------------------------------------------------------------------------------- data and probe


def test_data_check_of_a_raster_too_large_to_load_is_one_line(tmp_path, capsys):
    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200_000, height=200_000, count=1, dtype="float32",
                       crs="EPSG:32631", transform=from_origin(500000, 5700000, 0.5, 0.5), tiled=True,
                       compress="deflate", SPARSE_OK=True, BIGTIFF="YES") as dst:
        dst.write(np.ones((1, 256, 256), np.float32), window=((0, 256), (0, 256)))
    assert path.stat().st_size < 50 * 2**20
    (tmp_path / "spec.yaml").write_text("scenes:\n  - id: big\n    dem: huge.tif\n")
    err = one_line_error(capsys, ["data", "check", tmp_path / "spec.yaml"], "failed")
    assert "200000 x 200000" in err


def test_data_check_names_label_codes_the_spec_does_not_declare(scene_dir, capsys):
    with rasterio.open(scene_dir / "labels.tif") as src:
        labels, profile = src.read(1), src.profile
    labels[40:44, 40:44] = 7
    with rasterio.open(scene_dir / "labels.tif", "w", **profile) as dst:
        dst.write(labels, 1)
    (scene_dir / "spec.yaml").write_text("scenes:\n  - id: a\n    dem: dem.tif\n"
                                         "    labels: {raster: labels.tif, classes: {buildings: 1}}\n")
    assert main(["data", "check", str(scene_dir / "spec.yaml"), "--tile-size-px", "32"]) == 0
    assert "7 (16 px)" in capsys.readouterr().out


def test_probe_with_no_validation_tiles_is_one_line(spec, capsys):
    one_line_error(capsys, ["probe", spec, "--val-tiles", "0", "--tile-size-px", TILE, "--backbone-weights",
                            "random"], "no val")


# ------------------------------------------------------------------------------------- the process


def test_a_pickled_pth_is_refused_with_exactly_one_line_on_stderr(spec, tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    argv = [str(a) for a in train_argv(spec, tmp_path / "run")]
    argv[argv.index("unet")] = "mae-upernet"
    result = subprocess.run([sys.executable, "-m", "demseg.cli", *argv, "--backbone-weights",
                             str(tmp_path / "evil.pth")], capture_output=True, text=True)
    assert result.returncode == 2 and not marker.exists()
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "refusing" in result.stderr
