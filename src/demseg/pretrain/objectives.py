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
- ``classes`` (supervised, issue 16): predict every pixel's class (background, building, road,
  vegetation: the synthetic world's label codes 0-3) from the whole crop; the loss is the cross
  entropy over pixels with a known label (valid elevation, code 0-3; 255 and nodata ignored),
  weighted by the inverse frequency of each class among the known pixels of the batch, so that
  every class present in the batch counts equally (:func:`class_weights`). The encoder has to
  learn what tells a crown from a roof.
- ``classes+ground``: both from the whole crop; loss = classes weight x classes + ground weight x ground.
- ``mae+classes``: from the masked input, the decoder reconstructs the masked patches and
  classifies every pixel of every patch, masked ones included; loss = MAE + classes weight x classes.

The decoder's last linear layer predicts ``p*p*C`` reconstruction values, then ``p*p`` nDSM
values with a ground objective, then ``p*p*K`` class logits (K = 4, classes last) with a classes
objective, per patch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import ViTMAEForPreTraining

OBJECTIVES = ("mae", "ground", "mae+ground", "classes", "classes+ground", "mae+classes")
# code k of the synthetic world's labels (demseg.data.synth.SynthScene.labels) is class k; 255 is unknown
CLASS_NAMES = ("background", "buildings", "roads", "vegetation")


def has_ground(objective: str) -> bool:
    return "ground" in objective


def has_reconstruction(objective: str) -> bool:
    return "mae" in objective


def has_classes(objective: str) -> bool:
    return "classes" in objective


class PretextModel(nn.Module):
    """A ViTMAE pre-training model with our own forward: encoder, decoder, (logits, mask); no built-in loss.

    Wrapping it whole (e.g. in DistributedDataParallel) keeps gradient synchronisation correct.
    """

    def __init__(self, mae: ViTMAEForPreTraining, objective: str):
        super().__init__()
        self.mae = mae
        self.objective = objective
        config = mae.config
        pixels = config.patch_size ** 2
        self.recon_width = pixels * config.num_channels
        self.ground_width = pixels if has_ground(objective) else 0
        self.classes_width = pixels * len(CLASS_NAMES) if has_classes(objective) else 0
        width = self.recon_width + self.ground_width + self.classes_width
        if width > self.recon_width:
            decoder = mae.decoder
            decoder.decoder_pred = nn.Linear(decoder.decoder_pred.in_features, width, bias=True)

    def ground_part(self, logits: Tensor) -> Tensor:
        """The predicted nDSM of every patch, (B, L, p*p), from the decoder's output."""
        return logits[..., self.recon_width:self.recon_width + self.ground_width]

    def classes_part(self, logits: Tensor) -> Tensor:
        """The class logits of every patch, (B, L, p*p*K) with classes last, from the decoder's output."""
        return logits[..., self.recon_width + self.ground_width:]

    def forward(self, pixel_values: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (B, L, p*p*C [+ p*p] [+ p*p*K]), mask (B, L): 1 where the patch was hidden from the encoder)."""
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


def class_weights(target: Tensor, known: Tensor, num_classes: int) -> Tensor:
    """(K,) inverse-frequency weights of the classes among the ``known`` pixels of ``target``; 0 for absent classes.

    Scaled so that the weights of the known pixels sum to their count: the weighted mean is then
    the plain mean over classes present of each class's mean loss.
    """
    counts = torch.zeros(num_classes, device=target.device).index_add_(0, target, known.float())
    present = counts > 0
    return torch.where(present, counts.sum() / (present.sum() * counts.clamp(min=1.0)), torch.zeros_like(counts))


def classes_loss(prediction: Tensor, labels: Tensor, valid: Tensor, patch: int) -> Tensor:
    """Class-balanced cross entropy of the class logits over valid pixels with a known label (0 when none is).

    ``prediction``: (B, L, p*p*K) logits, classes last; ``labels``: (B, H, W) codes 0..K-1, any
    other code (255) unknown. Weights: :func:`class_weights` of this batch.
    """
    num_classes = len(CLASS_NAMES)
    logits = prediction.float().reshape(-1, num_classes)
    target = patchify(labels[:, None].float(), patch).reshape(-1).long()
    known = patchify(valid[:, None].float(), patch).reshape(-1).bool() & (target >= 0) & (target < num_classes)
    target = torch.where(known, target, torch.zeros_like(target))
    pixel_weights = class_weights(target, known, num_classes)[target] * known
    per_pixel = F.cross_entropy(logits, target, reduction="none")
    return (per_pixel * pixel_weights).sum() / pixel_weights.sum().clamp(min=1.0)


def pretext_loss(model: PretextModel, pixels: Tensor, valid: Tensor, ground: Tensor, noise: Tensor,
                 min_patch_valid_fraction: float, ground_weight: float = 1.0,
                 forward: nn.Module | None = None, labels: Tensor | None = None,
                 classes_weight: float = 1.0) -> tuple[Tensor, dict]:
    """The objective's loss for a batch, and its parts (``forward``: a DDP wrapper of ``model``, if any).

    ``labels`` (B, H, W; 255 where unknown) are needed by a classes objective.
    """
    if has_classes(model.objective) and labels is None:
        raise ValueError(f"objective {model.objective} needs per-pixel labels")
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
        found = ground_loss(model.ground_part(logits), ground, valid, patch)
        loss = loss + ground_weight * found
        parts["ground"] = float(found.detach())
    if has_classes(model.objective):
        classified = classes_loss(model.classes_part(logits), labels, valid, patch)
        loss = loss + classes_weight * classified
        parts["classes"] = float(classified.detach())
    return loss, parts
