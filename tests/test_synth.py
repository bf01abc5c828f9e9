"""The synthetic world: determinism, georeferencing, label/vector agreement and physical plausibility."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import yaml
from rasterio import features

from demseg.data.synth import generate_scene, generate_world, scene_grid, scene_seed, write_scene
from demseg.errors import DemsegError
from demseg.io import rasterize_labels, read_dem, read_label_raster, read_vector
from demseg.io.raster import open_grid
from demseg.io.vector import label_geometries

SIZE_PX = 256
PIXEL_SIZE_M = 0.5
SCENES = 3
SEED = 7


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    spec_path = generate_world(out, scenes=SCENES, size_px=SIZE_PX, pixel_size_m=PIXEL_SIZE_M, seed=SEED,
                               val_fraction=0.3, progress=False)
    return out, spec_path


@pytest.fixture(scope="module")
def scene():
    return generate_scene(scene_seed(SEED, 0), SIZE_PX, PIXEL_SIZE_M)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    first, again, other = (generate_scene(seed, 128, 0.5) for seed in (3, 3, 4))
    for name in ("dsm", "dtm", "labels"):
        assert getattr(first, name).tobytes() == getattr(again, name).tobytes()
    assert [b.wkb for b in first.buildings] == [b.wkb for b in again.buildings]
    assert not np.array_equal(first.dsm, other.dsm, equal_nan=True)
    assert not np.array_equal(first.labels, other.labels)


def test_world_scene_is_the_scene_of_its_derived_seed(world, scene):
    out, _ = world
    dem = read_dem(out / "s000" / "dem.tif")
    np.testing.assert_array_equal(dem.elevation, scene.dsm)
    assert scene_seed(SEED, 0) != scene_seed(SEED, 1) != scene_seed(SEED + 1, 0)


def test_world_writes_every_file_of_every_scene(world):
    out, spec_path = world
    assert spec_path == out / "dataset.yaml"
    names = ["dem.tif", "dtm.tif", "labels.tif", "buildings.gpkg", "roads.gpkg", "road_centrelines.gpkg",
             "preview.png"]
    for index in range(SCENES):
        for name in names:
            assert (out / f"s{index:03d}" / name).is_file(), f"s{index:03d}/{name}"
    assert not list(out.rglob("*.partial*")), "temporary files left behind"
    params = json.loads((out / "world.json").read_text())
    assert {k: params[k] for k in ("scenes", "size_px", "pixel_size_m", "seed")} == {
        "scenes": SCENES, "size_px": SIZE_PX, "pixel_size_m": PIXEL_SIZE_M, "seed": SEED}
    assert "version" in params


def test_rasters_are_georeferenced_with_the_asked_pixel_size_and_nodata(world):
    out, _ = world
    expected = {"dem.tif": ("float32", -9999.0), "dtm.tif": ("float32", -9999.0), "labels.tif": ("uint8", 255)}
    for name, (dtype, nodata) in expected.items():
        with rasterio.open(out / "s001" / name) as src:
            assert src.crs.to_epsg() == 32631
            assert (src.width, src.height) == (SIZE_PX, SIZE_PX)
            assert src.transform.a == PIXEL_SIZE_M and src.transform.e == -PIXEL_SIZE_M
            assert src.transform.b == 0 and src.transform.d == 0
            assert src.transform == scene_grid(1, SIZE_PX, PIXEL_SIZE_M).transform
            assert src.dtypes[0] == dtype
            assert src.nodata == nodata


def test_scenes_sit_at_distinct_non_overlapping_map_positions(world):
    out, _ = world
    bounds = [open_grid(out / f"s{index:03d}" / "dem.tif").bounds for index in range(SCENES)]
    for i, (left, bottom, right, top) in enumerate(bounds):
        for other in bounds[i + 1:]:
            assert right <= other[0] or other[2] <= left or top <= other[1] or other[3] <= bottom


def test_labels_hold_buildings_roads_background_and_nodata_where_the_dem_has_none(world):
    out, _ = world
    for index in range(SCENES):
        dem = read_dem(out / f"s{index:03d}" / "dem.tif")
        labels = read_label_raster(out / f"s{index:03d}" / "labels.tif", dem.grid)
        assert set(np.unique(labels).tolist()) == {0, 1, 2, 255}
        assert np.array_equal(labels == 255, ~dem.valid_mask)
        assert 0.02 < (labels == 1).mean() < 0.5 and 0.03 < (labels == 2).mean() < 0.5


def test_buildings_stand_3_to_60_m_above_the_bare_earth(scene):
    assert len(scene.buildings) >= 5
    assert np.all((scene.building_heights_m >= 3.0) & (scene.building_heights_m <= 60.0))
    above = scene.dsm - scene.dtm
    for footprint, height_m in zip(scene.buildings, scene.building_heights_m, strict=True):
        inside = features.rasterize([(footprint, 1)], out_shape=scene.dsm.shape,
                                    transform=scene.local_transform).astype(bool)
        if inside.sum() < 20:
            continue
        # the roof stands on one ground level, so on slopes it sits a little above or below the local ground
        assert 2.0 <= np.median(above[inside]) <= 61.0
        assert abs(np.percentile(above[inside], 99) - height_m) < 3.0


def test_road_surface_is_bare_earth_except_under_canopy_and_cars(scene):
    road = scene.labels == 2
    clear = road & ~scene.vegetation_mask & ~scene.car_mask
    above = (scene.dsm - scene.dtm)[clear]
    assert np.mean(np.abs(above) < 0.4) > 0.99
    covered = road & (scene.vegetation_mask | scene.car_mask)
    assert covered.any(), "no tree crown or car over any road"
    assert np.median((scene.dsm - scene.dtm)[covered]) > 1.0


def test_kerbs_raise_the_ground_beside_the_road(scene):
    road, ground = scene.labels == 2, scene.labels == 0
    # bare-earth step from a road pixel to its background neighbour, across both vertical edges
    steps = np.concatenate([(scene.dtm[:, 1:] - scene.dtm[:, :-1])[road[:, :-1] & ground[:, 1:]],
                            (scene.dtm[:, :-1] - scene.dtm[:, 1:])[ground[:, :-1] & road[:, 1:]]])
    assert 0.08 < np.median(steps) < 0.3


def test_vectors_rasterised_agree_with_the_label_raster(world):
    out, _ = world
    for index in range(SCENES):
        folder = out / f"s{index:03d}"
        dem = read_dem(folder / "dem.tif")
        labels = read_label_raster(folder / "labels.tif", dem.grid)
        known = labels != 255
        buildings = label_geometries(read_vector(folder / "buildings.gpkg"), dem.grid, "buildings")
        roads = label_geometries(read_vector(folder / "roads.gpkg"), dem.grid, "roads")
        centrelines = label_geometries(read_vector(folder / "road_centrelines.gpkg"), dem.grid, "roads")
        assert iou(rasterize_labels(buildings, dem.grid)[known] == 1, labels[known] == 1) >= 0.99
        assert iou(rasterize_labels(roads, dem.grid)[known] == 1, labels[known] == 2) >= 0.99
        assert iou(rasterize_labels(centrelines, dem.grid)[known] == 1, labels[known] == 2) >= 0.99


def test_building_vectors_carry_height_and_roof(world):
    out, _ = world
    layer = read_vector(out / "s000" / "buildings.gpkg")
    assert set(layer.attributes) >= {"height_m", "roof"}
    assert set(layer.attributes["roof"]) <= {"flat", "gable", "hip"}
    assert np.all((layer.attributes["height_m"] >= 3) & (layer.attributes["height_m"] <= 60))


def test_road_widths_are_4_to_15_m(world):
    out, _ = world
    for index in range(SCENES):
        widths = read_vector(out / f"s{index:03d}" / "road_centrelines.gpkg").attributes["width"]
        assert len(widths) >= 1
        assert np.all((widths >= 4.0) & (widths <= 15.0))


def test_dataset_yaml_lists_every_scene_with_at_least_one_for_validation(world):
    out, spec_path = world
    spec = yaml.safe_load(spec_path.read_text())
    assert spec["name"] == "synthetic-world" and spec["description"]
    assert [entry["id"] for entry in spec["scenes"]] == [f"s{index:03d}" for index in range(SCENES)]
    for entry in spec["scenes"]:
        scene_id = entry["id"]
        assert entry["dem"] == f"{scene_id}/dem.tif" and entry["dtm"] == f"{scene_id}/dtm.tif"
        assert entry["labels"] == {"raster": f"{scene_id}/labels.tif", "classes": {"buildings": 1, "roads": 2},
                                   "ignore": 255}
        assert (spec_path.parent / entry["dem"]).is_file()
    splits = [entry["split"] for entry in spec["scenes"]]
    assert set(splits) == {"train", "val"} and splits.count("val") == 1


def test_preview_is_a_small_png(world):
    import matplotlib.image

    image = matplotlib.image.imread(world[0] / "s002" / "preview.png")
    assert image.shape[0] <= 900 and image.shape[1] <= 900 and image.std() > 0.05


def test_zero_metre_ground_is_valid_elevation(tmp_path):
    coastal = next((s for s in (generate_scene(seed, 128, 0.5) for seed in range(40)) if (s.dtm == 0).any()), None)
    assert coastal is not None, "no scene in 40 seeds has ground at exactly 0 m"
    write_scene(tmp_path, coastal, scene_grid(0, 128, 0.5))
    dtm = read_dem(tmp_path / "dtm.tif")
    zero = coastal.dtm == 0
    assert dtm.valid_mask[zero].all() and np.all(dtm.elevation[zero] == 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scenes=0), "scenes"),
    (dict(scenes=-2), "scenes"),
    (dict(size_px=-5), "size_px"),
    (dict(size_px=0), "size_px"),
    (dict(size_px=32), "size_px"),
    (dict(pixel_size_m=0.0), "pixel_size_m"),
    (dict(pixel_size_m=-0.5), "pixel_size_m"),
    (dict(val_fraction=1.5), "val_fraction"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments_raise_one_clear_error(tmp_path, kwargs, message):
    with pytest.raises(DemsegError, match=message) as info:
        generate_world(tmp_path / "out", **{"scenes": 1, "size_px": 64, **kwargs}, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_generate_scene_rejects_tiny_sizes():
    with pytest.raises(DemsegError, match="size_px"):
        generate_scene(0, size_px=63)
