"""Pre-training objectives: what the encoder learns to predict from a masked DEM crop.

``mae`` (He et al. 2021): reconstruct the masked 16 px patches; the loss is the MSE of
per-patch-normalised pixels over masked patches that are mostly valid, counting valid pixels only.
"""

from __future__ import annotations

import torch
from transformers import ViTMAEForPreTraining


def masked_patch_loss(model: ViTMAEForPreTraining, pixels: torch.Tensor, valid: torch.Tensor,
                      noise: torch.Tensor, min_patch_valid_fraction: float,
                      forward: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict]:
    """Normalised-pixel MSE over masked patches that are mostly valid, counting valid pixels only.

    ``forward`` is the module to call (a DDP wrapper of ``model`` under torchrun, so that its
    gradients are all-reduced); ``model`` supplies ``patchify``.
    """
    outputs = (forward or model)(pixel_values=pixels, noise=noise)
    prediction = outputs.logits.float()  # (B, L, p*p*C)
    target = model.patchify(pixels.float())
    pixel_valid = model.patchify(valid[:, None].float().expand_as(pixels)).float()
    count = pixel_valid.sum(-1).clamp(min=1.0)
    mean = (target * pixel_valid).sum(-1, keepdim=True) / count[..., None]
    var = (((target - mean) ** 2) * pixel_valid).sum(-1, keepdim=True) / count[..., None]
    target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (((prediction - target) ** 2) * pixel_valid).sum(-1) / count
    scored = outputs.mask * (pixel_valid.mean(-1) >= min_patch_valid_fraction).float()
    loss = (per_patch * scored).sum() / scored.sum().clamp(min=1.0)
    return loss, {"outputs": outputs, "mean": mean, "var": var, "scored": scored}
