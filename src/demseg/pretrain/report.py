"""Pre-training reports: the loss curve and reconstruction previews (input, masked input, reconstruction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from demseg.io.atomic import atomic_path
from demseg.pretrain.objectives import masked_patch_loss


def plot_loss(losses: list[float], path: Path) -> Path:
    """loss.png: the masked-patch loss per step and its running mean."""
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
    ax.set_ylabel("masked-patch loss (normalised pixels)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


@torch.no_grad()
def reconstruction_preview(model, pool, config, path: Path, count: int = 4) -> Path:
    """reconstruction.png: per crop, channel 0 of the input, the masked input and the reconstruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    model.eval()
    count = min(count, len(pool))
    crop = config.crop_px
    x = torch.from_numpy(pool.inputs[:count, :, :crop, :crop].astype(np.float32))
    valid = torch.from_numpy(pool.valid[:count, :crop, :crop])
    num_patches = (crop // config.patch_size) ** 2
    noise = torch.from_numpy(np.random.default_rng(config.seed).random((count, num_patches), dtype=np.float32))
    _, parts = masked_patch_loss(model, x, valid, noise, config.min_patch_valid_fraction)
    outputs, mean, var = parts["outputs"], parts["mean"], parts["var"]
    mask = outputs.mask[..., None]
    prediction = outputs.logits.float() * (var + 1e-6).sqrt() + mean  # undo the per-patch normalisation
    patches = model.patchify(x)
    pasted = model.unpatchify(patches * (1 - mask) + prediction * mask, (crop, crop))
    masked = model.unpatchify(patches * (1 - mask), (crop, crop))
    fig, axes = plt.subplots(count, 3, figsize=(7.5, 2.5 * count), squeeze=False)
    for row in range(count):
        low, high = float(x[row, 0].min()), float(x[row, 0].max())
        for col, (image, name) in enumerate([(x[row, 0], "input (channel 0)"), (masked[row, 0], "masked 75 %"),
                                             (pasted[row, 0], "reconstruction")]):
            axes[row, col].imshow(image.numpy(), cmap="terrain", vmin=low, vmax=high)
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(name, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    model.train()
    return path
