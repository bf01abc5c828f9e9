"""Pre-training of a ViT encoder on unlabelled DEM crops (MAE and DEM pretext tasks), one process or torchrun (DDP).

Recipe (He et al. 2021, PRETRAIN.md): mask 75 % of 16 px patches, reconstruct them with a light
decoder, loss = MSE on per-patch-normalised pixels of the masked patches only; AdamW (betas
0.9/0.95, weight decay 0.05), lr = base_lr x batch / 256, linear warm-up then cosine decay.
demseg adds: patches that are mostly nodata are excluded from the loss and invalid pixels inside
kept patches do not count; DEM pretext objectives (``--objective ground`` predicts the height
above ground from the surface model alone, see :mod:`demseg.pretrain.objectives`); a supervised
objective on the synthetic world's labels (``--objective classes``: background, building, road,
vegetation per pixel); resolution augmentation (``--coarsen``); synthetic
scenes generated afresh as training goes on (``--synthetic-scenes``, ``--refresh-every``); and
regions that must never be seen (``--exclude SPEC``: the validation tiles of a benchmark). All
randomness of step ``k`` comes from ``(seed, k)`` and the synthetic scenes of a refresh from
``(seed, refresh)``, so a run resumed from a checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from safetensors.torch import load_file, save_file
from transformers import ViTMAEForPreTraining

from demseg.data.augment import coarsen_within, dihedral
from demseg.data.normalise import DEFAULT_RECIPE, recipe_channels
from demseg.data.tiles import DEFAULT_TILE_SIZE_PX
from demseg.errors import DemsegError
from demseg.io.atomic import atomic_path, write_text_atomic
from demseg.io.folders import made_by, out_dir
from demseg.models.precision import resolve_precision
from demseg.models.vit import init_sincos_position_embeddings, mae_config
from demseg.models.weights import save_encoder
from demseg.pretrain.objectives import (
    CLASS_NAMES,
    PretextModel,
    has_classes,
    has_ground,
    has_reconstruction,
    pretext_loss,
)
from demseg.pretrain.sources import CropPool, crops_from, discover_sources, load_rasters, synthetic_rasters

CHECKPOINT_FORMAT = "demseg-mae-pretrain/1"


class PretrainConfig(BaseModel):
    """Settings of an MAE pre-training run (saved in the checkpoint)."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid", protected_namespaces=())
    arch: Literal["tiny", "small", "base"] = Field("tiny", description="ViT encoder size.")
    recipe: str = Field(DEFAULT_RECIPE, description="Normalisation recipe; the downstream run must use the same.")
    tile_size_px: int = Field(DEFAULT_TILE_SIZE_PX, gt=0, description="Side of the tiles that are normalised (as downstream).")
    crop_size_px: int | None = Field(None, gt=0, description="Side of the random crops the MAE sees, cut from "
                                     "normalised tiles (a multiple of the patch size; default: the tile). "
                                     "Smaller crops are ~4x cheaper per image at half the side; the fixed "
                                     "sin-cos position table is regenerated exactly for 224 px downstream.")
    patch_size: int = Field(16, gt=0, description="ViT patch side in pixels.")
    mask_ratio: float = Field(0.75, gt=0, lt=1, description="Share of patches masked.")
    decoder_layers: int = Field(4, gt=0, description="Decoder blocks (paper: 8).")
    decoder_width: int = Field(256, gt=0, description="Decoder width (paper: 512).")
    steps: int = Field(2000, gt=0, description="Optimisation steps.")
    batch_size: int = Field(32, gt=0, description="Global batch (split over processes under torchrun).")
    base_lr: float = Field(1.5e-4, gt=0, description="lr = base_lr x batch / 256 (MAE recipe).")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Linear warm-up share of the steps.")
    pool_size: int = Field(2048, gt=0, description="Random crops drawn once; D4 views multiply them by 8.")
    min_valid_fraction: float = Field(0.5, ge=0, le=1, description="Crops need this much valid elevation.")
    min_patch_valid_fraction: float = Field(0.5, ge=0, le=1, description="Patches below this are not scored.")
    seed: int = Field(0, ge=0, description="Fixes crops, masks, augmentation and initialisation.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Autocast precision of the forward pass; auto: bf16 on CUDA, else the faster of "
                            "bf16 and fp32 on this CPU (measured).")
    device: str = Field("cpu", description="cpu or cuda.")
    checkpoint_every: int = Field(200, gt=0, description="Save a resumable checkpoint every N steps.")
    objective: Literal["mae", "ground", "mae+ground", "classes", "classes+ground", "mae+classes"] = Field(
        "mae", description="mae: reconstruct masked patches; ground: predict the height above ground (nDSM) from "
                           "the surface model alone; classes: predict each pixel's class (background, building, "
                           "road, vegetation; synthetic scenes' labels, class-balanced cross entropy); a+b: both "
                           "(see demseg.pretrain.objectives). Only objectives with mae mask patches; the others "
                           "show the encoder the whole crop.")
    ground_weight: float = Field(1.0, ge=0, description="Weight of the ground loss when combined with another.")
    classes_weight: float = Field(1.0, ge=0, description="Weight of the classes loss when combined with another.")
    coarsen: list[Annotated[int, Field(ge=2)]] = Field(
        [], description="Resolution augmentation: cut crops in turn at 1x and at each of these factors x the pixel "
                        "size (e.g. 2,4), as demseg train's --coarsen shows a tile; labels and targets follow.")
    synthetic_scenes: int = Field(0, ge=0, description="Synthetic scenes generated per refresh (0: none); they "
                                                       "always have a DTM and class labels.")
    synthetic_size_px: int = Field(896, gt=0, description="Side of each synthetic scene (at 0.5 m).")
    synthetic_share: float = Field(0.5, ge=0, le=1, description="Share of the crop pool cut from synthetic scenes "
                                                                "when there are also file sources.")
    refresh_every: int = Field(0, ge=0, description="Steps between fresh synthetic scenes (0: one set for the "
                                                    "whole run).")
    exclude: list[str] = Field([], description="Dataset specs whose validation tiles (the default split) are never "
                                               "cropped, e.g. the benchmark the encoder will be scored on.")

    @field_validator("coarsen")
    @classmethod
    def _coarsen_fits(cls, value: list[int], info: ValidationInfo) -> list[int]:
        return coarsen_within(value, info.data.get("tile_size_px"))

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError(f"must be cpu, cuda or cuda:N, got {value!r}")
        return value

    @property
    def crop_px(self) -> int:
        return self.crop_size_px or self.tile_size_px

    @property
    def input_dtm(self) -> bool:
        """Whether inputs are normalised with the DTM: not for ground objectives (it is the answer)."""
        return not has_ground(self.objective)

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("DEMSEG_DEVICE", "cpu") == "cuda" else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def build_mae(config: PretrainConfig) -> PretextModel:
    """A randomly initialised pre-training model for the objective, with fixed sin-cos position embeddings."""
    if config.crop_px % config.patch_size:
        raise DemsegError(f"crop size {config.crop_px} px is not a multiple of the patch size "
                          f"{config.patch_size} px")
    if config.crop_px > config.tile_size_px:
        raise DemsegError(f"crop size {config.crop_px} px is larger than the tile size {config.tile_size_px} px")
    torch.manual_seed(config.seed)
    # objectives without reconstruction show the encoder the whole crop, as downstream
    mask_ratio = config.mask_ratio if has_reconstruction(config.objective) else 0.0
    mae_cfg = mae_config(config.arch, recipe_channels(config.recipe), config.crop_px, config.patch_size,
                         config.decoder_layers, config.decoder_width, mask_ratio)
    mae_cfg.norm_pix_loss = True
    mae = ViTMAEForPreTraining(mae_cfg)
    # transformers leaves these tables at zero on random init
    init_sincos_position_embeddings(mae)
    mae.vit.embeddings.position_embeddings.requires_grad_(False)
    mae.decoder.decoder_pos_embed.requires_grad_(False)
    return PretextModel(mae, config.objective)


def lr_factor(step: int, steps: int, warmup_fraction: float) -> float:
    """Linear warm-up, then cosine decay to 0."""
    warmup = max(1, int(round(steps * warmup_fraction)))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batch(pool: CropPool, config: PretrainConfig, step: int, rank: int, world: int, num_patches: int,
           device: torch.device) -> tuple[torch.Tensor, ...]:
    """This process's share of step ``step``'s global batch (inputs, valid, ground, labels, noise); from (seed, step) alone."""
    rng = np.random.default_rng([config.seed, step])
    rows = rng.integers(0, len(pool), config.batch_size)
    views = rng.integers(0, 8, config.batch_size)
    noise = torch.from_numpy(rng.random((config.batch_size, num_patches), dtype=np.float32))
    crop = config.crop_px
    offsets = rng.integers(0, config.tile_size_px - crop + 1, (config.batch_size, 2))
    mine = list(range(rank, config.batch_size, world))

    def cut(array: np.ndarray, i: int) -> torch.Tensor:
        window = array[rows[i], ..., offsets[i, 0]:offsets[i, 0] + crop, offsets[i, 1]:offsets[i, 1] + crop]
        data = window.astype(np.float32) if array.dtype == np.float16 else window
        return dihedral(torch.from_numpy(np.ascontiguousarray(data)), int(views[i]))

    batch = [torch.stack([cut(array, i) for i in mine]).to(device)
             for array in (pool.inputs, pool.valid, pool.ground, pool.labels)]
    return (*batch, noise[rank::world].to(device))


def _config_json(config: PretrainConfig, step: int, extra: dict | None = None) -> dict:
    return {"format": CHECKPOINT_FORMAT, "arch": config.arch, "num_channels": recipe_channels(config.recipe),
            "normalisation": config.recipe, "patch_size": config.patch_size, "image_size": config.crop_px,
            "normalised_tile_size": config.tile_size_px,
            "mask_ratio": config.mask_ratio, "decoder_layers": config.decoder_layers,
            "decoder_width": config.decoder_width, "step": step, "method": f"{config.objective} pre-training on DEMs (demseg)",
            "pretrain_config": json.loads(config.model_dump_json()), **(extra or {})}


def save_checkpoint(out: Path, model: PretextModel, optimizer, config: PretrainConfig, step: int,
                    losses: list[float]) -> None:
    """A resumable checkpoint in ``out/last`` (swapped in whole) and the encoder alone in ``out``."""
    staging = out / ".last.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = {k: v.detach().float().contiguous() for k, v in model.mae.state_dict().items()}
    with atomic_path(staging / "mae.safetensors") as tmp:
        save_file(state, str(tmp))
    (staging / "mae.json").write_text(json.dumps(_config_json(config, step), indent=2))
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "losses": losses}, staging / "resume.pt")
    previous = out / ".last.old"
    shutil.rmtree(previous, ignore_errors=True)
    if (out / "last").exists():
        os.replace(out / "last", previous)
    os.replace(staging, out / "last")
    shutil.rmtree(previous, ignore_errors=True)
    meta = _config_json(config, step)
    save_encoder(model.mae, out / "encoder.safetensors",
                 {k: meta[k] for k in ("normalisation", "step", "method", "pretrain_config")}
                 | {"source": "demseg pretrain", "objective": config.objective, "input_dtm": config.input_dtm})


def load_checkpoint(out: Path, model: PretextModel, optimizer, config: PretrainConfig) -> tuple[int, list]:
    """Restore model and optimizer from ``out/last``; refuse a checkpoint of another tool or arch."""
    last = out / "last"
    meta_path = last / "mae.json"
    if not meta_path.exists() or not (last / "resume.pt").exists():
        raise DemsegError(f"no demseg pre-training checkpoint to resume in {out}")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise DemsegError(f"checkpoint config is not JSON: {meta_path}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise DemsegError(f"{out} holds a checkpoint of another tool or format, not demseg MAE pre-training")
    saved = PretrainConfig.model_validate(meta["pretrain_config"])
    for key in ("arch", "recipe", "tile_size_px", "crop_size_px", "patch_size", "decoder_layers", "decoder_width",
                "batch_size", "steps", "seed", "mask_ratio", "objective", "synthetic_scenes", "refresh_every",
                "synthetic_share", "synthetic_size_px", "pool_size", "exclude", "coarsen"):
        if getattr(saved, key) != getattr(config, key):
            raise DemsegError(f"cannot resume: the checkpoint in {out} has {key}={getattr(saved, key)!r}, "
                              f"this run asks {key}={getattr(config, key)!r}")
    try:
        model.mae.load_state_dict(load_file(str(last / "mae.safetensors")))
        state = torch.load(last / "resume.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign files surface as many exception types
        raise DemsegError(f"cannot read the checkpoint in {last}: {str(exc).splitlines()[0][:160]}") from exc
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["losses"])


def _params_in_sync(model: torch.nn.Module) -> bool:
    """True when every process holds the same parameters (checked by an all-gather of a checksum)."""
    if not dist.is_initialized():
        return True
    with torch.no_grad():
        checksum = torch.stack([p.double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def pretrain(sources: list[str | Path], config: PretrainConfig, out: str | Path, resume: bool = False,
             overwrite: bool = False, progress: bool = True, stop_after: int | None = None) -> dict:
    """Pre-train an MAE on DEM crops and write checkpoints, previews and a manifest to ``out``.

    ``stop_after`` ends the run early after that many steps of this invocation (to test resuming).
    """
    out = Path(out)
    rank, world = _distributed()
    if config.batch_size % world:
        raise DemsegError(f"batch size {config.batch_size} does not split over {world} processes")
    config = config.model_copy(update={"precision": resolve_precision(config.precision, config.device)})
    inputs = [*sources, *config.exclude]
    with _open_out(out, resume, overwrite, inputs) if rank == 0 else contextlib.nullcontext():
        return _pretrain(sources, config, out, resume, progress, stop_after, rank, world)


class Pools:
    """The crops training draws from: file sources cut once, synthetic scenes replaced every ``refresh_every`` steps."""

    def __init__(self, sources, config: PretrainConfig, progress: bool):
        self.config = config
        self.progress = progress
        if has_classes(config.objective) and not config.synthetic_scenes:
            raise DemsegError(f"--objective {config.objective} needs class labels, and only synthetic scenes carry "
                              "them (labels of files are not read): add --synthetic-scenes N")
        found = discover_sources(sources) if sources else []
        excluded = excluded_regions(config)
        rasters, self.skipped = load_rasters(found, config.tile_size_px, excluded) if found else ([], [])
        if not rasters and not config.synthetic_scenes:
            raise DemsegError(f"no DEM is at least {config.tile_size_px} px on both sides and no synthetic scenes "
                              "were asked (--synthetic-scenes): no tiles to pre-train on")
        if has_ground(config.objective) and not config.synthetic_scenes and all(r.dtm is None for r in rasters):
            raise DemsegError(f"--objective {config.objective} needs ground truth: no source has a DTM; add sources "
                              "with one (a spec's dtm, or dtm.tif beside dsm.tif) or synthetic scenes "
                              "(--synthetic-scenes N)")
        self.sources = found
        share = config.synthetic_share if rasters else 1.0
        self.synthetic_count = int(round(config.pool_size * share)) if config.synthetic_scenes else 0
        self.fixed = (crops_from(rasters, config.tile_size_px, config.recipe, config.pool_size - self.synthetic_count,
                                 np.random.default_rng(config.seed), config.min_valid_fraction, config.input_dtm,
                                 progress, coarsen=config.coarsen)
                      if rasters and config.pool_size > self.synthetic_count else None)
        self.refresh, self.pool = -1, None

    def at(self, step: int) -> CropPool:
        """The pool of step ``step`` (the same for a resumed run as for an uninterrupted one)."""
        refresh = step // self.config.refresh_every if self.config.refresh_every else 0
        if self.pool is None or (self.synthetic_count and refresh != self.refresh):
            self.refresh, self.pool = refresh, self._build(refresh)
        return self.pool

    def _build(self, refresh: int) -> CropPool:
        if not self.synthetic_count:
            return self.fixed
        seed = int(np.random.SeedSequence([self.config.seed, 7919, refresh]).generate_state(1)[0])
        size_px = max(self.config.tile_size_px, self.config.synthetic_size_px)
        rasters = synthetic_rasters(seed, self.config.synthetic_scenes, size_px)
        synthetic = crops_from(rasters, self.config.tile_size_px, self.config.recipe, self.synthetic_count,
                               np.random.default_rng(seed), self.config.min_valid_fraction, self.config.input_dtm,
                               self.progress, desc=f"cutting crops of {len(rasters)} synthetic scenes",
                               coarsen=self.config.coarsen)
        return synthetic if self.fixed is None else self.fixed.concatenate(synthetic)


def excluded_regions(config: PretrainConfig) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(CRS, bounds) of every validation tile of the ``exclude`` specs (their default split)."""
    from demseg.data.dataset import load_split
    from demseg.data.tiles import SplitConfig

    regions = []
    for spec in config.exclude:
        data = load_split(spec, [], SplitConfig(tile_size_px=config.tile_size_px), progress=False)
        regions += [(t.crs, t.bounds) for t in data.tiles if t.split == "val"]
    return regions


def _optimizer(model: torch.nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    # the fused kernel updates all tensors at once: the per-tensor loop cost a third of a ViT-tiny step
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95),
                             fused=True)


def _pretrain(sources, config: PretrainConfig, out: Path, resume: bool, progress: bool, stop_after: int | None,
              rank: int, world: int) -> dict:
    from tqdm.auto import tqdm

    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DemsegError("--device cuda asked but no CUDA device is available")
    model = build_mae(config)
    pools = Pools(sources, config, progress and rank == 0)
    model.to(device)
    optimizer = _optimizer(model, config)
    start, losses = (load_checkpoint(out, model, optimizer, config) if resume else (0, []))
    train_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    num_patches = (config.crop_px // config.patch_size) ** 2
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    in_sync = True
    started = time.perf_counter()
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    bar = tqdm(range(start, end), desc=f"{config.objective} pre-training ({config.arch})", unit="step",
               initial=start, total=config.steps, disable=not (progress and rank == 0))
    model.train()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(step, config.steps, config.warmup_fraction)
        x, valid, ground, labels, noise = _batch(pools.at(step), config, step, rank, world, num_patches, device)
        with autocast:
            loss = pretext_loss(model, x, valid, ground, noise, config.min_patch_valid_fraction,
                                config.ground_weight, train_model, labels, config.classes_weight)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if world > 1:
            reduced = torch.tensor([value], dtype=torch.float64)
            dist.all_reduce(reduced)
            value = float(reduced) / world
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == end:
            in_sync = _params_in_sync(model) and in_sync
            if rank == 0:
                save_checkpoint(out, model, optimizer, config, done, losses)
    seconds = time.perf_counter() - started
    summary = {"rank": rank, "steps_done": len(losses), "final_loss": losses[-1] if losses else None, "world_size": world,
               "ranks_in_sync": in_sync, "seconds_this_invocation": round(seconds, 1),
               "images_per_second": round((end - start) * config.batch_size / max(seconds, 1e-9), 2)}
    if rank == 0:
        _write_reports(out, model, pools, config, losses, summary, max(start, end - 1))
    if dist.is_initialized():
        dist.barrier()
    return summary


def _open_out(out: Path, resume: bool, overwrite: bool, inputs: list):
    """The locked output folder: resumed as it is, or refused/cleared like every demseg output folder."""
    if resume and not (out / "last").exists():
        raise DemsegError(f"nothing to resume: {out} holds no checkpoint")
    if not (resume or overwrite) and out.is_dir() and made_by(out) == "pretrain" and _holds_checkpoint(out):
        raise DemsegError(f"output folder exists: {out} holds a pre-training checkpoint: pass --resume to continue "
                          "it where it stopped (same flags as before), or --overwrite to replace it")
    return out_dir(out, overwrite=overwrite, finished=_holds_checkpoint, keep=resume, command="pretrain",
                   inputs=inputs)


def _class_pixel_shares(pool: CropPool) -> dict[str, float]:
    """Share of each class among the pool's pixels with a known label (the last pool, for the manifest)."""
    counts = np.bincount(pool.labels.reshape(-1), minlength=256)[:len(CLASS_NAMES)]
    return {name: round(float(count) / max(1, int(counts.sum())), 4) for name, count in zip(CLASS_NAMES, counts,
                                                                                         strict=True)}


def _holds_checkpoint(folder: Path) -> bool:
    return (folder / "last").exists() or (folder / "encoder.safetensors").exists()


def _write_reports(out: Path, model, pools: Pools, config: PretrainConfig, losses: list[float], summary: dict,
                   last_step: int) -> None:
    from demseg.io.provenance import file_sha256, provenance
    from demseg.pretrain.report import plot_loss, reconstruction_preview

    pool = pools.at(last_step)
    write_text_atomic(out / "loss.csv", "step,loss\n" + "".join(f"{i + 1},{v:.6f}\n" for i, v in enumerate(losses)))
    plot_loss(losses, out / "loss.png")
    reconstruction_preview(model, pool, config, out / "reconstruction.png")
    manifest = {
        **provenance("pretrain", json.loads(config.model_dump_json())),
        "sources": [{"id": s.id, "dem": str(s.dem), "sha256": file_sha256(s.dem),
                     "dtm_sha256": file_sha256(s.dtm) if s.dtm else None} for s in pools.sources],
        "skipped_sources": pools.skipped,
        "synthetic": {"scenes_per_refresh": config.synthetic_scenes, "refresh_every": config.refresh_every,
                      "crops": pools.synthetic_count},
        "excluded_regions": len(excluded_regions(config)),
        "crops": len(pool),
        "crops_per_source": {sid: pool.source_ids.count(sid) for sid in sorted(set(pool.source_ids))},
        "class_pixel_shares": _class_pixel_shares(pool) if has_classes(config.objective) else None,
        "loss_first_last": [losses[0], losses[-1]] if losses else None,
        "loss_curve_every_10": losses[::10],
        **summary,
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2))
