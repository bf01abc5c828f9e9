"""Outputs that open styled in QGIS: layer styles inside the GeoPackage and a colour table on the mask.

GeoPackage: QGIS reads a layer's default style from the ``layer_styles`` table (the table QGIS
itself creates on "Save as default" into a GeoPackage, registered in ``gpkg_contents`` as
attributes so GDAL keeps treating the file as a valid GeoPackage). :func:`write_layer_styles`
adds one default QML style per layer; :func:`default_styles` picks demseg's styles by layer name:
buildings graduated by height (by area without heights), road edges / centrelines by width,
road nodes by degree, road polygons a plain fill.

Mask: :func:`add_mask_colormap` writes a colour table (0 background light grey, 1 red building or
yellow road, 255 no data). TIFF palettes hold no alpha (GDAL reads every entry back opaque), so
the background is a light grey rather than transparent; 255 is transparent as the nodata value.
GDAL's COG driver copies the colour table into the COG and builds its overviews from it.
"""

from __future__ import annotations

import os
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio

from demseg.errors import DemsegError

MASK_COLORMAPS = {
    "buildings": {0: (224, 224, 224, 255), 1: (255, 59, 48, 255), 255: (0, 0, 0, 0)},
    "roads": {0: (224, 224, 224, 255), 1: (255, 209, 31, 255), 255: (0, 0, 0, 0)},
}
STYLE_NAME = "demseg"
_QML_HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
_GEOMETRY_TYPE = {"marker": "0", "line": "1", "fill": "2"}  # QGIS layerGeometryType codes
_SYMBOL_LAYER = {"marker": "SimpleMarker", "line": "SimpleLine", "fill": "SimpleFill"}
_NO_VALUE = -1.0  # NULL attributes are drawn in a class of their own through coalesce(..., -1)

HEIGHT_CLASSES = [  # (lower, upper, label, rgba)
    (_NO_VALUE, 0.0, "no height", (189, 189, 189, 255)),
    (0.0, 5.0, "< 5 m", (255, 255, 178, 255)),
    (5.0, 10.0, "5 - 10 m", (254, 217, 118, 255)),
    (10.0, 15.0, "10 - 15 m", (254, 178, 76, 255)),
    (15.0, 20.0, "15 - 20 m", (253, 141, 60, 255)),
    (20.0, 30.0, "20 - 30 m", (240, 59, 32, 255)),
    (30.0, 1000.0, "> 30 m", (189, 0, 38, 255)),
]
AREA_CLASSES = [
    (_NO_VALUE, 0.0, "no area", (189, 189, 189, 255)),
    (0.0, 50.0, "< 50 m²", (254, 229, 217, 255)),
    (50.0, 150.0, "50 - 150 m²", (252, 174, 145, 255)),
    (150.0, 500.0, "150 - 500 m²", (251, 106, 74, 255)),
    (500.0, 2000.0, "500 - 2000 m²", (222, 45, 38, 255)),
    (2000.0, 1e9, "> 2000 m²", (165, 15, 21, 255)),
]
WIDTH_CLASSES = [  # (lower, upper, label, rgba, line width in mm)
    (_NO_VALUE, 0.0, "width unknown", (150, 150, 150, 255), 0.3),
    (0.0, 4.0, "< 4 m", (255, 237, 160, 255), 0.5),
    (4.0, 7.0, "4 - 7 m", (254, 217, 118, 255), 0.8),
    (7.0, 10.0, "7 - 10 m", (254, 178, 76, 255), 1.1),
    (10.0, 14.0, "10 - 14 m", (253, 141, 60, 255), 1.4),
    (14.0, 1000.0, "> 14 m", (227, 26, 28, 255), 1.8),
]
DEGREE_CLASSES = [  # (lower, upper, label, rgba, marker size in mm)
    (0.5, 1.5, "dead end", (215, 48, 39, 255), 2.0),
    (1.5, 2.5, "loop", (150, 150, 150, 255), 1.6),
    (2.5, 3.5, "T junction", (253, 174, 97, 255), 2.4),
    (3.5, 100.0, "crossing (4+)", (118, 42, 131, 255), 2.8),
]


# ------------------------------------------------------------------------------------------- QML


def _rgba(color: Sequence[int]) -> str:
    return ",".join(str(int(c)) for c in color)


def _symbol(parent: ET.Element, name: str, kind: str, properties: dict[str, str]) -> None:
    """A one-layer QGIS symbol; properties both as the Option map (QGIS >= 3.26) and as legacy props."""
    symbol = ET.SubElement(parent, "symbol", {"type": kind, "name": name, "alpha": "1", "clip_to_extent": "1",
                                              "force_rhr": "0"})
    layer = ET.SubElement(symbol, "layer", {"class": _SYMBOL_LAYER[kind], "enabled": "1", "locked": "0",
                                            "pass": "0"})
    options = ET.SubElement(layer, "Option", {"type": "Map"})
    for key, value in properties.items():
        ET.SubElement(options, "Option", {"name": key, "type": "QString", "value": value})
    for key, value in properties.items():
        ET.SubElement(layer, "prop", {"k": key, "v": value})


def _properties(kind: str, color: Sequence[int], size_mm: float | None = None) -> dict[str, str]:
    if kind == "fill":
        return {"color": _rgba(color), "style": "solid", "outline_color": "80,80,80,255",
                "outline_style": "solid", "outline_width": "0.2", "outline_width_unit": "MM",
                "joinstyle": "miter"}
    if kind == "line":
        return {"line_color": _rgba(color), "line_style": "solid", "line_width": f"{size_mm or 0.6:g}",
                "line_width_unit": "MM", "capstyle": "round", "joinstyle": "round"}
    return {"name": "circle", "color": _rgba(color), "outline_color": "35,35,35,255",
            "outline_style": "solid", "outline_width": "0.2", "outline_width_unit": "MM",
            "size": f"{size_mm or 2.0:g}", "size_unit": "MM"}


def _document(kind: str, renderer: ET.Element) -> str:
    root = ET.Element("qgis", {"version": "3.28.0", "styleCategories": "Symbology"})
    root.append(renderer)
    ET.SubElement(root, "layerGeometryType").text = _GEOMETRY_TYPE[kind]
    return _QML_HEADER + ET.tostring(root, encoding="unicode")


def graduated_qml(attribute: str, kind: str, classes: Sequence[tuple]) -> str:
    """QML of a graduated renderer on ``attribute`` (NULL drawn as -1): classes are (lower, upper,
    label, rgba[, size_mm]); ``kind`` is fill, line or marker."""
    if kind not in _SYMBOL_LAYER:
        raise DemsegError(f"symbol kind must be fill, line or marker, got {kind!r}")
    expression = f'coalesce("{attribute}", {_NO_VALUE:g})'
    renderer = ET.Element("renderer-v2", {"type": "graduatedSymbol", "attr": expression,
                                          "graduatedMethod": "GraduatedColor", "symbollevels": "0",
                                          "forceraster": "0", "enableorderby": "0"})
    ranges, symbols = ET.SubElement(renderer, "ranges"), ET.SubElement(renderer, "symbols")
    for index, (lower, upper, label, color, *size) in enumerate(classes):
        ET.SubElement(ranges, "range", {"lower": f"{lower:g}", "upper": f"{upper:g}", "symbol": str(index),
                                        "label": label, "render": "true"})
        _symbol(symbols, str(index), kind, _properties(kind, color, size[0] if size else None))
    return _document(kind, renderer)


def single_symbol_qml(kind: str, color: Sequence[int], size_mm: float | None = None) -> str:
    """QML of one symbol for every feature."""
    renderer = ET.Element("renderer-v2", {"type": "singleSymbol", "symbollevels": "0", "forceraster": "0",
                                          "enableorderby": "0"})
    _symbol(ET.SubElement(renderer, "symbols"), "0", kind, _properties(kind, color, size_mm))
    return _document(kind, renderer)


def buildings_qml(has_height: bool = True) -> str:
    """Buildings graduated by ``mean_height_m``, or by ``area_m2`` when there are no heights."""
    return graduated_qml("mean_height_m", "fill", HEIGHT_CLASSES) if has_height else \
        graduated_qml("area_m2", "fill", AREA_CLASSES)


def road_edges_qml() -> str:
    """Road edges or centrelines: colour and line width by ``width_m``."""
    return graduated_qml("width_m", "line", WIDTH_CLASSES)


def road_nodes_qml() -> str:
    """Road nodes by ``degree``: dead ends, loops, T junctions, crossings."""
    return graduated_qml("degree", "marker", DEGREE_CLASSES)


def road_polygons_qml() -> str:
    """Road polygons: a plain translucent yellow fill."""
    return single_symbol_qml("fill", (255, 209, 31, 170))


def default_styles(layers: Mapping[str, object]) -> dict[str, str]:
    """demseg's QML style for each known layer name (buildings, roads, road_centrelines, road_edges,
    road_nodes); other layers get none. ``layers``: VectorLayers (io.vector imports this module)."""
    styles = {}
    for name, layer in layers.items():
        if name == "buildings":
            heights = np.asarray(layer.attributes.get("mean_height_m", []), float)
            styles[name] = buildings_qml(bool(np.isfinite(heights).any()))
        elif name in ("road_centrelines", "road_edges"):
            styles[name] = road_edges_qml()
        elif name == "road_nodes":
            styles[name] = road_nodes_qml()
        elif name == "roads":
            styles[name] = road_polygons_qml()
    return styles


# ------------------------------------------------------------------------------------ GeoPackage

_CREATE_LAYER_STYLES = """
CREATE TABLE IF NOT EXISTS layer_styles (
  id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, f_table_catalog TEXT(256), f_table_schema TEXT(256),
  f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
  useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
  update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))
"""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def write_layer_styles(gpkg_path: str | os.PathLike, styles: Mapping[str, str]) -> Path:
    """Add (or replace) a default QGIS style per layer of a GeoPackage, from QML text by layer name.

    Writes the ``layer_styles`` table QGIS reads, registered in ``gpkg_contents`` as attributes.
    """
    path = Path(gpkg_path)
    if not path.is_file():
        raise DemsegError(f"GeoPackage not found: {path}")
    with sqlite3.connect(path) as db:
        try:
            geometry_columns = dict(db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"))
        except sqlite3.DatabaseError as exc:
            raise DemsegError(f"not a GeoPackage: {path} ({exc})") from exc
        missing = sorted(set(styles) - set(geometry_columns))
        if missing:
            raise DemsegError(f"{path.name} has no layer {', '.join(missing)} to style")
        db.execute(_CREATE_LAYER_STYLES)
        now = _now()
        db.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, "
                   "last_change) VALUES ('layer_styles', 'attributes', 'layer_styles', '', ?)", (now,))
        for name, qml in styles.items():
            db.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (name,))
            row = (name, geometry_columns[name], STYLE_NAME, qml, f"demseg default style for {name}", now)
            db.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                       "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner, "
                       "ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL, ?)", row)
        count = db.execute("SELECT COUNT(*) FROM layer_styles").fetchone()[0]
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'gpkg_ogr_contents'").fetchone():
            db.execute("INSERT OR REPLACE INTO gpkg_ogr_contents (table_name, feature_count) VALUES "
                       "('layer_styles', ?)", (count,))
        db.execute("UPDATE gpkg_contents SET last_change = ? WHERE table_name = 'layer_styles'", (now,))
    return path


# ------------------------------------------------------------------------------------------ mask


def add_mask_colormap(raster: str | os.PathLike | rasterio.io.DatasetWriter, task: str) -> None:
    """Write demseg's colour table for ``task`` into band 1 of a uint8 mask (a path or a dataset open
    for writing)."""
    if task not in MASK_COLORMAPS:
        raise DemsegError(f"task must be one of {', '.join(MASK_COLORMAPS)}, got {task!r}")
    if isinstance(raster, (str, os.PathLike)):
        with rasterio.open(raster, "r+") as dataset:
            _write_colormap(dataset, task)
    else:
        _write_colormap(raster, task)


def _write_colormap(dataset, task: str) -> None:
    if dataset.dtypes[0] != "uint8":
        raise DemsegError(f"a colour table needs a uint8 mask, got {dataset.dtypes[0]}: {dataset.name}")
    dataset.write_colormap(1, MASK_COLORMAPS[task])
