"""Scoring a model on whole scenes of another dataset: overlapping windows blended as ``demseg predict`` does.

Every labelled pixel of every scene counts (not only whole tiles): windows of the model's tile
size overlap by 25 %, the last one flush with the scene's edge, and their probabilities are
blended with the same Hann weights as whole-scene prediction. Scenes are first resampled to the
training pixel size, so objects keep their size in pixels. The windows' frozen backbone features
can be cached once and reused by every run that shares the backbone.
"""

from __future__ import annotations

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
from demseg.predict.sliding import blend_weights, window_offsets, window_stride
from demseg.runs.config import TrainConfig

SCORING_OVERLAP = 0.25
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


def score_windows(probabilities: list[np.ndarray], windows: SceneWindows, task: str, pixel_size_m: float) -> dict:
    """Every metric over all labelled pixels of the scenes, from the windows' blended probabilities."""
    weights = blend_weights(windows.tile_size_px)
    sums = {sid: np.zeros(s.grid.shape, np.float32) for sid, s in windows.scenes.items()}
    norms = {sid: np.zeros(s.grid.shape, np.float32) for sid, s in windows.scenes.items()}
    size = windows.tile_size_px
    for (scene_id, row, col), probability in zip(windows.windows, probabilities, strict=True):
        sums[scene_id][row:row + size, col:col + size] += probability * weights
        norms[scene_id][row:row + size, col:col + size] += weights
    scorer = SegmentationScorer(task, pixel_size_m)
    pixels, raised_fp, raised_negatives = 0, 0, 0
    for scene_id in sorted({w[0] for w in windows.windows}):
        covered = norms[scene_id] > 0
        prediction = (np.divide(sums[scene_id], norms[scene_id], where=covered,
                                out=np.zeros_like(sums[scene_id])) > 0.5).astype(np.uint8)
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
