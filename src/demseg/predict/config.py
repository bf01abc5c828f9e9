"""How whole scenes are predicted: every option of ``demseg predict`` once, with its default and help.

:func:`demseg.predict.predict_scene` and :func:`demseg.predict.predict_many` take one
:class:`PredictConfig`; Dask workers receive it whole. The CLI reads its defaults and help texts
from these fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# what decides the content of a scene's outputs: a done record made with other values does not count
OUTPUT_FIELDS = ("overlap", "tta", "min_area_m2", "simplify_m", "regularise", "split_step_m", "min_part_m2",
                 "bridge_gap_m", "min_spur_m", "engine", "resample")
DEFAULT_OVERLAP = 0.25  # the one default window overlap: predict and whole-scene scoring
MAX_OVERLAP = 0.9  # 0.9 already predicts every pixel 100 times; closer to 1 the windows multiply without bound


class PredictConfig(BaseModel):
    """Options of whole-scene prediction (sliding windows, vectorising, scale-out)."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")
    overlap: float = Field(DEFAULT_OVERLAP, ge=0, le=MAX_OVERLAP, description="Window overlap, 0 to 0.9; overlapping windows "
                                                                   "are blended with a Hann weight.")
    tta: bool = Field(False, description="Average the 8 flips and rotations of every window (8x slower).")
    batch_size: int = Field(8, gt=0, description="Windows per forward pass.")
    engine: Literal["torch", "onnx"] = Field(
        "torch", description="What runs the network: torch, or onnxruntime on the run's model.onnx (made by "
                             "demseg export RUN --onnx); normalising, blending and vectorising are the same.")
    block_rows: int | None = Field(None, gt=0, description="Rows per vectorising block (default: ~4 Mpx blocks).")
    halo_px: int = Field(128, ge=0, description="Rows of context above and below a block when "
                                                            "tracing road centrelines (wider than any road).")
    min_area_m2: float = Field(10.0, ge=0, description="Drop polygons smaller than this (m²).")
    simplify_m: float | None = Field(None, ge=0, description="Simplification tolerance in metres (default: the "
                                                             "pixel size; 0: none).")
    regularise: bool = Field(False, description="Straighten building outlines: walls snapped to the building's "
                                                "dominant orientations, right angles, shared walls kept shared.")
    split_step_m: float | None = Field(1.5, gt=0, description="Buildings: split blocks into one footprint per "
                                                               "building where the roof height steps by more "
                                                               "than this (m), with LoD1 attributes per part "
                                                               "(ground, roof median and max, height, point "
                                                               "count; ground needs a DTM); none: one polygon "
                                                               "per connected region.")
    min_part_m2: float = Field(20.0, gt=0, description="Buildings, with --split-step-m: the smallest part that "
                                                       "stands alone (smaller ones join a neighbour).")
    bridge_gap_m: float = Field(8.0, ge=0, description="Road network: join dead ends this close that point at "
                                                       "each other (or at a road).")
    min_spur_m: float = Field(6.0, ge=0, description="Road network: drop dead-end branches shorter than this "
                                                     "(or than the road's width).")
    resample: bool = Field(True, description="Read a DEM whose pixel size is more than 10% off the run's resampled "
                                             "to the run's pixel size, window by window (outputs on that grid: "
                                             "same extent and CRS).",
                           json_schema_extra={"off_help": "Do not resample a DEM whose pixel size is more than 10% off "
                                                          "the run's: refuse it (or predict it at its own pixel size "
                                                          "with --allow-resolution-mismatch)."})
    allow_resolution_mismatch: bool = Field(False, description="With --no-resample: predict DEMs whose pixel size is "
                                                               "more than 10% off the run's at their own pixel size "
                                                               "(default: refuse).")
    workers: int = Field(1, ge=1, description="Scenes in parallel on a local Dask cluster of N processes "
                                              "(1: no Dask).")
    scheduler: str | None = Field(None, description="Address of an existing Dask scheduler, e.g. "
                                                    "tcp://10.0.0.5:8786.")
    scheduler_timeout_s: float = Field(30.0, gt=0, description="Seconds to wait for the Dask scheduler to answer.")

    def output_settings(self) -> dict:
        """The options that decide what a scene's outputs contain."""
        return {name: getattr(self, name) for name in OUTPUT_FIELDS}
