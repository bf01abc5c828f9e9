"""Find elevation rasters to pre-train on: dataset specs, folders (searched recursively) or single files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demseg.data.augment import coarsened
from demseg.data.normalise import RELIEF_SCALE_M, normalise_tile
from demseg.errors import DemsegError
from demseg.io.raster import DemRaster, read_dem

DEM_NAMES = ("dem.tif", "dsm.tif", "dem.tiff", "dsm.tiff")
UNKNOWN_LABEL = 255  # a crop pixel whose class is unknown: file sources, nodata (as the synthetic world's labels)


@dataclass
class DemSource:
    """One elevation raster (and its DTM, if one lies beside it) to cut pre-training crops from."""

    id: str
    dem: Path
    dtm: Path | None = None


def discover_sources(paths: list[str | Path]) -> list[DemSource]:
    """Every DEM named by specs, found under folders (dem.tif / dsm.tif, recursively) or given as files."""
    from demseg.data.spec import load_spec

    sources: list[DemSource] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DemsegError(f"pre-training source not found: {path}")
        if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
            spec = load_spec(path)
            sources += [DemSource(f"{spec.name}/{s.id}", spec.path(s.dem), spec.path(s.dtm) if s.dtm else None)
                        for s in spec.scenes]
        elif path.is_file():
            sources.append(DemSource(path.stem, path))
        else:
            for dem in sorted(p for name in DEM_NAMES for p in path.rglob(name)):
                dtm = dem.with_name("dtm" + dem.suffix)
                sources.append(DemSource(str(dem.parent.relative_to(path)) or dem.stem, dem,
                                         dtm if dtm.exists() else None))
    unique = {source.dem.resolve(): source for source in sources}
    if not unique:
        raise DemsegError(f"no DEM found in {', '.join(map(str, paths))} (looked for {', '.join(DEM_NAMES)})")
    return list(unique.values())


@dataclass
class CropPool:
    """Normalised random crops (float16), their validity masks, ground and class targets, drawn once, reused with augmentation.

    ``ground`` is the height above the bare earth (nDSM) in the relief channel's units (10 m),
    NaN where unknown: sources without a DTM have no ground target. ``labels`` are the synthetic
    world's class codes (0 background, 1 building, 2 road, 3 vegetation), UNKNOWN_LABEL where
    unknown: file sources have none.
    """

    inputs: np.ndarray  # (N, C, S, S) float16
    valid: np.ndarray  # (N, S, S) bool
    ground: np.ndarray  # (N, S, S) float16, NaN where unknown
    labels: np.ndarray  # (N, S, S) uint8, UNKNOWN_LABEL where unknown
    source_ids: list[str]

    def __len__(self) -> int:
        return len(self.inputs)

    @staticmethod
    def empty(count: int, channels: int, size_px: int) -> CropPool:
        return CropPool(np.zeros((count, channels, size_px, size_px), np.float16),
                        np.zeros((count, size_px, size_px), bool),
                        np.full((count, size_px, size_px), np.nan, np.float16),
                        np.full((count, size_px, size_px), UNKNOWN_LABEL, np.uint8), [])

    def concatenate(self, other: CropPool) -> CropPool:
        return CropPool(np.concatenate([self.inputs, other.inputs]), np.concatenate([self.valid, other.valid]),
                        np.concatenate([self.ground, other.ground]), np.concatenate([self.labels, other.labels]),
                        self.source_ids + other.source_ids)


@dataclass
class _Raster:
    """A loaded source: elevation, validity, optional DTM and class labels, its grid and excluded pixel boxes."""

    id: str
    elevation: np.ndarray
    valid: np.ndarray
    dtm: np.ndarray | None
    pixel_size_m: float
    excluded: list[tuple[int, int, int, int]]  # (row0, col0, row1, col1) windows that must not be cropped
    labels: np.ndarray | None = None  # uint8 class codes (see CropPool), UNKNOWN_LABEL where unknown


def _excluded_windows(dem: DemRaster, regions: list[tuple[str, tuple[float, float, float, float]]]
                      ) -> list[tuple[int, int, int, int]]:
    """Pixel windows of ``dem`` covering the excluded map boxes that share its CRS."""
    windows = []
    crs = dem.grid.crs.to_string()
    inverse = ~dem.grid.transform
    for region_crs, (left, bottom, right, top) in regions:
        if region_crs != crs:
            continue
        cols, rows = zip(*(inverse * corner for corner in ((left, top), (right, bottom))), strict=True)
        windows.append((int(np.floor(min(rows))), int(np.floor(min(cols))), int(np.ceil(max(rows))),
                        int(np.ceil(max(cols)))))
    return windows


def _touches(windows: list[tuple[int, int, int, int]], row: int, col: int, size: int) -> bool:
    return any(row < r1 and row + size > r0 and col < c1 and col + size > c0 for r0, c0, r1, c1 in windows)


def load_rasters(sources: list[DemSource], size_px: int,
                 excluded: list[tuple[str, tuple[float, float, float, float]]] = ()) -> tuple[list[_Raster], list[str]]:
    """The sources large enough for a crop, loaded, with their excluded windows; and the skipped ones."""
    rasters, skipped = [], []
    for source in sources:
        dem = read_dem(source.dem, what=f"DEM {source.dem}")
        if min(dem.grid.shape) < size_px:
            skipped.append(f"{source.id} ({dem.grid.width}x{dem.grid.height} px is smaller than a "
                           f"{size_px} px crop)")
            continue
        dtm = read_dem(source.dtm, crs=dem.grid.crs).elevation if source.dtm else None
        rasters.append(_Raster(source.id, dem.elevation, dem.valid_mask, dtm, dem.grid.pixel_size_m,
                               _excluded_windows(dem, list(excluded))))
    return rasters, skipped


def crops_from(rasters: list[_Raster], size_px: int, recipe: str, count: int, rng: np.random.Generator,
               min_valid_fraction: float = 0.5, input_dtm: bool = True, progress: bool = False,
               desc: str = "cutting pre-training crops", coarsen: Sequence[int] = ()) -> CropPool:
    """``count`` random crops over ``rasters`` (weighted by valid area), avoiding excluded windows.

    With ``input_dtm`` False the inputs are normalised without the DTM (relief from the
    morphological ground estimate), as a DSM-only user's would be; the DTM then only makes targets.
    With ``coarsen`` factors (resolution augmentation) crop ``i`` is cut at factor
    ``(1, *coarsen)[i % (1 + len(coarsen))]`` x the pixel size (:func:`_cut`).
    """
    from tqdm.auto import tqdm

    weights = np.array([r.valid.sum() for r in rasters], dtype=float)
    weights /= weights.sum()
    channels = normalise_tile(np.zeros((4, 4), np.float32), np.ones((4, 4), bool), recipe).shape[0]
    pool = CropPool.empty(count, channels, size_px)
    attempts = 0
    with tqdm(total=count, desc=desc, unit="crop", disable=not progress) as bar:
        while len(pool.source_ids) < count:
            attempts += 1
            if attempts > 50 * count:
                raise DemsegError(f"fewer than {count} crops have >= {min_valid_fraction:.0%} valid pixels outside "
                                  "the excluded regions: no tiles left to pre-train on")
            raster = rasters[rng.choice(len(rasters), p=weights)]
            row = int(rng.integers(0, raster.valid.shape[0] - size_px + 1))
            col = int(rng.integers(0, raster.valid.shape[1] - size_px + 1))
            window = (slice(row, row + size_px), slice(col, col + size_px))
            valid = raster.valid[window]
            if valid.mean() < min_valid_fraction or _touches(raster.excluded, row, col, size_px):
                continue
            i = len(pool.source_ids)
            _cut(raster, window, (1, *coarsen)[i % (1 + len(coarsen))], recipe, input_dtm, pool, i)
            pool.source_ids.append(raster.id)
            bar.update(1)
    return pool


def _cut(raster: _Raster, window: tuple[slice, slice], factor: int, recipe: str, input_dtm: bool, pool: CropPool,
         i: int) -> None:
    """Write crop ``i`` of ``pool``: ``window`` of ``raster`` as a DEM of ``factor`` x its pixel size would show it.

    As training's resolution augmentation (:func:`demseg.data.augment.coarsened`): elevation and
    DTM are coarsened, the labels are kept, and pixels that the coarse DEM leaves invalid become
    unknown.
    """
    elevation, valid = coarsened(raster.elevation[window], raster.valid[window], factor)
    dtm = None if raster.dtm is None else coarsened(raster.dtm[window], np.isfinite(raster.dtm[window]), factor)[0]
    pool.inputs[i] = normalise_tile(elevation, valid, recipe, raster.pixel_size_m, dtm if input_dtm else None)
    pool.valid[i] = valid
    if dtm is not None:
        pool.ground[i] = np.where(valid & np.isfinite(dtm), (elevation - dtm) / RELIEF_SCALE_M, np.nan)
    if raster.labels is not None:
        pool.labels[i] = np.where(valid, raster.labels[window], UNKNOWN_LABEL)


def synthetic_rasters(seed: int, scenes: int, size_px: int, pixel_size_m: float = 0.5) -> list[_Raster]:
    """``scenes`` freshly generated synthetic scenes (in memory), each with its DTM and class labels."""
    from demseg.data.synth import generate_scene, scene_seed

    rasters = []
    for index in range(scenes):
        scene = generate_scene(scene_seed(seed, index), size_px=size_px, pixel_size_m=pixel_size_m)
        valid = np.isfinite(scene.dsm)
        rasters.append(_Raster(f"synthetic/{seed}/{index}", scene.dsm.astype(np.float32), valid,
                               scene.dtm.astype(np.float32), pixel_size_m, [], scene.labels))
    return rasters
