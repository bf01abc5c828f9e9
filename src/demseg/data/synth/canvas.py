"""The scene's pixel grid in local metres, smooth random fields and the terrain relief built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio import features

ROAD_PAD_M = 12.0  # roads just outside the scene still shape its edge (profile, kerbs, embankments)
FIELD_MARGIN_M = 40.0


@dataclass(frozen=True)
class Canvas:
    size_px: int
    pixel_size_m: float

    @property
    def extent_m(self) -> float:
        return self.size_px * self.pixel_size_m

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size_px, self.size_px)

    @property
    def pad_px(self) -> int:
        return int(math.ceil(ROAD_PAD_M / self.pixel_size_m))

    def xs_m(self, pad_px: int = 0) -> np.ndarray:
        return (np.arange(-pad_px, self.size_px + pad_px) + 0.5) * self.pixel_size_m

    def ys_m(self, pad_px: int = 0) -> np.ndarray:
        return self.extent_m - (np.arange(-pad_px, self.size_px + pad_px) + 0.5) * self.pixel_size_m

    def transform(self, pad_px: int = 0) -> Affine:
        pad_m = pad_px * self.pixel_size_m
        return Affine(self.pixel_size_m, 0.0, -pad_m, 0.0, -self.pixel_size_m, self.extent_m + pad_m)

    def rasterize(self, shapes: list, dtype: str, pad_px: int = 0) -> np.ndarray:
        """Burn (geometry, value) pairs, later ones on top; a pixel is inside when its centre is."""
        size = self.size_px + 2 * pad_px
        if not shapes:
            return np.zeros((size, size), dtype=dtype)
        return features.rasterize(shapes, out_shape=(size, size), transform=self.transform(pad_px),
                                  fill=0, dtype=dtype)

    def pixel_of(self, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the pixels holding points (clamped to the grid)."""
        cols = np.clip((np.asarray(x_m) / self.pixel_size_m).astype(int), 0, self.size_px - 1)
        rows = np.clip(((self.extent_m - np.asarray(y_m)) / self.pixel_size_m).astype(int), 0,
                       self.size_px - 1)
        return rows, cols


class SmoothField:
    """A unit-variance random field: white noise on a lattice of ``cell_m`` blurred by a Gaussian as wide.

    Built once as a separable sum of Gaussian bumps on a grid a quarter of a cell apart, then
    interpolated, so it gives the same values wherever it is sampled, on the scene grid or a padded one.
    """

    def __init__(self, rng: np.random.Generator, cell_m: float, extent_m: float):
        count = int(math.ceil((extent_m + 2 * FIELD_MARGIN_M) / cell_m)) + 7
        centres_m = -FIELD_MARGIN_M - 3 * cell_m + cell_m * np.arange(count)
        noise = rng.standard_normal((count, count))
        self.step_m = cell_m / 4
        self.grid_m = np.arange(-FIELD_MARGIN_M, extent_m + FIELD_MARGIN_M + self.step_m, self.step_m)
        weights = np.exp(-0.5 * ((self.grid_m[:, None] - centres_m[None, :]) / cell_m) ** 2)
        # einsum, not @: a multi-threaded BLAS on a busy machine is slower than this for such small products;
        # the sum of unit Gaussians on a lattice of their own width has variance ~pi in 2D
        summed = np.einsum("ik,lk->il", np.einsum("ij,jk->ik", weights, noise), weights)
        self.values = summed / math.sqrt(math.pi)

    def _cells(self, coords_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position = np.clip((coords_m - self.grid_m[0]) / self.step_m, 0, len(self.grid_m) - 1.000001)
        lower = position.astype(int)
        return lower, position - lower

    def sample(self, xs_m: np.ndarray, ys_m: np.ndarray) -> np.ndarray:
        """The field on the grid of pixel centres ``xs_m`` x ``ys_m`` (bilinear between grid nodes)."""
        row, row_frac = self._cells(ys_m)
        col, col_frac = self._cells(xs_m)
        rows = self.values[row] * (1 - row_frac)[:, None] + self.values[row + 1] * row_frac[:, None]
        return rows[:, col] * (1 - col_frac)[None, :] + rows[:, col + 1] * col_frac[None, :]


@dataclass
class Relief:
    """Terrain height: base + regional tilt + octaves of smooth noise (roads follow the first octaves)."""

    extent_m: float
    base_m: float
    tilt: tuple[float, float]
    octaves: list[tuple[SmoothField, float]]
    road_octaves: int
    floor_at_zero: bool

    def sample(self, xs_m: np.ndarray, ys_m: np.ndarray, roads_only: bool = False) -> np.ndarray:
        half = self.extent_m / 2
        height = self.base_m + self.tilt[0] * (xs_m[None, :] - half) + self.tilt[1] * (ys_m[:, None] - half)
        for octave, amplitude_m in self.octaves[: self.road_octaves if roads_only else None]:
            height = height + amplitude_m * octave.sample(xs_m, ys_m)
        # a coastal polder: everything below sea level was filled to exactly 0 m
        return np.maximum(height, 0.0) if self.floor_at_zero else height


def random_relief(rng: np.random.Generator, extent_m: float) -> Relief:
    coastal = rng.random() < 0.2
    amplitude_m = rng.uniform(1.0, 4.0) if coastal else rng.uniform(1.5, 12.0)
    base_m = rng.uniform(0.3, 2.5) if coastal else rng.uniform(5.0, 300.0)
    slope = rng.uniform(0.0, 0.01 if coastal else 0.04)
    direction = rng.uniform(0, 2 * np.pi)
    octaves = [(SmoothField(rng, 160.0, extent_m), amplitude_m),
               (SmoothField(rng, 70.0, extent_m), amplitude_m * rng.uniform(0.2, 0.5)),
               (SmoothField(rng, 30.0, extent_m), amplitude_m * rng.uniform(0.04, 0.12)),
               (SmoothField(rng, 12.0, extent_m), rng.uniform(0.05, 0.3))]
    tilt = (slope * math.cos(direction), slope * math.sin(direction))
    return Relief(extent_m, base_m, tilt, octaves, road_octaves=2, floor_at_zero=coastal)
