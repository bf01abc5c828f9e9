"""The files a scene prediction leaves: COGs, a preview PNG, and the ``_done.json`` record written last.

``<stem>_done.json`` lists every output with its size and SHA-256 and the settings that made it;
a rerun skips a scene only when the record exists, its settings match and every output still
has its recorded size.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling

from demseg.data.normalise import hillshade
from demseg.io.atomic import write_text_atomic
from demseg.io.provenance import file_sha256
from demseg.predict.sliding import NODATA, DemInput

COG_BLOCK_PX = 512
PREVIEW_MAX_PX = 1024
TARGET_RGB = {"buildings": (1.0, 0.23, 0.19), "roads": (1.0, 0.82, 0.12)}
NODATA_RGB = (0.12, 0.16, 0.28)
DONE_VERSION = 1


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    """Where the outputs of scene ``stem`` go."""
    return {"mask": out_dir / f"{stem}_mask.tif", "prob": out_dir / f"{stem}_prob.tif",
            "vectors": out_dir / f"{stem}_vectors.gpkg", "preview": out_dir / f"{stem}_preview.png",
            "done": out_dir / f"{stem}_done.json"}


def write_cog(raw_path: Path, cog_path: Path, resampling: str) -> Path:
    """Copy a GeoTIFF into a Cloud-Optimized GeoTIFF: deflate, 512 px tiles, overviews down to one tile.

    GDAL's COG driver streams the copy and builds the overviews in a temporary file, so memory
    stays bounded for any scene size.
    """
    rasterio.shutil.copy(raw_path, cog_path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=COG_BLOCK_PX,
                         OVERVIEWS="AUTO", OVERVIEW_RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER")
    return cog_path


def write_preview(path: Path, source: DemInput, mask_path: Path, task: str,
                  max_size_px: int = PREVIEW_MAX_PX) -> Path:
    """A PNG of the DEM's hillshade with the predicted mask tinted over it, at most ``max_size_px`` a side.

    Both rasters are read decimated (the mask from its overviews), never at full resolution.
    """
    from matplotlib.image import imsave

    with rasterio.open(source.dem) as dem_src:
        factor = max(1, math.ceil(max(dem_src.width, dem_src.height) / max_size_px))
        shape = (math.ceil(dem_src.height / factor), math.ceil(dem_src.width / factor))
        band = source.band or 1
        elevation = dem_src.read(band, out_shape=shape, resampling=Resampling.nearest, masked=True)
        pixel_size_m = (abs(dem_src.transform.a) + abs(dem_src.transform.e)) / 2 * factor
    values = elevation.astype(np.float32).filled(np.nan)  # integer DEMs have no NaN to fill with
    valid = ~np.ma.getmaskarray(elevation) & np.isfinite(values)
    if source.nodata is not None:
        valid &= values != np.float32(source.nodata)
    with rasterio.open(mask_path) as mask_src:
        mask = mask_src.read(1, out_shape=shape, resampling=Resampling.nearest)
    shade = hillshade(np.where(valid, values, np.nan), valid, pixel_size_m)
    image = np.repeat((0.25 + 0.75 * shade)[..., None], 3, axis=2)
    target = mask == 1
    image[target] = 0.45 * image[target] + 0.55 * np.array(TARGET_RGB[task])
    image[(mask == NODATA) | ~valid] = NODATA_RGB
    imsave(path, np.clip(image, 0.0, 1.0), format="png")
    return path


def _describe(path: Path) -> dict:
    return {"path": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def write_done(paths: dict[str, Path], settings: dict, record: dict) -> Path:
    """Write ``<stem>_done.json`` last: outputs with sizes and hashes, the settings and what was found."""
    outputs = {name: _describe(path) for name, path in paths.items() if name != "done"}
    payload = {"version": DONE_VERSION, "settings": settings, "outputs": outputs, **record}
    return write_text_atomic(paths["done"], json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, os.PathLike):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def is_done(paths: dict[str, Path], settings: dict) -> bool:
    """True if the done record exists, was made with the same settings and every output is intact."""
    try:
        record = json.loads(paths["done"].read_text())
    except (OSError, ValueError):
        return False
    if record.get("version") != DONE_VERSION or record.get("settings") != json.loads(
            json.dumps(settings, default=_json_default)):
        return False
    outputs = record.get("outputs", {})
    for name, path in paths.items():
        if name == "done":
            continue
        entry = outputs.get(name)
        if entry is None or not path.exists() or path.stat().st_size != entry.get("bytes"):
            return False
    return True
