"""Reading elevation and labels: dtypes, nodata, CRS, vectors in other CRSs, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from conftest import ORIGIN, UTM31, write_raster
from pyproj import Transformer

from demseg.errors import DemsegError
from demseg.io import atomic_path, read_dem, read_label_raster, read_vector, write_geotiff
from demseg.io.raster import open_grid
from demseg.io.vector import VectorLayer, label_geometries, rasterize_labels, write_gpkg


def test_dem_of_any_dtype_is_float32_with_declared_nodata_masked(tmp_path):
    heights = np.array([[0, 5, -32768], [12, 0, 7]], dtype=np.int16)
    path = write_raster(tmp_path / "dem.tif", heights, nodata=-32768)
    dem = read_dem(path)
    assert dem.elevation.dtype == np.float32
    assert dem.valid_mask.tolist() == [[True, True, False], [True, True, True]]
    assert np.isnan(dem.elevation[0, 2])


def test_zero_metres_is_a_real_elevation_not_nodata(tmp_path):
    path = write_raster(tmp_path / "dem.tif", np.zeros((4, 4), np.float32), nodata=None)
    dem = read_dem(path)
    assert dem.valid_mask.all()
    assert float(dem.elevation.sum()) == 0.0


def test_nan_is_invalid_even_without_declared_nodata(tmp_path):
    heights = np.ones((3, 3), np.float32)
    heights[1, 1] = np.nan
    dem = read_dem(write_raster(tmp_path / "dem.tif", heights, nodata=None))
    assert dem.valid_mask.sum() == 8


def test_dem_keeps_crs_transform_and_pixel_size(tmp_path):
    dem = read_dem(write_raster(tmp_path / "dem.tif", np.ones((8, 6), np.float32), pixel_size_m=0.5))
    assert dem.grid.crs.to_string() == UTM31
    assert dem.grid.pixel_size_m == 0.5
    assert dem.grid.transform.c == ORIGIN[0] and dem.grid.transform.f == ORIGIN[1]
    assert dem.grid.shape == (8, 6)


def test_multiband_dem_needs_a_band(tmp_path):
    path = write_raster(tmp_path / "dem.tif", np.stack([np.ones((4, 4)), 2 * np.ones((4, 4))]).astype(np.float32))
    with pytest.raises(DemsegError, match="--band"):
        read_dem(path)
    assert float(read_dem(path, band=2).elevation.mean()) == 2.0


def test_raster_without_crs_needs_explicit_crs(tmp_path):
    path = write_raster(tmp_path / "dem.tif", np.ones((4, 4), np.float32), crs=None)
    with pytest.raises(DemsegError, match="--crs"):
        read_dem(path)
    assert read_dem(path, crs="EPSG:2154").grid.crs.to_epsg() == 2154


def test_missing_corrupt_and_non_raster_files_are_clear_errors(tmp_path):
    with pytest.raises(DemsegError, match="not found"):
        read_dem(tmp_path / "nope.tif")
    (tmp_path / "notes.tif").write_text("hello, not a raster")
    with pytest.raises(DemsegError, match="not a readable raster"):
        read_dem(tmp_path / "notes.tif")
    good = write_raster(tmp_path / "big.tif", np.random.default_rng(0).random((256, 256)).astype(np.float32))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DemsegError, match="corrupt|not a readable"):
        read_dem(truncated)


def test_all_nodata_dem_is_refused(tmp_path):
    path = write_raster(tmp_path / "dem.tif", np.full((4, 4), -9999.0, np.float32))
    with pytest.raises(DemsegError, match="all nodata"):
        read_dem(path)


def test_label_raster_on_another_grid_is_refused(scene_dir, tmp_path):
    grid = open_grid(scene_dir / "dem.tif")
    shifted = write_raster(tmp_path / "shifted.tif", np.zeros((96, 96), np.uint8), nodata=255,
                           origin=(ORIGIN[0] + 1.0, ORIGIN[1]))
    with pytest.raises(DemsegError, match="different grid"):
        read_label_raster(shifted, grid)
    other_crs = write_raster(tmp_path / "crs.tif", np.zeros((96, 96), np.uint8), nodata=255, crs="EPSG:32632")
    with pytest.raises(DemsegError, match="CRS"):
        read_label_raster(other_crs, grid)
    assert read_label_raster(scene_dir / "labels.tif", grid).shape == (96, 96)


def _square_in_wgs84(grid, row0, col0, size_px):
    to_wgs84 = Transformer.from_crs(UTM31, "EPSG:4326", always_xy=True)
    left = ORIGIN[0] + col0 * grid.pixel_size_m
    top = ORIGIN[1] - row0 * grid.pixel_size_m
    side = size_px * grid.pixel_size_m
    ring = [(left, top), (left + side, top), (left + side, top - side), (left, top - side)]
    return shapely.Polygon([to_wgs84.transform(x, y) for x, y in ring])


def test_vector_labels_in_another_crs_are_reprojected_onto_the_dem_grid(scene_dir, tmp_path):
    grid = open_grid(scene_dir / "dem.tif")
    polygon = _square_in_wgs84(grid, row0=10, col0=20, size_px=30)
    geojson = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(polygon)}]}
    path = tmp_path / "buildings.geojson"
    path.write_text(json.dumps(geojson))
    mask = rasterize_labels(label_geometries(read_vector(path), grid, "buildings"), grid)
    expected = np.zeros(grid.shape, np.uint8)
    expected[10:40, 20:50] = 1
    # reprojection bends straight edges slightly: allow a one-pixel rim
    assert (mask != expected).sum() <= 2 * 30
    assert mask[12:38, 22:48].all() and mask.sum() > 0.9 * 900


def test_road_lines_are_buffered_by_width_attribute_or_default(scene_dir, tmp_path):
    grid = open_grid(scene_dir / "dem.tif")
    y = ORIGIN[1] - 48.0  # on a pixel edge, so a 6 m buffer covers exactly 6 pixel centres
    line = shapely.LineString([(ORIGIN[0] + 10, y), (ORIGIN[0] + 80, y)])
    layer = VectorLayer(np.array([line]), {"width": np.array([6.0])}, UTM31)
    mask = rasterize_labels(label_geometries(layer, grid, "roads"), grid)
    assert mask[:, 40].sum() == 6  # 6 m wide at 1 m pixels
    no_width = VectorLayer(np.array([line]), {}, UTM31)
    with pytest.raises(DemsegError, match="width"):
        label_geometries(no_width, grid, "roads")
    assert rasterize_labels(label_geometries(no_width, grid, "roads", road_width_m=10), grid)[:, 40].sum() == 10


def test_vectors_that_miss_the_dem_are_refused(scene_dir):
    grid = open_grid(scene_dir / "dem.tif")
    far = shapely.box(ORIGIN[0] + 5000, ORIGIN[1] + 5000, ORIGIN[0] + 5010, ORIGIN[1] + 5010)
    with pytest.raises(DemsegError, match="do not overlap"):
        rasterize_labels(label_geometries(VectorLayer(np.array([far]), {}, UTM31), grid, "buildings"), grid)


def test_geotiff_and_gpkg_writes_round_trip(scene_dir, tmp_path):
    grid = open_grid(scene_dir / "dem.tif")
    array = np.arange(96 * 96, dtype=np.float32).reshape(96, 96)
    out = write_geotiff(tmp_path / "out" / "x.tif", array, grid, nodata=-9999.0)
    again = read_dem(out)
    assert again.grid.same_as(grid) and np.array_equal(again.elevation, array)
    layer = VectorLayer(np.array([shapely.box(ORIGIN[0], ORIGIN[1] - 10, ORIGIN[0] + 10, ORIGIN[1])]),
                        {"area_m2": np.array([100.0])}, UTM31)
    gpkg = write_gpkg(tmp_path / "v.gpkg", {"buildings": layer, "empty": VectorLayer(np.array([]), {}, UTM31)}, grid.crs)
    back = read_vector(gpkg, layer="buildings")
    assert len(back) == 1 and back.attributes["area_m2"][0] == 100.0


def test_failed_write_leaves_no_file_behind(tmp_path):
    target = tmp_path / "result.tif"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("disk full")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_vector_labels_with_hull_coverage_leave_unmapped_areas_unknown(scene_dir, tmp_path):
    from demseg.data.scene import IGNORE, load_scenes
    from demseg.data.spec import load_spec

    squares = [shapely.box(ORIGIN[0] + 10, ORIGIN[1] - 30, ORIGIN[0] + 20, ORIGIN[1] - 20),
               shapely.box(ORIGIN[0] + 30, ORIGIN[1] - 30, ORIGIN[0] + 40, ORIGIN[1] - 20)]
    write_gpkg(tmp_path / "b.gpkg", {"buildings": VectorLayer(np.array(squares), {}, UTM31)}, UTM31)
    for coverage in ("extent", "hull"):
        (tmp_path / f"{coverage}.yaml").write_text(
            f"name: {coverage}\nscenes:\n  - id: a\n    dem: dem.tif\n"
            f"    labels: {{vector: {{buildings: b.gpkg}}, coverage: {coverage}, coverage_buffer_m: 2}}\n")
    extent = load_scenes(load_spec(tmp_path / "extent.yaml"), ["buildings"])[0].targets["buildings"]
    hull = load_scenes(load_spec(tmp_path / "hull.yaml"), ["buildings"])[0].targets["buildings"]
    assert np.array_equal(extent == 1, hull == 1)  # the features themselves are the same
    assert hull[25, 25] == 0  # between the two squares: inside the hull, mapped background
    assert hull[80, 80] == IGNORE and extent[80, 80] == 0  # far from every feature: unknown with hull
    assert hull[25, 8] == 0 and hull[25, 5] == IGNORE  # the 2 m margin around the hull (x from 10 m)


def test_a_layer_of_polygons_and_multipolygons_is_written_all_multi_as_geopackage_requires(tmp_path):
    import warnings

    import shapely

    from demseg.io.vector import VectorLayer, write_gpkg

    square = shapely.box(0, 0, 1, 1)
    layer = VectorLayer(np.array([square, shapely.MultiPolygon([shapely.box(2, 0, 3, 1), shapely.box(4, 0, 5, 1)])]),
                        {"area_m2": np.array([1.0, 2.0])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GDAL warns when a POLYGON goes into a MULTIPOLYGON layer
        write_gpkg(tmp_path / "mixed.gpkg", {"buildings": layer}, "EPSG:28992")
    import pyogrio

    meta, _, wkb, _ = pyogrio.raw.read(tmp_path / "mixed.gpkg", layer="buildings")
    geometries = shapely.from_wkb(wkb)
    assert meta["geometry_type"] == "MultiPolygon" and set(shapely.get_type_id(geometries).tolist()) == {6}
    assert shapely.area(geometries).tolist() == [1.0, 2.0]
