"""Scenes, tiles, splits, normalisation, label rasterising and the synthetic DEM world."""

from demseg.data.normalise import DEFAULT_RECIPE, normalise_tile, parse_recipe, recipe_channels
from demseg.data.scene import IGNORE, Scene, load_scene, load_scenes
from demseg.data.spec import TASKS, DatasetSpec, SceneSpec, load_spec
from demseg.data.tiles import Tile, make_tiles, split_tiles, training_subset, write_tile_index

__all__ = [
    "DEFAULT_RECIPE",
    "IGNORE",
    "TASKS",
    "DatasetSpec",
    "Scene",
    "SceneSpec",
    "Tile",
    "load_scene",
    "load_scenes",
    "load_spec",
    "make_tiles",
    "normalise_tile",
    "parse_recipe",
    "recipe_channels",
    "split_tiles",
    "training_subset",
    "write_tile_index",
]
