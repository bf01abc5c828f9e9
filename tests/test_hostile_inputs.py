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
import warnings

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
                            "--quiet"], "unet_width 4000000, unet_context 0) does not fit in this machine's memory")


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


# ------------------------------------------------------------------------------------- units, sizes, files


def spec_in(folder: pathlib.Path, crs: str, pixel: float = 1.0, origin: tuple[float, float] = (1000.0, 2000.0)):
    """A labelled one-scene spec whose rasters are in ``crs`` (pixel and origin in that CRS's units)."""
    folder.mkdir(parents=True, exist_ok=True)
    dem, buildings = city_dem(96)
    write_raster(folder / "dem.tif", dem, crs=crs, pixel_size_m=pixel, origin=origin)
    write_raster(folder / "labels.tif", buildings, crs=crs, pixel_size_m=pixel, origin=origin, nodata=255)
    (folder / "spec.yaml").write_text("scenes:\n  - id: a\n    dem: dem.tif\n"
                                      "    labels: {raster: labels.tif, classes: {buildings: 1}}\n")
    return folder / "spec.yaml"


@pytest.mark.parametrize("command", ["predict", "train", "evaluate", "predict --crs"])
@pytest.mark.parametrize("crs, pixel, origin, pattern", [
    ("EPSG:2263", 1.0, (1000.0, 2000.0), "horizontal units of US survey foot, not metres (EPSG:2263)"),
    ("EPSG:4326", 1e-5, (4.9, 52.4), "geographic CRS (EPSG:4326)"),
], ids=["feet", "degrees"])
def test_a_dem_in_feet_or_degrees_is_never_read_as_metres_and_says_how_to_reproject(cli_run, tmp_path, capsys,
                                                                                      command, crs, pixel, origin,
                                                                                      pattern):
    spec = spec_in(tmp_path / "data", crs, pixel, origin)
    dem, out = spec.parent / "dem.tif", tmp_path / "out"
    if command == "predict --crs":  # a DEM without a CRS, and the CRS given on the command line
        write_raster(dem, city_dem(96)[0], crs=None, pixel_size_m=pixel, origin=origin)
    argv = {"predict": ["predict", cli_run, dem, "--out", out, "--quiet"],
            "predict --crs": ["predict", cli_run, dem, "--crs", crs, "--out", out, "--quiet"],
            "train": train_argv(spec, out),
            "evaluate": ["evaluate", cli_run, spec, "-o", out, "--quiet"]}[command]
    err = one_line_error(capsys, argv, pattern)
    zone = "EPSG:32618" if crs == "EPSG:2263" else "EPSG:32631"  # the UTM zone of New York, of Amsterdam
    assert f"gdalwarp -t_srs {zone} dem.tif" in err
    assert written(out) == []


@pytest.mark.parametrize("overlap", ["0.95", "0.999999", "1"])
def test_predict_overlap_above_0_9_is_one_line_instead_of_countless_windows(cli_run, tmp_path, capsys, overlap):
    dem = write_raster(tmp_path / "dem.tif", city_dem(64)[0])
    one_line_error(capsys, ["predict", cli_run, dem, "--out", tmp_path / "out", "--overlap", overlap, "--quiet"],
                   "--overlap: must be between 0 and 0.9")
    assert not (tmp_path / "out").exists()
    from demseg.predict.sliding import window_stride

    with pytest.raises(DemsegError, match="--overlap must be between 0 and 0.9"):
        window_stride(TILE, float(overlap))


def test_predict_overlap_of_0_9_still_predicts(cli_run, tmp_path):
    dem = write_raster(tmp_path / "dem.tif", city_dem(64)[0])
    assert main([str(a) for a in ["predict", cli_run, dem, "--out", tmp_path / "out", "--overlap", "0.9",
                                  "--quiet"]]) == 0


def road_spec(folder: pathlib.Path, widths: list) -> pathlib.Path:
    """A scene whose road labels are lines with these 'width' attribute values."""
    write_raster(folder / "dem.tif", city_dem(96)[0])
    x0, y0 = 500000.0, 5700000.0
    features = [{"type": "Feature", "properties": {"width": width},
                 "geometry": {"type": "LineString", "coordinates": [[x0 + 5, y0 - 10 - 20 * i],
                                                                    [x0 + 90, y0 - 10 - 20 * i]]}}
                for i, width in enumerate(widths)]
    (folder / "roads.geojson").write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32631"}},
        "features": features}))
    (folder / "spec.yaml").write_text("scenes:\n  - id: a\n    dem: dem.tif\n"
                                      "    labels: {vector: {roads: roads.geojson}}\n")
    return folder / "spec.yaml"


@pytest.mark.parametrize("command", ["data check", "train"])
def test_a_road_width_attribute_holding_text_is_one_line_naming_the_value(tmp_path, capsys, command):
    spec = road_spec(tmp_path, ["wide", "6"])
    argv = ["data", "check", spec] if command == "data check" else [*train_argv(spec, tmp_path / "run"), "--task",
                                                                   "roads"]
    one_line_error(capsys, argv, "the 'width' attribute holds 'wide', not a width in metres")
    assert written(tmp_path / "run") == []


@pytest.mark.parametrize("command", ["data check", "train"])
def test_road_lines_without_widths_and_no_road_width_flag_are_one_line_naming_both_fixes(tmp_path, capsys,
                                                                                          command):
    spec = road_spec(tmp_path, [None, ""])
    argv = ["data", "check", spec] if command == "data check" else [*train_argv(spec, tmp_path / "run"), "--task",
                                                                   "roads"]
    message = one_line_error(capsys, argv, "road lines need a width")
    assert "--road-width-m" in message or "road_width_m" in message
    assert written(tmp_path / "run") == []


def test_road_widths_written_as_numbers_in_text_or_left_empty_are_read(tmp_path):
    from demseg.io.raster import open_grid
    from demseg.io.vector import label_geometries, rasterize_labels, read_vector

    road_spec(tmp_path, ["6", "", None, 4])
    grid = open_grid(tmp_path / "dem.tif")
    burned = rasterize_labels(label_geometries(read_vector(tmp_path / "roads.geojson"), grid, "roads",
                                               road_width_m=2.0), grid)
    assert [int(burned[:, 50][20 * i:20 * i + 20].sum()) for i in range(4)] == [6, 2, 2, 4]


def test_a_spec_file_without_read_permission_is_one_line(scene_dir, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads any file whatever its permissions")
    spec = scene_dir / "spec.yaml"
    spec.write_text("scenes:\n  - id: a\n    dem: dem.tif\n")
    spec.chmod(0)
    try:
        one_line_error(capsys, ["data", "check", spec], "cannot read the dataset spec")
    finally:
        spec.chmod(0o644)


def test_a_spec_file_the_os_refuses_to_read_is_one_line(scene_dir, capsys, monkeypatch):
    spec = scene_dir / "spec.yaml"
    spec.write_text("scenes:\n  - id: a\n    dem: dem.tif\n")
    real_read_text = pathlib.Path.read_text

    def read_text(self, *args, **kwargs):  # what an unreadable file gives a user who is not root
        if self == spec:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    one_line_error(capsys, ["data", "check", spec], f"cannot read the dataset spec {spec}: Permission denied")
    one_line_error(capsys, train_argv(spec, scene_dir / "run"), "cannot read the dataset spec")


@pytest.mark.parametrize("flags, pattern", [
    (["--size-px", "100000000"], "more than this machine can hold: use a size_px of at most"),
    (["--pixel-size-m", "1e-9"], "scenes need at least 32 m"),
    (["--size-px", "64", "--pixel-size-m", "0.1"], "is 6.4 m across"),
])
def test_synth_sizes_that_cannot_be_generated_are_one_line(tmp_path, capsys, flags, pattern):
    one_line_error(capsys, ["synth", "-o", tmp_path / "w", "--scenes", "1", "--quiet", *flags], pattern)
    assert not (tmp_path / "w").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_a_coarsening_factor_larger_than_half_the_tile_is_one_line(spec, tmp_path, capsys, command):
    argv = (train_argv(spec, tmp_path / "out") if command == "train"
            else ["pretrain", spec, "--out", tmp_path / "out", "--tile-size-px", TILE, "--steps", "1", "--quiet"])
    one_line_error(capsys, [*argv, "--coarsen", "1000000"],
                   "--coarsen: each factor must be at most half the tile size (16 for 32 px tiles), got 1000000")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"hello, not a checkpoint", b"", b"PK\x03\x04 not a zip", "tensors"],
                         ids=["text", "empty", "broken zip", "other tensors"])
@pytest.mark.parametrize("command", ["train", "probe"])
def test_a_pth_that_is_not_an_encoder_checkpoint_is_one_line_naming_it(spec, tmp_path, capsys, command, content):
    weights = tmp_path / "weights.pth"
    if content == "tensors":
        torch.save({"a": torch.zeros(3)}, weights)  # a checkpoint, of something else
    else:
        weights.write_bytes(content)
    if command == "train":
        argv = [*train_argv(spec, tmp_path / "run"), "--backbone-weights", weights]
        argv[argv.index("unet")] = "mae-upernet"
    else:
        argv = ["probe", spec, "--tile-size-px", TILE, "--val-tiles", "2", "--min-train-fraction", "0.3",
                "--backbone-weights", weights]
    err = one_line_error(capsys, argv, str(weights))
    assert "checkpoint" in err
    assert written(tmp_path / "run") == []


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1)])
def test_predict_of_a_dem_one_pixel_wide_is_one_line(cli_run, tmp_path, capsys, shape):
    dem = write_raster(tmp_path / "thin.tif", np.full(shape, 10.0, np.float32))
    one_line_error(capsys, ["predict", cli_run, dem, "--out", tmp_path / "out", "--quiet"],
                   f"DEM is {shape[0]} x {shape[1]} px; predict needs at least 2 px each way")
    assert not (tmp_path / "out").exists()


def test_predict_of_a_dem_of_2_x_2_pixels_works(cli_run, tmp_path):
    dem = write_raster(tmp_path / "small.tif", np.array([[10, 10], [10, 20]], np.float32))
    assert main([str(a) for a in ["predict", cli_run, dem, "--out", tmp_path / "out", "--quiet"]]) == 0


@pytest.mark.parametrize("manifest, pattern", [
    (None, None), ("{not json", "manifest is unreadable or not JSON"), ("[1, 2]", "manifest is not a JSON object")],
    ids=["missing", "not JSON", "a list"])
def test_evaluate_of_a_run_whose_manifest_is_missing_works_and_one_that_is_not_json_is_one_line(
        cli_run, spec, tmp_path, capsys, manifest, pattern):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    if manifest is None:
        (run / "manifest.json").unlink()
        assert main([str(a) for a in ["evaluate", run, spec, "-o", tmp_path / "ev", "--quiet"]]) == 0
        assert (tmp_path / "ev" / "metrics.json").is_file()
    else:
        (run / "manifest.json").write_text(manifest)
        one_line_error(capsys, ["evaluate", run, spec, "-o", tmp_path / "ev", "--quiet"], pattern)
        assert written(tmp_path / "ev") == []


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "0"])
def test_rasterize_pixel_size_that_is_not_a_finite_positive_number_is_one_line(tmp_path, capsys, value):
    one_line_error(capsys, ["rasterize", tmp_path / "a.laz", "-o", tmp_path / "out", "--pixel-size-m", value,
                            "--quiet"], "--pixel-size-m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x"])
def test_pretrain_on_a_device_that_does_not_exist_is_one_line(spec, tmp_path, capsys, device):
    one_line_error(capsys, ["pretrain", spec, "--out", tmp_path / "out", "--device", device, "--quiet"],
                   f"--device: must be cpu, cuda or cuda:N, got '{device}'")
    assert not (tmp_path / "out").exists()


def test_an_experiment_with_a_model_that_does_not_exist_is_one_line(spec, tmp_path, capsys):
    one_line_error(capsys, ["experiment", spec, "--models", "unet,resnet", "--out", tmp_path / "out", "--quiet"],
                   "--models: unknown model 'resnet' (choose from mae-upernet, mae-detail, unet)")
    assert not (tmp_path / "out").exists()


def experiment_folder(root: pathlib.Path, metrics: str) -> pathlib.Path:
    """An experiment folder with one finished run whose metrics.json holds ``metrics``."""
    (root / "runs" / "r").mkdir(parents=True)
    (root / "runs" / "r" / "metrics.json").write_text(metrics)
    return root


GOOD_RECORD = {"task": "buildings", "model": "unet", "backbone_weights": "-", "label": "unet", "train_tiles": 2,
               "seed": 0, "iters": 2, "iou": 0.5, "f1": 0.6, "precision": float("nan"), "recall": 0.5, "scored_on": {}}


@pytest.mark.parametrize("metrics, pattern", [
    ("{oops", "unreadable or not JSON"),
    ("[1]", "not a JSON object"),
    (json.dumps({**GOOD_RECORD, "train_tiles": "two"}), "train_tiles is 'two', not a whole number"),
    (json.dumps({**GOOD_RECORD, "iou": "high"}), "iou is 'high', not a number"),
    (json.dumps({**GOOD_RECORD, "model": 3}), "model is 3, not text"),
    (json.dumps({**GOOD_RECORD, "scored_on": {"france": {"iou": [1]}}}), "scored_on.france.iou is [1], not a number"),
    (json.dumps({**GOOD_RECORD, "scored_on": [1]}), "scored_on is not a mapping"),
], ids=["not JSON", "a list", "text budget", "text iou", "numeric model", "list score elsewhere", "list scored_on"])
def test_report_of_a_metrics_file_that_is_not_json_or_has_wrong_types_is_one_line(tmp_path, capsys, metrics,
                                                                                   pattern):
    experiment = experiment_folder(tmp_path / "ex", metrics)
    err = one_line_error(capsys, ["report", experiment, "--out", tmp_path / "report"], pattern)
    assert str(experiment / "runs" / "r" / "metrics.json") in err and "rerun the experiment" in err
    assert not (tmp_path / "report").exists()


def test_report_of_well_formed_metrics_writes_the_table(tmp_path, capsys):
    experiment = experiment_folder(tmp_path / "ex", json.dumps(GOOD_RECORD))
    assert main(["report", str(experiment), "--out", str(tmp_path / "report")]) == 0
    assert len((tmp_path / "report" / "results.csv").read_text().strip().splitlines()) == 2


@pytest.mark.parametrize("command", ["predict", "experiment"])
def test_a_scheduler_without_dask_installed_says_how_to_install_it(cli_run, spec, tmp_path, capsys, monkeypatch,
                                                                  command):
    for module in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, module, None)  # as if dask were not installed: importing it fails
    argv = {"predict": ["predict", cli_run, spec.parent / "dem.tif", "--out", tmp_path / "out"],
            "experiment": ["experiment", spec, "--models", "unet", "--unet-width", "4", "--train-tiles", "2",
                           "--val-tiles", "2", "--seeds", "1", "--iters", "2", "--tile-size-px", TILE,
                           "--min-train-fraction", "0.3", "--out", tmp_path / "out"]}[command]
    one_line_error(capsys, [*argv, "--scheduler", "tcp://127.0.0.1:1", "--quiet"], "pip install 'demseg[dask]'")
    assert not (tmp_path / "out").exists()


def export_in_a_subprocess(run: pathlib.Path, out: pathlib.Path, disk_full: bool = False):
    script = ("import errno, sys\nimport onnx\n"
              "def full(*args, **kwargs):\n    raise OSError(errno.ENOSPC, 'No space left on device')\n"
              f"if {disk_full}:\n    onnx.save = full\n"
              "from demseg.cli import main\n"
              f"sys.exit(main(['export', {str(run)!r}, '-o', {str(out)!r}]))\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)


def test_export_prints_no_library_warnings_and_a_failed_export_is_one_line(cli_run, tmp_path):
    pytest.importorskip("onnxscript")
    done = export_in_a_subprocess(cli_run, tmp_path / "model.onnx")
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no torch/onnxscript warnings or notes
    assert (tmp_path / "model.onnx").is_file()
    failed = export_in_a_subprocess(cli_run, tmp_path / "full.onnx", disk_full=True)
    assert failed.returncode == 2, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and "no space left on the device" in failed.stderr
    assert not (tmp_path / "full.onnx").exists()


def test_qgis_install_into_an_empty_plugins_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # were it not refused, nothing lands in the real profile
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "share"))
    for empty in ("", " "):
        one_line_error(capsys, ["qgis", "install", "--plugins-dir", empty, "--no-enable"], "--plugins-dir is empty")
    assert not (tmp_path / "home").exists()


def ground_points(path: pathlib.Path, x0: float = 1000.0, y0: float = 2000.0, side_m: int = 10) -> pathlib.Path:
    """A LAS file of ground (class 2) on a plane with a 4 m roof (class 6), four points per m², in EPSG:32631."""
    import laspy
    import pyproj

    x, y = (a.ravel() + 0.25 for a in np.meshgrid(np.arange(x0, x0 + side_m, 0.5), np.arange(y0, y0 + side_m, 0.5)))
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales, header.offsets = np.array([0.001, 0.001, 0.001]), np.array([x0, y0, 0.0])
    header.add_crs(pyproj.CRS.from_user_input("EPSG:32631"))
    las = laspy.LasData(header)
    roof = (x - x0 > 3) & (x - x0 < 7) & (y - y0 > 3) & (y - y0 < 7)
    las.x, las.y, las.z = x, y, 10.0 + 0.1 * (x - x0) + 5.0 * roof
    las.classification = np.where(roof, 6, 2).astype(np.uint8)
    las.write(path)
    return path


@pytest.mark.parametrize("command", ["rasterize --like", "predict"])
def test_a_raster_with_a_pixel_size_of_0_is_one_line_without_numpy_warnings(cli_run, tmp_path, capsys, command):
    from affine import Affine

    with rasterio.open(tmp_path / "zero.tif", "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       crs="EPSG:32631", transform=Affine(0, 0, 1000, 0, 0, 2010)) as dst:
        dst.write(np.zeros((1, 4, 4), np.float32))
    argv = (["rasterize", ground_points(tmp_path / "a.las"), "-o", tmp_path / "out", "--like", tmp_path / "zero.tif",
             "--channels", "none", "--quiet"] if command == "rasterize --like"
            else ["predict", cli_run, tmp_path / "zero.tif", "--out", tmp_path / "out", "--quiet"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy warning on the way would fail the command instead of the test
        one_line_error(capsys, argv, f"has a pixel size of 0 x 0 (a broken geotransform): {tmp_path / 'zero.tif'}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["rasterize", "synth"])
def test_the_staging_folders_a_killed_run_left_are_removed_by_the_next_run_and_a_running_ones_are_kept(
        tmp_path, capsys, command):
    import tempfile

    from demseg.io.atomic import staging_folder

    out = tmp_path / "out"
    killed = staging_folder(out)  # what kill -9 leaves: a half-built folder, and an earlier output swapped out
    (killed / "dsm.tif").write_bytes(b"half")
    swapped = pathlib.Path(tempfile.mkdtemp(prefix=".out.", suffix=".old", dir=tmp_path))
    (tmp_path / ".out.notes").mkdir()  # a user's own hidden folder of a similar name
    argv = (["rasterize", ground_points(tmp_path / "a.las"), "-o", out, "--pixel-size-m", "1", "--channels", "none",
             "--classes", "buildings=6", "--quiet"] if command == "rasterize"
            else ["synth", "-o", out, "--scenes", "1", "--size-px", "64", "--quiet"])
    with folder_lock(tmp_path, "out.staging"):  # another run is building out right now
        one_line_error(capsys, argv, "another demseg process")
    assert killed.is_dir() and swapped.is_dir() and not out.exists()
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    assert not killed.exists() and not swapped.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".out.notes"]
    assert out.is_dir()
