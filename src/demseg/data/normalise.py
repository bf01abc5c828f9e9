"""Normalisation recipes that turn an elevation tile into a model input stack.

A recipe is a ``+``-joined list of channel names, e.g. ``minmax`` (the paper's, one channel)
or ``relief+slope+hillshade`` (three channels, for an ImageNet ViT or our own encoders).
Every channel is computed from the valid pixels only; invalid (nodata) pixels come out as 0
and are excluded from loss and metrics by the nodata mask that travels beside the stack.

Channels:
- ``minmax``: per-tile min-max to [0, 1] (the paper's; loses the dynamic range between tiles).
- ``zscore``: per-tile mean 0, standard deviation 1.
- ``percentile``: per-tile robust 2nd-98th percentile stretch to [0, 1], clipped.
- ``relief``: height above ground in units of 10 m: elevation minus the DTM where one is given
  (= nDSM), else minus a local ground estimate (a morphological opening wider than buildings).
  Keeps absolute object heights comparable across tiles and cities.
- ``slope``: terrain slope, degrees / 90.
- ``hillshade``: illumination from azimuth 315 degrees, altitude 45 degrees, in [0, 1].
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from demseg.errors import DemsegError

RELIEF_SCALE_M = 10.0  # relief is divided by this so typical building heights land near 0.3-3
GROUND_WINDOW_M = 60.0  # opening window: wider than most buildings, so roofs are removed from "ground"


def _minmax(elevation: np.ndarray, valid: np.ndarray, **_) -> np.ndarray:
    values = elevation[valid]
    low, high = float(values.min()), float(values.max())
    span = high - low
    return (elevation - low) / span if span > 0 else np.zeros_like(elevation)


def _zscore(elevation: np.ndarray, valid: np.ndarray, **_) -> np.ndarray:
    values = elevation[valid]
    std = float(values.std())
    return (elevation - float(values.mean())) / (std if std > 1e-6 else 1.0)


def _percentile(elevation: np.ndarray, valid: np.ndarray, **_) -> np.ndarray:
    low, high = np.percentile(elevation[valid], [2.0, 98.0])
    span = float(high - low)
    return np.clip((elevation - low) / span, 0.0, 1.0) if span > 0 else np.zeros_like(elevation)


def local_ground(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float,
                 window_m: float = GROUND_WINDOW_M) -> np.ndarray:
    """A bare-earth estimate: grey opening of the surface with a window wider than buildings."""
    size = max(3, int(round(window_m / pixel_size_m)) | 1)
    # invalid pixels must not drag the minimum down: fill them with the highest valid value
    filled = np.where(valid, elevation, np.float32(elevation[valid].max()))
    opened = ndimage.grey_opening(filled, size=(size, size), mode="nearest")
    return ndimage.uniform_filter(opened, size=max(3, size // 4), mode="nearest")


def _relief(elevation: np.ndarray, valid: np.ndarray, dtm: np.ndarray | None, pixel_size_m: float,
            **_) -> np.ndarray:
    if dtm is not None and np.isfinite(dtm[valid]).any():
        ground = np.where(np.isfinite(dtm), dtm, local_ground(elevation, valid, pixel_size_m))
    else:
        ground = local_ground(elevation, valid, pixel_size_m)
    return (elevation - ground) / RELIEF_SCALE_M


def _gradients(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float) -> tuple[np.ndarray, np.ndarray]:
    filled = np.where(valid, elevation, np.float32(np.median(elevation[valid])))
    dz_dy, dz_dx = np.gradient(filled.astype(np.float64), pixel_size_m)
    return dz_dx, dz_dy


def _slope(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float, **_) -> np.ndarray:
    dz_dx, dz_dy = _gradients(elevation, valid, pixel_size_m)
    return np.degrees(np.arctan(np.hypot(dz_dx, dz_dy))) / 90.0


def _hillshade(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float, azimuth_deg: float = 315.0,
               altitude_deg: float = 45.0, **_) -> np.ndarray:
    """Lambertian illumination in [0, 1] from ``azimuth_deg`` (clockwise from north) at ``altitude_deg``."""
    dz_dx, dz_dy = _gradients(elevation, valid, pixel_size_m)
    slope = np.arctan(np.hypot(dz_dx, dz_dy))
    # rows grow southwards, so the northward gradient is -dz_dy
    aspect = np.arctan2(-dz_dx, dz_dy)
    azimuth = np.radians(360.0 - azimuth_deg + 90.0)
    altitude = np.radians(altitude_deg)
    shade = np.sin(altitude) * np.cos(slope) + np.cos(altitude) * np.sin(slope) * np.cos(azimuth - aspect)
    return np.clip(shade, 0.0, 1.0)


def hillshade(elevation: np.ndarray, valid: np.ndarray | None = None, pixel_size_m: float = 1.0) -> np.ndarray:
    """A [0, 1] hillshade of an elevation array (for previews); invalid pixels are 0."""
    valid = np.isfinite(elevation) if valid is None else valid
    if not valid.any():
        return np.zeros(elevation.shape, np.float32)
    shade = _hillshade(elevation, valid, pixel_size_m)
    return np.where(valid, shade, 0.0).astype(np.float32)


CHANNELS = {
    "minmax": _minmax,
    "zscore": _zscore,
    "percentile": _percentile,
    "relief": _relief,
    "slope": _slope,
    "hillshade": _hillshade,
}
DEFAULT_RECIPE = "relief+slope"


def parse_recipe(recipe: str) -> list[str]:
    """The channel names of a recipe; one clear error for an unknown name."""
    names = [name.strip() for name in recipe.split("+") if name.strip()]
    unknown = [name for name in names if name not in CHANNELS]
    if not names or unknown:
        raise DemsegError(f"unknown normalisation {recipe!r}: use channels from {sorted(CHANNELS)} joined by '+'")
    return names


def recipe_channels(recipe: str) -> int:
    """How many input channels a recipe produces."""
    return len(parse_recipe(recipe))


def normalise_tile(elevation: np.ndarray, valid: np.ndarray, recipe: str = DEFAULT_RECIPE,
                   pixel_size_m: float = 1.0, dtm: np.ndarray | None = None) -> np.ndarray:
    """A (C, H, W) float32 model input for one tile; 0 at invalid pixels, an all-zero stack if none valid."""
    names = parse_recipe(recipe)
    out = np.zeros((len(names),) + elevation.shape, dtype=np.float32)
    if not valid.any():
        return out
    for index, name in enumerate(names):
        channel = CHANNELS[name](elevation=elevation, valid=valid, dtm=dtm, pixel_size_m=pixel_size_m)
        out[index] = np.where(valid, channel, 0.0)
    return out
