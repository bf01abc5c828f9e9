"""Find elevation rasters to pre-train on: dataset specs, folders (searched recursively) or single files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demseg.data.normalise import normalise_tile
from demseg.errors import DemsegError
from demseg.io.raster import DemRaster, read_dem

DEM_NAMES = ("dem.tif", "dsm.tif", "dem.tiff", "dsm.tiff")


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
    """Normalised random crops (float16) and their validity masks, drawn once and reused with augmentation."""

    inputs: np.ndarray  # (N, C, S, S) float16
    valid: np.ndarray  # (N, S, S) bool
    source_ids: list[str]

    def __len__(self) -> int:
        return len(self.inputs)


def build_crop_pool(sources: list[DemSource], size_px: int, recipe: str, count: int, seed: int,
                    min_valid_fraction: float = 0.5, progress: bool = True) -> tuple[CropPool, list[str]]:
    """``count`` random crops over all sources (weighted by valid area); returns the pool and skipped sources."""
    from tqdm.auto import tqdm

    rasters: list[tuple[DemSource, DemRaster, np.ndarray | None]] = []
    skipped = []
    for source in sources:
        dem = read_dem(source.dem, what=f"DEM {source.dem}")
        if min(dem.grid.shape) < size_px:
            skipped.append(f"{source.id} ({dem.grid.width}x{dem.grid.height} px is smaller than a "
                           f"{size_px} px crop)")
            continue
        dtm = read_dem(source.dtm).elevation if source.dtm else None
        rasters.append((source, dem, dtm))
    if not rasters:
        raise DemsegError(f"no DEM is at least {size_px} px on both sides: no tiles to pre-train on")
    weights = np.array([dem.valid_mask.sum() for _, dem, _ in rasters], dtype=float)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    channels = normalise_tile(np.zeros((4, 4), np.float32), np.ones((4, 4), bool), recipe).shape[0]
    inputs = np.zeros((count, channels, size_px, size_px), np.float16)
    valid_out = np.zeros((count, size_px, size_px), bool)
    ids = []
    attempts = 0
    with tqdm(total=count, desc="cutting pre-training crops", unit="crop", disable=not progress) as bar:
        while len(ids) < count:
            attempts += 1
            if attempts > 50 * count:
                raise DemsegError(f"fewer than {count} crops have >= {min_valid_fraction:.0%} valid pixels: "
                                  "no tiles left after the nodata filter")
            source, dem, dtm = rasters[rng.choice(len(rasters), p=weights)]
            row = rng.integers(0, dem.grid.height - size_px + 1)
            col = rng.integers(0, dem.grid.width - size_px + 1)
            window = (slice(row, row + size_px), slice(col, col + size_px))
            valid = dem.valid_mask[window]
            if valid.mean() < min_valid_fraction:
                continue
            i = len(ids)
            inputs[i] = normalise_tile(dem.elevation[window], valid, recipe, dem.grid.pixel_size_m,
                                       None if dtm is None else dtm[window])
            valid_out[i] = valid
            ids.append(source.id)
            bar.update(1)
    return CropPool(inputs, valid_out, ids), skipped
