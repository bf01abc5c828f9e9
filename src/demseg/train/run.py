"""One training run end to end: data -> split -> subset -> model -> fit -> run folder.

A run folder holds ``config.json`` (the TrainConfig), ``model.safetensors`` (the trained weights:
the head for mae-upernet, everything for unet), ``backbone.safetensors`` + ``backbone.json`` for
mae-upernet when asked, ``metrics.json``, ``history.csv``, ``tiles.csv`` and ``manifest.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from demseg.data.normalise import recipe_channels
from demseg.data.scene import Scene, load_scenes
from demseg.data.spec import DatasetSpec, load_spec
from demseg.data.tiles import Tile, eligible_tiles, make_tiles, split_tiles, training_subset, write_tile_index
from demseg.errors import DemsegError
from demseg.io.atomic import atomic_path, write_text_atomic
from demseg.train.config import TrainConfig
from demseg.train.loop import FitResult, fit
from demseg.train.manifest import write_manifest
from demseg.train.tiles import TileArrays, tile_arrays

SHIPPED_WEIGHTS = {"dem-tiny": "dem_mae_tiny.safetensors"}


def resolve_weights(weights: str) -> str:
    """A weights name or path as the loader wants it: shipped aliases become package file paths."""
    if weights in SHIPPED_WEIGHTS:
        path = Path(__file__).resolve().parents[1] / "weights" / SHIPPED_WEIGHTS[weights]
        if not path.exists():
            raise DemsegError(f"the shipped encoder {weights!r} is missing from this install: {path}")
        return str(path)
    return weights


def build_model(config: TrainConfig, num_channels: int, backbone: nn.Module | None = None) -> nn.Module:
    """The model a config describes: backbone weights loaded (or ``backbone`` reused), head freshly seeded."""
    from demseg.models.backbone import build_backbone
    from demseg.models.registry import build_model as build
    from demseg.models.upernet import MaeUperNet, SegmentationHead

    if config.model == "unet":
        torch.manual_seed(config.seed)
        return build("unet", num_channels=num_channels, num_classes=2, base_width=config.unet_width)
    if backbone is None:
        torch.manual_seed(config.seed)  # makes "random" backbone weights reproducible too
        backbone = build_backbone(config.arch, resolve_weights(config.backbone_weights), num_channels,
                                  tuple(config.tap_blocks), dtype=config.backbone_torch_dtype(),
                                  image_size=config.tile_size_px)
        trained_on = (getattr(backbone, "weights_metadata", None) or {}).get("normalisation")
        if trained_on and trained_on != config.recipe:
            raise DemsegError(f"backbone weights {config.backbone_weights!r} were pre-trained on {trained_on!r} "
                              f"inputs but this run normalises with {config.recipe!r}: pass --recipe {trained_on}")
    torch.manual_seed(config.seed)
    head = SegmentationHead(backbone.embed_dim, 2, config.head_width, neck_channels=config.neck_width,
                            aux_head=config.aux_head)
    return MaeUperNet(backbone, head)


@dataclass
class PreparedData:
    """Loaded scenes and split tiles of a spec."""

    spec: DatasetSpec
    scenes: dict[str, Scene]
    tiles: list[Tile]


def prepare_data(spec_path: str | Path, tasks: list[str], tile_size_px: int = 224, val_tiles: int = 50,
                 min_train_tiles: int = 10, split_seed: int = 0, min_valid_fraction: float = 0.75,
                 progress: bool = True) -> PreparedData:
    """Load a spec's scenes, cut tiles and split them (the split is shared by every run on it)."""
    spec = load_spec(spec_path)
    missing = [task for task in tasks if task not in spec.tasks()]
    if missing:
        raise DemsegError(f"no scene of {spec_path} has labels for {', '.join(missing)}")
    scenes = {scene.id: scene for scene in load_scenes(spec, tasks, progress=progress)}
    tiles = make_tiles(list(scenes.values()), tile_size_px, min_valid_fraction)
    tiles = split_tiles(tiles, {s.id: s.split for s in spec.scenes}, val_tiles=val_tiles,
                        min_train_tiles=min_train_tiles, seed=split_seed)
    return PreparedData(spec, scenes, tiles)


def pixel_size_of(data: PreparedData) -> float:
    sizes = sorted(scene.grid.pixel_size_m for scene in data.scenes.values())
    return sizes[len(sizes) // 2]


def run_arrays(data: PreparedData, config: TrainConfig) -> tuple[list[Tile], list[Tile], TileArrays, TileArrays]:
    """Training subset and validation tiles of a config, as model-ready arrays."""
    train_tiles = training_subset(data.tiles, config.train_tiles, config.seed, config.task,
                                  config.min_labelled_fraction)
    val_tiles = eligible_tiles(data.tiles, "val", config.task, config.min_labelled_fraction)
    if not val_tiles:
        raise DemsegError(f"the split left no validation tile labelled for {config.task}")
    return (train_tiles, val_tiles, tile_arrays(data.scenes, train_tiles, config.task, config.recipe),
            tile_arrays(data.scenes, val_tiles, config.task, config.recipe))


def prepare_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty output folder unless ``overwrite``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DemsegError(f"output folder exists: {out} (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_run(out: Path, config: TrainConfig, model: nn.Module, result: FitResult, train_tiles: list[Tile],
             val_tiles: list[Tile], data: PreparedData, save_backbone: bool = True) -> None:
    """Write the run folder (weights first, config last, so a config means a complete run)."""
    trainable = model.head if config.model == "mae-upernet" else model
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous() for k, v in trainable.state_dict().items()}, str(tmp))
    if config.model == "mae-upernet" and save_backbone:
        from demseg.models.weights import save_encoder

        save_encoder(model.backbone.encoder, out / "backbone.safetensors",
                     {"arch": config.arch, "num_channels": recipe_channels(config.recipe),
                      "image_size": config.tile_size_px, "patch_size": 16, "normalisation": config.recipe,
                      "source": config.backbone_weights})
    write_text_atomic(out / "metrics.json", json.dumps(
        {"task": config.task, "model": config.model, "best_iter": result.best_iter, **result.best_scores,
         "train_seconds": result.train_seconds}, indent=2, default=float))
    if result.history:
        columns = list(result.history[0])
        lines = [",".join(columns)] + [",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                                                for c in columns) for row in result.history]
        write_text_atomic(out / "history.csv", "\n".join(lines) + "\n")
    write_tile_index(data.tiles, out / "tiles.csv")
    write_manifest(out / "manifest.json", config.model_dump(), data.spec,
                   {"train": [t.id for t in train_tiles], "val": [t.id for t in val_tiles]}, argv=sys.argv)
    write_text_atomic(out / "config.json", config.model_dump_json(indent=2))


def train_run(spec_path: str | Path, config: TrainConfig, out: str | Path, overwrite: bool = False,
              progress: bool = True) -> dict[str, float]:
    """Train one model on a spec and write its run folder; returns the best validation scores."""
    out = prepare_out_dir(out, overwrite)
    data = prepare_data(spec_path, [config.task], config.tile_size_px, config.val_tiles, config.train_tiles,
                        config.split_seed, config.min_valid_fraction, progress)
    config = config.model_copy(update={"pixel_size_m": pixel_size_of(data)})
    train_tiles, val_tiles, train, val = run_arrays(data, config)
    model = build_model(config, train.inputs.shape[1])
    result = fit(config, model, train, val, progress=progress)
    save_run(out, config, model, result, train_tiles, val_tiles, data)
    return {"best_iter": result.best_iter, **result.best_scores, "train_seconds": result.train_seconds}


def load_run(run_dir: str | Path) -> tuple[nn.Module, TrainConfig]:
    """The trained model of a run folder (eval mode) and its config."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists() or not (run_dir / "model.safetensors").exists():
        raise DemsegError(f"not a demseg run folder (config.json and model.safetensors needed): {run_dir}")
    try:
        config = TrainConfig.model_validate_json(config_path.read_text())
    except ValueError as exc:
        raise DemsegError(f"run config is unreadable: {config_path}") from exc
    channels = recipe_channels(config.recipe)
    backbone_file = run_dir / "backbone.safetensors"
    if config.model == "mae-upernet" and backbone_file.exists():
        config_for_build = config.model_copy(update={"backbone_weights": str(backbone_file)})
    else:
        config_for_build = config
    model = build_model(config_for_build, channels)
    trainable = model.head if config.model == "mae-upernet" else model
    try:
        state = load_file(str(run_dir / "model.safetensors"))
        trainable.load_state_dict(state)
    except Exception as exc:  # safetensors and torch raise several types for corrupt/mismatched files
        raise DemsegError(f"model weights do not fit the run's architecture or are corrupt: "
                          f"{run_dir / 'model.safetensors'} ({str(exc).splitlines()[0][:120]})") from exc
    model.eval()
    return model, config
