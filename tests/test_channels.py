"""Texture channels (roughness, planarity, curvature) and scene channels (LiDAR rasters) as model inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import city_dem, write_raster
from test_hostile_inputs import one_line_error, written

from demseg.cli import main
from demseg.data.normalise import normalise_tile, plane_residual_std, recipe_scene_channels
from demseg.data.resample import resample_scene
from demseg.data.scene import IGNORE, load_scenes
from demseg.data.spec import load_spec
from demseg.errors import DemsegError

TILE = 32


def _roof_and_canopy(seed: int = 0, pixel_size_m: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 96 px tile: a tilted planar roof (left) and a rough canopy of the same mean height (right)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:96, 0:96].astype(np.float32)
    elevation = np.zeros((96, 96), np.float32)  # 0 m ground: a real height, not nodata
    roof = (slice(20, 76), slice(8, 44))
    canopy = (slice(20, 76), slice(52, 88))
    elevation[roof] = 8.0 + 0.4 * (rows[roof] - 20) * pixel_size_m  # a 22 degree pitch
    elevation[canopy] = 10.0 + rng.normal(0.0, 1.5, elevation[canopy].shape)
    roof_mask = np.zeros((96, 96), bool)
    roof_mask[24:72, 12:40] = True  # away from the eaves
    canopy_mask = np.zeros((96, 96), bool)
    canopy_mask[24:72, 56:84] = True
    return elevation, roof_mask, canopy_mask


def test_roughness_is_near_zero_on_a_tilted_roof_and_metres_in_canopy():
    elevation, roof, canopy = _roof_and_canopy()
    valid = np.ones_like(elevation, bool)
    rough = normalise_tile(elevation, valid, "roughness", 0.5)[0]
    assert np.median(rough[roof]) < 0.01
    assert np.median(rough[canopy]) > 0.8
    plan = normalise_tile(elevation, valid, "planarity", 0.5)[0]
    assert np.median(plan[roof]) > 0.95 > 0.6 > np.median(plan[canopy])


def test_curvature_is_zero_on_planes_and_large_in_canopy():
    elevation, roof, canopy = _roof_and_canopy()
    curvature = normalise_tile(elevation, np.ones_like(elevation, bool), "curvature", 0.5)[0]
    assert np.abs(curvature[32:64, 20:32]).max() < 0.02  # farther from the eaves than the smoothing reaches
    assert np.abs(curvature[canopy]).mean() > 0.1
    assert np.abs(curvature).max() <= 2.0


def test_plane_residual_matches_a_direct_least_squares_fit():
    rng = np.random.default_rng(3)
    elevation = rng.normal(0, 1, (15, 15)).astype(np.float32)
    residual, total = plane_residual_std(elevation, np.ones_like(elevation, bool), 1.0, window_m=5.0)
    window = elevation[5:10, 5:10].astype(np.float64)  # the 5 x 5 window about (7, 7)
    yy, xx = np.mgrid[-2:3, -2:3]
    design = np.stack([np.ones(25), xx.ravel(), yy.ravel()], 1)
    coefficients, *_ = np.linalg.lstsq(design, window.ravel(), rcond=None)
    expected = np.sqrt(np.mean((window.ravel() - design @ coefficients) ** 2))
    assert residual[7, 7] == pytest.approx(expected, rel=1e-6)
    assert total[7, 7] == pytest.approx(window.std(), rel=1e-6)


def test_texture_window_is_in_metres_so_resolutions_agree():
    coarse, roof, canopy = _roof_and_canopy(seed=1, pixel_size_m=1.0)
    fine = np.kron(coarse, np.ones((2, 2), np.float32))  # the same surface at half the pixel size
    rough_coarse = normalise_tile(coarse, np.ones_like(coarse, bool), "roughness", 1.0)[0]
    rough_fine = normalise_tile(fine, np.ones_like(fine, bool), "roughness", 0.5)[0]
    assert np.median(rough_fine[::2, ::2][canopy]) == pytest.approx(np.median(rough_coarse[canopy]), rel=0.35)


@pytest.mark.parametrize("recipe", ["roughness", "planarity", "curvature", "microrelief", "relief+slope+roughness"])
def test_texture_channels_ignore_nodata_values_and_keep_zero_metres(recipe):
    elevation, _, _ = _roof_and_canopy()
    valid = np.ones_like(elevation, bool)
    valid[:10, :30] = False
    a = normalise_tile(np.where(valid, elevation, -9999.0).astype(np.float32), valid, recipe, 0.5)
    b = normalise_tile(np.where(valid, elevation, 1e6).astype(np.float32), valid, recipe, 0.5)
    assert np.array_equal(a, b)
    assert np.isfinite(a).all() and (a[:, ~valid] == 0).all()
    # 0 m ground pixels are valid and flat: roughness 0, planarity 1, not "missing"
    if recipe == "planarity":
        assert (a[0][85:, 40:50] > 0.999).all()


def test_scene_channel_values_pass_through_with_nodata_as_zero_and_zero_kept():
    elevation = np.full((8, 8), 5.0, np.float32)
    valid = np.ones((8, 8), bool)
    fml = np.zeros((8, 8), np.float32)  # 0 m first-minus-last: a real hard surface
    fml[2, 2] = 7.0
    fml[5, 5] = np.nan  # no return in that cell
    returns = np.full((8, 8), 1.5, np.float32)
    x = normalise_tile(elevation, valid, "relief+fml+returns", 0.5, extras={"fml": fml, "returns": returns})
    assert x[1, 2, 2] == pytest.approx(0.7) and x[1, 0, 0] == 0.0 and x[1, 5, 5] == 0.0
    assert np.allclose(x[2], 0.5)
    assert recipe_scene_channels("relief+fml+returns") == ["fml", "returns"]


def test_a_recipe_reading_a_channel_the_input_lacks_is_one_error():
    elevation = np.full((8, 8), 5.0, np.float32)
    with pytest.raises(DemsegError, match="'fml'"):
        normalise_tile(elevation, np.ones((8, 8), bool), "relief+fml", 0.5)


# ------------------------------------------------------------------------------- specs with channels


def _channel_scene(folder, with_fml: bool = True, shift_fml: bool = False):
    dem, buildings = city_dem(96)
    dem[:5, :5] = -9999.0
    labels = buildings.copy()
    labels[:5, :5] = 255
    labels[(buildings == 0) & (np.arange(96)[None, :] > 80)] = 3  # a vegetation strip (auxiliary class)
    write_raster(folder / "dem.tif", dem)
    write_raster(folder / "labels.tif", labels, nodata=255)
    text = "name: ch\nscenes:\n  - id: a\n    dem: dem.tif\n"
    if with_fml:
        fml = np.where(buildings == 1, 0.0, 3.0).astype(np.float32)
        fml[40:44, 40:44] = -9999.0
        origin = (500000.0 + (2.0 if shift_fml else 0.0), 5700000.0)
        write_raster(folder / "fml.tif", fml, origin=origin)
        text += "    channels: {fml: fml.tif}\n"
    text += "    labels: {raster: labels.tif, classes: {buildings: 1, vegetation: 3}}\n"
    (folder / "spec.yaml").write_text(text)
    return folder / "spec.yaml"


def test_a_spec_channel_loads_masked_and_resamples_with_its_scene(tmp_path):
    spec = load_spec(_channel_scene(tmp_path))
    (scene,) = load_scenes(spec, ["buildings"])
    fml = scene.channels["fml"]
    assert np.isnan(fml[40:44, 40:44]).all() and (fml[buildings_at(scene)] == 0.0).all()
    coarse = resample_scene(scene, 2.0)
    assert coarse.channels["fml"].shape == coarse.grid.shape
    assert np.nanmax(coarse.channels["fml"]) <= 3.0 + 1e-5  # averaged over known cells only, nodata not mixed in


def buildings_at(scene):
    return scene.targets["buildings"] == 1


def test_the_vegetation_class_is_an_auxiliary_target_not_a_task(tmp_path):
    spec = load_spec(_channel_scene(tmp_path))
    assert spec.tasks() == ["buildings"]
    (scene,) = load_scenes(spec, ["buildings"])
    vegetation = scene.auxiliary["vegetation"]
    assert vegetation[50, 90] == 1 and vegetation[50, 10] in (0, 1) and vegetation[0, 0] == IGNORE
    assert not ((vegetation == 1) & (scene.targets["buildings"] == 1)).any()


def _train(spec, out, recipe):
    return ["train", "--paper", spec, "--model", "unet", "--unet-width", "4", "--tile-size-px", TILE, "--train-tiles", "2",
            "--val-tiles", "2", "--iters", "2", "--val-every", "2", "--min-train-fraction", "0.3",
            "--recipe", recipe, "--out", out, "--quiet"]


def test_a_run_trained_with_a_channel_refuses_data_without_it(tmp_path, capsys):
    with_dir, without_dir = tmp_path / "with", tmp_path / "without"
    with_dir.mkdir()
    without_dir.mkdir()
    spec_with = _channel_scene(with_dir)
    spec_without = _channel_scene(without_dir, with_fml=False)
    assert main([str(a) for a in _train(spec_with, tmp_path / "run", "relief+roughness+fml")]) == 0
    one_line_error(capsys, ["evaluate", tmp_path / "run", spec_without, "--quiet"], "lacks the channel(s) fml")
    out = tmp_path / "pred"
    one_line_error(capsys, ["predict", tmp_path / "run", without_dir / "dem.tif", "--out", out, "--quiet"],
                   "lacks the channel(s) fml")
    assert written(out) == []
    # the spec that carries it predicts
    assert main([str(a) for a in ["predict", tmp_path / "run", spec_with, "--out", tmp_path / "ok", "--quiet"]]) == 0
    assert (tmp_path / "ok" / "a_mask.tif").exists()


def test_training_on_a_spec_without_the_recipes_channel_is_one_line(tmp_path, capsys):
    spec = _channel_scene(tmp_path, with_fml=False)
    one_line_error(capsys, _train(spec, tmp_path / "run", "relief+returns"), "lacks the channel(s) returns")
    assert written(tmp_path / "run") == []


@pytest.mark.parametrize("text, pattern", [
    ("    channels: {lidar_magic: fml.tif}\n", "unknown channel name"),
    ("    channels: {fml: missing.tif}\n", "missing fml channel file"),
])
def test_a_spec_with_a_bad_channel_is_one_line(tmp_path, capsys, text, pattern):
    spec = _channel_scene(tmp_path)
    spec.write_text(spec.read_text().replace("    channels: {fml: fml.tif}\n", text))
    one_line_error(capsys, ["data", "check", spec], pattern)


def test_a_channel_on_another_grid_is_one_line(tmp_path, capsys):
    spec = _channel_scene(tmp_path, shift_fml=True)
    one_line_error(capsys, _train(spec, tmp_path / "run", "relief+fml"), "fml channel of scene 'a' is on a different grid")


# ------------------------------------------------------------------------ vegetation as an auxiliary class


def test_auxiliary_targets_mark_vegetation_and_unknown_background(tmp_path):
    from demseg.data.arrays import NOT_TARGET, tile_arrays
    from demseg.data.tiles import make_tiles

    spec = load_spec(_channel_scene(tmp_path))
    (scene,) = load_scenes(spec, ["buildings"])
    tiles = make_tiles([scene], TILE, 0.5)
    arrays = tile_arrays({"a": scene}, tiles, "buildings", "relief", auxiliary=["vegetation"])
    codes = set(np.unique(arrays.targets).tolist())
    assert {0, 1, 2} <= codes and NOT_TARGET not in codes  # every pixel of this scene says vegetation or not
    plain = tile_arrays({"a": scene}, tiles, "buildings", "relief")
    assert ((arrays.targets == 1) == (plain.targets == 1)).all()
    assert ((arrays.targets == IGNORE) == (plain.targets == IGNORE)).all()
    scene.auxiliary.clear()  # a scene without vegetation labels: background only says "not a building"
    unknown = tile_arrays({"a": scene}, tiles, "buildings", "relief", auxiliary=["vegetation"])
    assert set(np.unique(unknown.targets).tolist()) <= {1, NOT_TARGET, IGNORE}


def test_partial_label_loss_asks_only_not_target_of_unknown_background():
    import torch

    from demseg.data.arrays import NOT_TARGET
    from demseg.train.loop import segmentation_loss

    weights = torch.ones(3)
    target = torch.full((1, 1, 2), NOT_TARGET, dtype=torch.long)
    vegetation_sure = torch.tensor([[[-9.0, -9.0]], [[-9.0, -9.0]], [[9.0, 9.0]]])[None]  # (1, 3, 1, 2)
    building_sure = torch.tensor([[[-9.0, -9.0]], [[9.0, 9.0]], [[-9.0, -9.0]]])[None]
    assert segmentation_loss(vegetation_sure, target, weights) < 1e-3  # vegetation is "not a building"
    assert segmentation_loss(building_sure, target, weights) > 5.0
    # known codes are plain cross entropy
    known = torch.tensor([[[2, 0]]])
    expected = torch.nn.functional.cross_entropy(vegetation_sure, known)
    assert segmentation_loss(vegetation_sure, known, weights) == pytest.approx(float(expected), rel=1e-5)


def test_a_run_with_a_vegetation_output_trains_and_predicts_building_masks(tmp_path, capsys):
    import rasterio

    spec = _channel_scene(tmp_path)
    argv = _train(spec, tmp_path / "run", "relief+roughness") + ["--auxiliary", "vegetation"]
    assert main([str(a) for a in argv]) == 0
    assert main([str(a) for a in ["predict", tmp_path / "run", spec, "--out", tmp_path / "pred", "--quiet"]]) == 0
    with rasterio.open(tmp_path / "pred" / "a_mask.tif") as src:
        assert set(np.unique(src.read(1)).tolist()) <= {0, 1, 255}
    one_line_error(capsys, _train(spec, tmp_path / "run2", "relief") + ["--auxiliary", "water"], "auxiliary")


def test_data_check_lists_channels_and_the_vegetation_share(tmp_path, capsys):
    spec = _channel_scene(tmp_path)
    assert main(["data", "check", str(spec), "--tile-size-px", "32"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()[:2]
    assert "vegetation %" in header and "channels" in header
    assert " fml " in f" {row} " and "ok" in row


def test_microrelief_shows_a_kerb_on_the_ground_model_and_not_a_flat_road():
    ground = np.zeros((64, 64), np.float32)
    ground[:, 32:] = 0.15  # a 15 cm kerb between road and pavement
    elevation = ground.copy()
    elevation[40:60, 40:60] += 9.0  # a building on the pavement: the DTM hides it
    valid = np.ones_like(ground, bool)
    micro = normalise_tile(elevation, valid, "microrelief", 0.5, dtm=ground)[0]
    assert micro[:, 30:32].mean() < -0.15 < 0.15 < micro[:, 32:34].mean()  # the step, on both sides
    assert np.abs(micro[:, :20]).max() < 1e-3 and np.abs(micro[45:55, 45:55]).max() < 0.01
    no_dtm = normalise_tile(elevation, valid, "microrelief", 0.5)[0]
    assert no_dtm.max() == 2.0  # without a DTM, building edges saturate the channel
