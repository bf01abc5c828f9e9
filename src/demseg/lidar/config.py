"""How point clouds become rasters: one pydantic config, the single source of defaults and help texts."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from demseg.data.spec import SCENE_CHANNELS, TASKS
from demseg.errors import DemsegError


class RasterizeConfig(BaseModel):
    """Options of ``demseg rasterize``: grid, CRS, ASPRS class codes, LiDAR channels, streaming, gap filling."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    pixel_size_m: float = Field(
        0.5, gt=0, description="Side of a square output pixel in metres.")
    crs: str | None = Field(
        None, description="CRS of point files that declare none, e.g. EPSG:28992; must agree with the CRS "
                          "a file declares.")
    like: Path | None = Field(
        None, description="Existing raster whose grid (origin, pixel size, CRS, extent) the outputs snap to; "
                          "points outside it are dropped.")
    classes: dict[str, int] = Field(
        default_factory=lambda: {"buildings": 6, "roads": 11},
        description="Task -> ASPRS class code of its points, e.g. buildings=6,roads=11.")
    ground_class: int = Field(
        2, ge=0, le=255, description="ASPRS class code of bare-earth points (builds the DTM).")
    water_class: int = Field(
        9, ge=0, le=255, description="ASPRS class code of water points; cells holding only water stay nodata "
                                     "in the DSM.")
    drop_classes: list[int] = Field(
        default_factory=lambda: [7, 18],
        description="ASPRS class codes dropped before anything else (by default low and high noise).")
    fill_radius_m: float = Field(
        2.0, ge=0, description="An empty cell takes the DSM height of the nearest cell with points "
                               "within this distance, else stays nodata; 0 disables filling. Should "
                               "exceed the point spacing. LiDAR channels fill their gaps the same way and "
                               "are nodata where the DSM is.")
    channels: list[str] = Field(
        default_factory=lambda: list(SCENE_CHANNELS),
        description="LiDAR channels written beside the DSM as NAME.tif (float32, nodata -9999): returns (mean "
                    "number of returns of the cell's points), fml (mean first-return minus mean last-return "
                    "height, m), vegshare (share of points in ASPRS vegetation classes 3-5), intensity (mean "
                    "first-return intensity, raw units); none for no channel. Left at the default, a channel "
                    "the data cannot make is skipped with a warning; named, it is an error.")
    chunk_points: int = Field(
        250_000, gt=0, description="Points read at a time; memory grows with this and with the grid, never "
                                   "with the file size.")

    @field_validator("classes")
    @classmethod
    def _known_tasks_with_distinct_codes(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {list(TASKS)}")
        if any(not 0 <= code <= 255 for code in value.values()):
            raise ValueError(f"ASPRS class codes must lie in 0..255, got {value}")
        if len(set(value.values())) != len(value):
            raise ValueError(f"two tasks share one ASPRS class code: {value}")
        return value

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SCENE_CHANNELS))
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; known: {list(SCENE_CHANNELS)}")
        return list(dict.fromkeys(value))  # a repeated name once, in the order given

    @property
    def channels_named(self) -> bool:
        """Whether the channels were given explicitly (then one the data cannot make is an error)."""
        return "channels" in self.model_fields_set

    @field_validator("drop_classes")
    @classmethod
    def _codes_in_range(cls, value: list[int]) -> list[int]:
        if any(not 0 <= code <= 255 for code in value):
            raise ValueError(f"ASPRS class codes must lie in 0..255, got {value}")
        return value

    @model_validator(mode="after")
    def _kept_classes_are_not_dropped(self) -> RasterizeConfig:
        kept = {"ground_class": self.ground_class, "water_class": self.water_class, **self.classes}
        clash = sorted(name for name, code in kept.items() if code in self.drop_classes)
        if clash:
            raise ValueError(f"{clash} use a class code listed in drop_classes {self.drop_classes}")
        for name, role in (("ground_class", "bare-earth points, which build the DTM"),
                           ("water_class", "water points")):
            tasks = sorted(task for task, code in self.classes.items() if code == getattr(self, name))
            if tasks:
                raise ValueError(f"classes {tasks[0]}={getattr(self, name)} is the {name} ({role}): every such "
                                 f"point would be labelled {tasks[0]}; give the class code of {tasks[0]} points "
                                 f"(ASPRS: buildings 6, roads 11)")
        return self


def rasterize_config(**fields) -> RasterizeConfig:
    """A :class:`RasterizeConfig` from keyword fields; a bad value is one :class:`DemsegError` line."""
    try:
        return RasterizeConfig(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        raise DemsegError(f"rasterize option {where}: {first['msg']} (got {first.get('input')!r})") from exc
