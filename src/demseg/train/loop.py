"""Training: the frozen-backbone head (from a feature cache or not) and the UNet baseline.

AdamW (weight decay 0.05), linear warm-up then polynomial decay, batch 8, pixel-wise cross
entropy with class weights from the training pixels; ignore/nodata pixels are excluded from the
loss and the metrics. Validation every ``val_every`` steps keeps the best-IoU state.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from demseg.data.augment import dihedral
from demseg.data.scene import IGNORE
from demseg.errors import DemsegError
from demseg.models.registry import uses_backbone
from demseg.train.config import TrainConfig
from demseg.train.features import FeatureCache, encode_views
from demseg.train.tiles import TileArrays

CACHE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


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


def class_weights(targets: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights for (background, target), mean 1, from labelled training pixels."""
    counts = np.array([(targets == 0).sum(), (targets == 1).sum()], dtype=float)
    if counts[1] == 0:
        raise DemsegError("the training tiles hold no pixel of the target class")
    weights = counts.sum() / (2.0 * np.maximum(counts, 1.0))
    weights = np.clip(weights, 0.05, 20.0)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def lr_factor(step: int, iters: int, warmup_fraction: float, power: float) -> float:
    """Linear warm-up to 1, then polynomial decay to 0 at ``iters``."""
    warmup = max(1, int(round(iters * warmup_fraction)))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, iters - warmup)
    return max(0.0, 1.0 - progress) ** power


def make_optimizer(params, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.iters, config.warmup_fraction, config.poly_power))
    return optimizer, scheduler


def segmentation_loss(logits, target: torch.Tensor, weights: torch.Tensor, aux_weight: float = 0.4) -> torch.Tensor:
    """Weighted cross entropy over labelled pixels (main + optional auxiliary logits)."""
    if isinstance(logits, (tuple, list)):
        main, aux = logits
        return segmentation_loss(main, target, weights) + aux_weight * segmentation_loss(aux, target, weights)
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=weights, ignore_index=IGNORE)


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def score_predictions(scorer: Scorer, predictions: list[np.ndarray], targets: np.ndarray) -> dict[str, float]:
    """Feed every (prediction, target) pair to ``scorer`` and return its scores."""
    for prediction, target in zip(predictions, targets, strict=True):
        scorer.add(prediction, target)
    return scorer.scores()


@torch.no_grad()
def predict_head(head: nn.Module, cache: FeatureCache, output_size: tuple[int, int], amp: bool,
                 batch_size: int = 16) -> list[np.ndarray]:
    """0/1 predictions of the head for every row of a cache."""
    head.eval()
    out = []
    for start in range(0, len(cache), batch_size):
        feats, _ = cache.batch(np.arange(start, min(len(cache), start + batch_size)))
        with _autocast(amp):
            logits = head(feats, output_size)
        out += list(logits.float().argmax(1).numpy().astype(np.uint8))
    return out


@torch.no_grad()
def predict_images(model: nn.Module, inputs: np.ndarray, amp: bool, batch_size: int = 8) -> list[np.ndarray]:
    """0/1 predictions of an image model (UNet or full MAE+UperNet) for every input tile."""
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        with _autocast(amp):
            logits = model(torch.from_numpy(inputs[start:start + batch_size]))
        out += list(logits.float().argmax(1).numpy().astype(np.uint8))
    return out


def fit(config: TrainConfig, model: nn.Module, train: TileArrays, val: TileArrays, scorer: ScorerFactory,
        train_cache: FeatureCache | None = None, val_cache: FeatureCache | None = None,
        progress: bool = True) -> FitResult:
    """Train ``model`` (an MaeUperNet's head, or a UNet) and return its best-IoU state.

    ``scorer`` makes the validation scorer (``scorer(task, pixel_size_m)``); the state with the best
    validation IoU is kept. For backbone models with ``config.cached`` the backbone runs once per
    (tile, view) to fill a feature cache (pass prebuilt caches to share them between runs);
    otherwise every step runs it.
    """
    if config.pixel_size_m is None:
        raise DemsegError("the training config has no pixel size: set it from the data before fitting")
    if len(train) == 0 or len(val) == 0:
        raise DemsegError(f"need training and validation tiles, got {len(train)} and {len(val)}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    weights = class_weights(train.targets)
    size = tuple(train.targets.shape[-2:])
    is_mae = uses_backbone(config.model)
    trainable = model.head if is_mae else model
    cache_seconds = 0.0
    if is_mae and config.cached:
        started = time.perf_counter()
        if train_cache is None:
            train_cache = encode_views(model.backbone, train.inputs, train.targets, config.views,
                                       dtype=CACHE_DTYPES[config.cache_dtype], progress=progress,
                                       desc="caching train features")
        if val_cache is None:
            val_cache = encode_views(model.backbone, val.inputs, val.targets, 1,
                                     dtype=CACHE_DTYPES[config.cache_dtype], progress=progress,
                                     desc="caching val features")
        cache_seconds = time.perf_counter() - started
    optimizer, scheduler = make_optimizer([p for p in trainable.parameters() if p.requires_grad], config)

    def validate() -> dict[str, float]:
        if is_mae and config.cached:
            predictions = predict_head(trainable, val_cache, size, config.use_amp())
        else:
            predictions = predict_images(model, val.inputs, config.use_amp())
        trainable.train()
        return score_predictions(scorer(config.task, config.pixel_size_m), predictions, val.targets)

    best = FitResult({}, -1, {"iou": -1.0})
    started = time.perf_counter()
    trainable.train()
    bar = tqdm(range(config.iters), desc=f"training {config.model} ({config.task}, {len(train)} tiles)",
               unit="it", disable=not progress)
    for step in bar:
        # the same (tile, view) draws feed both paths, so cached and uncached runs see the same batches
        tiles = rng.integers(0, len(train), config.batch_size)
        views = rng.integers(0, config.views, config.batch_size)
        if is_mae and config.cached:
            feats, target = train_cache.batch(tiles * config.views + views)
            with _autocast(config.use_amp()):
                logits = trainable(feats, size)
        else:
            x = torch.stack([dihedral(torch.from_numpy(train.inputs[t]), int(v)) for t, v in zip(tiles, views, strict=True)])
            target = torch.stack([dihedral(torch.from_numpy(train.targets[t]), int(v))
                                  for t, v in zip(tiles, views, strict=True)]).long()
            with _autocast(config.use_amp()):
                logits = trainable(model.backbone(x), size) if is_mae else model(x)
        loss = segmentation_loss(logits, target, weights)
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
                best.best_state = copy.deepcopy(trainable.state_dict())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", val_iou=f"{scores['iou']:.3f}",
                            best=f"{best.best_scores['iou']:.3f}")
    best.train_seconds = time.perf_counter() - started + cache_seconds
    trainable.load_state_dict(best.best_state)
    return best
