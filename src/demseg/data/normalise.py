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
- ``roughness``: standard deviation (m) of the surface about a least-squares plane fitted in a
  window of ``TEXTURE_WINDOW_M``, clipped at 5 m: near 0 on roofs, ground and slopes of any
  steepness, metres in tree canopy (trees are what a height threshold marks as buildings).
- ``planarity``: 1 - residual / (total standard deviation + 0.1 m) in the same window, in [0, 1]:
  1 where the surface is a plane (flat or tilted), low in canopy and at jagged edges.
- ``curvature``: Laplacian of the surface smoothed over ~1 m, in 1/m, clipped to [-2, 2]: ridges
  and crowns convex (negative), gutters and gaps concave (positive).
- ``microrelief``: the ground surface (the DTM where one is given, else the elevation) minus its
  Gaussian smoothing over ``MICRORELIEF_SIGMA_M``, in units of 0.25 m, clipped to [-2, 2]: kerbs
  (10-15 cm steps), road cambers and ditches, which a road follows and open ground does not.
Texture channels read only the elevation, so every DEM has them; their window is in metres, so
a 2 m DEM resampled to 0.5 m is measured at the same ground scale as a 0.5 m one.
- LiDAR channels, read from the scene's ``channels`` rasters (see ``demseg rasterize``):
  ``returns`` (mean returns per pulse, divided by 3), ``fml`` (first minus last return, m / 10),
  ``vegshare`` (share of vegetation returns, [0, 1]), ``intensity`` (per-tile 2-98 % stretch).
  A recipe naming one needs that raster in every scene it reads; a scene without it is refused.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from demseg.data.spec import SCENE_CHANNELS  # read from rasters, not computed
from demseg.errors import DemsegError

RELIEF_SCALE_M = 10.0  # relief is divided by this so typical building heights land near 0.3-3
GROUND_WINDOW_M = 60.0  # opening window: wider than most buildings, so roofs are removed from "ground"
TEXTURE_WINDOW_M = 3.0  # plane-fit window: a few crowns' worth of canopy, still inside most roofs
CURVATURE_SIGMA_M = 1.0
MICRORELIEF_SIGMA_M = 1.0
MICRORELIEF_SCALE_M = 0.25


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


def height_above_ground(elevation: np.ndarray, valid: np.ndarray, dtm: np.ndarray | None,
                        pixel_size_m: float) -> np.ndarray:
    """Metres above the DTM where one is given and known, else above :func:`local_ground`."""
    if dtm is not None and np.isfinite(dtm[valid]).any():
        ground = np.where(np.isfinite(dtm), dtm, local_ground(elevation, valid, pixel_size_m))
    else:
        ground = local_ground(elevation, valid, pixel_size_m)
    return elevation - ground


def _relief(elevation: np.ndarray, valid: np.ndarray, dtm: np.ndarray | None, pixel_size_m: float,
            **_) -> np.ndarray:
    return height_above_ground(elevation, valid, dtm, pixel_size_m) / RELIEF_SCALE_M


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


def _nearest_filled(elevation: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``elevation`` with invalid pixels set to the nearest valid height (no false steps at nodata edges)."""
    if valid.all():
        return elevation.astype(np.float64)
    indices = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return elevation[tuple(indices)].astype(np.float64)


def _window_px(window_m: float, pixel_size_m: float) -> int:
    return max(3, int(round(window_m / pixel_size_m)) | 1)


def plane_residual_std(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float,
                       window_m: float = TEXTURE_WINDOW_M) -> tuple[np.ndarray, np.ndarray]:
    """(residual, total) standard deviations in metres of the surface in a square window about each pixel.

    The residual is taken about the least-squares plane of the window: on a symmetric window the
    offsets x and y are orthogonal, so the plane's explained variance is cov(z,x)^2/var(x) + cov(z,y)^2/var(y),
    all computed with separable box filters.
    """
    size = _window_px(window_m, pixel_size_m)
    z = _nearest_filled(elevation, valid)
    z = z - float(z.mean())
    radius = size // 2
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    mean = ndimage.uniform_filter(z, size, mode="nearest")
    variance = np.maximum(ndimage.uniform_filter(z * z, size, mode="nearest") - mean * mean, 0.0)
    offset_variance = float((offsets ** 2).mean())
    explained = 0.0
    for axis in (0, 1):
        # mean of z * offset along one axis, box mean along the other
        along = ndimage.correlate1d(z, offsets / size, axis=axis, mode="nearest")
        covariance = ndimage.uniform_filter1d(along, size, axis=1 - axis, mode="nearest")
        explained = explained + covariance ** 2 / offset_variance
    residual = np.maximum(variance - explained, 0.0)
    return np.sqrt(residual), np.sqrt(variance)


def _roughness(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float, **_) -> np.ndarray:
    residual, _total = plane_residual_std(elevation, valid, pixel_size_m)
    return np.minimum(residual, 5.0)


def _planarity(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float, **_) -> np.ndarray:
    residual, total = plane_residual_std(elevation, valid, pixel_size_m)
    return np.clip(1.0 - residual / (total + 0.1), 0.0, 1.0)


def _curvature(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float, **_) -> np.ndarray:
    z = _nearest_filled(elevation, valid)
    sigma_px = max(0.5, CURVATURE_SIGMA_M / pixel_size_m)
    laplacian = ndimage.gaussian_laplace(z, sigma_px, mode="nearest") / pixel_size_m ** 2
    return np.clip(laplacian, -2.0, 2.0)


def _microrelief(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float, dtm: np.ndarray | None = None,
                 **_) -> np.ndarray:
    surface, known = elevation, valid
    if dtm is not None and np.isfinite(dtm[valid]).any():
        surface, known = dtm, valid & np.isfinite(dtm)
    z = _nearest_filled(surface, known)
    smooth = ndimage.gaussian_filter(z, max(0.5, MICRORELIEF_SIGMA_M / pixel_size_m), mode="nearest")
    return np.clip((z - smooth) / MICRORELIEF_SCALE_M, -2.0, 2.0)


def _extra(name: str, extras: dict[str, np.ndarray] | None) -> np.ndarray:
    if not extras or name not in extras:
        raise DemsegError(f"recipe channel {name!r} needs a {name!r} raster in the scene's channels "
                          f"(e.g. from `demseg rasterize`); this input has "
                          f"{sorted(extras) if extras else 'none'}")
    return extras[name].astype(np.float64)


def _returns(valid: np.ndarray, extras: dict[str, np.ndarray] | None = None, **_) -> np.ndarray:
    values = _extra("returns", extras)
    return np.where(np.isfinite(values), values / 3.0, 0.0)


def _fml(valid: np.ndarray, extras: dict[str, np.ndarray] | None = None, **_) -> np.ndarray:
    values = _extra("fml", extras)
    return np.where(np.isfinite(values), values / RELIEF_SCALE_M, 0.0)


def _vegshare(valid: np.ndarray, extras: dict[str, np.ndarray] | None = None, **_) -> np.ndarray:
    values = _extra("vegshare", extras)
    return np.where(np.isfinite(values), np.clip(values, 0.0, 1.0), 0.0)


def _intensity(valid: np.ndarray, extras: dict[str, np.ndarray] | None = None, **_) -> np.ndarray:
    values = _extra("intensity", extras)
    known = valid & np.isfinite(values)
    if not known.any():
        return np.zeros(values.shape)
    low, high = np.percentile(values[known], [2.0, 98.0])
    span = float(high - low)
    stretched = np.clip((values - low) / span, 0.0, 1.0) if span > 0 else np.zeros(values.shape)
    return np.where(np.isfinite(stretched), stretched, 0.0)


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
    "roughness": _roughness,
    "planarity": _planarity,
    "curvature": _curvature,
    "microrelief": _microrelief,
    "returns": _returns,
    "fml": _fml,
    "vegshare": _vegshare,
    "intensity": _intensity,
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


def recipe_scene_channels(recipe: str) -> list[str]:
    """The scene rasters (``channels:`` of a spec) a recipe reads, in recipe order."""
    return [name for name in parse_recipe(recipe) if name in SCENE_CHANNELS]


def check_scene_channels(recipe: str, available, where: str) -> None:
    """Refuse, in one line, an input that lacks a scene channel the recipe reads."""
    missing = [name for name in recipe_scene_channels(recipe) if name not in set(available)]
    if missing:
        raise DemsegError(f"{where} lacks the channel(s) {', '.join(missing)} that recipe {recipe!r} reads "
                          f"(has {sorted(available) or 'none'}); give them in the spec's channels: "
                          f"(e.g. from `demseg rasterize`) or use a run trained without them")


def normalise_tile(elevation: np.ndarray, valid: np.ndarray, recipe: str = DEFAULT_RECIPE,
                   pixel_size_m: float = 1.0, dtm: np.ndarray | None = None,
                   extras: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """A (C, H, W) float32 model input for one tile; 0 at invalid pixels, an all-zero stack if none valid.

    ``extras`` holds the tile's scene channels (name -> float array, NaN where unknown) for the
    recipe channels that read them (``returns``, ``fml``, ``vegshare``, ``intensity``).
    """
    names = parse_recipe(recipe)
    out = np.zeros((len(names),) + elevation.shape, dtype=np.float32)
    if not valid.any():
        check_scene_channels(recipe, extras or {}, "this input")
        return out
    for index, name in enumerate(names):
        channel = CHANNELS[name](elevation=elevation, valid=valid, dtm=dtm, pixel_size_m=pixel_size_m,
                                 extras=extras)
        out[index] = np.where(valid, channel, 0.0)
    return out
