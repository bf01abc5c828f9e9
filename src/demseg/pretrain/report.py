"""Pre-training reports: the loss curve and previews of what the objective predicts (reconstruction, nDSM, classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from demseg.io.atomic import atomic_path
from demseg.pretrain.objectives import CLASS_NAMES, has_classes, has_ground, patchify, pretext_loss

CLASS_COLOURS = ("lightgrey", "tab:red", "black", "tab:green")  # per CLASS_NAMES


def plot_loss(losses: list[float], path: Path) -> Path:
    """loss.png: the objective's loss per step and its running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, alpha=0.3, label="per step")
    window = max(1, len(losses) // 50)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("pre-training loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _panels(model, pool, config, count: int) -> list[list[tuple]]:
    """Per crop: (image, title, colour range, colour map) panels of the input and what the objective predicts."""
    from matplotlib.colors import ListedColormap

    crop = config.crop_px
    x = torch.from_numpy(pool.inputs[:count, :, :crop, :crop].astype(np.float32))
    valid = torch.from_numpy(pool.valid[:count, :crop, :crop])
    ground = torch.from_numpy(pool.ground[:count, :crop, :crop].astype(np.float32))
    labels = torch.from_numpy(pool.labels[:count, :crop, :crop])
    num_patches = (crop // config.patch_size) ** 2
    noise = torch.from_numpy(np.random.default_rng(config.seed).random((count, num_patches), dtype=np.float32))
    _, parts = pretext_loss(model, x, valid, ground, noise, config.min_patch_valid_fraction, labels=labels)
    logits, mask = parts["logits"].float(), parts["mask"][..., None]
    patch, channels = config.patch_size, x.shape[1]
    rows = []
    for i in range(count):
        low, high = float(x[i, 0].min()), float(x[i, 0].max())
        row = [(x[i, 0], "input (channel 0)", (low, high), "terrain")]
        if "mean" in parts:
            prediction = logits[..., :model.recon_width] * (parts["var"] + 1e-6).sqrt() + parts["mean"]
            patches = patchify(x, patch)
            pasted = unpatchify(patches * (1 - mask) + prediction * mask, crop, patch, channels)
            row += [(unpatchify(patches * (1 - mask), crop, patch, channels)[i, 0], "masked input", (low, high),
                     "terrain"), (pasted[i, 0], "reconstruction", (low, high), "terrain")]
        if has_ground(model.objective):
            predicted = unpatchify(model.ground_part(logits), crop, patch, 1)[i, 0]
            top = float(np.nanmax(ground[i].numpy())) if torch.isfinite(ground[i]).any() else 1.0
            row += [(ground[i], "height above ground (truth)", (0.0, top), "terrain"),
                    (predicted, "height above ground (predicted)", (0.0, top), "terrain")]
        if has_classes(model.objective):
            classes = len(CLASS_NAMES)
            predicted = unpatchify(model.classes_part(logits), crop, patch, classes)[i].argmax(0).float()
            truth = torch.where(labels[i] < classes, labels[i].float(), torch.tensor(float("nan")))
            colours = ListedColormap(CLASS_COLOURS)
            row += [(truth, "classes (truth)", (-0.5, classes - 0.5), colours),
                    (predicted, "classes (predicted)", (-0.5, classes - 0.5), colours)]
        rows.append(row)
    return rows


def unpatchify(patches: torch.Tensor, size: int, patch: int, channels: int) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, size, size), the inverse of ``patchify``."""
    grid = size // patch
    x = patches.reshape(patches.shape[0], grid, grid, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(patches.shape[0], channels, size, size)


@torch.no_grad()
def reconstruction_preview(model, pool, config, path: Path, count: int = 4) -> Path:
    """reconstruction.png: per crop, the input and what the objective predicts (masked patches, nDSM, classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    rows = _panels(model, pool, config, min(count, len(pool)))
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(2.5 * len(rows[0]), 2.5 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, (image, name, (low, high), colours) in enumerate(row):
            axes[r, c].imshow(image.numpy(), cmap=colours, vmin=low, vmax=high, interpolation="nearest")
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
    fig.tight_layout()
    if has_classes(model.objective):
        from matplotlib.patches import Patch

        fig.legend([Patch(color=colour) for colour in CLASS_COLOURS], CLASS_NAMES, loc="lower center",
                   ncol=len(CLASS_NAMES), fontsize=8)
        fig.subplots_adjust(bottom=0.06)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    model.train()
    return path
