"""Read vector labels in any CRS, rasterise them onto a DEM grid, and write GeoPackages atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio import features

from demseg.errors import DemsegError
from demseg.io.atomic import atomic_path
from demseg.io.raster import GridSpec
from demseg.io.styles import write_layer_styles


@dataclass
class VectorLayer:
    """Geometries (shapely, 2D) with their attribute columns and CRS (WKT or None)."""

    geometries: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    crs: str | None = None

    def __len__(self) -> int:
        return len(self.geometries)


def read_vector(path: str | os.PathLike, layer: str | int | None = None, what: str = "vector labels") -> VectorLayer:
    """Read a GeoJSON, GeoPackage, Shapefile or other OGR vector file (geometry forced to 2D)."""
    path = Path(path)
    if not path.exists():
        raise DemsegError(f"{what} not found: {path}")
    try:
        meta, _fids, wkb, field_data = pyogrio.raw.read(path, layer=layer)
    except Exception as exc:  # pyogrio raises DataSourceError / DataLayerError and others
        raise DemsegError(f"{what} is not a readable vector file: {path} ({str(exc).splitlines()[0]})") from exc
    if wkb is None:
        raise DemsegError(f"{what} has no geometry column: {path}")
    geometries = shapely.force_2d(shapely.from_wkb(wkb))
    attributes = {name: np.asarray(values) for name, values in zip(meta["fields"], field_data, strict=True)}
    return VectorLayer(geometries, attributes, meta.get("crs"))


def reproject_geometries(layer: VectorLayer, grid: GridSpec, what: str = "vector labels") -> np.ndarray:
    """The layer's geometries in the grid's CRS (a layer without a CRS is taken to be in it)."""
    if layer.crs is None:
        return layer.geometries
    source = ProjCRS.from_user_input(layer.crs)
    target = ProjCRS.from_user_input(grid.crs.to_wkt())
    if source == target:
        return layer.geometries
    transformer = Transformer.from_crs(source, target, always_xy=True)

    def _transform(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(layer.geometries, _transform)


def _line_widths(layer: VectorLayer, width_attribute: str | None, road_width_m: float | None,
                 what: str = "vector labels") -> np.ndarray:
    if width_attribute and width_attribute in layer.attributes:
        widths = _numbers(layer.attributes[width_attribute], width_attribute, what)
        fallback = road_width_m if road_width_m is not None else np.nan
        widths = np.where(np.isfinite(widths) & (widths > 0), widths, fallback)
    else:
        widths = np.full(len(layer), np.nan if road_width_m is None else float(road_width_m))
    return widths


def _numbers(values: np.ndarray, name: str, what: str) -> np.ndarray:
    """An attribute as floats (NaN where empty); text that is no number is one error naming it."""
    numbers = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            numbers[i] = float(value)
        except (TypeError, ValueError):
            raise DemsegError(f"{what}: the '{name}' attribute holds {str(value)!r}, not a width in metres; make it a "
                              "number, or leave it empty and pass --road-width-m") from None
    return numbers


def label_geometries(layer: VectorLayer, grid: GridSpec, kind: str, road_width_m: float | None = None,
                     width_attribute: str | None = "width", what: str = "vector labels") -> np.ndarray:
    """Polygons in the grid's CRS ready to burn: lines are buffered by their width (roads)."""
    geometries = reproject_geometries(layer, grid, what)
    valid = ~shapely.is_missing(geometries) & ~shapely.is_empty(geometries)
    geometries = geometries[valid]
    types = shapely.get_type_id(geometries)
    is_line = np.isin(types, [1, 2, 5])  # LineString, LinearRing, MultiLineString
    if is_line.any():
        if kind != "roads":
            raise DemsegError(f"{what} for {kind} contain lines; only roads may be given as lines")
        widths = _line_widths(layer, width_attribute, road_width_m, what)[valid][is_line]
        if not np.isfinite(widths).all():
            raise DemsegError(f"{what}: road lines need a width: add a '{width_attribute}' attribute (metres) "
                              "or pass --road-width-m")
        geometries = geometries.copy()
        geometries[is_line] = shapely.buffer(geometries[is_line], widths / 2.0, cap_style="flat")
    is_point = np.isin(types, [0, 4])
    if is_point.any():
        raise DemsegError(f"{what} for {kind} contain points; polygons (or road lines) are needed")
    return geometries


def rasterize_labels(geometries: np.ndarray, grid: GridSpec, what: str = "vector labels",
                     window=None) -> np.ndarray:
    """Burn polygons (already in the grid's CRS) into a uint8 0/1 mask on ``grid``.

    A pixel is labelled when its centre falls inside a polygon. Raises if nothing overlaps the grid.
    """
    target = grid if window is None else grid.window_grid(window)
    left, bottom, right, top = target.bounds
    box = shapely.box(left, bottom, right, top)
    overlapping = geometries[shapely.intersects(geometries, box)]
    if len(overlapping) == 0:
        if window is not None:
            return np.zeros(target.shape, dtype=np.uint8)
        raise DemsegError(f"{what} do not overlap the DEM (DEM bounds {tuple(round(v, 1) for v in grid.bounds)} "
                          f"in {grid.crs.to_string()})")
    return features.rasterize(((g, 1) for g in overlapping), out_shape=target.shape, transform=target.transform,
                              fill=0, dtype="uint8")


def write_gpkg(path: str | os.PathLike, layers: dict[str, VectorLayer], crs, styles: dict[str, str] | None = None
               ) -> Path:
    """Write named layers into one GeoPackage atomically (empty layers are kept, with their schema).

    ``styles`` (layer name -> QGIS QML, see :mod:`demseg.io.styles`) are stored in the GeoPackage's
    ``layer_styles`` table, so QGIS opens the layers styled.
    """
    crs_text = crs.to_wkt() if hasattr(crs, "to_wkt") else str(crs)
    with atomic_path(path) as tmp:
        for index, (name, layer) in enumerate(layers.items()):
            wkb = shapely.to_wkb(layer.geometries) if len(layer) else np.array([], dtype=object)
            geometry_type = _geometry_type(layer.geometries)
            fields = list(layer.attributes)
            pyogrio.raw.write(tmp, wkb, field_data=[np.asarray(v) for v in layer.attributes.values()], fields=fields,
                          layer=name, driver="GPKG", crs=crs_text, geometry_type=geometry_type, append=index > 0,
                          promote_to_multi=geometry_type.startswith("Multi"))  # a mixed layer: all multi
        if styles:
            write_layer_styles(tmp, styles)
    return Path(path)


def _geometry_type(geometries: np.ndarray) -> str:
    if len(geometries) == 0:
        return "Unknown"
    names = set(shapely.get_type_id(geometries).tolist())
    if names <= {0}:
        return "Point"
    if names <= {0, 4}:
        return "MultiPoint"
    if names <= {3}:
        return "Polygon"
    if names <= {3, 6}:
        return "MultiPolygon"
    if names <= {1}:
        return "LineString"
    if names <= {1, 5}:
        return "MultiLineString"
    return "Unknown"
