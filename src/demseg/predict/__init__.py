"""Whole-scene prediction: sliding windows, COG outputs, vectorising, and scale-out.

- :mod:`demseg.predict.sliding`: overlapping windows blended with a Hann weight, a strip
  accumulator one window high (memory independent of the scene height), D4 test-time augmentation.
- :mod:`demseg.predict.vectorise`: polygons and road centrelines, block by block.
- :mod:`demseg.predict.outputs`: COGs, preview, the ``_done.json`` record.
- :mod:`demseg.predict.scene`: :func:`predict_scene`, one DEM in, all outputs out (atomically).
- :mod:`demseg.predict.scale`: :func:`predict_many`, many scenes here or on a Dask cluster.
"""

from demseg.predict.config import PredictConfig
from demseg.predict.scale import predict_many, scene_inputs
from demseg.predict.scene import LoadedRun, predict_scene, resolve_run
from demseg.predict.sliding import DemInput
from demseg.predict.vectorise import road_centrelines, vectorise_mask

__all__ = [
    "DemInput",
    "LoadedRun",
    "PredictConfig",
    "predict_many",
    "predict_scene",
    "resolve_run",
    "scene_inputs",
    "road_centrelines",
    "vectorise_mask",
]
