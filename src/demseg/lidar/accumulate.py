"""Per-cell statistics of streamed points: memory grows with the grid, never with the number of points.

Each chunk is binned to flat cell indices and folded in with unbuffered ``ufunc.at`` calls
(``np.maximum.at`` for the highest return, ``np.add.at`` for sums and counts), which numpy >= 1.25
runs at ~10 ns per point; no per-point array survives a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from demseg.io.raster import GridSpec
from demseg.lidar.channels import ChannelAccumulator
from demseg.lidar.grid import cell_index
from demseg.lidar.sources import PointChunk


@dataclass
class PointTally:
    """How many points were read, dropped (class or withheld flag), off the grid, and used per ASPRS class."""

    read: int = 0
    dropped: int = 0
    off_grid: int = 0
    per_class: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))

    @property
    def used(self) -> int:
        return int(self.per_class.sum())

    def as_dict(self) -> dict:
        return {"read": self.read, "used": self.used, "dropped_class_or_withheld": self.dropped,
                "off_grid": self.off_grid,
                "per_class": {str(code): int(n) for code, n in enumerate(self.per_class) if n}}


class CellAccumulator:
    """Folds point chunks into flat per-cell arrays on ``grid``.

    ``count``: points per cell (water included); ``top_z``/``top_class``: height and ASPRS class of the
    highest non-water return; ``ground_sum``/``ground_count``: for the mean ground height;
    ``votes[k]``: points of the k-th configured class code; ``channels``: the LiDAR channels' own
    accumulator, fed the same kept points on the grid (None when no channel is requested).
    """

    def __init__(self, grid: GridSpec, class_codes: list[int], ground_class: int, water_class: int,
                 drop_classes: list[int], close_far_edges: bool, channels: list[str] | None = None):
        cells = grid.width * grid.height
        self.grid = grid
        self.class_codes = list(class_codes)
        self.ground_class = ground_class
        self.water_class = water_class
        self.drop_classes = np.array(sorted(drop_classes), dtype=np.uint8)
        self.close_far_edges = close_far_edges
        self.count = np.zeros(cells, np.uint32)
        self.top_z = np.full(cells, -np.inf, np.float32)
        self.top_class = np.zeros(cells, np.uint8)
        self.ground_sum = np.zeros(cells, np.float64)
        self.ground_count = np.zeros(cells, np.uint32)
        self.votes = np.zeros((len(class_codes), cells), np.uint32)
        self.channels = ChannelAccumulator(cells, channels, water_class) if channels else None
        self.tally = PointTally()

    def add(self, chunk: PointChunk) -> None:
        """Fold one chunk of points into the cell statistics."""
        self.tally.read += len(chunk)
        keep = ~chunk.withheld & ~np.isin(chunk.classification, self.drop_classes)
        cells, inside = cell_index(self.grid, chunk.x, chunk.y, self.close_far_edges)
        self.tally.dropped += int((~keep).sum())
        self.tally.off_grid += int((keep & ~inside).sum())
        use = keep & inside
        cells = cells[use]
        if self.channels is not None:
            self.channels.add(chunk, use, cells)
        z, codes = chunk.z[use].astype(np.float32), chunk.classification[use]
        self.tally.per_class += np.bincount(codes, minlength=256)
        np.add.at(self.count, cells, np.ones(len(cells), np.uint32))
        self._add_surface(cells, z, codes)
        ground = codes == self.ground_class
        np.add.at(self.ground_sum, cells[ground], z[ground].astype(np.float64))
        np.add.at(self.ground_count, cells[ground], np.ones(int(ground.sum()), np.uint32))
        for k, code in enumerate(self.class_codes):
            hits = cells[codes == code]
            np.add.at(self.votes[k], hits, np.ones(len(hits), np.uint32))

    def _add_surface(self, cells: np.ndarray, z: np.ndarray, codes: np.ndarray) -> None:
        surface = codes != self.water_class  # water returns are specular or refracted: no DSM height
        cells, z, codes = cells[surface], z[surface], codes[surface]
        np.maximum.at(self.top_z, cells, z)
        # the points now equal to their cell's maximum are its highest returns; remember their class
        on_top = z == self.top_z[cells]
        self.top_class[cells[on_top]] = codes[on_top]

    def shaped(self, flat: np.ndarray) -> np.ndarray:
        """A flat per-cell array as (height, width) of the grid."""
        return flat.reshape(flat.shape[:-1] + self.grid.shape)
