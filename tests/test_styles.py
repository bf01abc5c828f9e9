"""Outputs open styled in QGIS: default layer styles in the GeoPackage, a colour table on the mask COG."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
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
