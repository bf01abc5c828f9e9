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
from conftest import city_dem, write_raster
from rasterio.transform import from_origin
from safetensors import SafetensorError
from torch import nn

from demseg.cli import main
from demseg.errors import DemsegError
from demseg.io.folders import folder_lock
from demseg.predict import predict_scene
from demseg.runs.config import TrainConfig

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
    return ["train", "--paper", spec, "--model", "unet", "--unet-width", "4", "--tile-size-px", TILE, "--train-tiles", "2",
            "--val-tiles", "2", "--iters", "2", "--val-every", "2", "--min-train-fraction", "0.3", "--out", out,
            "--quiet", *extra]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A tiny UNet run folder made by ``demseg train``, for the predict cases run through the CLI."""
    folder = tmp_path_factory.mktemp("cli_run")
    dem, buildings = city_dem(96)
    write_raster(folder / "dem.tif", dem)
    write_raster(folder / "labels.tif", buildings, nodata=255)
    (folder / "spec.yaml").write_text("scenes:\n  - id: a\n    dem: dem.tif\n"
                                      "    labels: {raster: labels.tif, classes: {buildings: 1}}\n")
    assert main([str(a) for a in train_argv(folder / "spec.yaml", folder / "run")]) == 0
    return folder / "run"


def written(folder: pathlib.Path) -> list[str]:
    """What a command left in a folder, apart from demseg's own hidden marker and lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".demseg")) if folder.exists() else []


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


@pytest.mark.parametrize("fill", ["nan", "nodata"])
def test_predict_of_an_all_nodata_dem_exits_2_with_one_line_and_writes_nothing(cli_run, tmp_path, capsys, fill):
    values = np.full((64, 64), np.nan if fill == "nan" else -9999.0, np.float32)
    dem = write_raster(tmp_path / "empty.tif", values, nodata=None if fill == "nan" else -9999.0)
    one_line_error(capsys, ["predict", cli_run, dem, "--out", tmp_path / "out", "--quiet"], "no valid elevation")
    assert written(tmp_path / "out") == []


def test_predict_of_an_int16_dem_with_a_nodata_value_exits_0_from_the_cli(cli_run, tmp_path, capsys):
    dem = (100 + np.mgrid[0:64, 0:64][0] // 10).astype(np.int16)
    dem[:5] = -32768
    path = write_raster(tmp_path / "int16.tif", dem, nodata=-32768)
    assert main([str(a) for a in ["predict", cli_run, path, "--out", tmp_path / "out", "--quiet"]]) == 0
    assert capsys.readouterr().err == ""
    with rasterio.open(tmp_path / "out" / "int16_mask.tif") as src:
        assert (src.read(1)[:5] == 255).all()


def test_a_dem_name_with_a_semicolon_leaves_no_stray_file(tmp_path):
    rows, _ = np.mgrid[0:64, 0:64]
    path = write_raster(tmp_path / "a;b.tif", (10 + 0.01 * rows).astype(np.float32))
    paths = predict_scene(oracle(), path, tmp_path / "out", progress=False)
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".demseg"))
    assert names == sorted(p.name for p in paths.values())


def test_a_scheduler_that_is_not_dask_fails_within_the_timeout(cli_run, tmp_path, capsys):
    pytest.importorskip("distributed")
    listener = socket.socket()  # accepts the connection and never answers, like an HTTP server would
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    rows, _ = np.mgrid[0:64, 0:64]
    dem = write_raster(tmp_path / "dem.tif", (10 + 0.01 * rows).astype(np.float32))
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    started = time.perf_counter()
    one_line_error(capsys, ["predict", cli_run, dem, "--out", tmp_path / "out", "--scheduler", address,
                            "--scheduler-timeout-s", "2", "--quiet"], "scheduler")
    assert time.perf_counter() - started < 20
    assert written(tmp_path / "out") == []
    listener.close()


# ------------------------------------------------------------------------------------- runs and folders


def test_a_run_config_edited_to_absurd_values_is_refused(spec, tmp_path, capsys):
    assert main([str(a) for a in train_argv(spec, tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**config, "tile_size_px": 65536}))
    one_line_error(capsys, ["evaluate", tmp_path / "run", spec, "--quiet"], "65536 px tiles")
    one_line_error(capsys, ["predict", tmp_path / "run", spec.parent / "dem.tif", "--out", tmp_path / "p",
                            "--quiet"], "65536 px tiles")
    (tmp_path / "run" / "config.json").write_text(json.dumps({**config, "unet_width": 4_000_000}))
    one_line_error(capsys, ["predict", tmp_path / "run", spec.parent / "dem.tif", "--out", tmp_path / "p",
                            "--quiet"], "unet_width 4000000) does not fit in this machine's memory")


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


@pytest.mark.parametrize("failing", ["save_file", "write_manifest"], ids=["first file", "after the weights"])
def test_a_full_disk_while_training_is_one_line_and_leaves_no_run(spec, tmp_path, capsys, monkeypatch, failing):
    import demseg.train.run as run_module
    from demseg.io.atomic import atomic_path

    def full_weights(*args, **kwargs):  # what safetensors raises on a full disk: not an OSError
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    def full_manifest(path, *args, **kwargs):
        with atomic_path(path):  # the disk fills while the manifest is being written
            raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "save_file":
        monkeypatch.setattr(run_module, "save_file", full_weights)
    else:
        monkeypatch.setattr(run_module, "write_manifest", full_manifest)
    err = one_line_error(capsys, train_argv(spec, tmp_path / "run"), "no space left on the device")
    assert ".partial" not in err  # names the file the user asked for, not its temporary name
    assert written(tmp_path / "run") == []
    assert not list((tmp_path / "run").glob(".*partial*"))
    monkeypatch.undo()
    assert main([str(a) for a in train_argv(spec, tmp_path / "run")]) == 0  # the folder is reusable


def test_a_full_disk_while_predicting_is_one_line_and_leaves_nothing(cli_run, tmp_path, capsys, monkeypatch):
    import demseg.predict.scene as scene_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scene_module, "write_cog", full)
    rows, _ = np.mgrid[0:64, 0:64]
    dem = write_raster(tmp_path / "dem.tif", (10 + 0.01 * rows).astype(np.float32))
    one_line_error(capsys, ["predict", cli_run, dem, "--out", tmp_path / "out", "--quiet"],
                   "no space left on the device")
    assert written(tmp_path / "out") == []


def test_a_writer_that_reports_a_full_disk_in_its_own_words_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import re

    import demseg.io.atomic as atomic
    from demseg.io.atomic import atomic_path

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.gpkg") as tmp:  # with room on the disk: a bug
        tmp.write_bytes(b"half")
        raise RuntimeError("no such table: gpkg_geometry_columns")
    monkeypatch.setattr(atomic, "device_is_full", lambda directory: True)
    target = tmp_path / "b.gpkg"
    with pytest.raises(DemsegError, match=f"^no space left on the device writing {re.escape(str(target))}$"), \
            atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("no such table: gpkg_geometry_columns")  # what a GeoPackage left half-written says
    assert list(tmp_path.iterdir()) == []


def test_libtiff_full_disk_lines_become_one_error_and_other_c_messages_are_kept(capfd):
    from demseg.io.raster import c_messages_held

    with pytest.raises(OSError) as error, c_messages_held():  # libtiff prints this and GDAL returns normally
        os.write(2, b"_tiffWriteProc: No space left on device.\n_tiffSeekProc: No space left on device.\n")
    assert error.value.errno == errno.ENOSPC and capfd.readouterr().err == ""
    with c_messages_held():
        os.write(2, b"Warning 1: something harmless\n")
    assert capfd.readouterr().err == "Warning 1: something harmless\n"


def test_two_trainings_into_one_folder_at_once_are_refused(spec, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out):  # as another demseg process holds it while training
        one_line_error(capsys, train_argv(spec, out), "another demseg process")
    assert main([str(a) for a in train_argv(spec, out)]) == 0


@pytest.mark.parametrize("command", ["experiment", "pretrain"])
def test_an_experiment_or_pretraining_into_a_folder_being_written_is_refused(spec, tmp_path, capsys, command):
    out = tmp_path / "out"
    out.mkdir()
    argv = {"experiment": ["experiment", spec, "--models", "unet", "--train-tiles", "2", "--seeds", "1",
                           "--iters", "2", "--tile-size-px", TILE, "--out", out, "--quiet"],
            "pretrain": ["pretrain", spec, "--out", out, "--steps", "1", "--quiet"]}[command]
    with folder_lock(out):  # as another demseg process holds it
        one_line_error(capsys, argv, "another demseg process")
    assert written(out) == []


def test_a_lock_file_removed_by_its_holder_while_being_locked_is_locked_afresh(tmp_path):
    import fcntl

    from demseg.io.folders import _locked_handle

    path = tmp_path / ".demseg.lock"
    calls = []

    class Racing:  # the previous holder removes the lock file between our open and our flock
        LOCK_EX, LOCK_NB = fcntl.LOCK_EX, fcntl.LOCK_NB

        @staticmethod
        def flock(handle, flags):
            if not calls:
                path.unlink()
            calls.append(flags)
            fcntl.flock(handle, flags)

    handle = _locked_handle(path, Racing)
    try:  # a lock on the removed file would let the next process lock a new file and write at the same time
        assert os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino and len(calls) == 2
        with pytest.raises(DemsegError, match="another demseg process"):
            _locked_handle(path, fcntl)
    finally:
        handle.close()


def test_weights_files_are_readable_by_others_as_the_umask_allows(spec, tmp_path):
    previous = os.umask(0o022)
    try:
        assert main([str(a) for a in train_argv(spec, tmp_path / "run")]) == 0
    finally:
        os.umask(previous)
    mode = (tmp_path / "run" / "model.safetensors").stat().st_mode & 0o777
    assert mode == 0o644


def test_folders_built_in_a_staging_folder_get_the_permissions_the_umask_allows(tmp_path):
    from demseg.io.atomic import UMASK, staging_folder

    staging = staging_folder(tmp_path / "world")  # synth and rasterize build their folders this way
    assert staging.parent == tmp_path and staging.name.startswith(".world.")
    assert staging.stat().st_mode & 0o777 == 0o777 & ~UMASK
    from demseg.data.synth import generate_world

    generate_world(tmp_path / "small_world", scenes=1, size_px=224, seed=3, progress=False)
    assert (tmp_path / "small_world").stat().st_mode & 0o777 == 0o777 & ~UMASK


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


@pytest.mark.parametrize("spec_text", [None, "just text\n"], ids=["missing spec", "corrupt spec"])
def test_an_experiment_on_a_bad_spec_leaves_no_output_folder(tmp_path, capsys, spec_text):
    spec = tmp_path / "spec.yaml"
    if spec_text is not None:
        spec.write_text(spec_text)
    out = tmp_path / "out"
    one_line_error(capsys, ["experiment", spec, "--models", "unet", "--out", out, "--quiet"], "spec")
    assert not out.exists()
