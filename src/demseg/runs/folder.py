"""The run-folder contract: what a run folder holds and how every stage reads it back.

A run folder (made by :func:`demseg.train.run.train_run`) holds ``config.json`` (the
:class:`~demseg.runs.config.TrainConfig`, written last, so it marks a complete run),
``model.safetensors`` (the head for backbone models, everything for the UNet),
``backbone.safetensors`` + ``backbone.json`` for backbone models, ``metrics.json``,
``history.csv``, ``tiles.csv`` and ``manifest.json``. Evaluate, predict and export read runs only
through this module, never through the training code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from demseg.errors import DemsegError
from demseg.models.registry import build, uses_backbone
from demseg.runs.config import TrainConfig

MAX_PIXEL_SIZE_MISMATCH = 0.10  # relative difference to the training pixel size that is refused
MAX_TILE_SIZE_PX = 4096  # a run config asking more is corrupt or hostile, not a model



RUN_FILES = ("config.json", "model.safetensors", "backbone.safetensors")  # what defines a run's network


def run_weights_digest(run_dir: Path) -> str:
    """SHA-256 over the files that define a run's network (read in chunks)."""
    digest = hashlib.sha256()
    for name in RUN_FILES:
        path = run_dir / name
        if path.exists():
            digest.update(name.encode())
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def trainable_part(model: nn.Module, config: TrainConfig) -> nn.Module:
    """The part of a model that training changes and ``model.safetensors`` stores."""
    return model.head if uses_backbone(config.model) else model


def is_finished_run(folder: Path) -> bool:
    """True when a folder holds a complete run (its config is written last)."""
    return (folder / "config.json").exists()


def read_run_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig of a run folder, with its values bounded (a hand-edited config is refused)."""
    config_path = run_dir / "config.json"
    if not config_path.is_file() or not (run_dir / "model.safetensors").is_file():
        raise DemsegError(f"not a demseg run folder (config.json and model.safetensors needed): {run_dir}")
    try:
        config = TrainConfig.model_validate_json(config_path.read_text())
    except (ValueError, OSError) as exc:
        raise DemsegError(f"run config is unreadable or invalid: {config_path}") from exc
    if config.tile_size_px > MAX_TILE_SIZE_PX or config.tile_size_px % 16:
        raise DemsegError(f"run config {config_path} asks for {config.tile_size_px} px tiles; demseg runs use a "
                          f"multiple of 16 px up to {MAX_TILE_SIZE_PX}")
    if config.pixel_size_m is not None and not 0.0 < config.pixel_size_m < 1000.0:
        raise DemsegError(f"run config {config_path} has an impossible pixel size: {config.pixel_size_m}")
    return config


def load_run(run_dir: str | Path) -> tuple[nn.Module, TrainConfig]:
    """The trained model of a run folder or shipped model name (eval mode) and its config."""
    from demseg.models.encoders import resolve_model_dir

    run_dir = resolve_model_dir(run_dir)
    config = read_run_config(run_dir)
    backbone_file = run_dir / "backbone.safetensors"
    build_config = config
    if uses_backbone(config.model) and backbone_file.exists():
        build_config = config.model_copy(update={"backbone_weights": str(backbone_file)})
    elif uses_backbone(config.model) and config.finetune != "none":
        raise DemsegError(f"the run fine-tuned its backbone (finetune {config.finetune}) but its "
                          f"backbone.safetensors is missing: {run_dir}")
    model = build(build_config, seed=config.seed)
    try:
        trainable_part(model, config).load_state_dict(load_file(str(run_dir / "model.safetensors")))
    except Exception as exc:  # safetensors and torch raise several types for corrupt/mismatched files
        raise DemsegError(f"model weights do not fit the run's architecture or are corrupt: "
                          f"{run_dir / 'model.safetensors'} ({str(exc).splitlines()[0][:120]})") from exc
    model.eval()
    return model, config


def check_resolution(pixel_size_m: float, config: TrainConfig, allow_mismatch: bool = False) -> str | None:
    """Refuse data whose pixel size is more than 10 % off the run's; with ``allow_mismatch`` warn instead.

    Returns the warning text, or None when the sizes agree. Evaluate and predict apply the same rule.
    """
    import logging

    trained = config.pixel_size_m
    if trained is None:
        message = "the run does not record its training pixel size; the data's was not checked"
        logging.getLogger("demseg").warning(message)
        return message
    relative = abs(pixel_size_m - trained) / trained
    if relative <= MAX_PIXEL_SIZE_MISMATCH:
        return None
    message = (f"pixel size {pixel_size_m:g} m differs from the run's training pixel size {trained:g} m "
               f"by {relative:.0%}")
    if not allow_mismatch:
        raise DemsegError(f"{message}; objects would have the wrong size in pixels. Resample first "
                          f"(e.g. gdalwarp -tr {trained:g} {trained:g} -r bilinear IN.tif OUT.tif) or pass "
                          "--allow-resolution-mismatch")
    logging.getLogger("demseg").warning("%s; going on anyway (--allow-resolution-mismatch)", message)
    return message
