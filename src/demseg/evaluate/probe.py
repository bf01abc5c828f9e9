"""A linear probe on frozen patch features: does a backbone know what a building patch is?

Each 16x16 patch of a tile gets the backbone's features (the tapped blocks concatenated) and a
label: mostly building (> 50 % of its labelled pixels) or not. A logistic regression is fitted
on the training tiles of the spatial split and scored on its validation tiles. It is a cheap
sanity check of pre-training, not the few-shot protocol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from demseg.data.arrays import tile_arrays
from demseg.data.dataset import load_split
from demseg.data.scene import IGNORE
from demseg.data.tiles import eligible_tiles
from demseg.errors import DemsegError
from demseg.models.registry import build_encoder
from demseg.runs.config import TrainConfig


def patch_labels(targets: np.ndarray, patch_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(label 0/1, usable) per patch: usable where at least half the patch is labelled."""
    n, height, width = targets.shape
    grid = targets.reshape(n, height // patch_px, patch_px, width // patch_px, patch_px).transpose(0, 1, 3, 2, 4)
    grid = grid.reshape(n, height // patch_px, width // patch_px, -1)
    known = (grid != IGNORE).mean(-1)
    positive = (grid == 1).sum(-1) / np.maximum(1, (grid != IGNORE).sum(-1))
    return (positive > 0.5).astype(np.int64), known >= 0.5


def patch_features(backbone, inputs: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """(N, h, w, 4*D) features: the tapped blocks' token maps concatenated per patch."""
    out = []
    for start in range(0, len(inputs), batch_size):
        maps = backbone(torch.from_numpy(inputs[start:start + batch_size]))
        out.append(torch.cat(maps, dim=1).permute(0, 2, 3, 1).float().numpy())
    return np.concatenate(out)


def fit_logistic(x: np.ndarray, y: np.ndarray, epochs: int = 300, weight_decay: float = 1e-3,
                 seed: int = 0) -> torch.nn.Linear:
    """Class-balanced logistic regression on standardised features (full-batch Adam)."""
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    linear = torch.nn.Linear(x.shape[1], 2)
    counts = torch.bincount(yt, minlength=2).float().clamp(min=1)
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts))
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss_fn(linear(xt), yt).backward()
        optimizer.step()
    return linear


def linear_probe(spec_path: str | Path, weights: list[str], config: TrainConfig | None = None,
                 progress: bool = False) -> list[dict]:
    """Probe accuracy and balanced accuracy on validation patches, one row per backbone weights.

    ``config`` gives the architecture, recipe, task and split settings (the one split of
    :func:`demseg.data.dataset.load_split`); its ``backbone_weights`` is replaced by each of ``weights``.
    """
    config = config or TrainConfig()
    # every weights name is loaded (and a bad one refused) before the first probe runs
    backbones = [build_encoder(config.model_copy(update={"backbone_weights": weight})) for weight in weights]
    data = load_split(spec_path, [config.task], config.split_config(), progress)
    splits = {name: eligible_tiles(data.tiles, name, config.task, config.min_labelled_fraction)
              for name in ("train", "val")}
    empty = [name for name, tiles in splits.items() if not tiles]
    if empty:
        raise DemsegError(f"the split of {spec_path} leaves no {' or '.join(empty)} tile labelled for "
                          f"{config.task} (val tiles asked: {config.val_tiles})")
    arrays = {name: tile_arrays(data.scenes, tiles, config.task, config.recipe) for name, tiles in splits.items()}
    return [_probe_one(backbone, arrays, weight, config.arch) for backbone, weight in zip(backbones, weights,
                                                                                          strict=True)]


def _probe_one(backbone, arrays: dict, weight: str, arch: str) -> dict:
    sets = {}
    for name, array in arrays.items():
        features = patch_features(backbone, array.inputs)
        labels, usable = patch_labels(array.targets, backbone.patch_size)
        sets[name] = (features[usable], labels[usable])
    if not len(sets["train"][1]) or not len(sets["val"][1]):
        raise DemsegError("no usable (mostly labelled) patch in the training or validation tiles")
    mean, std = sets["train"][0].mean(0), sets["train"][0].std(0) + 1e-6
    linear = fit_logistic((sets["train"][0] - mean) / std, sets["train"][1])
    with torch.no_grad():
        predicted = linear(torch.from_numpy((sets["val"][0] - mean) / std)).argmax(1).numpy()
    truth = sets["val"][1]
    recall_pos = float((predicted[truth == 1] == 1).mean()) if (truth == 1).any() else float("nan")
    recall_neg = float((predicted[truth == 0] == 0).mean()) if (truth == 0).any() else float("nan")
    return {"weights": weight, "arch": arch, "train_patches": len(sets["train"][1]), "val_patches": len(truth),
            "accuracy": float((predicted == truth).mean()), "balanced_accuracy": (recall_pos + recall_neg) / 2,
            "val_building_share": float(truth.mean())}
