"""A world of georeferenced scenes on disk: rasters, vectors, previews, world.json and dataset.yaml,
written all at once or not at all."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from tqdm import tqdm

from demseg.data.spec import LABEL_CODES
from demseg.data.synth.districts import DEFAULT_STYLE
from demseg.data.synth.preview import write_preview
from demseg.data.synth.roads import SURFACE_CODES, TRAFFIC_SURFACES
from demseg.data.synth.scene import (
    LABEL_NODATA,
    SynthScene,
    check_seed,
    check_size,
    check_style,
    generate_scene,
    scene_seed,
)
from demseg.errors import DemsegError
from demseg.io import GridSpec, VectorLayer, write_geotiff, write_gpkg, write_text_atomic
from demseg.io.atomic import atomic_folder
from demseg.io.folders import MARKER, check_output_path

GENERATOR_VERSION = 3  # 3: rough trees in rows, parks and gardens, a vegetation class, interpolated water
# (style "streets", parking bays, cycle paths, tram beds and surfaces.tif came later and leave every other style as
# version 3 drew it, so worlds in users' caches stay valid)
WORLD_CRS = "EPSG:32631"
WORLD_ORIGIN_M = (500_000.0, 5_400_000.0)  # south-west corner of scene 0, UTM 31N
SCENE_GAP_M = 100.0
SCENES_PER_ROW = 10
ELEVATION_NODATA = -9999.0


def scene_grid(index: int, size_px: int, pixel_size_m: float) -> GridSpec:
    """The map grid of scene ``index``: scenes sit on rows of ten, SCENE_GAP_M apart, never overlapping."""
    step_m = size_px * pixel_size_m + SCENE_GAP_M
    left_m = WORLD_ORIGIN_M[0] + (index % SCENES_PER_ROW) * step_m
    top_m = WORLD_ORIGIN_M[1] + (index // SCENES_PER_ROW) * step_m + size_px * pixel_size_m
    return GridSpec(CRS.from_string(WORLD_CRS), Affine(pixel_size_m, 0.0, left_m, 0.0, -pixel_size_m, top_m),
                    size_px, size_px)


def _check_world(scenes, val_fraction) -> None:
    if isinstance(scenes, bool) or not isinstance(scenes, (int, np.integer)) or scenes < 1:
        raise DemsegError(f"scenes must be a positive integer, got {scenes!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.number)) \
            or not 0.0 <= val_fraction < 1.0:
        raise DemsegError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")


def _val_indices(seed: int, scenes: int, val_fraction: float) -> set[int]:
    """About val_fraction of the scenes, at least one when there are two or more, chosen by the seed."""
    if scenes < 2 or val_fraction == 0:
        return set()
    count = int(np.clip(round(val_fraction * scenes), 1, scenes - 1))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2**32 - 1]))  # a stream no scene index uses
    return {int(index) for index in rng.choice(scenes, size=count, replace=False)}


def generate_world(out_dir: str | os.PathLike, scenes: int = 20, size_px: int = 896,
                   pixel_size_m: float = 0.5,
                   seed: int = 0, val_fraction: float = 0.2, progress: bool = True,
                   style: str = DEFAULT_STYLE, overwrite: bool = False) -> Path:
    """Write a world of ``scenes`` georeferenced scenes of ``style`` to ``out_dir``; returns its dataset.yaml.

    The world is built in a hidden folder beside ``out_dir`` and moved there only once complete, so a
    failure (a full disk, an interrupt) leaves no partial world, and an earlier world in ``out_dir`` is kept
    as it was. An existing world is replaced whole only with ``overwrite`` (no scene of the old world is
    left behind); a folder that is not a world demseg made is never replaced.
    """
    _check_world(scenes, val_fraction)
    check_size(size_px, pixel_size_m)
    check_seed(seed)
    check_style(style)
    check_output_path(out_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DemsegError(f"output is a file, not a folder: {out_dir}")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not _is_world(out_dir):
            raise DemsegError(f"output folder exists and is not a synthetic world, or holds more than one: {out_dir} "
                              "(demseg never replaces such a folder, even with --overwrite: give a new folder)")
        if not overwrite:
            raise DemsegError(f"a synthetic world exists in {out_dir} (pass --overwrite to replace it)")
    val = _val_indices(seed, scenes, val_fraction)
    with atomic_folder(out_dir) as staging:
        entries, districts = [], {}
        for index in tqdm(range(scenes), desc="synth", unit="scene", disable=not progress):
            scene_id = f"s{index:03d}"
            scene = generate_scene(scene_seed(seed, index), size_px, pixel_size_m, style)
            write_scene(staging / scene_id, scene, scene_grid(index, size_px, pixel_size_m))
            entries.append((scene_id, "val" if index in val else "train"))
            districts[scene_id] = list(scene.districts)
        params = dict(generator="demseg.data.synth", version=GENERATOR_VERSION, style=style, scenes=scenes,
                      size_px=size_px, pixel_size_m=pixel_size_m, seed=seed, val_fraction=val_fraction,
                      crs=WORLD_CRS, val_scenes=[scene_id for scene_id, split in entries if split == "val"],
                      districts=districts)
        description = (f"Synthetic LiDAR city DEMs from demseg synth (style {style}, seed {seed}, {scenes} "
                       f"scenes of {size_px} px at {pixel_size_m:g} m, {WORLD_CRS})")
        write_text_atomic(staging / "dataset.yaml", _dataset_yaml(entries, description))
        write_text_atomic(staging / "surfaces.yaml", _dataset_yaml(entries, description, surfaces=True))
        write_text_atomic(staging / "world.json", json.dumps(params, indent=2) + "\n")
        (staging / MARKER).write_text("synth")
    return out_dir / "dataset.yaml"


def _is_world(folder: Path) -> bool:
    """True when ``folder`` holds a world demseg synth made and nothing else (a run or a user's file inside is kept)."""
    try:
        params = json.loads((folder / "world.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(params, dict) or params.get("generator") != "demseg.data.synth":
        return False
    for entry in folder.iterdir():
        own = (entry.name in ("dataset.yaml", "surfaces.yaml", "world.json") or entry.name.startswith(".demseg")
               or (entry.is_dir() and re.fullmatch(r"s\d{3,}", entry.name)))
        if not own:
            return False
    return True


def _dataset_yaml(entries: list[tuple[str, str]], description: str, surfaces: bool = False) -> str:
    """The world's spec: labels.tif (roads: every traffic area), or with ``surfaces`` surfaces.tif, whose road
    surfaces a user can pick (the spec says carriageways and parking, cycle and tram areas; edit it to choose)."""
    if surfaces:
        traffic = ", ".join(str(SURFACE_CODES[name]) for name in TRAFFIC_SURFACES)
        classes = f"buildings: {LABEL_CODES['buildings']}, roads: [{traffic}], vegetation: {LABEL_CODES['vegetation']}"
        lines = ["# Road surfaces told apart: " + ", ".join(f"{code} {name}" for name, code in SURFACE_CODES.items()),
                 f"# (roads: [{SURFACE_CODES['carriageway']}] for carriageways only; add {SURFACE_CODES['sidewalk']} "
                 "for sidewalks too)", "name: synthetic-world-surfaces"]
    else:
        classes = ", ".join(f"{name}: {code}" for name, code in LABEL_CODES.items())
        lines = ["name: synthetic-world"]
    lines += [f"description: {json.dumps(description)}", "scenes:"]
    raster = "surfaces.tif" if surfaces else "labels.tif"
    for scene_id, split in entries:
        lines += [f"  - id: {scene_id}",
                  f"    dem: {scene_id}/dem.tif",
                  f"    dtm: {scene_id}/dtm.tif",
                  "    labels:",
                  f"      raster: {scene_id}/{raster}",
                  f"      classes: {{{classes}}}",
                  f"      ignore: {LABEL_NODATA}",
                  f"    split: {split}"]
    return "\n".join(lines) + "\n"


def write_scene(folder: str | os.PathLike, scene: SynthScene, grid: GridSpec) -> None:
    """Write a scene's rasters, vectors (map coordinates of ``grid``; trees as points in vegetation.gpkg) and
    preview into ``folder``."""
    folder = Path(folder)
    tags = {"source": "demseg synthetic world", "seed": str(scene.seed), "style": scene.style}
    for name, elevation in (("dem.tif", scene.dsm), ("dtm.tif", scene.dtm)):
        filled = np.where(np.isnan(elevation), np.float32(ELEVATION_NODATA), elevation).astype(np.float32)
        write_geotiff(folder / name, filled, grid, nodata=ELEVATION_NODATA, tags=tags)
    write_geotiff(folder / "labels.tif", scene.labels, grid, nodata=LABEL_NODATA,
                  tags={**tags, "classes": _label_legend()})
    write_geotiff(folder / "surfaces.tif", scene.surfaces, grid, nodata=LABEL_NODATA,
                  tags={**tags, "classes": _label_legend(surfaces=True)})
    left_m, bottom_m = grid.transform.c, grid.transform.f - grid.height * abs(grid.transform.e)

    def to_map(geometries: np.ndarray) -> np.ndarray:
        return shapely.transform(geometries, lambda xy: xy + np.array([left_m, bottom_m]))

    write_gpkg(folder / "buildings.gpkg", {"buildings": VectorLayer(
        to_map(scene.buildings), {"height_m": scene.building_heights_m.round(2), "roof": scene.building_roofs,
                                  "district": scene.building_districts})},
        grid.crs)
    parts, owner = shapely.get_parts(scene.road_polygons, return_index=True)
    write_gpkg(folder / "roads.gpkg", {"roads": VectorLayer(
        to_map(parts), {"road_id": owner.astype(np.int32), "width": scene.road_widths_m[owner].round(2)})},
        grid.crs)
    write_gpkg(folder / "road_centrelines.gpkg", {"road_centrelines": VectorLayer(
        to_map(scene.road_centrelines),
        {"road_id": np.arange(len(scene.road_widths_m), dtype=np.int32),
         "width": scene.road_widths_m.round(2)})},
        grid.crs)
    write_gpkg(folder / "vegetation.gpkg", {"trees": VectorLayer(
        to_map(shapely.points(scene.tree_xy_m)),
        {"height_m": scene.tree_heights_m.round(2), "crown_radius_m": scene.tree_crown_radii_m.round(2),
         "kind": scene.tree_kinds})},
        grid.crs)
    write_preview(folder / "preview.png", scene)


def _label_legend(surfaces: bool = False) -> str:
    """The label codes in words, for the label raster's tags: "0 background, 1 buildings, ..., 255 nodata"."""
    names = {**LABEL_CODES, **SURFACE_CODES} if surfaces else LABEL_CODES
    codes = ", ".join(f"{code} {name}" for name, code in names.items() if not (surfaces and name == "roads"))
    return f"0 background, {codes}, {LABEL_NODATA} nodata"
