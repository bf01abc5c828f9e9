"""Training: a backbone model's head (and fine-tuned blocks), from a feature cache or not, and the UNet.

AdamW (weight decay 0.05), linear warm-up then polynomial decay, batch 8, pixel-wise cross
entropy with class weights from the training pixels; ignore/nodata pixels are excluded from the
loss and the metrics. Validation every ``val_every`` steps keeps the best-IoU state.

Fine-tuning (``finetune`` top-K or all) follows MAE's recipe: layer-wise learning-rate decay
(block i gets lr x decay^(depth - i)) and, as LP-FT (Kumar et al. 2022), a first stage in which
only the head trains (``lp_fraction`` of the iterations) before the tuned blocks join.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from demseg.data.arrays import NOT_TARGET, TileArrays
from demseg.data.scene import IGNORE
from demseg.errors import DemsegError
from demseg.models.features import FeatureCache, encode_views
from demseg.models.inference import _autocast, cached_logits, predict_cached, predict_images, view_images
from demseg.models.registry import uses_backbone
from demseg.runs.config import TrainConfig
from demseg.train.connectivity import cldice_loss

CACHE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "demseg-train-checkpoint-1"


@dataclass
class FitResult:
    """What a training run produced: the best state and how it got there."""

    best_state: dict[str, torch.Tensor]
    best_iter: int
    best_scores: dict[str, float]
    history: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


class Scorer(Protocol):
    """Accumulates 0/1 predictions against 0/1/255 targets tile by tile; ``scores()`` has at least "iou"."""

    def add(self, prediction: np.ndarray, target: np.ndarray) -> None: ...

    def scores(self) -> dict[str, float]: ...


# (task, pixel size in metres) -> a fresh scorer; demseg.evaluate.metrics.SegmentationScorer is one
ScorerFactory = Callable[[str, float], Scorer]


def class_weights(targets: np.ndarray, num_classes: int = 2) -> torch.Tensor:
    """Inverse-frequency weights per class (background, target, auxiliary...), mean 1, from labelled pixels.

    Background of unknown auxiliary class (:data:`NOT_TARGET`) counts as background.
    """
    counts = np.array([((targets == 0) | (targets == NOT_TARGET)).sum()]
                      + [(targets == code).sum() for code in range(1, num_classes)], dtype=float)
    if counts[1] == 0:
        raise DemsegError("the training tiles hold no pixel of the target class")
    weights = counts.sum() / (num_classes * np.maximum(counts, 1.0))
    weights = np.clip(weights, 0.05, 20.0)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def lr_factor(step: int, iters: int, warmup_fraction: float, power: float, start: int = 0) -> float:
    """0 before ``start``; then linear warm-up to 1 and polynomial decay to 0 at ``iters``."""
    if step < start:
        return 0.0
    warmup = max(1, int(round((iters - start) * warmup_fraction)))
    if step - start < warmup:
        return (step - start + 1) / warmup
    progress = (step - start - warmup) / max(1, iters - start - warmup)
    return max(0.0, 1.0 - progress) ** power


def trainable_modules(model: nn.Module, config: TrainConfig) -> dict[str, nn.Module]:
    """The parts training changes: {"head": ...} (+ {"tuned": the fine-tuned blocks}), or {"model": UNet}."""
    if not uses_backbone(config.model):
        return {"model": model}
    parts = {"head": model.head}
    if model.backbone.tuned_blocks:
        parts["tuned"] = nn.ModuleList(model.backbone.tuned_modules())
    return parts


def make_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, object]:
    """AdamW with one group for the head (or UNet) and one per fine-tuned block (layer-wise decayed lr)."""
    schedule = (config.iters, config.warmup_fraction, config.poly_power)
    groups, factors = [], []
    for name, module in trainable_modules(model, config).items():
        if name != "tuned":
            groups.append({"params": [p for p in module.parameters() if p.requires_grad], "lr": config.lr})
            factors.append(lambda step: lr_factor(step, *schedule))
            continue
        backbone = model.backbone
        start = int(round(config.iters * config.lp_fraction))
        for block in backbone.tuned_modules():
            # MAE's numbering: the embeddings sit below block 0 and decay the most
            depth_index = -1 if block is backbone.encoder.embeddings else list(backbone.encoder.layers).index(block)
            scale = config.layer_decay ** (backbone.num_blocks - depth_index)
            groups.append({"params": list(block.parameters()), "lr": config.lr * scale})
            factors.append(lambda step, s=start: lr_factor(step, *schedule, start=s))
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def segmentation_loss(logits, target: torch.Tensor, weights: torch.Tensor, aux_weight: float = 0.4) -> torch.Tensor:
    """Weighted cross entropy over labelled pixels (main + optional auxiliary logits)."""
    if isinstance(logits, (tuple, list)):
        main, aux = logits
        return segmentation_loss(main, target, weights) + aux_weight * segmentation_loss(aux, target, weights)
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    if logits.shape[1] == 2:
        return F.cross_entropy(logits.float(), target, weight=weights, ignore_index=IGNORE)
    return _partial_label_loss(logits.float(), target, weights)


def connectivity_loss(logits, target: torch.Tensor) -> torch.Tensor:
    """Soft clDice of the target class (:mod:`demseg.train.connectivity`) over labelled pixels."""
    main = logits[0] if isinstance(logits, (tuple, list)) else logits
    if main.shape[-2:] != target.shape[-2:]:
        main = F.interpolate(main, size=target.shape[-2:], mode="bilinear", align_corners=False)
    probability = torch.softmax(main.float(), dim=1)[:, 1]
    return cldice_loss(probability, target == 1, target != IGNORE)


def _partial_label_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross entropy where NOT_TARGET pixels only say "any class but the target".

    Their loss is -log of the summed probability of every other class (background and the
    auxiliary classes), weighted as background; the mean is over the summed weights, as
    ``F.cross_entropy`` with class weights takes it.
    """
    log_p = torch.log_softmax(logits, dim=1)
    known = (target != IGNORE) & (target != NOT_TARGET)
    not_target = target == NOT_TARGET
    code = torch.where(known, target, torch.zeros_like(target)).long()
    nll = -log_p.gather(1, code[:, None])[:, 0]
    others = torch.cat([log_p[:, :1], log_p[:, 2:]], dim=1)
    nll = torch.where(not_target, -torch.logsumexp(others, dim=1), nll)
    pixel_weight = torch.where(known, weights[code], torch.where(not_target, weights[0], torch.zeros_like(nll)))
    return (nll * pixel_weight).sum() / pixel_weight.sum().clamp_min(1e-12)


def score_predictions(scorer: Scorer, predictions: list[np.ndarray], targets: np.ndarray) -> dict[str, float]:
    """Feed every (prediction, target) pair to ``scorer`` and return its scores."""
    for prediction, target in zip(predictions, targets, strict=True):
        scorer.add(prediction, target)
    return scorer.scores()


def trainable_state(model: nn.Module, config: TrainConfig) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of the weights training changes, part by part."""
    return {name: copy.deepcopy(module.state_dict()) for name, module in trainable_modules(model, config).items()}


def load_trainable_state(model: nn.Module, config: TrainConfig, state: dict[str, dict]) -> None:
    for name, module in trainable_modules(model, config).items():
        module.load_state_dict(state[name])


def _caches(model, config: TrainConfig, train: TileArrays, val: TileArrays, train_cache, val_cache, progress):
    if train_cache is None:
        train_cache = encode_views(model.backbone, train.inputs, train.targets, config.views,
                                   dtype=CACHE_DTYPES[config.cache_dtype], progress=progress,
                                   desc="caching train features")
    if val_cache is None:
        val_cache = encode_views(model.backbone, val.inputs, val.targets, 1, dtype=CACHE_DTYPES[config.cache_dtype],
                                 progress=progress, desc="caching val features")
    return train_cache, val_cache


def _batch_tiles(rng: np.random.Generator, train: TileArrays, config: TrainConfig) -> np.ndarray:
    """Rows of one batch: uniform over the spec's tiles, plus ``mix_share`` of the batch from mixed-in rows."""
    own = len(train) - train.mixed
    mixed = int(round(config.batch_size * config.mix_share)) if train.mixed else 0
    tiles = rng.integers(0, own, config.batch_size - mixed)
    if mixed:
        tiles = np.concatenate([tiles, own + rng.integers(0, train.mixed, mixed)])
    return tiles


def fit(config: TrainConfig, model: nn.Module, train: TileArrays, val: TileArrays, scorer: ScorerFactory,
        train_cache: FeatureCache | None = None, val_cache: FeatureCache | None = None,
        progress: bool = True, checkpoint: Path | None = None, resume: bool = False) -> FitResult:
    """Train ``model`` (a backbone model's head and tuned blocks, or a UNet) and return its best-IoU state.

    ``scorer`` makes the validation scorer (``scorer(task, pixel_size_m)``); the state with the best
    validation IoU is kept and loaded back into ``model``. For backbone models with
    ``config.cached`` the frozen part runs once per (tile, view) to fill a feature cache (pass
    prebuilt caches to share them between runs); otherwise every step runs the whole model.
    With ``checkpoint`` and ``config.checkpoint_every`` the whole training state is saved there
    every N steps; ``resume`` continues from it exactly (same batches, same result). A non-finite
    loss stops training with one error line.
    """
    if config.pixel_size_m is None:
        raise DemsegError("the training config has no pixel size: set it from the data before fitting")
    if len(train) == 0 or len(val) == 0:
        raise DemsegError(f"need training and validation tiles, got {len(train)} and {len(val)}")
    if config.crop_px and uses_backbone(config.model):
        raise DemsegError(f"--crop-px is for the unet; {config.model} trains on whole tiles")
    if config.crop_px and config.crop_px > train.inputs.shape[-1]:
        raise DemsegError(f"--crop-px {config.crop_px} is larger than the {train.inputs.shape[-1]} px tiles")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    weights = (class_weights(train.targets, config.num_classes()) if config.class_weighting == "frequency"
               else torch.ones(config.num_classes()))
    cached = uses_backbone(config.model) and config.cached and model.backbone.cacheable
    started = time.perf_counter()
    if cached:
        train_cache, val_cache = _caches(model, config, train, val, train_cache, val_cache, progress)
    optimizer, scheduler = make_optimizer(model, config)
    amp = config.use_amp()

    def validate() -> dict[str, float]:
        predictions = (predict_cached(model, val_cache, val.inputs, amp) if cached
                       else predict_images(model, val.inputs, amp))
        model.train()
        return score_predictions(scorer(config.task, config.pixel_size_m), predictions, val.targets)

    best = FitResult({}, -1, {"iou": -1.0})
    start = 0
    if resume:
        start = load_checkpoint(checkpoint, model, config, optimizer, scheduler, rng, best)
    earlier_seconds = best.train_seconds  # of the run before it was resumed
    model.train()
    bar = tqdm(range(start, config.iters), desc=f"training {config.model} ({config.task}, {len(train)} tiles)",
               unit="it", disable=not progress, initial=start, total=config.iters)
    for step in bar:
        # the same (tile, view) draws feed both paths, so cached and uncached runs see the same batches
        tiles = _batch_tiles(rng, train, config)
        views = rng.integers(0, config.views, config.batch_size)
        with _autocast(amp):
            if cached:
                logits, target = cached_logits(model, train_cache, tiles * config.views + views, train.inputs)
            else:
                corners = (rng.integers(0, train.inputs.shape[-1] - config.crop_px + 1, (len(tiles), 2))
                           if config.crop_px else None)
                logits = model(view_images(train.inputs, tiles, views, corners, config.crop_px))
                target = view_images(train.targets, tiles, views, corners, config.crop_px).long()
        loss = segmentation_loss(logits, target, weights)
        if config.connectivity:
            loss = loss + config.connectivity * connectivity_loss(logits, target)
        if not torch.isfinite(loss):
            raise DemsegError(f"training diverged: the loss is {float(loss.detach())} at step {step + 1} (check the inputs "
                              "for extreme values, or lower --lr); nothing was saved as finished")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        best.losses.append(float(loss.detach()))
        if (step + 1) % config.val_every == 0 or step + 1 == config.iters:
            scores = validate()
            best.history.append({"iter": step + 1, "loss": float(loss.detach()), **scores})
            if scores["iou"] > best.best_scores["iou"] or best.best_iter < 0:
                best.best_scores, best.best_iter = scores, step + 1
                best.best_state = trainable_state(model, config)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", val_iou=f"{scores['iou']:.3f}",
                            best=f"{best.best_scores['iou']:.3f}")
        if checkpoint is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 \
                and step + 1 < config.iters:
            best.train_seconds = earlier_seconds + time.perf_counter() - started
            save_checkpoint(checkpoint, step + 1, model, config, optimizer, scheduler, rng, best)
    best.train_seconds = earlier_seconds + time.perf_counter() - started
    load_trainable_state(model, config, best.best_state)
    model.eval()
    return best


def _resumable_settings(config: TrainConfig) -> dict:
    """The settings a resumed run must share with its checkpoint (how often it saves may change)."""
    return config.model_dump(exclude={"checkpoint_every"})


def save_checkpoint(path: Path, step: int, model: nn.Module, config: TrainConfig, optimizer, scheduler,
                    rng: np.random.Generator, best: FitResult) -> None:
    """Everything training needs to continue exactly after ``step``, written whole (temporary name, renamed)."""
    from demseg.io.atomic import atomic_path

    state = {"format": CHECKPOINT_FORMAT, "config": _resumable_settings(config), "step": step,
             "model": trainable_state(model, config), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "numpy_rng": rng.bit_generator.state,
             "torch_rng": torch.get_rng_state(), "best_state": best.best_state, "best_iter": best.best_iter,
             "best_scores": best.best_scores, "history": best.history, "losses": best.losses,
             "seconds": best.train_seconds}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path | None, model: nn.Module, config: TrainConfig, optimizer, scheduler,
                    rng: np.random.Generator, best: FitResult) -> int:
    """Restore a :func:`save_checkpoint` state into the training objects; returns the step to continue from."""
    if path is None or not Path(path).is_file():
        raise DemsegError(f"nothing to resume: no training checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never runs code from the file
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise DemsegError(f"cannot read the training checkpoint {path}: {str(exc).splitlines()[0][:120]}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DemsegError(f"{path} is not a demseg training checkpoint")
    ours = _resumable_settings(config)
    different = sorted(name for name in set(ours) | set(state["config"])
                       if ours.get(name) != state["config"].get(name))
    if different:
        shown = "; ".join(f"{name} {state['config'].get(name)!r} (now {ours.get(name)!r})" for name in different[:4])
        raise DemsegError(f"cannot resume: the checkpoint was made with other settings: {shown}")
    load_trainable_state(model, config, state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    best.best_state, best.best_iter, best.best_scores = state["best_state"], state["best_iter"], state["best_scores"]
    best.history, best.losses, best.train_seconds = state["history"], state["losses"], state["seconds"]
    return int(state["step"])
