"""Shared fixtures: tiny synthetic GeoTIFFs and vectors written per test, and the shared real data."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"
UTM31 = "EPSG:32631"
ORIGIN = (500000.0, 5700000.0)


def write_raster(path: Path, array: np.ndarray, crs: str | None = UTM31, pixel_size_m: float = 1.0,
                 nodata: float | None = -9999.0, origin: tuple[float, float] = ORIGIN) -> Path:
    """Write a (H, W) or (C, H, W) array as a GeoTIFF."""
    array = array if array.ndim == 3 else array[None]
    profile = dict(driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                   dtype=array.dtype.name, transform=from_origin(*origin, pixel_size_m, pixel_size_m), nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def city_dem(size_px: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small DEM with a sloping ground and box buildings, and its 0/1 building mask."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size_px, 0:size_px]
    ground = 0.05 * rows + 0.02 * cols
    buildings = np.zeros((size_px, size_px), np.uint8)
    for _ in range(max(2, size_px // 24)):
        r, c = rng.integers(4, size_px - 20, size=2)
        h, w = rng.integers(8, 16, size=2)
        buildings[r:r + h, c:c + w] = 1
    dem = (ground + buildings * rng.uniform(6, 20)).astype(np.float32)
    return dem, buildings


@pytest.fixture
def scene_dir(tmp_path: Path) -> Path:
    """A folder with dem.tif, dtm.tif and labels.tif (0 bg, 1 building, 255 unknown) on one grid."""
    dem, buildings = city_dem(96)
    dem[:5, :5] = -9999.0
    labels = buildings.copy()
    labels[:5, :5] = 255
    write_raster(tmp_path / "dem.tif", dem)
    rows, cols = np.mgrid[0:96, 0:96]
    write_raster(tmp_path / "dtm.tif", (0.05 * rows + 0.02 * cols).astype(np.float32))
    write_raster(tmp_path / "labels.tif", labels, nodata=255)
    return tmp_path


@pytest.fixture
def shared_real() -> Path:
    if not SHARED_REAL.exists():
        pytest.skip(f"real data folder {SHARED_REAL} is absent (only in the project's workspace)")
    return SHARED_REAL


@pytest.fixture
def external_cluster(tmp_path):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1, torn down after the test."""
    dask = Path(sys.executable).with_name("dask")
    assert dask.exists(), "dask[distributed] is a dev dependency: its `dask` command line must be installed"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "cluster.log", "w")
    processes = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], stdout=logs, stderr=logs)]
    try:
        for _ in range(2):
            processes.append(subprocess.Popen([str(dask), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                               "--no-dashboard", "--memory-limit", "2GiB"], stdout=logs, stderr=logs))
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()
