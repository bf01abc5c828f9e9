"""Outputs open styled in QGIS: default layer styles in the GeoPackage, a colour table on the mask COG."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from demseg.errors import DemsegError
from demseg.io.styles import MASK_COLORMAPS, add_mask_colormap, default_styles, write_layer_styles
from demseg.io.vector import VectorLayer, read_vector, write_gpkg
from demseg.predict.outputs import write_cog

CRS = "EPSG:32631"


def objects(geometries: list) -> np.ndarray:
    array = np.empty(len(geometries), dtype=object)
    array[:] = geometries
    return array


def demseg_layers(heights=(12.5, 30.0)) -> dict[str, VectorLayer]:
    buildings = objects([shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)])
    return {
        "buildings": VectorLayer(buildings, {"area_m2": np.array([100.0, 100.0]),
                                             "mean_height_m": np.array(heights, float)}, CRS),
        "roads": VectorLayer(objects([shapely.box(0, 20, 50, 26)]), {"area_m2": np.array([300.0])}, CRS),
        "road_edges": VectorLayer(objects([shapely.LineString([(0, 23), (50, 23)])]),
                                  {"width_m": np.array([6.0]), "from_node": np.array([0], np.int32),
                                   "to_node": np.array([1], np.int32)}, CRS),
        "road_nodes": VectorLayer(objects([shapely.Point(0, 23), shapely.Point(50, 23)]),
                                  {"node_id": np.array([0, 1], np.int32),
                                   "degree": np.array([1, 1], np.int32)}, CRS),
    }


def styles_table(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT f_table_name, f_geometry_column, styleQML, useAsDefault FROM layer_styles "
                          "ORDER BY f_table_name").fetchall()


def renderer_of(qml: str) -> ET.Element:
    return ET.fromstring(qml).find("renderer-v2")


def test_each_layer_gets_one_default_style_that_names_its_attribute(tmp_path):
    layers = demseg_layers()
    path = write_gpkg(tmp_path / "vectors.gpkg", layers, CRS)
    write_layer_styles(path, default_styles(layers))
    rows = styles_table(path)
    assert [row[0] for row in rows] == sorted(layers)
    assert all(row[1] == "geom" and row[3] == 1 for row in rows)
    attribute = {name: renderer_of(qml).get("attr") for name, _, qml, _ in rows}
    assert "mean_height_m" in attribute["buildings"]
    assert "width_m" in attribute["road_edges"]
    assert "degree" in attribute["road_nodes"]
    assert renderer_of(dict((r[0], r[2]) for r in rows)["roads"]).get("type") == "singleSymbol"
    ranges = renderer_of(rows[0][2]).find("ranges")
    assert len(ranges) == len(renderer_of(rows[0][2]).find("symbols")) > 1


def test_buildings_without_heights_are_graduated_by_area(tmp_path):
    layers = demseg_layers(heights=(np.nan, np.nan))
    assert "area_m2" in renderer_of(default_styles(layers)["buildings"]).get("attr")


def test_writing_styles_again_replaces_them(tmp_path):
    layers = demseg_layers()
    path = write_gpkg(tmp_path / "vectors.gpkg", layers, CRS)
    write_layer_styles(path, default_styles(layers))
    write_layer_styles(path, {"roads": default_styles(layers)["roads"]})
    assert [row[0] for row in styles_table(path)] == sorted(layers)


def test_styles_table_leaves_the_vector_layers_readable_by_gdal(tmp_path):
    layers = demseg_layers()
    path = write_gpkg(tmp_path / "vectors.gpkg", layers, CRS)
    write_layer_styles(path, default_styles(layers))
    listed = dict(pyogrio.list_layers(path).tolist())
    assert set(layers) <= set(listed)
    # write_gpkg names no point type yet, so road_nodes is listed as Unknown geometry
    typed = [listed[name] for name in ("buildings", "roads", "road_edges")]
    assert typed == ["Polygon", "Polygon", "LineString"]
    assert pyogrio.read_info(path, layer="layer_styles")["features"] == 4
    with pytest.warns(UserWarning, match="More than one layer"):
        first = read_vector(path)
    assert len(first) == 2 and "mean_height_m" in first.attributes  # still the buildings, not the styles


def test_styling_a_layer_that_is_not_there_is_refused(tmp_path):
    path = write_gpkg(tmp_path / "vectors.gpkg", {"roads": demseg_layers()["roads"]}, CRS)
    with pytest.raises(DemsegError, match="no layer buildings"):
        write_layer_styles(path, {"buildings": "<qgis/>"})


def write_mask(path, size_px: int = 1100, dtype: str = "uint8"):
    mask = (np.add.outer(np.arange(size_px), np.arange(size_px)) // 50 % 2).astype(dtype)
    mask[:20] = 255
    profile = dict(driver="GTiff", width=size_px, height=size_px, count=1, dtype=dtype, nodata=255, crs=CRS,
                   transform=from_origin(500000, 5400000, 0.5, 0.5), tiled=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask, 1)
    return path


def test_mask_cog_keeps_its_colour_table_and_has_overviews(tmp_path):
    raw = write_mask(tmp_path / "raw.tif")
    add_mask_colormap(raw, "roads")
    cog = write_cog(raw, tmp_path / "mask.tif", "nearest")
    assert cog_validate(cog)[0]
    with rasterio.open(cog) as src:
        assert src.overviews(1)
        assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette
        colours = src.colormap(1)
        # TIFF palettes hold no alpha: entries come back opaque except the nodata one
        assert colours[1] == MASK_COLORMAPS["roads"][1]
        assert colours[0][:3] == MASK_COLORMAPS["roads"][0][:3]
        assert src.read(1, out_shape=(1, 275, 275)).max() <= 255


def test_colour_table_needs_a_uint8_mask(tmp_path):
    with pytest.raises(DemsegError, match="uint8"):
        add_mask_colormap(write_mask(tmp_path / "raw.tif", size_px=64, dtype="uint16"), "buildings")
    with pytest.raises(DemsegError, match="task"):
        add_mask_colormap(write_mask(tmp_path / "raw8.tif", size_px=64), "trees")


# ------------------------------------------------------------------ what demseg predict writes, read back


class RaisedIsTarget(torch.nn.Module):
    """A pixel-wise 'oracle': the target wherever the relief channel says > 2.5 m above the ground."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 20.0 * (x[:, 0] - 0.25)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


@pytest.fixture(scope="module")
def raised_scene(tmp_path_factory):
    """A 600 x 560 px DEM at 0.5 m (larger than one 512 px COG block) with two blocks and two crossing
    raised strips, and its DTM."""
    folder = tmp_path_factory.mktemp("scene")
    rows, cols = np.mgrid[0:600, 0:560]
    dtm = (10 + 0.01 * rows + 0.005 * cols).astype(np.float32)
    raised = np.zeros(dtm.shape, np.float32)
    raised[60:140, 60:180] = 12.0  # 40 x 60 m block
    raised[60:100, 400:480] = 6.0  # 20 x 40 m block
    raised[300:316, 20:540] = 4.0  # an east-west strip, 8 m wide
    raised[200:580, 270:286] = 4.0  # crossed by a north-south one
    dem_path, dtm_path = folder / "dem.tif", folder / "dtm.tif"
    for path, array in ((dem_path, dtm + raised), (dtm_path, dtm)):
        profile = dict(driver="GTiff", width=560, height=600, count=1, dtype="float32", nodata=-9999.0, crs=CRS,
                       transform=from_origin(500000, 5400000, 0.5, 0.5))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array, 1)
    return dem_path, dtm_path


def predicted(task: str, dem_path, dtm_path, out, **options) -> dict:
    from demseg.predict import PredictConfig, predict_scene
    from demseg.runs.config import TrainConfig

    config = TrainConfig(task=task, model="unet", tile_size_px=64, pixel_size_m=0.5, recipe="relief+slope",
                         amp="off")
    return predict_scene((RaisedIsTarget(), config), dem_path, out, PredictConfig(**options), dtm_path=dtm_path,
                         progress=False)


def test_predicted_buildings_open_styled_with_their_attributes_and_a_coloured_mask(raised_scene, tmp_path):
    paths = predicted("buildings", *raised_scene, tmp_path, regularise=True)
    assert dict(pyogrio.list_layers(paths["vectors"]).tolist()) == {"buildings": "Polygon", "layer_styles": None}
    meta, _, geometries, fields = pyogrio.raw.read(paths["vectors"], layer="buildings")
    attributes = dict(zip(meta["fields"], fields, strict=True))
    assert {"area_m2", "mean_height_m", "max_height_m", "height_range_m", "vertices",
            "mean_probability"} <= set(attributes)
    tall = int(np.argmax(attributes["mean_height_m"]))
    assert attributes["mean_height_m"][tall] == pytest.approx(12.0, abs=0.5)  # the block 12 m above its DTM...
    assert attributes["area_m2"][tall] == pytest.approx(2400, rel=0.05)  # ...40 x 60 m...
    assert attributes["vertices"][tall] == 4  # ...regularised: a rectangle, not pixel stairs
    assert ((attributes["mean_probability"] > 0.5) & (attributes["mean_probability"] <= 1)).all()
    assert [row[0] for row in styles_table(paths["vectors"])] == ["buildings"]
    assert "mean_height_m" in renderer_of(styles_table(paths["vectors"])[0][2]).get("attr")
    with rasterio.open(paths["mask"]) as src:
        assert src.overviews(1) == [2] and src.colormap(1)[1] == MASK_COLORMAPS["buildings"][1]
    assert cog_validate(str(paths["mask"]))[0]


def test_predicted_roads_are_a_styled_network_of_edges_and_nodes(raised_scene, tmp_path):
    paths = predicted("roads", *raised_scene, tmp_path)
    layers = dict(pyogrio.list_layers(paths["vectors"]).tolist())
    assert layers == {"roads": "Polygon", "road_edges": "LineString", "road_nodes": "Point", "layer_styles": None}
    meta, _, _, fields = pyogrio.raw.read(paths["vectors"], layer="road_edges")
    edges = dict(zip(meta["fields"], fields, strict=True))
    assert {"length_m", "width_m", "mean_probability", "from_node", "to_node"} <= set(edges)
    strips = np.abs(edges["width_m"] - 8.0) <= 1.0
    assert strips.sum() >= 4  # the four arms of the crossing strips, 8 m wide
    assert (edges["length_m"][strips] > 45).all() and (edges["mean_probability"][strips] > 0.9).all()
    meta, _, _, fields = pyogrio.raw.read(paths["vectors"], layer="road_nodes")
    degree = dict(zip(meta["fields"], fields, strict=True))["degree"]
    assert (degree == 4).sum() == 1  # one crossing
    assert [row[0] for row in styles_table(paths["vectors"])] == ["road_edges", "road_nodes", "roads"]
    with rasterio.open(paths["mask"]) as src:
        assert src.colormap(1)[1] == MASK_COLORMAPS["roads"][1]
