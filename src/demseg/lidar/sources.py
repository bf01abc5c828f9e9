"""Point cloud files (LAS, LAZ, COPC): checked headers, one shared CRS, and points streamed in chunks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import laspy
import numpy as np
import pyproj
from rasterio.crs import CRS

from demseg.errors import DemsegError

# what laspy/lazrs raise on a damaged file: LaspyException, lazrs.LazrsError (a RuntimeError),
# ValueError for a partial record, OSError/EOFError for short reads
READ_ERRORS = (laspy.errors.LaspyException, RuntimeError, ValueError, OSError, EOFError)


@dataclass(frozen=True)
class PointFile:
    """A point cloud file's header facts: point count, bounds and declared CRS (None if it has none)."""

    path: Path
    point_count: int
    mins: tuple[float, float, float]
    maxs: tuple[float, float, float]
    declared_crs: pyproj.CRS | None
    version: str
    point_format: int


@dataclass(frozen=True)
class PointChunk:
    """Some points of the file at ``path``: coordinates, class, withheld flag, return numbering, intensity.

    Coordinates are float64, ASPRS class codes uint8, the withheld flag bool; ``return_number`` and
    ``number_of_returns`` (of the point's pulse) are uint8, 0 where the file leaves them unset;
    ``intensity`` is uint16 in the sensor's units.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    classification: np.ndarray
    withheld: np.ndarray
    return_number: np.ndarray
    number_of_returns: np.ndarray
    intensity: np.ndarray
    path: Path

    def __len__(self) -> int:
        return len(self.x)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_header(path: str | os.PathLike) -> PointFile:
    """The header of one LAS/LAZ/COPC file; refuses a missing, unreadable or empty file."""
    path = Path(path)
    if not path.exists():
        raise DemsegError(f"point cloud not found: {path}")
    if path.is_dir():
        raise DemsegError(f"point cloud is a folder, not a file: {path}")
    try:
        with laspy.open(path) as reader:
            header = reader.header
            declared = header.parse_crs()
            has_crs_record = bool(header.vlrs.get_by_id("LASF_Projection"))
    except READ_ERRORS as exc:
        raise DemsegError(f"not a readable LAS/LAZ file: {path} ({_first_line(exc)})") from exc
    if declared is None and has_crs_record:
        raise DemsegError(f"point cloud declares a CRS that cannot be parsed: {path}")
    if header.point_count == 0:
        raise DemsegError(f"point cloud has no points: {path}")
    return PointFile(path, int(header.point_count), tuple(float(v) for v in header.mins),
                     tuple(float(v) for v in header.maxs), declared, str(header.version),
                     int(header.point_format.id))


def horizontal_crs(crs: pyproj.CRS) -> pyproj.CRS:
    """The horizontal part of a CRS (a compound CRS such as EPSG:7415 gives EPSG:28992)."""
    return crs.to_2d()


def _user_crs(text: str | None) -> pyproj.CRS | None:
    if text is None:
        return None
    try:
        return pyproj.CRS.from_user_input(text)
    except pyproj.exceptions.CRSError as exc:
        raise DemsegError(f"not a coordinate reference system: {text!r}") from exc


def _check_projected_in_metres(crs: pyproj.CRS, where: str) -> None:
    if crs.is_geographic:
        raise DemsegError(f"{where} is in a geographic CRS ({crs.name}); reproject the points to a projected "
                          "CRS in metres first (e.g. with pdal translate)")
    if not crs.is_projected:
        raise DemsegError(f"{where} is not in a projected CRS ({crs.name}); reproject it first")
    unit = crs.axis_info[0]
    if abs(unit.unit_conversion_factor - 1.0) > 1e-9:
        raise DemsegError(f"{where} has horizontal units of {unit.unit_name}, not metres ({crs.name}); "
                          "reproject it to a CRS in metres first")


def resolve_crs(files: list[PointFile], crs: str | None) -> tuple[CRS, str | None]:
    """The one horizontal CRS of all files (``crs`` stands in where one has none), and the vertical CRS."""
    user = _user_crs(crs)
    user_2d = horizontal_crs(user) if user is not None else None
    chosen: tuple[pyproj.CRS, Path] | None = None
    vertical = user.sub_crs_list[1].name if user is not None and user.is_compound else None
    for point_file in files:
        declared = point_file.declared_crs
        if declared is None and user is None:
            raise DemsegError(f"point cloud has no CRS: {point_file.path}; pass it with --crs "
                              "(e.g. --crs EPSG:28992)")
        if declared is not None and declared.is_compound:
            vertical = declared.sub_crs_list[1].name
        file_crs = horizontal_crs(declared) if declared is not None else user_2d
        if user_2d is not None and not file_crs.equals(user_2d, ignore_axis_order=True):
            raise DemsegError(f"point cloud declares {_crs_name(file_crs)} but --crs says "
                              f"{_crs_name(user_2d)}: {point_file.path}")
        if chosen is not None and not file_crs.equals(chosen[0], ignore_axis_order=True):
            raise DemsegError(f"point clouds are in different CRSs: {chosen[1]} is {_crs_name(chosen[0])}, "
                              f"{point_file.path} is {_crs_name(file_crs)}; reproject them to one CRS first")
        chosen = chosen or (file_crs, point_file.path)
    _check_projected_in_metres(chosen[0], f"point cloud {chosen[1]}")
    epsg = chosen[0].to_epsg()
    return (CRS.from_epsg(epsg) if epsg else CRS.from_wkt(chosen[0].to_wkt())), vertical


def _crs_name(crs: pyproj.CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def iter_points(point_file: PointFile, chunk_points: int) -> Iterator[PointChunk]:
    """Yield the file's points ``chunk_points`` at a time; a damaged file is one :class:`DemsegError`."""
    read = 0
    try:
        with laspy.open(point_file.path) as reader:
            chunks = reader.chunk_iterator(chunk_points)
            while True:
                try:
                    points = next(chunks)
                except StopIteration:
                    break
                read += len(points)
                yield PointChunk(np.asarray(points.x), np.asarray(points.y), np.asarray(points.z),
                                 np.asarray(points.classification, dtype=np.uint8),
                                 np.asarray(points.withheld).astype(bool),
                                 np.asarray(points.return_number, dtype=np.uint8),
                                 np.asarray(points.number_of_returns, dtype=np.uint8),
                                 np.asarray(points.intensity, dtype=np.uint16), point_file.path)
    except READ_ERRORS as exc:
        raise DemsegError(f"point cloud is corrupt or truncated: {point_file.path} after {read} of "
                          f"{point_file.point_count} points ({_first_line(exc)})") from exc
    if read != point_file.point_count:
        raise DemsegError(f"point cloud is truncated: {point_file.path} holds {read} of the "
                          f"{point_file.point_count} points its header announces")

