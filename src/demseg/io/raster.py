"""Read elevation and label rasters safely; write GeoTIFFs atomically.

Elevation is always returned as float32 with a boolean ``valid_mask``: declared nodata,
NaN and GDAL mask bands are invalid; 0 m is a real elevation and stays valid.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.windows import Window

from demseg.errors import DemsegError
from demseg.io.atomic import atomic_path


@dataclass(frozen=True)
class GridSpec:
    """The pixel grid of a raster: CRS, affine transform and size."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def pixel_size_m(self) -> float:
        """Mean side of a pixel in CRS units (metres for the projected CRSs we accept)."""
        return float((abs(self.transform.a) + abs(self.transform.e)) / 2)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    def window_grid(self, window: Window) -> GridSpec:
        """The grid of a window of this grid."""
        return GridSpec(self.crs, rasterio.windows.transform(window, self.transform),
                        int(window.width), int(window.height))

    def same_as(self, other: GridSpec, tolerance: float = 1e-6) -> bool:
        """True if both grids have the same CRS, size and (almost) the same transform."""
        return (self.crs == other.crs and self.shape == other.shape
                and self.transform.almost_equals(other.transform, precision=tolerance * max(1.0, self.pixel_size_m)))


@dataclass
class DemRaster:
    """A single-band elevation raster: float32 heights, a validity mask and its grid."""

    elevation: np.ndarray  # float32 (H, W); NaN where invalid
    valid_mask: np.ndarray  # bool (H, W)
    grid: GridSpec
    path: str | None = None
    vertical_units: str | None = None
    source_nodata: float | None = None

    @property
    def valid_fraction(self) -> float:
        return float(self.valid_mask.mean()) if self.valid_mask.size else 0.0


def _check_exists(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise DemsegError(f"{what} not found: {path}")
    if path.is_dir():
        raise DemsegError(f"{what} is a folder, not a file: {path}")
    return path


def _open(path: Path, what: str) -> rasterio.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise DemsegError(f"{what} is not a readable raster: {path} ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parse_crs(crs: str | CRS | None) -> CRS | None:
    """A CRS from a user string such as ``EPSG:2154``; one clear error if it is not one."""
    if crs is None or isinstance(crs, CRS):
        return crs
    try:
        # pyproj first: it refuses quietly, where GDAL prints its own "ERROR 1: PROJ: ..." line to stderr
        pyproj.CRS.from_user_input(crs)
        return CRS.from_user_input(crs)
    except Exception as exc:  # rasterio raises CRSError, pyproj others
        raise DemsegError(f"not a coordinate reference system: {crs!r}") from exc


def open_grid(path: str | os.PathLike, crs: str | CRS | None = None, what: str = "raster") -> GridSpec:
    """The grid of a raster without reading its pixels (``crs`` fills in a missing CRS)."""
    path = _check_exists(path, what)
    with _open(path, what) as src:
        return _grid_of(src, path, parse_crs(crs), what)


def _grid_of(src, path: Path, crs: CRS | None, what: str) -> GridSpec:
    if src.crs is None and crs is None:
        raise DemsegError(f"{what} has no CRS: {path}; pass it explicitly with --crs (e.g. --crs EPSG:2154)")
    if src.crs is not None and crs is not None and src.crs != crs:
        raise DemsegError(f"{what} declares {src.crs.to_string()} but --crs says {crs.to_string()}: {path}")
    if src.transform.is_identity:
        raise DemsegError(f"{what} has no georeferencing (identity transform): {path}")
    if src.transform.b != 0 or src.transform.d != 0:
        raise DemsegError(f"{what} is rotated; only north-up rasters are supported: {path}")
    sides = (src.transform.a, src.transform.e)
    if not all(np.isfinite(side) and side != 0 for side in sides):
        raise DemsegError(f"{what} has a pixel size of {abs(sides[0]):g} x {abs(sides[1]):g} (a broken "
                          f"geotransform): {path}; fix its georeferencing (e.g. gdal_edit.py -a_ullr)")
    grid_crs = src.crs or crs
    if grid_crs.is_geographic:
        raise DemsegError(f"{what} is in a geographic CRS ({grid_crs.to_string()}); reproject it to a "
                          f"projected CRS in metres first: {path} (e.g. {_reproject_hint(src, grid_crs)})")
    unit, factor = _linear_units(grid_crs)
    if factor is not None and abs(factor - 1.0) > 1e-9:
        raise DemsegError(f"{what} has horizontal units of {unit}, not metres ({grid_crs.to_string()}): {path}; "
                          f"reproject it to a CRS in metres first, e.g. {_reproject_hint(src, grid_crs)} (and its "
                          f"heights to metres if they are in {unit})")
    return GridSpec(grid_crs, src.transform, src.width, src.height)


def _linear_units(crs: CRS) -> tuple[str, float | None]:
    """(name, metres per unit) of a projected CRS's axes; (name, None) where the CRS does not say."""
    try:
        name, factor = crs.linear_units_factor
    except Exception:  # rasterio raises CRSError for CRSs without linear units (local, engineering)
        return "unknown", None
    return name, float(factor)


def _reproject_hint(src, crs: CRS) -> str:
    """A gdalwarp command to the UTM zone (WGS 84, metres) of a raster's centre."""
    try:
        from rasterio.warp import transform

        x, y = src.transform * (src.width / 2, src.height / 2)
        (lon,), (lat,) = transform(crs, "EPSG:4326", [x], [y])
        zone = int((lon + 180) // 6) % 60 + 1
        target = f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
    except Exception:  # a CRS PROJ cannot transform: name no zone
        target = "EPSG:<a CRS in metres>"
    name = Path(src.name)
    return f"gdalwarp -t_srs {target} {shlex.quote(name.name)} {shlex.quote(name.stem + '_m.tif')}"


BYTES_PER_LOADED_PIXEL = 10  # float32 elevation, the source array, the GDAL mask and the validity mask


def memory_bytes() -> int:
    """The machine's physical memory in bytes (a large default where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_loadable(width: int, height: int, path: Path, what: str) -> None:
    """Refuse to load a raster whole when it would need more than half the machine's memory."""
    needed = width * height * BYTES_PER_LOADED_PIXEL
    if needed > memory_bytes() // 2:
        raise DemsegError(f"{what} is {width} x {height} px (about {needed / 2**30:.0f} GiB to load whole), more than "
                          f"this machine can hold: {path}; cut it into tiles first (e.g. gdal_retile.py), or use "
                          "demseg predict, which reads in windows")


def read_dem(path: str | os.PathLike, band: int | None = None, crs: str | CRS | None = None,
             nodata: float | None = None, window: Window | None = None, what: str = "DEM") -> DemRaster:
    """Read one band of an elevation raster as float32 with a validity mask.

    ``band`` is 1-based and required when the file has several bands; ``crs`` is required
    when the file has none; ``nodata`` overrides (never replaces) a declared nodata value.
    """
    path = _check_exists(path, what)
    crs = parse_crs(crs)
    with _open(path, what) as src:
        grid = _grid_of(src, path, crs, what)
        if band is None:
            if src.count != 1:
                raise DemsegError(f"{what} has {src.count} bands; choose the elevation band with --band: {path}")
            band = 1
        if not 1 <= band <= src.count:
            raise DemsegError(f"{what} has {src.count} band(s); --band {band} does not exist: {path}")
        dtype = np.dtype(src.dtypes[band - 1])
        if dtype.kind == "c":
            raise DemsegError(f"{what} band {band} is complex-valued, not elevation: {path}")
        if window is None:
            check_loadable(src.width, src.height, path, what)
        try:
            data = src.read(band, window=window, masked=False)
            gdal_mask = src.read_masks(band, window=window)
        except (RasterioError, RasterioIOError) as exc:
            raise DemsegError(f"{what} is corrupt or truncated: {path} ({_first_line(exc)})") from exc
        declared = src.nodatavals[band - 1]
        units = (src.units[band - 1] or None) if src.units else None
        if window is not None:
            grid = grid.window_grid(window)
    elevation = data.astype(np.float32, copy=False)
    valid = np.isfinite(elevation)
    for value in (declared, nodata):
        if value is not None and not (isinstance(value, float) and np.isnan(value)):
            valid &= data != np.array(value, dtype=data.dtype)
    # a per-dataset/alpha mask band (not derived from nodata) also marks invalid pixels
    valid &= gdal_mask > 0
    elevation = np.where(valid, elevation, np.float32(np.nan)).astype(np.float32, copy=False)
    if window is None and not valid.any():
        raise DemsegError(f"{what} has no valid elevation (all nodata): {path}")
    _check_plausible(elevation, valid, path, what)
    return DemRaster(elevation, valid, grid, str(path), units, declared)


MAX_ABS_ELEVATION_M = 1e5  # 100 km: beyond any height on Earth in any unit a DEM is kept in (m, ft, dm)


def _check_plausible(elevation: np.ndarray, valid: np.ndarray, path: Path, what: str) -> None:
    """Refuse values no elevation can have (e.g. 3.4e38, float32's largest, written as an undeclared nodata).

    They would be normalised into finite but meaningless inputs and train a model on them without
    a word; marking them as nodata is the user's call, so the message says how.
    """
    huge = valid & (np.abs(elevation) > MAX_ABS_ELEVATION_M)
    if huge.any():
        example = str(elevation[huge][0])  # float32's shortest text: it reads back as the same value
        spec = ", or nodata: in the dataset spec" if what.lower().startswith("dem") else ""  # the DEM's only
        raise DemsegError(f"{what} holds {int(huge.sum())} value(s) beyond +-{MAX_ABS_ELEVATION_M:g} (e.g. "
                          f"{example}), no plausible value: {path}; if they mark missing data, declare "
                          f"them as its nodata (gdal_edit.py -a_nodata {example} FILE{spec})")


def read_label_raster(path: str | os.PathLike, grid: GridSpec, band: int = 1, window: Window | None = None,
                      what: str = "label raster") -> np.ndarray:
    """Read integer class codes that must lie on exactly ``grid`` (same CRS, transform and size)."""
    path = _check_exists(path, what)
    with _open(path, what) as src:
        label_grid = GridSpec(src.crs or grid.crs, src.transform, src.width, src.height)
        if src.crs is not None and src.crs != grid.crs:
            raise DemsegError(f"{what} CRS {src.crs.to_string()} differs from the DEM's {grid.crs.to_string()}: {path}")
        if not label_grid.same_as(grid):
            raise DemsegError(f"{what} is on a different grid than the DEM ({src.width}x{src.height} px at "
                              f"{tuple(round(v, 3) for v in src.transform[:6])} vs {grid.width}x{grid.height} px at "
                              f"{tuple(round(v, 3) for v in grid.transform[:6])}): {path}")
        if np.dtype(src.dtypes[band - 1]).kind == "f":
            raise DemsegError(f"{what} holds floating-point values, expected integer class codes: {path}")
        if window is None:
            check_loadable(src.width, src.height, path, what)
        try:
            data = src.read(band, window=window)
        except (RasterioError, RasterioIOError) as exc:
            raise DemsegError(f"{what} is corrupt or truncated: {path} ({_first_line(exc)})") from exc
    return data


@contextlib.contextmanager
def c_messages_held() -> Iterator[None]:
    """Hold what C libraries print on stderr during the block and print it afterwards.

    GDAL's own libtiff reports a full disk only there, one line per block ("_tiffWriteProc: No
    space left on device."), and the write may still return normally: such a file is incomplete,
    so its messages become one OSError (ENOSPC) instead. After a failure they are dropped (the
    failure is reported as one line).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read()
        if succeeded and b"No space left on device" in text:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if succeeded and text:
            os.write(2, text)


def write_geotiff(path: str | os.PathLike, array: np.ndarray, grid: GridSpec, nodata: float | None = None,
                  compress: str = "deflate", tags: dict | None = None) -> Path:
    """Write a (H, W) or (C, H, W) array as a tiled GeoTIFF on ``grid``, atomically."""
    if array.ndim == 2:
        array = array[None]
    count, height, width = array.shape
    if (height, width) != grid.shape:
        raise ValueError(f"array {array.shape} does not match grid {grid.shape}")
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype.name,
                   crs=grid.crs, transform=grid.transform, nodata=nodata, compress=compress,
                   tiled=width >= 256 and height >= 256, blockxsize=256, blockysize=256)
    if not profile["tiled"]:
        profile.pop("blockxsize")
        profile.pop("blockysize")
    if array.dtype.kind == "f":
        profile["predictor"] = 3 if array.dtype.itemsize == 4 else 1
    with atomic_path(path) as tmp, c_messages_held():
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array)
            if tags:
                dst.update_tags(**tags)
    return Path(path)
