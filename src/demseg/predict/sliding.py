"""Sliding-window inference over a whole scene, written row block by row block.

Windows of the run's tile size overlap by a fraction (default 25 %) and are blended with a
Hann (raised-cosine) weight that is highest at a window's centre, where the model saw the most
context, and never below ``WEIGHT_FLOOR``, so pixels at the scene border, covered only by a
window's edge, still get a defined probability. Each window is normalised on its own exactly as
training tiles are (:func:`demseg.data.normalise.normalise_tile`).

Memory does not grow with the scene height: the DEM is read one window-row strip at a time,
probabilities are summed into a float32 strip one window high (:class:`StripAccumulator`), and
the rows that no later window touches are divided by their weight and written out at once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window
from torch import nn
from tqdm import tqdm

from demseg.data.augment import NUM_VIEWS, dihedral, dihedral_inverse
from demseg.data.normalise import check_scene_channels, normalise_tile
from demseg.data.scene import IGNORE
from demseg.errors import DemsegError
from demseg.io.folders import os_error_message
from demseg.io.raster import GridSpec, open_grid, read_dem
from demseg.io.styles import add_mask_colormap
from demseg.models.upernet import MaeUperNet
from demseg.predict.config import DEFAULT_OVERLAP, MAX_OVERLAP
from demseg.runs.config import TrainConfig

NODATA = IGNORE  # mask and probability rasters: 255, no elevation, no prediction
WEIGHT_FLOOR = 0.01  # smallest blending weight (window edges, scene borders)
RAW_BLOCK_ROWS = 16  # strips of the temporary GeoTIFFs that row blocks are written into


@dataclass(frozen=True)
class DemInput:
    """A scene to predict: its DEM, an optional DTM on the same grid, read options and output stem.

    With ``pixel_size_m`` the scene is read resampled to that pixel size (same extent and CRS):
    every window is cut from the files with a margin and resampled bilinearly over its valid
    pixels only, so memory stays bounded by the window.
    """

    dem: Path
    dtm: Path | None = None
    band: int | None = None
    crs: str | None = None
    nodata: float | None = None
    stem: str | None = None
    channels: tuple[tuple[str, Path], ...] = ()  # scene channels (name, raster) on the DEM's grid
    pixel_size_m: float | None = None  # read resampled to this pixel size (a run's), or as recorded

    @property
    def name(self) -> str:
        """The stem of the outputs: ``<name>_mask.tif`` and so on."""
        return self.stem or Path(self.dem).stem

    def native_grid(self) -> GridSpec:
        """The DEM's own grid; the DTM and channels, when given, must lie on exactly the same grid."""
        grid = open_grid(self.dem, self.crs, "DEM")
        if self.dtm is not None:
            dtm_grid = open_grid(self.dtm, self.crs or grid.crs, "DTM")
            if not dtm_grid.same_as(grid):
                raise DemsegError(f"DTM is on a different grid or CRS than its DEM: {self.dtm} vs {self.dem}")
        for name, path in self.channels:
            if not open_grid(path, self.crs or grid.crs, f"{name} channel").same_as(grid):
                raise DemsegError(f"{name} channel is on a different grid or CRS than its DEM: {path} vs {self.dem}")
        return grid

    def grid(self) -> GridSpec:
        """The grid the scene is read and predicted on: the DEM's own, or resampled to ``pixel_size_m``."""
        grid = self.native_grid()
        if self.pixel_size_m is not None:
            from demseg.data.resample import resampled_grid

            grid = resampled_grid(grid, self.pixel_size_m)
        if min(grid.shape) < MIN_SIDE_PX:
            at = f" at the run's pixel size ({self.pixel_size_m:g} m)" if self.pixel_size_m is not None else ""
            raise DemsegError(f"DEM is {grid.height} x {grid.width} px{at}; predict needs at least {MIN_SIDE_PX} px "
                              f"each way (slopes need neighbours): {self.dem}")
        return grid

    def read_rows(self, row_off: int, rows: int, grid: GridSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Elevation (NaN where invalid), validity and DTM (or None) of rows [row_off, row_off + rows)."""
        return self.read_window(Window(0, row_off, grid.width, rows))

    def _source_window(self, window: Window) -> tuple[Window, GridSpec, GridSpec]:
        """The native window that covers ``window`` of the resampled grid (2 px margin), its grid and the target's."""
        native = self.native_grid()
        target = self.grid().window_grid(window)
        left, bottom, right, top = target.bounds
        cover = rasterio.windows.from_bounds(left, bottom, right, top, native.transform)
        col0, row0 = max(0, int(np.floor(cover.col_off)) - 2), max(0, int(np.floor(cover.row_off)) - 2)
        col1 = min(native.width, int(np.ceil(cover.col_off + cover.width)) + 2)
        row1 = min(native.height, int(np.ceil(cover.row_off + cover.height)) + 2)
        source = Window(col0, row0, max(1, col1 - col0), max(1, row1 - row0))
        return source, native.window_grid(source), target

    def read_window(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Elevation (NaN where invalid), validity and DTM (or None, NaN where unknown) of a pixel window."""
        if self.pixel_size_m is not None:
            from demseg.data.resample import resample_known

            source, source_grid, target = self._source_window(window)
            elevation, _valid, dtm = replace(self, pixel_size_m=None).read_window(source)
            elevation = resample_known(elevation, source_grid, target)
            dtm = resample_known(dtm, source_grid, target) if dtm is not None else None
            return elevation, np.isfinite(elevation), dtm
        dem = read_dem(self.dem, band=self.band, crs=self.crs, nodata=self.nodata, window=window, what="DEM")
        dtm = None
        if self.dtm is not None:
            dtm = read_dem(self.dtm, crs=self.crs or dem.grid.crs, window=window, what="DTM").elevation
        return dem.elevation, dem.valid_mask, dtm

    def read_channels(self, row_off: int, rows: int, grid: GridSpec) -> dict[str, np.ndarray]:
        """The scene channels of rows [row_off, row_off + rows), NaN where unknown."""
        window = Window(0, row_off, grid.width, rows)
        if self.pixel_size_m is not None:
            from demseg.data.resample import resample_known

            source, source_grid, target = self._source_window(window)
            native = replace(self, pixel_size_m=None)
            return {name: resample_known(values, source_grid, target)
                    for name, values in native._channel_window(source, source_grid.crs).items()}
        return self._channel_window(window, grid.crs)

    def _channel_window(self, window: Window, crs) -> dict[str, np.ndarray]:
        out = {}
        for name, path in self.channels:
            raster = read_dem(path, crs=self.crs or crs, window=window, what=f"{name} channel")
            out[name] = np.where(raster.valid_mask, raster.elevation, np.nan).astype(np.float32)
        return out


def as_input(source: DemInput | str | os.PathLike, dtm: str | os.PathLike | None = None) -> DemInput:
    """A :class:`DemInput` from a path (plus optional DTM path) or an existing one."""
    if isinstance(source, DemInput):
        return source if dtm is None else replace(source, dtm=Path(dtm))
    return DemInput(Path(source), Path(dtm) if dtm is not None else None)


class StageTimer:
    """Seconds spent per stage (read, normalise, backbone, head, write, ...), summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


MIN_SIDE_PX = 2  # the smallest DEM side predicted: slope and roughness need a neighbour each way


def window_stride(tile_size_px: int, overlap: float) -> int:
    """Step between window origins for an overlap fraction in [0, MAX_OVERLAP]."""
    if not 0.0 <= overlap <= MAX_OVERLAP:
        raise DemsegError(f"--overlap must be between 0 and {MAX_OVERLAP:g}, got {overlap:g}")
    return max(1, int(round(tile_size_px * (1.0 - overlap))))


def window_offsets(length_px: int, tile_size_px: int, stride_px: int) -> list[int]:
    """Window origins along one axis: every ``stride_px``, the last one flush with the far edge.

    An axis shorter than a window gets one window at 0 (the caller pads with invalid pixels).
    """
    if length_px <= tile_size_px:
        return [0]
    return list(range(0, length_px - tile_size_px, stride_px)) + [length_px - tile_size_px]


def blend_weights(tile_size_px: int, floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """A (T, T) float32 separable Hann window, 1 at the centre, at least ``floor`` at the edges."""
    centres = (np.arange(tile_size_px) + 0.5) / tile_size_px
    hann = np.sin(np.pi * centres) ** 2
    return np.maximum(np.outer(hann, hann), floor).astype(np.float32)


class StripAccumulator:
    """Weighted probability sums for the rows one window-row covers: (window height, scene width) float32.

    Its size depends on the tile size and the scene width only, never on the scene height.
    """

    def __init__(self, tile_size_px: int, width_px: int):
        self.tile_size_px = tile_size_px
        self.weighted = np.zeros((tile_size_px, width_px), np.float32)
        self.weight = np.zeros((tile_size_px, width_px), np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return self.weighted.shape

    def add(self, col_off: int, probability: np.ndarray, weights: np.ndarray) -> None:
        """Add one window's (T, T) probabilities with its blending weights at column ``col_off``."""
        cols = slice(col_off, col_off + self.tile_size_px)
        self.weighted[:, cols] += probability * weights
        self.weight[:, cols] += weights

    def pop_rows(self, rows: int) -> np.ndarray:
        """The blended probability of the first ``rows`` rows (NaN where no window added weight); shifts up."""
        weight = self.weight[:rows]
        out = np.full(weight.shape, np.nan, np.float32)
        np.divide(self.weighted[:rows], weight, out=out, where=weight > 0)
        keep = self.tile_size_px - rows
        if keep > 0:  # numpy copes with the overlapping source and destination of the shift
            self.weighted[:keep] = self.weighted[rows:]
            self.weight[:keep] = self.weight[rows:]
        self.weighted[keep:] = 0.0
        self.weight[keep:] = 0.0
        return out


def _forward(model: nn.Module, x: torch.Tensor, amp: bool, timer: StageTimer) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        if isinstance(model, MaeUperNet):
            with timer("backbone"):
                features = model.backbone(x)
            with timer("head"):
                return model.head(features, x)
        with timer("model"):
            return model(x)


@torch.inference_mode()
def window_probabilities(model: nn.Module, inputs: np.ndarray, tta: bool = False, amp: bool = False,
                         timer: StageTimer | None = None) -> np.ndarray:
    """Target-class probabilities (N, T, T) float32 of normalised windows (N, C, T, T).

    With ``tta`` the probabilities of the 8 dihedral views are averaged (each mapped back first).
    """
    timer = timer or StageTimer()
    x = torch.from_numpy(inputs)
    views = range(NUM_VIEWS) if tta else range(1)
    total = torch.zeros((x.shape[0],) + tuple(x.shape[-2:]), dtype=torch.float32)
    for view in views:
        logits = _forward(model, dihedral(x, view).contiguous(), amp, timer)
        total += dihedral_inverse(torch.softmax(logits.float(), dim=1)[:, 1], view)
    return (total / len(views)).numpy()


def encode(probability: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask, percent) uint8 rows: mask 1 where probability > 0.5, percent 0-100; 255 where invalid."""
    known = valid & np.isfinite(probability)
    filled = np.where(known, probability, 0.0)
    mask = np.where(known, filled > 0.5, NODATA).astype(np.uint8)
    percent = np.where(known, np.rint(filled * 100.0), NODATA).astype(np.uint8)
    return mask, percent


def write_rows(dataset, rows: np.ndarray, row_off: int) -> None:
    """Write a block of rows into band 1 of an open raster (the block writer, one call per row block)."""
    dataset.write(rows, 1, window=Window(0, row_off, rows.shape[1], rows.shape[0]))


def raw_profile(grid: GridSpec) -> dict:
    """Profile of the temporary strip-organised uint8 GeoTIFFs that row blocks are appended to."""
    return dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="uint8", nodata=NODATA,
                crs=grid.crs, transform=grid.transform, tiled=False, blockysize=min(RAW_BLOCK_ROWS, grid.height),
                compress="deflate", zlevel=1, bigtiff="IF_SAFER")


def _padded(array: np.ndarray, height: int, width: int, fill) -> np.ndarray:
    if array.shape == (height, width):
        return array
    out = np.full((height, width), fill, dtype=array.dtype)
    out[:array.shape[0], :array.shape[1]] = array
    return out


def predict_rasters(model: nn.Module, config: TrainConfig, source: DemInput, grid: GridSpec, mask_path: Path,
                    prob_path: Path, overlap: float = DEFAULT_OVERLAP, tta: bool = False, batch_size: int = 8,
                    progress: bool = False, timer: StageTimer | None = None, tags: dict | None = None) -> int:
    """Predict a scene into two uint8 GeoTIFFs (mask, percent) on its grid; returns the valid pixel count.

    Rows are written as soon as no later window touches them; nodata pixels come out as 255.
    """
    timer = timer or StageTimer()
    check_scene_channels(config.recipe, dict(source.channels), f"input {source.dem}")
    tile = config.tile_size_px
    stride = window_stride(tile, overlap)
    row_offsets = window_offsets(grid.height, tile, stride)
    col_offsets = window_offsets(grid.width, tile, stride)
    padded_width = max(grid.width, tile)
    weights = blend_weights(tile)
    strip = StripAccumulator(tile, padded_width)
    pixel_size_m = grid.pixel_size_m
    amp = config.use_amp()
    row_area_km2 = grid.width * pixel_size_m ** 2 / 1e6
    bar = tqdm(total=grid.height, desc=f"predict {source.name}", unit="row", disable=not progress, leave=False)
    started = time.perf_counter()
    valid_pixels = 0
    try:
        with rasterio.open(mask_path, "w", **raw_profile(grid)) as mask_out, \
                rasterio.open(prob_path, "w", **raw_profile(grid)) as prob_out:
            for index, row_off in enumerate(row_offsets):
                rows = min(tile, grid.height - row_off)
                with timer("read"):
                    elevation, valid, dtm = source.read_rows(row_off, rows, grid)
                    extras = {name: _padded(values, tile, padded_width, np.float32(np.nan))
                              for name, values in source.read_channels(row_off, rows, grid).items()}
                elevation = _padded(elevation, tile, padded_width, np.float32(np.nan))
                valid = _padded(valid, tile, padded_width, False)
                dtm = _padded(dtm, tile, padded_width, np.float32(np.nan)) if dtm is not None else None
                # a window without valid pixels only covers nodata: skipping it changes no output pixel
                todo = [c for c in col_offsets if valid[:, c:c + tile].any()]
                for start in range(0, len(todo), batch_size):
                    cols = todo[start:start + batch_size]
                    with timer("normalise"):
                        inputs = np.stack([normalise_tile(
                            elevation[:, c:c + tile], valid[:, c:c + tile], config.recipe, pixel_size_m,
                            dtm[:, c:c + tile] if dtm is not None else None,
                            {name: values[:, c:c + tile] for name, values in extras.items()}) for c in cols])
                    probabilities = window_probabilities(model, inputs, tta, amp, timer)
                    for c, probability in zip(cols, probabilities, strict=True):
                        strip.add(c, probability, weights)
                finished_until = row_offsets[index + 1] if index + 1 < len(row_offsets) else grid.height
                done = finished_until - row_off
                probability = strip.pop_rows(done)[:, :grid.width]
                mask, percent = encode(probability, valid[:done, :grid.width])
                valid_pixels += int(valid[:done, :grid.width].sum())
                with timer("write"):
                    write_rows(mask_out, mask, row_off)
                    write_rows(prob_out, percent, row_off)
                bar.update(done)
                hours = (time.perf_counter() - started) / 3600
                bar.set_postfix_str(f"{row_area_km2 * bar.n / max(hours, 1e-9):.2f} km2/h")
            for dataset, what in ((mask_out, "mask"), (prob_out, "probability")):
                dataset.update_tags(**(tags or {}), content=what)
            add_mask_colormap(mask_out, config.task)
    except (OSError, RasterioError) as exc:
        raise DemsegError(os_error_message(exc, f"the predictions of {source.dem}")) from exc
    finally:
        bar.close()
    return valid_pixels
