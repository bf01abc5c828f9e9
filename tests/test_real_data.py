"""On the real LiDAR data in ../shared/data (skipped with a reason where that folder is absent)."""

from __future__ import annotations

import numpy as np

from demseg.cli import main
from demseg.io import read_dem, read_label_raster, read_vector
from demseg.io.vector import label_geometries, rasterize_labels


def _iou(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    return float((a & b & valid).sum() / ((a | b) & valid).sum())


def test_amsterdam_bag_footprints_rasterised_by_demseg_match_the_label_raster(shared_real):
    folder = shared_real / "ahn3_bag_amsterdam_bag3d"
    dem = read_dem(folder / "dsm.tif")
    labels = read_label_raster(folder / "labels.tif", dem.grid)
    for name in ("bag_pandactueelbestand.geojson", "bag_pand.geojson"):
        footprints = read_vector(folder / "raw" / "bag" / name)
        burned = rasterize_labels(label_geometries(footprints, dem.grid, "buildings"), dem.grid) == 1
        iou = _iou(burned, labels == 1, labels != 255)
        print(f"Amsterdam BAG {name}: IoU with labels.tif = {iou:.4f}")
        assert iou >= 0.97


def test_washington_dc_wgs84_footprints_land_on_the_buildings_of_a_utm_dem(shared_real):
    folder = shared_real / "opengeos_elevation"
    dem = read_dem(folder / "dsm.tif")
    hag = read_dem(folder / "hag.tif")
    footprints = read_vector(folder / "buildings.geojson")
    assert "4326" in footprints.crs and dem.grid.crs.to_epsg() == 26918
    burned = rasterize_labels(label_geometries(footprints, dem.grid, "buildings"), dem.grid) == 1
    elevated = (hag.elevation > 2) & hag.valid_mask
    iou = _iou(burned, elevated, dem.valid_mask)
    on_elevated = float((burned & elevated).sum() / burned.sum())
    shifted = np.roll(burned, 3, axis=1)
    shifted_on_elevated = float((shifted & elevated).sum() / shifted.sum())
    print(f"DC footprints: IoU with hag > 2 m = {iou:.3f} (trees are > 2 m too); "
          f"share of footprint pixels above 2 m = {on_elevated:.3f} (shifted 3 px: {shifted_on_elevated:.3f})")
    assert on_elevated > 0.97 and on_elevated > shifted_on_elevated


def test_data_check_over_all_real_data_prints_the_table(shared_real, capsys):
    from conftest import REPO

    code = main(["data", "check", str(REPO / "examples" / "real_data.yaml")])
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    assert len(out.strip().splitlines()) == 1 + 11
    assert "ams_ahn3 " in out and "EPSG:28992" in out and "EPSG:26918" in out


def test_predict_on_the_seville_scene_writes_georeferenced_cogs_and_polygons(shared_real, tmp_path):
    import rasterio
    import torch
    from rasterio import features
    from rio_cogeo.cogeo import cog_validate

    from demseg.data.synth import generate_world
    from demseg.evaluate.metrics import SegmentationScorer
    from demseg.predict import predict_scene
    from demseg.runs.config import TrainConfig
    from demseg.train.run import train_run

    torch.set_num_threads(1)
    folder = shared_real / "pnoa2018_sevilla_cityshademapper" / "catedral_1m"
    # a small UNet trained on a synthetic world at Seville's 1 m pixel size (Seville has one tile only)
    world = generate_world(tmp_path / "world", scenes=4, size_px=256, pixel_size_m=1.0, seed=11, progress=False)
    config = TrainConfig(task="buildings", model="unet", unet_width=8, tile_size_px=64, train_tiles=24, val_tiles=8,
                         iters=60, val_every=20, lr=3e-3, backbone_dtype="fp32", amp="off", min_valid_fraction=0.5)
    train_run(world, config, tmp_path / "run", SegmentationScorer, progress=False)
    paths = predict_scene(tmp_path / "run", folder / "dsm.tif", tmp_path / "pred", dtm_path=folder / "dtm.tif",
                          progress=False)
    with rasterio.open(folder / "dsm.tif") as src, rasterio.open(paths["mask"]) as mask:
        assert mask.crs == src.crs and mask.transform.almost_equals(src.transform)
        assert (mask.width, mask.height) == (src.width, src.height)
        grid_transform, shape = src.transform, (src.height, src.width)
    assert cog_validate(str(paths["mask"]))[0] and cog_validate(str(paths["prob"]))[0]
    truth = read_label_raster(folder / "building_class6.tif", read_dem(folder / "dsm.tif").grid) == 1
    polygons = read_vector(paths["vectors"], layer="buildings")
    burnt = features.rasterize(((g, 1) for g in polygons.geometries), out_shape=shape,
                               transform=grid_transform).astype(bool) if len(polygons) else np.zeros(shape, bool)
    iou = _iou(burnt, truth, np.ones(shape, bool))
    print(f"Seville catedral: {len(polygons)} predicted building polygons, IoU with LiDAR class 6 = {iou:.3f}")
    assert iou > 0.3
