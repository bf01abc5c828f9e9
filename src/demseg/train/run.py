"""One training run end to end: data -> split -> subset -> model -> fit -> run folder.

A run folder holds ``config.json`` (the TrainConfig), ``model.safetensors`` (the trained weights:
the head for backbone models, everything for the UNet), ``backbone.safetensors`` + ``backbone.json``
for backbone models, ``metrics.json``, ``history.csv``, ``tiles.csv`` and ``manifest.json`` (which
records the training and validation tile ids; ``evaluate`` scores exactly those validation tiles).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from demseg.data.arrays import TileArrays, tile_arrays
from demseg.data.dataset import SplitData, load_split
from demseg.data.normalise import recipe_channels
from demseg.data.spec import DatasetSpec, load_spec
from demseg.data.tiles import Tile, eligible_tiles, training_subset, write_tile_index
from demseg.errors import DemsegError
from demseg.io.atomic import atomic_path, write_text_atomic
from demseg.io.folders import out_dir
from demseg.models.registry import build, shaped_by, uses_backbone
from demseg.runs.config import TrainConfig
from demseg.runs.folder import MAX_PIXEL_SIZE_MISMATCH, is_finished_run, read_run_config, trainable_part
from demseg.runs.manifest import write_manifest
from demseg.train.loop import CHECKPOINT_FILE, FitResult, ScorerFactory, fit


def run_arrays(data: SplitData, config: TrainConfig) -> tuple[list[Tile], list[Tile], TileArrays, TileArrays]:
    """Training subset and validation tiles of a config, as model-ready arrays."""
    train_tiles = training_subset(data.tiles, config.train_tiles, config.seed, config.task,
                                  config.min_labelled_fraction)
    val_tiles = eligible_tiles(data.tiles, "val", config.task, config.min_labelled_fraction)
    if not val_tiles:
        raise DemsegError(f"the split left no validation tile labelled for {config.task}")
    return (train_tiles, val_tiles, tile_arrays(data.scenes, train_tiles, config.task, config.recipe,
                                                config.coarsen, config.auxiliary, config.label_noise,
                                                config.split_seed),
            tile_arrays(data.scenes, val_tiles, config.task, config.recipe))


def mix_arrays(config: TrainConfig, spec_data: SplitData, progress: bool = False) -> TileArrays | None:
    """The ``--mix`` dataset's rehearsal tiles (resampled to the run's pixel size), or None without ``--mix``.

    ``config.mix`` is a dataset spec or a named world (``rehearsal``: generated once into the cache,
    :mod:`demseg.data.synth.cache`). The tiles come from the mix dataset's training split, chosen by the split seed (the same tiles for
    every training seed and budget); a mix dataset that shares a file with the run's own data is
    refused, so no validation tile can come back through it.
    """
    if not config.mix:
        return None
    from demseg.data.spec import load_spec
    from demseg.data.synth.cache import is_named_world, named_world
    from demseg.runs.manifest import spec_file_hashes

    mix_spec = load_spec(named_world(config.mix, progress) if is_named_world(config.mix) else Path(config.mix))
    if set(spec_file_hashes(mix_spec).values()) & set(spec_file_hashes(spec_data.spec).values()):
        raise DemsegError(f"--mix {config.mix} shares files with the training data; mix in another dataset "
                          "(e.g. a synthetic world from demseg synth)")
    data = load_split(mix_spec, [config.task], config.split_config(), progress, pixel_size_m=config.pixel_size_m)
    tiles = training_subset(data.tiles, config.mix_tiles, config.split_seed, config.task,
                            config.min_labelled_fraction)
    return tile_arrays(data.scenes, tiles, config.task, config.recipe, config.coarsen, config.auxiliary)


def save_run(out: Path, config: TrainConfig, model: nn.Module, result: FitResult, train_tiles: list[Tile],
             val_tiles: list[Tile], data: SplitData, mix_ids: list[str] | None = None,
             resampled_to_m: float | None = None) -> None:
    """Write the run folder (weights first, config last, so a config means a complete run)."""
    trainable = trainable_part(model, config)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous() for k, v in trainable.state_dict().items()}, str(tmp))
    if uses_backbone(config.model):
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
                   {"train": [t.id for t in train_tiles], "val": [t.id for t in val_tiles],
                    **({"mix": mix_ids} if mix_ids else {})}, argv=sys.argv,
                   extra={"resampled_to_m": resampled_to_m})
    write_text_atomic(out / "config.json", config.model_dump_json(indent=2))


INIT_MUST_MATCH = ("model", "task", "recipe", "arch", "head_width", "neck_width", "unet_width", "unet_context",
                   "detail_width", "tile_size_px", "auxiliary")


def _shapes_weights(name: str, model: str) -> bool:
    """True when setting ``name`` shapes the weights of ``model`` (a UNet has no head width, a UperNet no UNet)."""
    return name in ("model", "task", "recipe", "auxiliary") or name in shaped_by(model)


def resolve_init(config: TrainConfig) -> TrainConfig:
    """``config`` starting from the run ``config.init``: its backbone as the weights; mismatches refused.

    ``config.init`` is a run folder or the name of a shipped model
    (:data:`demseg.models.encoders.SHIPPED_MODELS`; a folder of that name wins).
    The new run works at the start's pixel size (the data are resampled to it); an explicit
    ``pixel_size_m`` more than 10 % off the start's is refused.
    """
    if not config.init:
        return config
    from demseg.models.encoders import SHIPPED_ENCODERS, resolve_model_dir

    run_dir = resolve_model_dir(config.init, "--init")
    init = read_run_config(run_dir)
    different = [f"{name} {getattr(init, name)!r} (this run: {getattr(config, name)!r})"
                 for name in INIT_MUST_MATCH if getattr(init, name) != getattr(config, name)
                 and _shapes_weights(name, config.model)]
    if different:
        raise DemsegError(f"--init {config.init} was trained with other settings: {'; '.join(different)}")
    if init.pixel_size_m is not None:
        if config.pixel_size_m is None:
            config = config.model_copy(update={"pixel_size_m": init.pixel_size_m})
        elif abs(config.pixel_size_m - init.pixel_size_m) > MAX_PIXEL_SIZE_MISMATCH * init.pixel_size_m:
            raise DemsegError(f"--init {config.init} works at {init.pixel_size_m:g} m pixels, not "
                              f"--pixel-size-m {config.pixel_size_m:g}: objects would have another size in "
                              "pixels (leave --pixel-size-m out to resample the data to the start's)")
    if uses_backbone(config.model):
        if (run_dir / "backbone.safetensors").is_file():
            weights = str(run_dir / "backbone.safetensors")
        elif init.backbone_weights in SHIPPED_ENCODERS:
            weights = init.backbone_weights
        else:
            raise DemsegError(f"--init {config.init} holds no backbone.safetensors")
        config = config.model_copy(update={"backbone_weights": weights})
    return config


def apply_init(model: nn.Module, config: TrainConfig) -> None:
    """Load the trained head (or UNet) of the run ``config.init`` into ``model`` (the backbone came with the build)."""
    if not config.init:
        return
    from demseg.models.encoders import resolve_model_dir

    path = resolve_model_dir(config.init, "--init") / "model.safetensors"
    try:
        trainable_part(model, config).load_state_dict(load_file(str(path)))
    except Exception as exc:  # safetensors and torch raise several types for corrupt or mismatched files
        raise DemsegError(f"--init weights do not fit this model: {path} ({str(exc).splitlines()[0][:120]})") from exc


def train_model(config: TrainConfig, train: TileArrays, val: TileArrays, scorer: ScorerFactory, backbone=None,
                train_cache=None, val_cache=None, progress: bool = True, checkpoint: Path | None = None,
                resume: bool = False) -> tuple[nn.Module, FitResult]:
    """The training step of every pipeline (train, experiment, demo): build, load the ``--init`` start, fit.

    ``backbone`` shares an already built encoder (an experiment builds one per model); ``train_cache``
    and ``val_cache`` are its feature caches (:mod:`demseg.models.features`). ``checkpoint`` and
    ``resume``: see :func:`demseg.train.loop.fit`.
    """
    model = build(config, backbone=backbone, seed=config.seed)
    apply_init(model, config)
    result = fit(config, model, train, val, scorer, train_cache=train_cache, val_cache=val_cache, progress=progress,
                 checkpoint=checkpoint, resume=resume)
    return model, result


def working_pixel_size(config: TrainConfig) -> float | None:
    """The pixel size the data are resampled to: the config's, else its start's (``--init``), else None (native)."""
    if config.pixel_size_m is not None or not config.init:
        return config.pixel_size_m
    return resolve_init(config).pixel_size_m


def run_inputs(spec: DatasetSpec, spec_path, config: TrainConfig) -> list:
    """Every file and folder a training run reads: what its output folder must not be, hold or lie in."""
    from demseg.models.encoders import resolve_model_dir

    inputs = [spec_path if not isinstance(spec_path, DatasetSpec) else None, *spec.files()]
    if config.init:
        inputs.append(resolve_model_dir(config.init, "--init"))
    if config.mix and Path(config.mix).exists():
        inputs.append(config.mix)
    return inputs


def check_finetune_fits(finetune: str, models: list[str]) -> None:
    """Refuse ``--finetune`` where no model has a ViT backbone to fine-tune (a UNet would silently ignore it)."""
    if finetune != "none" and not any(uses_backbone(model) for model in models):
        raise DemsegError(f"--finetune {finetune} fine-tunes a ViT backbone (mae-upernet, mae-detail); "
                          f"{','.join(models)} has none: leave --finetune out, or choose a --model with a backbone")


def train_run(spec_path: str | Path, config: TrainConfig, out: str | Path, scorer: ScorerFactory,
              overwrite: bool = False, progress: bool = True, resume: bool = False) -> dict[str, float]:
    """Train one model on a spec and write its run folder; returns the best validation scores.

    ``scorer(task, pixel_size_m)`` makes the validation scorer (the CLI passes
    :class:`demseg.evaluate.metrics.SegmentationScorer`). With ``config.checkpoint_every`` the
    training state is saved in ``out/checkpoint.pt`` as it goes (and the folder is kept if the run
    stops); ``resume`` continues an unfinished run from it, with the same settings.
    """
    out = Path(out)
    check_finetune_fits(config.finetune, [config.model])
    if resume and not (out / CHECKPOINT_FILE).is_file():
        raise DemsegError(f"nothing to resume: {out} holds no training checkpoint ({CHECKPOINT_FILE})")
    if resume and is_finished_run(out):
        raise DemsegError(f"nothing to resume: {out} holds a finished run")
    if not resume and not overwrite and (out / CHECKPOINT_FILE).is_file() and not is_finished_run(out):
        raise DemsegError(f"{out} holds an unfinished run's checkpoint: pass --resume to continue it, or "
                          "--overwrite to start again")
    config = resolve_init(config)  # a bad start or spec is refused before the output folder is made
    spec = spec_path if isinstance(spec_path, DatasetSpec) else load_spec(Path(spec_path))
    keep = bool(config.checkpoint_every) or resume
    with out_dir(out, overwrite and not resume, finished=is_finished_run, keep=resume, discard_on_error=not keep,
                 command="train", inputs=run_inputs(spec, spec_path, config)) as folder:
        resampled_to = config.pixel_size_m  # asked for (or the start's): evaluate reads the data alike
        data = load_split(spec, [config.task], config.split_config(), progress, pixel_size_m=resampled_to)
        config = config.model_copy(update={"pixel_size_m": data.pixel_size_m()})
        train_tiles, val_tiles, train, val = run_arrays(data, config)
        mixed = mix_arrays(config, data, progress)
        if mixed is not None:
            train = train.with_mix(mixed)
        model, result = train_model(config, train, val, scorer, progress=progress, checkpoint=folder / CHECKPOINT_FILE,
                                    resume=resume)
        save_run(folder, config, model, result, train_tiles, val_tiles, data,
                 mixed.ids if mixed is not None else [], resampled_to_m=resampled_to)
        (folder / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is finished: nothing left to resume
    return {"best_iter": result.best_iter, **result.best_scores, "train_seconds": result.train_seconds}
