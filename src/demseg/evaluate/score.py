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
from demseg.train.manifest import spec_file_hashes
from demseg.train.run import load_run, prepare_data
from demseg.train.tiles import tile_arrays


def evaluate_run(run_dir: str | Path, spec_path: str | Path, task: str | None = None, progress: bool = True,
                 preview_tiles: int = 4) -> dict[str, float]:
    """Scores of a run on the validation tiles of a spec, written to ``RUN/evaluations/<spec>/``.

    Validation tiles are all tiles of scenes marked ``split: val``. A spec with none that shares
    a DEM with the run's training data is split the way the run was (same seeds and counts); one
    that shares none (another city) is scored on all its tiles. Tiles the run trained on are
    never scored.
    """
    model, config = load_run(run_dir)
    task = task or config.task
    if task != config.task:
        raise DemsegError(f"the run was trained for {config.task}, not {task}")
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    trained_hashes = set((manifest.get("data") or {}).get("sha256", {}).values())
    trained_ids = set(manifest.get("tiles", {}).get("train", []))
    data = prepare_data(spec_path, [task], config.tile_size_px, config.val_tiles, config.train_tiles,
                        config.split_seed, config.min_valid_fraction, progress)
    marked_val = any(scene.split == "val" for scene in data.spec.scenes)
    shares_data = bool(trained_hashes & set(spec_file_hashes(data.spec).values()))
    for tile in data.tiles:
        if marked_val:
            tile.split = "val" if data.scenes[tile.scene_id].split == "val" else "train"
        elif not shares_data:
            tile.split = "val"
        if shares_data and tile.id in trained_ids:
            tile.split = "train"
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
              "validation": "scenes marked split: val" if marked_val else (
                  "spatial split of the run's seed" if shares_data else "all tiles (data the run never saw)"),
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
