"""A spec loaded and split: the one function every stage uses to get scenes, tiles and the validation region.

``train``, ``experiment``, ``evaluate`` and ``probe`` call :func:`load_split`; its validation region
depends on the spec and the :class:`SplitConfig` (tile size, ``val_tiles``, split seed, valid and
training fractions) only, never on the training budget, the model or the training seed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from demseg.data.resample import resample_scene
from demseg.data.scene import Scene, load_scenes
from demseg.data.spec import DatasetSpec, load_spec
from demseg.data.tiles import SplitConfig, Tile, make_tiles, split_tiles
from demseg.errors import DemsegError


@dataclass
class SplitData:
    """A spec's loaded scenes and its tiles, each assigned to train, val, buffer or unused."""

    spec: DatasetSpec
    scenes: dict[str, Scene]
    tiles: list[Tile]

    def pixel_size_m(self) -> float:
        """The dataset's pixel size (see :func:`dataset_pixel_size_m`)."""
        return dataset_pixel_size_m(self.scenes.values())

    def ids(self, split: str) -> list[str]:
        """Ids of the tiles of one split, sorted."""
        return sorted(t.id for t in self.tiles if t.split == split)


def dataset_pixel_size_m(scenes) -> float:
    """The pixel size of a set of scenes: the median of the scenes' pixel sizes (the one rule in demseg)."""
    sizes = sorted(scene.grid.pixel_size_m for scene in scenes)
    if not sizes:
        raise DemsegError("no scene to take a pixel size from")
    return sizes[len(sizes) // 2]


def _check_class_found(spec: DatasetSpec, scenes: dict[str, Scene], task: str, where) -> None:
    """Refuse a class definition that matches no pixel of any scene (e.g. road codes the rasters lack)."""
    if any((scene.targets[task] == 1).any() for scene in scenes.values() if task in scene.targets):
        return
    definitions = sorted({str(s.labels.classes[task]) for s in spec.scenes
                          if s.labels is not None and s.labels.raster and task in s.labels.classes})
    found = sorted({code for scene in scenes.values() for code in scene.undeclared_codes})
    raise DemsegError(f"{where}: no pixel of any scene is labelled {task}"
                      + (f" (class codes {', '.join(definitions)}" + (f"; the label rasters also hold undeclared "
                                                                       f"codes {found})" if found else ")")
                         if definitions else "")
                      + "; check the spec's classes: (demseg data check shows what each scene holds)")


def load_split(spec_path: str | os.PathLike | DatasetSpec, tasks: list[str], split: SplitConfig,
               progress: bool = True, pixel_size_m: float | None = None) -> SplitData:
    """Load a spec's scenes, cut tiles and assign the spatial split (see :func:`split_tiles`).

    With ``pixel_size_m`` every scene is first resampled to that pixel size (see
    :func:`demseg.data.resample.resample_scene`), e.g. to score a run on data of another resolution.
    """
    spec = spec_path if isinstance(spec_path, DatasetSpec) else load_spec(Path(spec_path))
    where = f"spec {spec.name!r}" if isinstance(spec_path, DatasetSpec) else str(spec_path)
    missing = [task for task in tasks if task not in spec.tasks()]
    if missing:
        raise DemsegError(f"no scene of {where} has labels for {', '.join(missing)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scenes = {scene.id: scene for scene in load_scenes(spec, tasks, progress=progress)}
    for task in tasks:
        _check_class_found(spec, scenes, task, where)  # one line: the warnings it explains are dropped
    for warning in caught:
        warnings.warn(warning.message, warning.category, stacklevel=2)
    if pixel_size_m is not None:
        scenes = {key: resample_scene(scene, pixel_size_m) for key, scene in scenes.items()}
    tiles = make_tiles(list(scenes.values()), split.tile_size_px, split.min_valid_fraction)
    tiles = split_tiles(tiles, {s.id: s.split for s in spec.scenes}, val_tiles=split.val_tiles,
                        min_train_fraction=split.min_train_fraction, seed=split.split_seed)
    return SplitData(spec, scenes, tiles)
