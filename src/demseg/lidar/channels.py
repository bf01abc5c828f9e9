"""LiDAR channels on the output grid: returns per pulse, first minus last, vegetation share, intensity.

A DSM keeps the top of whatever each pulse hit; these channels keep what it hides. A pulse through
a crown returns several echoes at different heights, one on a roof returns one. Each channel is a
statistic of the cell's kept non-water points (the points the DSM is made of), folded in chunk by
chunk like the DSM, so memory grows with the grid only (at most 44 bytes a cell for all four):

- ``returns``: mean ``number_of_returns`` of the cell's points (an unset 0 counts as 1): ~1 on roofs
  and bare ground, 2-4 in canopy.
- ``fml``: mean height of the cell's first returns minus mean height of its last returns, in metres.
  First: return number <= 1; last: return number >= number of returns; a single return is both and
  cancels out, so the channel is 0 on anything that returns one echo a pulse, however it is sloped,
  and metres in canopy. Means, not (highest first) minus (lowest last): the extremes measure the
  height range inside the cell, so sloped roofs and eaves (single returns at several heights) would
  read as canopy, and one stray return would set the cell's value.
- ``vegshare``: share of the cell's points in the ASPRS vegetation classes 3, 4, 5, in [0, 1].
- ``intensity``: mean intensity of the cell's first returns, in the sensor's raw units (recipes
  normalise it per tile).

Gaps as in the DSM: a cell without a value (no point, or no first or last return) takes the value
of the nearest cell with one, if that lies within ``fill_radius_m``; where the DSM is nodata (cells
holding only water points, gaps beyond the radius) every channel is nodata too.

A channel is made only if every input file that puts points on the grid carries what it needs:
return numbers (a point whose return number or number of returns exceeds 1) for ``returns`` and
``fml``, intensity that varies for ``intensity``, a point of a vegetation class for ``vegshare``
(AHN3, for one, leaves vegetation in class 1, unclassified).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demseg.errors import DemsegError
from demseg.io.raster import GridSpec
from demseg.lidar.fill import fill_from_nearest
from demseg.lidar.grid import pixel_sides_m
from demseg.lidar.sources import PointChunk

VEGETATION_CLASSES = (3, 4, 5)  # ASPRS low, medium and high vegetation
INTENSITY_MAX = np.iinfo(np.uint16).max


@dataclass
class FileTraits:
    """What one file's points on the grid carry: return numbering, an intensity range, vegetation points."""

    points: int = 0
    most_returns: int = 0
    intensity_min: int = INTENSITY_MAX
    intensity_max: int = 0
    vegetation_points: int = 0

    def observe(self, return_number: np.ndarray, number_of_returns: np.ndarray, intensity: np.ndarray,
                codes: np.ndarray) -> None:
        """Update the traits with some of the file's points."""
        if not len(codes):
            return
        self.points += len(codes)
        self.most_returns = max(self.most_returns, int(return_number.max()), int(number_of_returns.max()))
        self.intensity_min = min(self.intensity_min, int(intensity.min()))
        self.intensity_max = max(self.intensity_max, int(intensity.max()))
        self.vegetation_points += int(np.isin(codes, VEGETATION_CLASSES).sum())

    def lacks(self, channel: str) -> str | None:
        """Why the file cannot make ``channel`` (a phrase to follow its path), or None if it can."""
        if channel in ("returns", "fml") and self.most_returns <= 1:
            return "carries no return numbers (every point is a single or unnumbered return)"
        if channel == "intensity" and self.intensity_max <= self.intensity_min:
            return f"carries no intensity (every point has intensity {self.intensity_min})"
        if channel == "vegshare" and not self.vegetation_points:
            return f"has no point of a vegetation class (ASPRS {', '.join(map(str, VEGETATION_CLASSES))})"
        return None

    def as_dict(self) -> dict:
        return {"points_on_grid": self.points, "most_returns": self.most_returns,
                "intensity_range": [self.intensity_min, self.intensity_max] if self.points else None,
                "vegetation_points": self.vegetation_points}


def _add(target: np.ndarray | None, cells: np.ndarray, values: np.ndarray | int = 1) -> None:
    if target is not None:
        np.add.at(target, cells, values)


class ChannelAccumulator:
    """Per-cell sums and counts of the requested channels, plus each file's :class:`FileTraits`.

    Arrays a requested channel does not need are None. ``points``: kept non-water points;
    ``returns_sum``: their numbers of returns; ``vegetation_points``: those of classes 3-5;
    ``first_count``/``first_z_sum``/``last_count``/``last_z_sum``: first and last returns and the sums
    of their heights; ``intensity_sum``: the intensities of the first returns.
    """

    def __init__(self, cells: int, channels: list[str], water_class: int):
        wanted = set(channels)

        def zeros(dtype, needed: bool) -> np.ndarray | None:
            return np.zeros(cells, dtype) if needed else None

        self.channels = list(channels)
        self.water_class = water_class
        self.points = zeros(np.uint32, bool(wanted & {"returns", "vegshare"}))
        self.returns_sum = zeros(np.uint32, "returns" in wanted)
        self.vegetation_points = zeros(np.uint32, "vegshare" in wanted)
        self.first_count = zeros(np.uint32, bool(wanted & {"fml", "intensity"}))
        self.first_z_sum = zeros(np.float64, "fml" in wanted)
        self.last_count = zeros(np.uint32, "fml" in wanted)
        self.last_z_sum = zeros(np.float64, "fml" in wanted)
        self.intensity_sum = zeros(np.float64, "intensity" in wanted)
        self.files: dict[Path, FileTraits] = {}

    def add(self, chunk: PointChunk, use: np.ndarray, cells: np.ndarray) -> None:
        """Fold the points of ``chunk`` that ``use`` marks, at flat cell indices ``cells``, into the sums."""
        codes, z = chunk.classification[use], chunk.z[use]
        return_number, number_of_returns = chunk.return_number[use], chunk.number_of_returns[use]
        intensity = chunk.intensity[use]
        self.files.setdefault(chunk.path, FileTraits()).observe(return_number, number_of_returns, intensity,
                                                                 codes)
        surface = codes != self.water_class  # as in the DSM: water returns are specular or refracted
        cells, codes, z, intensity = cells[surface], codes[surface], z[surface], intensity[surface]
        return_number, number_of_returns = return_number[surface], number_of_returns[surface]
        _add(self.points, cells)
        _add(self.returns_sum, cells, np.maximum(number_of_returns, 1).astype(np.uint32))
        if self.vegetation_points is not None:
            _add(self.vegetation_points, cells[np.isin(codes, VEGETATION_CLASSES)])
        first = return_number <= 1  # 0: unnumbered, taken as a single return
        _add(self.first_count, cells[first])
        _add(self.first_z_sum, cells[first], z[first])
        _add(self.intensity_sum, cells[first], intensity[first].astype(np.float64))
        last = return_number >= number_of_returns
        _add(self.last_count, cells[last])
        _add(self.last_z_sum, cells[last], z[last])

    def cell_values(self, channel: str) -> np.ndarray:
        """Flat float64 values of ``channel`` from each cell's own points, NaN where a cell has none."""
        if channel == "returns":
            return _mean(self.returns_sum, self.points)
        if channel == "vegshare":
            return _mean(self.vegetation_points, self.points)
        if channel == "intensity":
            return _mean(self.intensity_sum, self.first_count)
        if channel == "fml":
            return _mean(self.first_z_sum, self.first_count) - _mean(self.last_z_sum, self.last_count)
        raise ValueError(f"unknown channel {channel!r}")


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    mean = np.full(count.shape, np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    return mean


def choose_channels(acc: ChannelAccumulator, explicit: bool) -> tuple[list[str], dict[str, str]]:
    """The requested channels the data can make, and the others with the reason, in request order.

    With ``explicit`` (the user named the channels) a channel the data cannot make is a
    :class:`DemsegError` instead.
    """
    made, skipped = [], {}
    for channel in acc.channels:
        lacking = [(path, why) for path, traits in acc.files.items()
                   if traits.points and (why := traits.lacks(channel))]
        if not lacking:
            made.append(channel)
            continue
        path, why = lacking[0]
        others = f" (and {len(lacking) - 1} other file(s))" if len(lacking) > 1 else ""
        reason = f"{path}{others} {why}"
        if explicit:
            raise DemsegError(f"{reason}: cannot make channel {channel!r}; leave it out of --channels")
        skipped[channel] = reason
    return made, skipped


def channel_raster(acc: ChannelAccumulator, channel: str, grid: GridSpec, dsm_valid: np.ndarray,
                   fill_radius_m: float) -> tuple[np.ndarray, int]:
    """``channel`` as float32 on ``grid`` (NaN = nodata), and how many cells have it from their own points.

    Gaps are filled as in the DSM (see the module docstring); cells where the DSM is nodata are nodata.
    """
    values = acc.cell_values(channel).reshape(grid.shape)
    measured = np.isfinite(values)
    fill_from_nearest(values, measured, pixel_sides_m(grid), fill_radius_m)
    values[~dsm_valid] = np.nan
    return values.astype(np.float32), int(measured.sum())
