"""Whole-scene prediction: georeferenced COGs, blending, bounded memory, vectors, scale-out, failures."""

from __future__ import annotations

import errno
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from conftest import write_raster
from rasterio import features
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate
from torch import nn

from demseg.data.synth import generate_world
from demseg.errors import DemsegError
from demseg.evaluate.metrics import SegmentationScorer
from demseg.io.folders import folder_lock
from demseg.io.raster import GridSpec, open_grid, read_label_raster, write_geotiff
from demseg.io.vector import read_vector
from demseg.predict import DemInput, PredictConfig, predict_many, predict_scene, sliding, vectorise_mask
from demseg.predict.sliding import NODATA, StripAccumulator, predict_rasters
from demseg.runs.config import TrainConfig
from demseg.train.run import train_run

TILE = 64
PIXEL_M = 0.5


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread: on a busy 2-core machine, two spinning threads make tiny models ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Three 256 px synthetic scenes at 0.5 m (EPSG:32631) with DEM, DTM, labels and vectors."""
    return generate_world(tmp_path_factory.mktemp("world"), scenes=3, size_px=256, seed=0, progress=False)


@pytest.fixture(scope="module")
def run_dir(world, tmp_path_factory) -> Path:
    """A UNet run trained for a few iterations on 64 px tiles (seconds)."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(task="buildings", model="unet", unet_width=4, tile_size_px=TILE, train_tiles=4, val_tiles=4,
                         iters=4, val_every=2, backbone_dtype="fp32", amp="off", min_valid_fraction=0.5)
    train_run(world, config, out, SegmentationScorer, overwrite=True, progress=False)
    return out


def scene(world: Path, index: int = 0) -> Path:
    return world.parent / f"s{index:03d}"


def config_for(task: str = "buildings", tile: int = TILE) -> TrainConfig:
    return TrainConfig(task=task, model="unet", tile_size_px=tile, pixel_size_m=PIXEL_M, recipe="relief+slope",
                       amp="off")


class ConstantModel(nn.Module):
    """Logits (0, c) everywhere: the target probability is sigmoid(c) whatever the input."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(float(logit)), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(x[:, 0])
        return torch.stack([zeros, zeros + self.logit], dim=1)


class ReliefModel(nn.Module):
    """A pixel-wise 'oracle': target where the relief channel says > 2.5 m above ground."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 20.0 * (x[:, 0] - 0.25)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def read_band(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), dict(crs=src.crs, transform=src.transform, nodata=src.nodata,
                                 blocks=src.block_shapes[0], overviews=src.overviews(1))


def flat_dem(path: Path, height: int, width: int, nodata_box: tuple[slice, slice] | None = None) -> Path:
    """A gently sloping DEM with one 'building' and optionally a nodata box."""
    rows, cols = np.mgrid[0:height, 0:width]
    dem = (20 + 0.01 * rows + 0.02 * cols).astype(np.float32)
    dem[height // 4:height // 4 + 12, width // 4:width // 4 + 16] += 8.0
    if nodata_box is not None:
        dem[nodata_box] = -9999.0
    return write_raster(path, dem, pixel_size_m=PIXEL_M)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


# ------------------------------------------------------------------------------- outputs, georeferencing


def test_outputs_are_cogs_on_the_input_grid(run_dir, world, tmp_path):
    dem = scene(world) / "dem.tif"
    paths = predict_scene(run_dir, dem, tmp_path, dtm_path=scene(world) / "dtm.tif", progress=False)
    assert set(paths) == {"mask", "prob", "vectors", "preview", "done"}
    grid = open_grid(dem)
    for name in ("mask", "prob"):
        values, meta = read_band(paths[name])
        assert values.shape == grid.shape
        assert meta["crs"] == grid.crs
        assert meta["transform"] == grid.transform
        assert meta["nodata"] == NODATA
        assert meta["blocks"] == (512, 512)
        assert cog_validate(str(paths[name]))[0]
    mask, _ = read_band(paths["mask"])
    prob, _ = read_band(paths["prob"])
    assert set(np.unique(mask)) <= {0, 1, NODATA}
    assert prob[prob != NODATA].max() <= 100
    np.testing.assert_array_equal(mask == 1, (prob > 50) & (prob != NODATA))
    layer = read_vector(paths["vectors"], layer="buildings")
    assert CRS.from_user_input(layer.crs) == grid.crs
    assert {"area_m2", "mean_height_m", "mean_probability"} <= set(layer.attributes)
    record = json.loads(paths["done"].read_text())
    assert record["crs_differs_from_training"] is False
    assert set(record["outputs"]) == {"mask", "prob", "vectors", "preview"}


def test_big_scene_cog_has_overviews(tmp_path):
    dem = flat_dem(tmp_path / "big.tif", 1100, 600)
    paths = predict_scene((ConstantModel(1.0), config_for()), dem, tmp_path / "out", progress=False)
    for name in ("mask", "prob"):
        _, meta = read_band(paths[name])
        assert meta["overviews"] == [2, 4]
        assert cog_validate(str(paths[name]))[0]


def test_predicted_polygons_overlap_true_buildings(run_dir, world, tmp_path):
    dem, dtm = scene(world) / "dem.tif", scene(world) / "dtm.tif"
    grid = open_grid(dem)
    truth = features.rasterize(((g, 1) for g in read_vector(scene(world) / "buildings.gpkg").geometries),
                               out_shape=grid.shape, transform=grid.transform).astype(bool)
    trained = predict_scene(run_dir, dem, tmp_path / "trained", dtm_path=dtm, progress=False)
    oracle = predict_scene((ReliefModel(), config_for()), dem, tmp_path / "oracle", dtm_path=dtm, progress=False)
    scores = {}
    for name, paths in (("trained 4 iterations", trained), ("relief > 2.5 m", oracle)):
        layer = read_vector(paths["vectors"], layer="buildings")
        if len(layer):
            assert shapely.contains(shapely.box(*grid.bounds), layer.geometries).all()
            burnt = features.rasterize(((g, 1) for g in layer.geometries), out_shape=grid.shape,
                                       transform=grid.transform).astype(bool)
        else:
            burnt = np.zeros(grid.shape, bool)
        scores[name] = iou(burnt, truth)
    print(f"building IoU of predicted polygons vs buildings.gpkg: {scores}")
    # trees are above 2.5 m too, so the oracle is far from perfect, but a flipped or shifted
    # grid would give almost no overlap
    assert scores["relief > 2.5 m"] > 0.3
    heights = read_vector(oracle["vectors"], layer="buildings").attributes["mean_height_m"]
    assert np.isfinite(heights).all() and (heights > 2.5).all()


def test_vectoriser_on_perfect_mask_recovers_buildings_in_any_block_size(world, tmp_path):
    grid = open_grid(scene(world) / "labels.tif")
    labels = read_label_raster(scene(world) / "labels.tif", grid)
    mask_path = write_geotiff(tmp_path / "mask.tif", np.where(labels == 255, 255, labels == 1).astype(np.uint8),
                              grid, nodata=255)
    source = DemInput(scene(world) / "dem.tif", scene(world) / "dtm.tif")
    truth = read_vector(scene(world) / "buildings.gpkg")
    whole = vectorise_mask(mask_path, "buildings", source=source)["buildings"]
    blocks = vectorise_mask(mask_path, "buildings", source=source, config=PredictConfig(block_rows=40))["buildings"]
    burnt = features.rasterize(((g, 1) for g in whole.geometries), out_shape=grid.shape, transform=grid.transform)
    true = features.rasterize(((g, 1) for g in truth.geometries), out_shape=grid.shape, transform=grid.transform)
    score = iou(burnt.astype(bool), true.astype(bool))
    print(f"vectorised perfect mask vs buildings.gpkg: IoU {score:.3f}, {len(whole)} of {len(truth)} polygons")
    assert score >= 0.9
    assert len(whole) == len(blocks) > 0
    order = np.argsort([g.centroid.x * 1e7 + g.centroid.y for g in whole.geometries])
    order_blocks = np.argsort([g.centroid.x * 1e7 + g.centroid.y for g in blocks.geometries])
    assert shapely.equals_exact(whole.geometries[order], blocks.geometries[order_blocks], tolerance=1e-6).all()
    np.testing.assert_allclose(whole.attributes["mean_height_m"][order],
                               blocks.attributes["mean_height_m"][order_blocks])
    # roof heights: between the eaves (> 2 m) and the highest ridge of the scene
    assert (whole.attributes["mean_height_m"] > 2.0).all()
    assert (whole.attributes["mean_height_m"] <= truth.attributes["height_m"].max() + 0.5).all()
    regular = vectorise_mask(mask_path, "buildings", source=source, config=PredictConfig(regularise=True))["buildings"]
    assert len(regular) == len(whole)
    assert regular.attributes["vertices"].mean() < 0.5 * whole.attributes["vertices"].mean()
    assert (regular.attributes["max_height_m"] >= regular.attributes["mean_height_m"]).all()
    assert (regular.attributes["height_range_m"] >= 0).all()
    union_regular, union_exact = shapely.union_all(regular.geometries), shapely.union_all(whole.geometries)
    assert union_regular.intersection(union_exact).area / union_regular.union(union_exact).area > 0.9


def test_min_area_drops_small_polygons(world, tmp_path):
    grid = GridSpec(CRS.from_epsg(32631), from_origin(500000, 5400000, PIXEL_M, PIXEL_M), 80, 80)
    mask = np.zeros((80, 80), np.uint8)
    mask[10:14, 10:14] = 1  # 4 m2
    mask[40:60, 40:60] = 1  # 100 m2
    path = write_geotiff(tmp_path / "mask.tif", mask, grid, nodata=255)
    layer = vectorise_mask(path, "buildings", config=PredictConfig(min_area_m2=10))["buildings"]
    assert len(layer) == 1
    assert layer.attributes["area_m2"][0] == pytest.approx(100.0)
    assert np.isnan(layer.attributes["mean_height_m"][0])  # no DTM: no height


# ----------------------------------------------------------------------------------- blending, memory


def test_constant_model_gives_constant_probability_without_seams(tmp_path):
    dem = flat_dem(tmp_path / "dem.tif", 150, 170)
    logit = float(np.log(0.6 / 0.4))
    for tta in (False, True):
        paths = predict_scene((ConstantModel(logit), config_for()), dem, tmp_path / f"tta{tta}", PredictConfig(tta=tta),
                              progress=False)
        prob, _ = read_band(paths["prob"])
        mask, _ = read_band(paths["mask"])
        assert (prob == 60).all()
        assert (mask == 1).all()


def test_overlap_does_not_change_the_output_grid(tmp_path):
    dem = flat_dem(tmp_path / "dem.tif", 150, 170)
    metas = []
    for overlap in (0.0, 0.25):
        paths = predict_scene((ReliefModel(), config_for()), dem, tmp_path / f"o{overlap}", PredictConfig(overlap=overlap),
                              progress=False)
        values, meta = read_band(paths["mask"])
        metas.append((values.shape, meta["crs"], meta["transform"]))
    assert metas[0] == metas[1]
    assert metas[0][0] == (150, 170)


def test_tta_of_a_pixelwise_model_changes_nothing(tmp_path):
    dem = flat_dem(tmp_path / "dem.tif", 100, 120)
    outputs = [read_band(predict_scene((ReliefModel(), config_for()), dem, tmp_path / f"t{tta}", PredictConfig(tta=tta),
                                       progress=False)["prob"])[0] for tta in (False, True)]
    assert (outputs[0] > 50).any()  # the building is found
    assert np.abs(outputs[0].astype(int) - outputs[1].astype(int)).max() <= 1


def test_blend_weights_are_smooth_and_floored():
    weights = sliding.blend_weights(TILE)
    assert weights.shape == (TILE, TILE)
    assert weights.min() == pytest.approx(sliding.WEIGHT_FLOOR)
    assert weights[TILE // 2, TILE // 2] > 0.99
    assert sliding.window_offsets(150, 64, 48) == [0, 48, 86]
    assert sliding.window_offsets(40, 64, 48) == [0]


def test_accumulator_strip_does_not_grow_with_scene_height(tmp_path, monkeypatch):
    shapes, peaks = [], []
    original = StripAccumulator.__init__

    def recording(self, tile_size_px, width_px):
        original(self, tile_size_px, width_px)
        shapes.append(self.shape)

    monkeypatch.setattr(StripAccumulator, "__init__", recording)
    model, config = ConstantModel(0.0), config_for()
    for height in (128, 512):
        source = DemInput(flat_dem(tmp_path / f"dem{height}.tif", height, 200))
        grid = source.grid()
        tracemalloc.start()
        predict_rasters(model, config, source, grid, tmp_path / f"m{height}.tif", tmp_path / f"p{height}.tif")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert shapes == [(TILE, 200), (TILE, 200)]
    # numpy's allocations: four times the rows, about the same peak
    assert peaks[1] < 1.3 * peaks[0]


# --------------------------------------------------------------------------------------- nodata


def test_nodata_in_is_nodata_out(tmp_path):
    box = (slice(30, 70), slice(0, 55))
    dem = flat_dem(tmp_path / "dem.tif", 120, 130, nodata_box=box)
    paths = predict_scene((ReliefModel(), config_for()), dem, tmp_path / "out", progress=False)
    expected = np.zeros((120, 130), bool)
    expected[box] = True
    for name in ("mask", "prob"):
        values, _ = read_band(paths[name])
        np.testing.assert_array_equal(values == NODATA, expected)


def test_scene_smaller_than_a_window_is_padded_and_cropped(tmp_path):
    dem = flat_dem(tmp_path / "small.tif", 40, 50)
    paths = predict_scene((ConstantModel(2.0), config_for()), dem, tmp_path / "out", progress=False)
    mask, meta = read_band(paths["mask"])
    assert mask.shape == (40, 50)
    assert (mask == 1).all()
    assert meta["transform"] == open_grid(dem).transform


# ------------------------------------------------------------------------------------------ roads


def test_centreline_of_a_band_is_one_line_of_the_right_length_and_width(tmp_path):
    grid = GridSpec(CRS.from_epsg(32631), from_origin(500000, 5400000, PIXEL_M, PIXEL_M), 300, 300)
    horizontal = np.zeros((300, 300), np.uint8)
    horizontal[100:110, 50:250] = 1  # 100 m long, 5 m wide
    vertical = horizontal.T.copy()
    for name, mask in (("horizontal", horizontal), ("vertical", vertical)):
        path = write_geotiff(tmp_path / f"{name}.tif", mask, grid, nodata=255)
        for block_rows in (None, 37):
            layers = vectorise_mask(path, "roads", config=PredictConfig(block_rows=block_rows, halo_px=32))
            lines = layers["road_edges"]
            assert len(lines) == 1, (name, block_rows)
            assert sorted(layers["road_nodes"].attributes["degree"].tolist()) == [1, 1]
            assert 90.0 <= lines.attributes["length_m"][0] <= 100.0
            assert lines.attributes["width_m"][0] == pytest.approx(5.0, abs=0.6)
            assert len(layers["roads"]) == 1
            assert layers["roads"].attributes["area_m2"][0] == pytest.approx(500.0)


def test_crossing_roads_give_four_arms(tmp_path):
    grid = GridSpec(CRS.from_epsg(32631), from_origin(500000, 5400000, PIXEL_M, PIXEL_M), 300, 300)
    mask = np.zeros((300, 300), np.uint8)
    mask[100:110, 50:250] = 1
    mask[20:280, 140:150] = 1
    path = write_geotiff(tmp_path / "cross.tif", mask, grid, nodata=255)
    layers = vectorise_mask(path, "roads", config=PredictConfig(block_rows=64, halo_px=32))
    lines = layers["road_edges"]
    assert len(lines) == 4
    assert lines.attributes["length_m"].sum() == pytest.approx(100 + 130 - 5, abs=10)
    assert sorted(layers["road_nodes"].attributes["degree"].tolist()) == [1, 1, 1, 1, 4]


# ------------------------------------------------------------------------------------- scale-out


def test_two_scenes_on_a_dask_cluster_match_the_single_process_run(run_dir, world, tmp_path):
    dems = [scene(world, i) / "dem.tif" for i in (0, 1)]
    single = predict_many(run_dir, dems, tmp_path / "single", progress=False)
    assert sorted(single) == ["s000_dem", "s001_dem"]  # both files are dem.tif: folder names keep them apart
    distributed = predict_many(run_dir, dems, tmp_path / "dask", PredictConfig(workers=2), progress=False)
    for stem in single:
        a, _ = read_band(single[stem]["mask"])
        b, _ = read_band(distributed[stem]["mask"])
        np.testing.assert_array_equal(a, b)


def test_two_scenes_on_an_external_dask_cluster_match_the_single_process_run(run_dir, world, tmp_path,
                                                                             external_cluster):
    dems = [scene(world, i) / "dem.tif" for i in (0, 1)]
    single = predict_many(run_dir, dems, tmp_path / "single", progress=False)
    remote = predict_many(run_dir, dems, tmp_path / "remote", PredictConfig(scheduler=external_cluster),
                          progress=False)
    for stem in single:
        for name in ("mask", "prob"):
            np.testing.assert_array_equal(read_band(single[stem][name])[0], read_band(remote[stem][name])[0])
        assert json.loads(remote[stem]["done"].read_text())["valid_pixels"] > 0


def test_rerun_skips_completed_scenes(run_dir, world, tmp_path):
    spec = world  # a dataset spec: each scene's dem and dtm, outputs named by scene id
    first = predict_many(run_dir, [spec], tmp_path, progress=False)
    assert sorted(first) == ["s000", "s001", "s002"]
    stamps = {stem: paths["mask"].stat().st_mtime_ns for stem, paths in first.items()}
    predict_many(run_dir, [spec], tmp_path, progress=False)
    assert {stem: paths["mask"].stat().st_mtime_ns for stem, paths in first.items()} == stamps
    first["s001"]["prob"].unlink()  # an incomplete scene is predicted again, the others are not
    predict_many(run_dir, [spec], tmp_path, progress=False)
    assert first["s001"]["prob"].exists()
    assert first["s001"]["mask"].stat().st_mtime_ns != stamps["s001"]
    assert first["s000"]["mask"].stat().st_mtime_ns == stamps["s000"]
    predict_many(run_dir, [spec], tmp_path, PredictConfig(overlap=0.5), progress=False)  # other settings: all again
    assert first["s000"]["mask"].stat().st_mtime_ns != stamps["s000"]


# ---------------------------------------------------------------------------------------- failures


def _failing_writer(monkeypatch, error: BaseException, after_calls: int = 2):
    calls = {"n": 0}
    original = sliding.write_rows

    def write_rows(dataset, rows, row_off):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise error
        original(dataset, rows, row_off)

    monkeypatch.setattr(sliding, "write_rows", write_rows)
    return calls


def test_disk_full_mid_write_leaves_no_file(tmp_path, monkeypatch):
    dem = flat_dem(tmp_path / "dem.tif", 200, 100)
    out = tmp_path / "out"
    calls = _failing_writer(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DemsegError, match="(?i)no space left"):
        predict_scene((ReliefModel(), config_for()), dem, out, progress=False)
    assert calls["n"] == 3
    assert files_in(out) == []


def test_killed_run_leaves_no_file(tmp_path, monkeypatch):
    dem = flat_dem(tmp_path / "dem.tif", 200, 100)
    out = tmp_path / "out"
    _failing_writer(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        predict_scene((ReliefModel(), config_for()), dem, out, progress=False)
    assert files_in(out) == []


def test_rerun_removes_what_a_hard_kill_left(tmp_path):
    dem = flat_dem(tmp_path / "dem.tif", 60, 60)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".dem_mask.k1ll3d.partial.tif").write_bytes(b"half a file")
    (out / ".dem.scratch.k1ll3d.partial").mkdir()
    (out / ".dem.scratch.k1ll3d.partial" / "mask.tif").write_bytes(b"")
    (out / ".other_mask.abc.partial.tif").write_bytes(b"another scene's, maybe still running")
    predict_scene((ReliefModel(), config_for()), dem, out, progress=False)
    assert files_in(out) == [".other_mask.abc.partial.tif", "dem_done.json", "dem_mask.tif", "dem_preview.png",
                             "dem_prob.tif", "dem_vectors.gpkg"]


def test_a_scene_being_predicted_by_another_process_is_refused(tmp_path):
    dem = flat_dem(tmp_path / "dem.tif", 60, 60)
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, "dem"), pytest.raises(DemsegError, match="another demseg process"):
        predict_scene((ReliefModel(), config_for()), dem, out, progress=False)
    predict_scene((ReliefModel(), config_for()), dem, out, progress=False)  # released: fine again
    assert "dem_done.json" in files_in(out)


def test_run_folder_without_model_is_refused(world, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(config_for().model_dump_json())
    with pytest.raises(DemsegError, match="not a demseg run folder"):
        predict_scene(tmp_path / "run", scene(world) / "dem.tif", tmp_path / "out", progress=False)


def test_unwritable_output_folder_is_refused(tmp_path):
    dem = flat_dem(tmp_path / "dem.tif", 50, 50)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DemsegError, match="output folder"):
        predict_scene((ReliefModel(), config_for()), dem, blocker / "out", progress=False)


def test_pixel_size_mismatch_is_refused_without_resampling_unless_allowed(tmp_path):
    rows, cols = np.mgrid[0:80, 0:80]
    dem = write_raster(tmp_path / "coarse.tif", (10 + 0.01 * rows + 0 * cols).astype(np.float32), pixel_size_m=1.0)
    with pytest.raises(DemsegError, match=r"1 m .*0\.5 m.*gdalwarp -tr 0\.5 0\.5"):
        predict_scene((ReliefModel(), config_for()), dem, tmp_path / "refused", PredictConfig(resample=False),
                      progress=False)
    assert files_in(tmp_path / "refused") == []
    paths = predict_scene((ReliefModel(), config_for()), dem, tmp_path / "allowed",
                          PredictConfig(resample=False, allow_resolution_mismatch=True), progress=False)
    assert "differs" in json.loads(paths["done"].read_text())["resolution_warning"]


def test_a_dem_at_another_pixel_size_is_predicted_resampled_to_the_runs_on_the_same_extent(tmp_path):
    """A 1 m DEM with a 0.5 m run: read window by window at 0.5 m, the building found where it stands."""
    rows, cols = np.mgrid[0:90, 0:70]
    heights = (20 + 0.01 * rows + 0.02 * cols).astype(np.float32)
    heights[20:40, 10:30] += 8.0
    heights[70:, :10] = -9999.0  # nodata stays nodata, never a height of 0
    dem = write_raster(tmp_path / "coarse.tif", heights, pixel_size_m=1.0)
    paths = predict_scene((ReliefModel(), config_for()), dem, tmp_path / "pred", progress=False)
    mask, meta = read_band(paths["mask"])
    with rasterio.open(dem) as src:
        assert meta["crs"] == src.crs and mask.shape == (180, 140)
        assert meta["transform"].a == 0.5 and (meta["transform"].c, meta["transform"].f) == (src.bounds.left,
                                                                                           src.bounds.top)
    truth = np.zeros((180, 140), bool)
    truth[40:80, 20:60] = True
    assert iou(mask == 1, truth) > 0.85
    assert (mask[144:, :20] == NODATA).all() and (mask[:130, 30:] != NODATA).all()
    done = json.loads(paths["done"].read_text())
    assert done["resampled_from_m"] == 1.0 and done["pixel_size_m"] == 0.5 and done["resolution_warning"] is None


def test_dem_in_another_crs_is_predicted_and_recorded(run_dir, tmp_path):
    dem = flat_dem(tmp_path / "dem.tif", 80, 80)  # EPSG:32631, like the training world
    with rasterio.open(dem) as src:
        profile, values = src.profile, src.read()
    profile["crs"] = "EPSG:2154"
    with rasterio.open(tmp_path / "lambert.tif", "w", **profile) as dst:
        dst.write(values)
    paths = predict_scene(run_dir, tmp_path / "lambert.tif", tmp_path / "out", progress=False)
    record = json.loads(paths["done"].read_text())
    assert record["crs"] == "EPSG:2154"
    assert record["training_crs"] == ["EPSG:32631"]
    assert record["crs_differs_from_training"] is True
    assert read_band(paths["mask"])[1]["crs"] == CRS.from_epsg(2154)
