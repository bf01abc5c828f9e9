"""Inference on model-ready tile arrays: 0/1 predictions or probabilities, from images or a feature cache.

Shared by training (validation), evaluation and experiments; whole scenes go through
:mod:`demseg.predict` (sliding windows, blending) instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from demseg.data.augment import dihedral
from demseg.models.features import FeatureCache


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def view_images(inputs: np.ndarray, tiles: np.ndarray, views: np.ndarray, corners: np.ndarray | None = None,
                size: int | None = None) -> torch.Tensor:
    """(B, ..., S, S): view ``views[i]`` of tile ``tiles[i]`` of ``inputs`` (images or targets).

    With ``corners`` ((B, 2) row, column) and ``size``, of the ``size`` x ``size`` crop at ``corners[i]``.
    """
    def part(i: int, tile: int) -> np.ndarray:
        if corners is None:
            return inputs[tile]
        row, col = corners[i]
        return inputs[tile][..., row:row + size, col:col + size]

    return torch.stack([dihedral(torch.from_numpy(part(i, t)), int(v))
                        for i, (t, v) in enumerate(zip(tiles, views, strict=True))])


def cached_logits(model: nn.Module, cache: FeatureCache, rows: np.ndarray, inputs: np.ndarray):
    """Logits of a backbone model for cache rows: tuned blocks (if any) and head; targets beside them."""
    state, target = cache.batch(rows)
    features = model.backbone.tuned_forward(state)
    if model.head.needs_image:
        image = view_images(inputs, cache.tile_index[rows], cache.view_index[rows])
    else:
        image = tuple(target.shape[-2:])
    return model.head(features, image), target


def _decide(logits: torch.Tensor, probabilities: bool) -> list[np.ndarray]:
    """0/1 predictions (uint8), or the target class's probabilities (float32), of a batch of logits."""
    if probabilities:
        return list(torch.softmax(logits.float(), dim=1)[:, 1].numpy())
    return list((logits.float().argmax(1) == 1).numpy().astype(np.uint8))  # auxiliary classes are background


@torch.no_grad()
def predict_cached(model: nn.Module, cache: FeatureCache, inputs: np.ndarray, amp: bool, batch_size: int = 16,
                   probabilities: bool = False) -> list[np.ndarray]:
    """0/1 predictions (or probabilities) of a backbone model for every row of a cache (``inputs``: its tiles)."""
    model.eval()
    out = []
    for start in range(0, len(cache), batch_size):
        with _autocast(amp):
            logits, _ = cached_logits(model, cache, np.arange(start, min(len(cache), start + batch_size)), inputs)
        out += _decide(logits, probabilities)
    return out


@torch.no_grad()
def predict_images(model: nn.Module, inputs: np.ndarray, amp: bool, batch_size: int = 8,
                   probabilities: bool = False) -> list[np.ndarray]:
    """0/1 predictions (or probabilities) of an image model (UNet or a whole backbone model) for every tile."""
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        with _autocast(amp):
            logits = model(torch.from_numpy(inputs[start:start + batch_size]))
        out += _decide(logits, probabilities)
    return out


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, inputs: np.ndarray, batch_size: int = 8) -> int:
    """Re-estimate every BatchNorm's running statistics on ``inputs`` (AdaBN, Li et al. 2016); returns how many.

    Unlabelled windows of the scene being mapped stand in for the training data's statistics, so a
    model meets another city's height and texture distribution where it normalises. Weights do not
    change; the statistics are a plain average over all windows (momentum None). Nodata pixels are
    zeros in the inputs, as in training.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or len(inputs) == 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    for start in range(0, len(inputs), batch_size):
        model(torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size])))
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    model.eval()
    return len(inputs)
