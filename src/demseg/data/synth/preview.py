"""PNG previews: a scene's hillshade with its labels outlined, and a style sheet of every district."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import shapely

from demseg.data.normalise import hillshade
from demseg.data.synth.districts import DISTRICTS
from demseg.data.synth.scene import BUILDING, ROAD, VEGETATION, SynthScene, generate_scene, scene_seed
from demseg.io.atomic import atomic_path

WATER_RGB = (0.24, 0.50, 0.77)
VEGETATION_RGB = (0.20, 0.62, 0.25)


def _outline_segments(geometries: np.ndarray) -> list[np.ndarray]:
    polygons = geometries[~shapely.is_empty(geometries)]
    return [np.asarray(ring.coords)[:, :2] for ring in shapely.get_parts(shapely.boundary(polygons))]


def _draw_scene(axes, scene: SynthScene, smooth: bool) -> None:
    """The DSM hillshade with nodata in blue, vegetation tinted green, buildings outlined in red and roads in
    yellow, on ``axes``."""
    from matplotlib.collections import LineCollection

    valid = np.isfinite(scene.dsm)
    shade = hillshade(scene.dsm, valid, scene.pixel_size_m)
    image = np.repeat(shade[..., None], 3, axis=2)
    vegetation = scene.labels == VEGETATION
    image[vegetation] = 0.6 * image[vegetation] + 0.4 * np.array(VEGETATION_RGB)
    image[~valid] = WATER_RGB
    axes.imshow(image, extent=(0, scene.extent_m, 0, scene.extent_m),
                interpolation="bilinear" if smooth else "nearest")
    roads = np.array([shapely.union_all(scene.road_polygons)], dtype=object)
    axes.add_collection(LineCollection(_outline_segments(roads), colors="#ffd21f", linewidths=0.7))
    axes.add_collection(LineCollection(_outline_segments(scene.buildings), colors="#ff3b30", linewidths=0.7))
    axes.set_xlim(0, scene.extent_m)
    axes.set_ylim(0, scene.extent_m)
    axes.set_axis_off()


def write_preview(path: str | os.PathLike, scene: SynthScene, max_size_px: int = 896) -> Path:
    """A PNG of the DSM hillshade, nodata in blue, vegetation tinted green, buildings outlined in red and
    roads in yellow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    side_px = min(scene.size_px, max_size_px)
    figure = Figure(figsize=(side_px / 100, side_px / 100), dpi=100)
    FigureCanvasAgg(figure)
    _draw_scene(figure.add_axes((0, 0, 1, 1)), scene, smooth=side_px != scene.size_px)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    return Path(path)


def write_style_sheet(path: str | os.PathLike, seed: int = 0, size_px: int = 512,
                      pixel_size_m: float = 0.5) -> Path:
    """A PNG of one scene of each district style, three to a row: hillshade, vegetation green, buildings red,
    roads yellow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns, rows = 3, math.ceil(len(DISTRICTS) / 3)
    figure = Figure(figsize=(4.0 * columns, 4.3 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for index, style in enumerate(DISTRICTS):
        row, column = divmod(index, columns)
        axes = figure.add_axes((column / columns + 0.004, 1 - (row + 1) / rows, 1 / columns - 0.008,
                                0.93 / rows))
        scene = generate_scene(scene_seed(seed, index), size_px, pixel_size_m, style)
        _draw_scene(axes, scene, smooth=False)
        built, paved, green = ((scene.labels == code).mean() for code in (BUILDING, ROAD, VEGETATION))
        axes.set_title(f"{style}: {built:.0%} buildings, {paved:.0%} roads, {green:.0%} trees", fontsize=11)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 6})
    return Path(path)
