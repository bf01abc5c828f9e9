"""Scoring a model on whole scenes of another dataset: overlapping windows blended as ``demseg predict`` does.

Every labelled pixel of every scene counts (not only whole tiles): windows of the model's tile
size overlap by 25 %, the last one flush with the scene's edge, and their probabilities are
blended by whole-scene prediction's own blender (``predict.sliding.StripAccumulator``, one scene
in memory at a time), and each scene is scored whole. Scenes are first resampled to the
training pixel size, so objects keep their size in pixels. The windows' frozen backbone features
can be cached once and reused by every run that shares the backbone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demseg.data.arrays import TileArrays
from demseg.data.dataset import load_split
from demseg.data.normalise import check_scene_channels, height_above_ground, normalise_tile
from demseg.data.scene import IGNORE, Scene
from demseg.errors import DemsegError
from demseg.evaluate.metrics import SegmentationScorer
from demseg.models.features import FeatureCache
from demseg.predict.config import DEFAULT_OVERLAP
from demseg.predict.sliding import StripAccumulator, blend_weights, window_offsets, window_stride
from demseg.runs.config import TrainConfig

SCORING_OVERLAP = DEFAULT_OVERLAP  # windows overlap as in demseg predict
RAISED_HEIGHT_M = 2.5  # above a car, below a one-storey roof


@dataclass
class SceneWindows:
    """The overlapping windows that cover every scene of a dataset, as model-ready arrays."""

    name: str
    scenes: dict[str, Scene]
    windows: list[tuple[str, int, int]]  # (scene id, row, col) of each window
    arrays: TileArrays
    tile_size_px: int
    cache: FeatureCache | None = None


def scene_windows(spec: str | Path, task: str, config: TrainConfig, progress: bool = False) -> SceneWindows:
    """The windows of every scene of ``spec`` labelled for ``task``, resampled to ``config.pixel_size_m``."""
    data = load_split(spec, [task], config.split_config().model_copy(update={"min_valid_fraction": 0.0}), progress,
                      pixel_size_m=config.pixel_size_m)
    size, stride = config.tile_size_px, window_stride(config.tile_size_px, SCORING_OVERLAP)
    windows, inputs, targets = [], [], []
    for scene_id, scene in data.scenes.items():
        height, width = scene.grid.shape
        if task not in scene.targets or height < size or width < size:
            continue
        check_scene_channels(config.recipe, scene.channels, f"scene '{scene_id}' of {spec}")
        for row in window_offsets(height, size, stride):
            for col in window_offsets(width, size, stride):
                window = (slice(row, row + size), slice(col, col + size))
                valid = scene.valid_mask[window]
                if not valid.any():
                    continue
                dtm = scene.dtm[window] if scene.dtm is not None else None
                inputs.append(normalise_tile(scene.dem.elevation[window], valid, config.recipe,
                                             scene.grid.pixel_size_m, dtm, scene.channel_window(window)))
                target = scene.targets[task][window].copy()
                target[~valid] = IGNORE
                targets.append(target)
                windows.append((scene_id, row, col))
    if not windows:
        raise DemsegError(f"--score-on {spec}: no scene labelled for {task} is at least {size} px on both sides")
    arrays = TileArrays([f"{s}_{r}_{c}" for s, r, c in windows], np.stack(inputs), np.stack(targets))
    return SceneWindows(data.spec.name, data.scenes, windows, arrays, size)


def blend_scene(windows: SceneWindows, probabilities: list[np.ndarray], scene_id: str) -> np.ndarray:
    """The blended probability of one scene (NaN where no window reached), through predict's own blender.

    Windows are added row by row to :class:`~demseg.predict.sliding.StripAccumulator` and its
    finished rows taken off as whole-scene prediction takes them, so scoring and ``demseg predict``
    blend alike by construction.
    """
    size = windows.tile_size_px
    height, width = windows.scenes[scene_id].grid.shape
    weights = blend_weights(size)
    by_row: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for (sid, row, col), probability in zip(windows.windows, probabilities, strict=True):
        if sid == scene_id:
            by_row[row].append((col, probability))
    offsets = window_offsets(height, size, window_stride(size, SCORING_OVERLAP))
    strip = StripAccumulator(size, width)
    blended = np.full((height, width), np.nan, np.float32)
    for index, row in enumerate(offsets):
        for col, probability in by_row.get(row, []):
            strip.add(col, probability, weights)
        until = offsets[index + 1] if index + 1 < len(offsets) else height
        blended[row:until] = strip.pop_rows(until - row)
    return blended


def score_windows(probabilities: list[np.ndarray], windows: SceneWindows, task: str, pixel_size_m: float) -> dict:
    """Every metric over all labelled pixels of the scenes, from the windows' blended probabilities.

    Each scene is scored whole, so objects and boundaries are never cut at a window's edge.
    """
    scorer = SegmentationScorer(task, pixel_size_m)
    pixels, raised_fp, raised_negatives = 0, 0, 0
    for scene_id in sorted({w[0] for w in windows.windows}):
        blended = blend_scene(windows, probabilities, scene_id)
        covered = ~np.isnan(blended)
        prediction = ((np.where(covered, blended, 0.0)) > 0.5).astype(np.uint8)
        scene = windows.scenes[scene_id]
        target = scene.targets[task].copy()
        target[~covered] = IGNORE
        scorer.add(prediction, target)
        pixels += int((target != IGNORE).sum())
        raised = (target == 0) & raised_mask(scene)
        raised_fp += int((raised & (prediction == 1)).sum())
        raised_negatives += int(raised.sum())
    return {**scorer.scores(), "val_tiles": len(windows.windows), "scored_pixels": pixels,
            "raised_fp": raised_fp, "raised_negatives": raised_negatives,
            "raised_fp_rate": raised_fp / raised_negatives if raised_negatives else float("nan")}


def raised_mask(scene: Scene, min_height_m: float = RAISED_HEIGHT_M) -> np.ndarray:
    """Valid pixels more than ``min_height_m`` above ground (the DTM, else the morphological estimate).

    Outside the target class these are trees, mostly: their false-positive rate is the
    "trees marked as roofs" error, measured where no vegetation labels exist.
    """
    valid = scene.valid_mask
    if not valid.any():
        return valid.copy()
    relief = height_above_ground(scene.dem.elevation, valid, scene.dtm, scene.grid.pixel_size_m)
    return valid & (relief > min_height_m)
