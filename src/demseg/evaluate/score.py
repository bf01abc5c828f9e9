"""``demseg evaluate``: score a trained run on its own validation tiles, or on all tiles of another dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

from demseg.data.arrays import tile_arrays
from demseg.data.dataset import SplitData, load_split
from demseg.data.normalise import hillshade
from demseg.data.tiles import Tile
from demseg.errors import DemsegError
from demseg.evaluate.metrics import SegmentationScorer
from demseg.evaluate.report import write_preview
from demseg.io.atomic import write_text_atomic
from demseg.models.inference import predict_images
from demseg.runs.config import TrainConfig
from demseg.runs.folder import check_resolution, load_run
from demseg.runs.manifest import spec_file_hashes


def scored_tiles(data: SplitData, config: TrainConfig, manifest: dict, task: str) -> tuple[list[Tile], str]:
    """The tiles a run is scored on in ``data`` and how they were chosen.

    Data the run was trained on (a file hash in common): exactly the validation tiles the run
    recorded, never a training tile. Data it never saw: every tile labelled for the task.
    """
    trained_hashes = set((manifest.get("data") or {}).get("sha256", {}).values())
    labelled = [t for t in data.tiles if t.labelled_fraction.get(task, 0.0) >= config.min_labelled_fraction]
    if not trained_hashes & set(spec_file_hashes(data.spec).values()):
        return sorted(labelled, key=lambda t: t.id), "all labelled tiles (data the run never saw)"
    recorded = set(manifest.get("tiles", {}).get("val", []))
    trained = set(manifest.get("tiles", {}).get("train", []))
    chosen = [t for t in labelled if t.id in recorded and t.id not in trained]
    if not chosen:
        raise DemsegError("this spec shares data with the run but holds none of the validation tiles the run "
                          "recorded: score it on the spec it was trained on, or on data it never saw")
    return sorted(chosen, key=lambda t: t.id), "the run's own validation tiles"


def evaluate_run(run_dir: str | Path, spec_path: str | Path, task: str | None = None, progress: bool = True,
                 preview_tiles: int = 4, allow_resolution_mismatch: bool = False,
                 resample: bool = False, out: str | Path | None = None) -> dict[str, float]:
    """Scores of a run on a spec, written to :func:`evaluation_folder` (metrics.json, preview.png); the folder is
    under the key ``out`` of the result.

    ``run_dir`` is a run folder or a shipped model's name; ``out`` writes the evaluation there
    instead (needed for a shipped model, whose folder belongs to the package).

    With ``resample`` (data the run never saw only) the scenes are resampled to the run's pixel
    size and every labelled pixel is scored through overlapping blended windows, exactly as
    ``experiment --score-on`` scores them.
    """
    from demseg.models.encoders import is_shipped_model, resolve_model_dir

    run_dir = resolve_model_dir(run_dir)
    if out is None and is_shipped_model(run_dir):
        raise DemsegError(f"{run_dir.name} is a shipped model: pass --out DIR for its evaluation")
    model, config = load_run(run_dir)
    task = task or config.task
    if task != config.task:
        raise DemsegError(f"the run was trained for {config.task}, not {task}")
    manifest = _manifest(run_dir)
    from demseg.data.spec import load_spec

    spec = load_spec(Path(spec_path))
    if out is not None:
        _check_evaluation_out(Path(out), run_dir, spec)
    out = _writable_evaluation_folder(Path(out) if out is not None else evaluation_folder(run_dir, spec_path,
                                                                                          spec.name),
                                      given=out is not None)
    if resample:
        return _evaluate_resampled(run_dir, model, config, manifest, spec_path, task, progress, out)
    trained_hashes = set((manifest.get("data") or {}).get("sha256", {}).values())
    own_data = bool(trained_hashes & set(spec_file_hashes(spec).values()))
    # the run's own data is read as the run read it (resampled, when it was)
    data = load_split(spec, [task], config.split_config(), progress,
                      pixel_size_m=manifest.get("resampled_to_m") if own_data else None)
    for scene in data.scenes.values():
        check_resolution(scene.grid.pixel_size_m, config, allow_resolution_mismatch)
    tiles, how = scored_tiles(data, config, manifest, task)
    scores = score_tiles(model, config, data, tiles, task)
    record = {"spec": str(spec_path), "task": task, "val_tiles": len(tiles), "tile_ids": [t.id for t in tiles],
              "validation": how, **scores}
    # made only now, after every check; metrics.json last: a folder whose evaluation failed holds none
    _make_evaluation_folder(out)
    (out / "metrics.json").unlink(missing_ok=True)
    if preview_tiles:
        _preview(out / "preview.png", model, config, data, tiles[:preview_tiles], task)
    write_text_atomic(out / "metrics.json", json.dumps(record, indent=2, default=float))
    return {"val_tiles": len(tiles), **scores, "out": str(out)}


def evaluation_folder(run_dir: str | Path, spec_path: str | Path, name: str) -> Path:
    """``RUN/evaluations/<spec name>-<8 hex>``: the hex of the spec's absolute path, so two specs with one name
    (every synthetic world is ``synthetic-world``) never share a folder, and the same spec always finds its own."""
    import hashlib

    digest = hashlib.sha256(str(Path(spec_path).expanduser().resolve()).encode()).hexdigest()[:8]
    return Path(run_dir) / "evaluations" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{digest}"


def _writable_evaluation_folder(out: Path, given: bool) -> Path:
    """``out``, checked writable before anything is scored (a read-only run: one line); made only when written."""
    import os

    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        hint = "" if given else "; evaluate writes metrics.json there: pass -o DIR to write it elsewhere"
        raise DemsegError(f"cannot write the evaluation folder {out} ({existing} is not a writable folder){hint}")
    return out


def _make_evaluation_folder(out: Path) -> Path:
    from demseg.io.folders import make_dir

    return make_dir(out)


def _manifest(run_dir: Path) -> dict:
    """A run's manifest ({} where it has none, e.g. an older shipped model: every tile then counts as unseen)."""
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DemsegError(f"the run's manifest is unreadable or not JSON: {path}") from exc
    if not isinstance(manifest, dict):
        raise DemsegError(f"the run's manifest is not a JSON object: {path}")
    return manifest


def _check_evaluation_out(out: Path, run_dir: Path, spec) -> None:
    """Refuse an --out that is, holds or lies in the run or the data, or that holds a run or an experiment."""
    from demseg.io.folders import check_output_path, layout_of

    check_output_path(out, [run_dir, *spec.files()])
    if out.is_dir() and layout_of(out) not in ("",):
        raise DemsegError(f"--out {out} holds the output of `demseg {layout_of(out)}`: give a folder for the "
                          "evaluation")


def _evaluate_resampled(run_dir, model, config: TrainConfig, manifest: dict, spec_path, task: str,
                        progress: bool, out: str | Path | None = None) -> dict[str, float]:
    from demseg.data.spec import load_spec
    from demseg.evaluate.scenes import scene_windows, score_windows

    trained_hashes = set((manifest.get("data") or {}).get("sha256", {}).values())
    if trained_hashes & set(spec_file_hashes(load_spec(Path(spec_path))).values()):
        raise DemsegError("--resample scores data the run never saw; this spec shares files with the run's "
                          "training data: evaluate it without --resample (its own validation tiles)")
    windows = scene_windows(spec_path, task, config, progress)
    probabilities = predict_images(model, windows.arrays.inputs, config.use_amp(), probabilities=True)
    scores = score_windows(probabilities, windows, task, config.pixel_size_m)
    record = {"spec": str(spec_path), "task": task, "validation": f"every labelled pixel, resampled to "
              f"{config.pixel_size_m:g} m (data the run never saw)", **scores}
    _make_evaluation_folder(Path(out))
    write_text_atomic(Path(out) / "metrics.json", json.dumps(record, indent=2, default=float))
    return {**scores, "out": str(out)}


def score_tiles(model, config: TrainConfig, data: SplitData, tiles: list[Tile], task: str) -> dict[str, float]:
    """Every metric of a model on ``tiles``, each tile scored at its own scene's pixel size.

    Beside the metrics of :class:`SegmentationScorer`: ``raised_fp_rate``, the share of pixels
    that are not the target but stand more than 2.5 m above ground (trees, mostly) marked as the target.
    """
    from demseg.evaluate.scenes import raised_mask

    arrays = tile_arrays(data.scenes, tiles, task, config.recipe)
    predictions = predict_images(model, arrays.inputs, config.use_amp())
    scorer = SegmentationScorer(task, pixel_size_m=data.pixel_size_m())
    raised = {scene_id: raised_mask(data.scenes[scene_id]) for scene_id in {t.scene_id for t in tiles}}
    raised_fp = raised_negatives = 0
    for tile, prediction, target in zip(tiles, predictions, arrays.targets, strict=True):
        scorer.add(prediction, target, pixel_size_m=data.scenes[tile.scene_id].grid.pixel_size_m)
        negatives = raised[tile.scene_id][tile.window()] & (target == 0)
        raised_fp += int((negatives & (prediction == 1)).sum())
        raised_negatives += int(negatives.sum())
    return {**scorer.scores(), "raised_fp": raised_fp, "raised_negatives": raised_negatives,
            "raised_fp_rate": raised_fp / raised_negatives if raised_negatives else float("nan")}


def _preview(path: Path, model, config: TrainConfig, data: SplitData, tiles: list[Tile], task: str) -> None:
    arrays = tile_arrays(data.scenes, tiles, task, config.recipe)
    predictions = predict_images(model, arrays.inputs, config.use_amp())
    shades = [hillshade(data.scenes[t.scene_id].dem.elevation[t.window()], data.scenes[t.scene_id].valid_mask[t.window()],
                        data.scenes[t.scene_id].grid.pixel_size_m) for t in tiles]
    write_preview(path, shades, list(arrays.targets), predictions, f"{task} on {data.spec.name}: {config.model}")
