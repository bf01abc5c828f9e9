"""Pre-training objectives: what the encoder learns to predict from a DEM crop.

- ``mae`` (He et al. 2021): mask 75 % of the 16 px patches and reconstruct them; the loss is the
  MSE of per-patch-normalised pixels over masked patches that are mostly valid, counting valid
  pixels only.
- ``ground`` (after Vats et al., TGRS 2024): from the surface model alone (no DTM in the input),
  predict every pixel's height above the bare earth (the nDSM, in the relief channel's 10 m
  units); the loss is the MSE over valid pixels with a known ground. The encoder has to learn
  where the ground is: under buildings, between trees, on slopes.
- ``mae+ground``: both from the same masked input (the decoder predicts the nDSM of every patch,
  masked ones included); loss = MAE + ``ground_weight`` x ground.

The decoder's last linear layer predicts ``p*p*C`` reconstruction values and, with a ground
objective, ``p*p`` nDSM values per patch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import ViTMAEForPreTraining

OBJECTIVES = ("mae", "ground", "mae+ground")


def has_ground(objective: str) -> bool:
    return "ground" in objective


def has_reconstruction(objective: str) -> bool:
    return "mae" in objective


class PretextModel(nn.Module):
    """A ViTMAE pre-training model with our own forward: encoder, decoder, (logits, mask); no built-in loss.

    Wrapping it whole (e.g. in DistributedDataParallel) keeps gradient synchronisation correct.
    """

    def __init__(self, mae: ViTMAEForPreTraining, objective: str):
        super().__init__()
        self.mae = mae
        self.objective = objective
        config = mae.config
        self.recon_width = config.patch_size ** 2 * config.num_channels
        if has_ground(objective):
            decoder = mae.decoder
            extra = config.patch_size ** 2
            decoder.decoder_pred = nn.Linear(decoder.decoder_pred.in_features, self.recon_width + extra, bias=True)

    def forward(self, pixel_values: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (B, L, p*p*C [+ p*p]), mask (B, L): 1 where the patch was hidden from the encoder)."""
        encoded = self.mae.vit(pixel_values, noise=noise)
        decoded = self.mae.decoder(encoded.last_hidden_state, encoded.ids_restore)
        return decoded.logits, encoded.mask


def patchify(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, (H/p)*(W/p), p*p*C), channels last inside a patch (as ViTMAE's patchify)."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels, height // patch, patch, width // patch, patch)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(batch, (height // patch) * (width // patch), -1)


def reconstruction_loss(prediction: Tensor, pixels: Tensor, valid: Tensor, mask: Tensor, patch: int,
                        min_patch_valid_fraction: float) -> tuple[Tensor, dict]:
    """Normalised-pixel MSE over masked, mostly valid patches, counting valid pixels only."""
    target = patchify(pixels.float(), patch)
    pixel_valid = patchify(valid[:, None].float().expand_as(pixels), patch)
    count = pixel_valid.sum(-1).clamp(min=1.0)
    mean = (target * pixel_valid).sum(-1, keepdim=True) / count[..., None]
    var = (((target - mean) ** 2) * pixel_valid).sum(-1, keepdim=True) / count[..., None]
    target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (((prediction.float() - target) ** 2) * pixel_valid).sum(-1) / count
    scored = mask * (pixel_valid.mean(-1) >= min_patch_valid_fraction).float()
    loss = (per_patch * scored).sum() / scored.sum().clamp(min=1.0)
    return loss, {"mean": mean, "var": var, "scored": scored}


def ground_loss(prediction: Tensor, ground: Tensor, valid: Tensor, patch: int) -> Tensor:
    """MSE of the predicted nDSM over valid pixels whose ground is known (0 when none is)."""
    target = patchify(ground[:, None].float(), patch)
    known = patchify((valid & torch.isfinite(ground))[:, None].float(), patch)
    target = torch.nan_to_num(target)
    return (((prediction.float() - target) ** 2) * known).sum() / known.sum().clamp(min=1.0)


def pretext_loss(model: PretextModel, pixels: Tensor, valid: Tensor, ground: Tensor, noise: Tensor,
                 min_patch_valid_fraction: float, ground_weight: float = 1.0,
                 forward: nn.Module | None = None) -> tuple[Tensor, dict]:
    """The objective's loss for a batch, and its parts (``forward``: a DDP wrapper of ``model``, if any)."""
    logits, mask = (forward or model)(pixels, noise)
    patch = model.mae.config.patch_size
    parts: dict = {"logits": logits, "mask": mask}
    loss = logits.new_zeros((), dtype=torch.float32)
    if has_reconstruction(model.objective):
        recon, extra = reconstruction_loss(logits[..., :model.recon_width], pixels, valid, mask, patch,
                                           min_patch_valid_fraction)
        loss = loss + recon
        parts.update(extra, reconstruction=float(recon.detach()))
    if has_ground(model.objective):
        found = ground_loss(logits[..., model.recon_width:], ground, valid, patch)
        loss = loss + ground_weight * found
        parts["ground"] = float(found.detach())
    return loss, parts
