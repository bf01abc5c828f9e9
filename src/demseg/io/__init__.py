"""Reading and writing rasters and vectors, with validation of inputs and atomic writes."""

from demseg.io.atomic import atomic_path, write_text_atomic
from demseg.io.raster import DemRaster, GridSpec, read_dem, read_label_raster, write_geotiff
from demseg.io.vector import VectorLayer, rasterize_labels, read_vector, write_gpkg

__all__ = [
    "DemRaster",
    "GridSpec",
    "VectorLayer",
    "atomic_path",
    "rasterize_labels",
    "read_dem",
    "read_label_raster",
    "read_vector",
    "write_geotiff",
    "write_gpkg",
    "write_text_atomic",
]
