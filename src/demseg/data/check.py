"""``demseg data check``: load every scene of a spec and report what it holds and what is wrong."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from demseg.data.scene import IGNORE, load_scene
from demseg.data.spec import AUXILIARY_CLASSES, TASKS, DatasetSpec
from demseg.data.tiles import DEFAULT_MIN_VALID_FRACTION, DEFAULT_TILE_SIZE_PX, make_tiles
from demseg.errors import DemsegError


@dataclass
class SceneReport:
    """What ``data check`` found in one scene."""

    id: str
    size_px: str = "-"
    pixel_size_m: str = "-"
    crs: str = "-"
    valid_percent: str = "-"
    label_percent: dict[str, str] = field(default_factory=dict)
    channels: str = "-"  # scene channels (LiDAR rasters) beside the elevation
    tiles: str = "-"
    split: str = "-"
    problems: list[str] = field(default_factory=list)
    error: bool = False


def check_spec(spec: DatasetSpec, tile_size_px: int = DEFAULT_TILE_SIZE_PX,
               min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
               road_width_m: float | None = None) -> list[SceneReport]:
    """One report per scene; a scene that fails to load carries the error line and ``error=True``."""
    if tile_size_px <= 0 or tile_size_px % 16:
        raise DemsegError(f"tile size must be a positive multiple of 16 px, got {tile_size_px}")
    reports = []
    for scene_spec in spec.scenes:
        report = SceneReport(scene_spec.id, split=scene_spec.split)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # undeclared codes are reported in the table instead
                scene = load_scene(spec, scene_spec, road_width_m=road_width_m)
        except DemsegError as exc:
            report.problems.append(str(exc))
            report.error = True
            reports.append(report)
            continue
        grid = scene.grid
        report.size_px = f"{grid.width}x{grid.height}"
        report.pixel_size_m = f"{grid.pixel_size_m:g}"
        report.crs = grid.crs.to_string()
        report.valid_percent = f"{100 * scene.dem.valid_fraction:.1f}"
        report.channels = ",".join(scene.channels) or "-"
        for task in (*TASKS, *AUXILIARY_CLASSES):
            target = scene.targets.get(task, scene.auxiliary.get(task))
            if target is not None:
                known = target != IGNORE
                share = 100 * float((target == 1).sum()) / max(1, int(known.sum()))
                report.label_percent[task] = f"{share:.1f}"
                if share == 0 and task in TASKS:
                    report.problems.append(f"no {task} pixels")
        if not scene.targets:
            report.problems.append("no labels (usable for pre-training only)")
        if scene.undeclared_codes:
            codes = ", ".join(f"{code} ({count} px)" for code, count in scene.undeclared_codes.items())
            report.problems.append(f"label codes not declared in the spec, read as background: {codes}")
        if min(grid.shape) < tile_size_px:
            report.problems.append(f"smaller than one {tile_size_px} px tile")
            report.tiles = "0"
        else:
            count = len(make_tiles([scene], tile_size_px, min_valid_fraction))
            report.tiles = str(count)
            if count == 0:
                report.problems.append(f"no tile has >= {100 * min_valid_fraction:.0f}% valid pixels")
        units = scene.dem.vertical_units
        if units and units.lower() not in ("m", "metre", "meter", "metres", "meters"):
            report.problems.append(f"vertical units are {units!r}, not metres")
        if np.nanmax(scene.dem.elevation) - np.nanmin(scene.dem.elevation) > 9000:
            report.problems.append("elevation range over 9 km: undeclared nodata value?")
        reports.append(report)
    loaded = [r for r in reports if not r.error]
    if loaded and all(r.tiles == "0" and any("smaller than" in p for p in r.problems) for r in loaded):
        raise DemsegError(f"tile size {tile_size_px} px is larger than every scene of the spec")
    return reports


def format_reports(reports: list[SceneReport]) -> str:
    """A plain-text table of scene reports."""
    headers = ["scene", "size px", "pixel m", "CRS", "valid %", "buildings %", "roads %", "vegetation %", "channels",
               "tiles", "split", "problems"]
    rows = [[r.id, r.size_px, r.pixel_size_m, r.crs, r.valid_percent, r.label_percent.get("buildings", "-"),
             r.label_percent.get("roads", "-"), r.label_percent.get("vegetation", "-"), r.channels, r.tiles, r.split,
             "; ".join(r.problems) or "ok"] for r in reports]
    widths = [max(len(str(row[i])) for row in rows + [headers]) for i in range(len(headers) - 1)]
    lines = []
    for row in [headers] + rows:
        cells = [str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join(cells + [str(row[-1])]))
    return "\n".join(lines)
