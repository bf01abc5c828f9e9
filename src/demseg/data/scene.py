"""Load a scene of a dataset spec: elevation, optional DTM, and one 0/1/255 target raster per task."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import shapely

from demseg.data.spec import AUXILIARY_CLASSES, DatasetSpec, SceneSpec
from demseg.errors import DemsegError
from demseg.io.raster import DemRaster, read_dem, read_label_raster
from demseg.io.vector import label_geometries, rasterize_labels, read_vector

IGNORE = 255  # target code for unknown pixels: excluded from loss and metrics


@dataclass
class Scene:
    """A loaded scene. ``targets[task]`` is uint8: 1 target class, 0 other, 255 ignore (incl. nodata)."""

    id: str
    dem: DemRaster
    dtm: np.ndarray | None = None  # float32, NaN where invalid
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    split: str = "auto"
    channels: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32, NaN where unknown
    auxiliary: dict[str, np.ndarray] = field(default_factory=dict)  # class -> uint8 0/1/255 (e.g. vegetation)
    undeclared_codes: dict[int, int] = field(default_factory=dict)  # label code -> pixels, read as background

    @property
    def grid(self):
        return self.dem.grid

    @property
    def valid_mask(self) -> np.ndarray:
        return self.dem.valid_mask

    def channel_window(self, window) -> dict[str, np.ndarray]:
        """The scene channels cut to a window (name -> float32, NaN where unknown)."""
        return {name: values[window] for name, values in self.channels.items()}


def load_scene(spec: DatasetSpec, scene: SceneSpec, tasks: list[str] | None = None,
               road_width_m: float | None = None) -> Scene:
    """Read a scene's rasters and labels, checking that everything lies on the DEM's grid."""
    dem = read_dem(spec.path(scene.dem), band=scene.band, crs=scene.crs, nodata=scene.nodata,
                   what=f"DEM of scene '{scene.id}'")
    dtm = None
    if scene.dtm:
        dtm_raster = read_dem(spec.path(scene.dtm), crs=scene.crs or dem.grid.crs, what=f"DTM of scene '{scene.id}'")
        if not dtm_raster.grid.same_as(dem.grid):
            raise DemsegError(f"DTM of scene '{scene.id}' is on a different grid or CRS than its DEM: "
                              f"{spec.path(scene.dtm)}")
        dtm = dtm_raster.elevation
    channels = {}
    for name, relative in scene.channels.items():
        raster = read_dem(spec.path(relative), crs=scene.crs or dem.grid.crs,
                          what=f"{name} channel of scene '{scene.id}'")
        if not raster.grid.same_as(dem.grid):
            raise DemsegError(f"{name} channel of scene '{scene.id}' is on a different grid or CRS than its DEM: "
                              f"{spec.path(relative)}")
        channels[name] = np.where(raster.valid_mask, raster.elevation, np.nan).astype(np.float32)
    targets, undeclared, auxiliary = _load_targets(spec, scene, dem, tasks, road_width_m)
    if undeclared:
        codes = ", ".join(f"{code} ({count} px)" for code, count in undeclared.items())
        warnings.warn(f"label raster of scene '{scene.id}' holds codes the spec does not declare, read as "
                      f"background: {codes}", stacklevel=2)
    return Scene(scene.id, dem, dtm, targets, scene.split, channels, auxiliary, undeclared)


def undeclared_codes(codes: np.ndarray, classes: dict[str, int | list[int]], ignore: int | None,
                     valid: np.ndarray) -> dict[int, int]:
    """{code: pixel count} of label codes on valid pixels that are neither 0, a declared class nor ``ignore``."""
    values, counts = np.unique(codes[valid], return_counts=True)
    declared = {c for value in classes.values() for c in (value if isinstance(value, list) else [value])}
    known = {0, *declared, *([ignore] if ignore is not None else [])}
    return {int(v): int(c) for v, c in zip(values, counts, strict=True) if int(v) not in known}


def _load_targets(spec: DatasetSpec, scene: SceneSpec, dem: DemRaster, tasks: list[str] | None,
                  road_width_m: float | None) -> tuple[dict[str, np.ndarray], dict[int, int], dict[str, np.ndarray]]:
    labels = scene.labels
    if labels is None:
        return {}, {}, {}
    targets: dict[str, np.ndarray] = {}
    auxiliary: dict[str, np.ndarray] = {}
    undeclared: dict[int, int] = {}
    if labels.raster:
        codes = read_label_raster(spec.path(labels.raster), dem.grid, what=f"label raster of scene '{scene.id}'")
        undeclared = undeclared_codes(codes, labels.classes, labels.ignore, dem.valid_mask)
        unknown = codes == labels.ignore if labels.ignore is not None else np.zeros(codes.shape, bool)
        for task in labels.classes:
            if tasks is None or task in tasks or task in AUXILIARY_CLASSES:
                target = np.isin(codes, labels.codes(task)).astype(np.uint8)
                target[unknown] = IGNORE
                (auxiliary if task in AUXILIARY_CLASSES else targets)[task] = target
    for task, relative in labels.vector.items():
        if tasks is not None and task not in tasks:
            continue
        what = f"{task} vectors of scene '{scene.id}'"
        layer = read_vector(spec.path(relative), what=what)
        geometries = label_geometries(layer, dem.grid, task, road_width_m or labels.road_width_m,
                                      labels.width_attribute, what=what)
        burned = rasterize_labels(geometries, dem.grid, what=what)
        if labels.coverage == "hull":
            hull = shapely.convex_hull(shapely.union_all(geometries)).buffer(labels.coverage_buffer_m)
            burned[rasterize_labels(np.array([hull]), dem.grid, what=what) == 0] = IGNORE
        if task in targets:  # vector and raster both given: vector wins where it says "target"
            targets[task] = np.where(burned == 1, np.uint8(1), targets[task])
        else:
            targets[task] = burned
    for target in (*targets.values(), *auxiliary.values()):
        target[~dem.valid_mask] = IGNORE
    return targets, undeclared, auxiliary


def load_scenes(spec: DatasetSpec, tasks: list[str] | None = None, road_width_m: float | None = None,
                progress: bool = False) -> list[Scene]:
    """Load every scene of a spec (see :func:`load_scene`)."""
    from tqdm.auto import tqdm

    scenes = spec.scenes
    iterator = tqdm(scenes, desc="loading scenes", unit="scene", disable=not progress)
    return [load_scene(spec, scene, tasks, road_width_m) for scene in iterator]
