"""``demseg evaluate``: score a trained run on a spec's validation tiles (possibly another city)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from demseg.data.normalise import hillshade
from demseg.data.tiles import eligible_tiles
from demseg.errors import DemsegError
from demseg.evaluate.metrics import SegmentationScorer
from demseg.evaluate.report import write_preview
from demseg.io.atomic import write_text_atomic
from demseg.train.loop import predict_images
from demseg.train.run import load_run, prepare_data
from demseg.train.tiles import tile_arrays


def evaluate_run(run_dir: str | Path, spec_path: str | Path, task: str | None = None, progress: bool = True,
                 preview_tiles: int = 4) -> dict[str, float]:
    """Scores of a run on the validation tiles of a spec, written to ``RUN/evaluations/<spec>/``.

    Validation tiles are all tiles of scenes marked ``split: val``; a spec with none is split
    the way the run was (same seed and validation count), so training tiles are never scored.
    """
    model, config = load_run(run_dir)
    task = task or config.task
    if task != config.task:
        raise DemsegError(f"the run was trained for {config.task}, not {task}")
    data = prepare_data(spec_path, [task], config.tile_size_px, config.val_tiles, 0, config.split_seed,
                        config.min_valid_fraction, progress)
    marked_val = any(scene.split == "val" for scene in data.spec.scenes)
    if marked_val:
        for tile in data.tiles:
            tile.split = "val" if data.scenes[tile.scene_id].split == "val" else "train"
    tiles = eligible_tiles(data.tiles, "val", task, config.min_labelled_fraction)
    if not tiles:
        raise DemsegError(f"no validation tile labelled for {task} in {spec_path}")
    arrays = tile_arrays(data.scenes, tiles, task, config.recipe)
    predictions = predict_images(model, arrays.inputs, config.use_amp())
    pixel_sizes = {data.scenes[t.scene_id].grid.pixel_size_m for t in tiles}
    scorer = SegmentationScorer(task, pixel_size_m=min(pixel_sizes))
    for prediction, target in zip(predictions, arrays.targets, strict=True):
        scorer.add(prediction, target)
    scores = scorer.scores()
    out = Path(run_dir) / "evaluations" / re.sub(r"[^A-Za-z0-9_.-]", "_", data.spec.name)
    record = {"spec": str(spec_path), "task": task, "val_tiles": len(tiles), "tile_ids": [t.id for t in tiles],
              "validation": "scenes marked split: val" if marked_val else "spatial split of the run's seed",
              **scores}
    write_text_atomic(out / "metrics.json", json.dumps(record, indent=2, default=float))
    n = min(preview_tiles, len(tiles))
    if n:
        shades = [hillshade(data.scenes[t.scene_id].dem.elevation[t.window()],
                            data.scenes[t.scene_id].valid_mask[t.window()],
                            data.scenes[t.scene_id].grid.pixel_size_m) for t in tiles[:n]]
        write_preview(out / "preview.png", shades, list(arrays.targets[:n]), predictions[:n],
                      f"{task} on {data.spec.name}: {config.model}")
    return {"val_tiles": len(tiles), **scores}
