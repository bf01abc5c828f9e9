"""Classified point clouds (LAS/LAZ/COPC) to demseg scenes: DSM, DTM, nDSM, labels and a dataset spec."""

from demseg.lidar.config import RasterizeConfig, rasterize_config
from demseg.lidar.pipeline import rasterize

__all__ = ["RasterizeConfig", "rasterize", "rasterize_config"]
