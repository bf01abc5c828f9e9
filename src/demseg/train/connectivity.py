"""A connectivity-aware loss for thin, long structures (roads): soft clDice.

Pixel cross entropy pays as much for a 2 m gap that cuts a road in two as for 2 m shaved off its
side; a network drawn from the mask then breaks at the gap. clDice (Shit et al., CVPR 2021,
arXiv:2003.07311) scores the two things that keep a network whole:

- topology precision: the share of the PREDICTED skeleton that lies inside the true mask;
- topology sensitivity: the share of the TRUE skeleton that the predicted mask covers;

and the loss is 1 minus their harmonic mean. Skeletons are "soft": iterated min-pool erosions and
max-pool openings of the probability map, differentiable, so a gap in a predicted road removes a
piece of the true skeleton's cover and costs far more than its pixel count.

Pixels without a label (nodata, ignore) are left out of both terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_SKELETON_ITERS = 10  # thins masks up to ~2 x 10 px across (10 m at 0.5 m): wider roads keep a ridge


def _erode(x: torch.Tensor) -> torch.Tensor:
    """Soft erosion: the minimum over a cross (3x1 and 1x3) neighbourhood."""
    return torch.minimum(-F.max_pool2d(-x, (3, 1), 1, (1, 0)), -F.max_pool2d(-x, (1, 3), 1, (0, 1)))


def _dilate(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, 1, 1)


def soft_skeleton(x: torch.Tensor, iters: int = DEFAULT_SKELETON_ITERS) -> torch.Tensor:
    """Soft morphological skeleton of a (B, 1, H, W) map in [0, 1] (Shit et al. 2021, Algorithm 1)."""
    skeleton = F.relu(x - _dilate(_erode(x)))
    for _ in range(iters):
        x = _erode(x)
        delta = F.relu(x - _dilate(_erode(x)))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def cldice_loss(probability: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                iters: int = DEFAULT_SKELETON_ITERS, eps: float = 1.0) -> torch.Tensor:
    """1 - soft clDice between a (B, H, W) target probability and a (B, H, W) 0/1 target, over ``valid`` pixels.

    ``eps`` (in pixels) keeps tiles without any road finite and near zero loss.
    """
    valid = valid.float()[:, None]
    probability = probability.float()[:, None] * valid
    target = target.float()[:, None] * valid
    predicted_skeleton = soft_skeleton(probability, iters) * valid
    true_skeleton = soft_skeleton(target, iters) * valid
    precision = ((predicted_skeleton * target).sum() + eps) / (predicted_skeleton.sum() + eps)
    sensitivity = ((true_skeleton * probability).sum() + eps) / (true_skeleton.sum() + eps)
    return 1.0 - 2.0 * precision * sensitivity / (precision + sensitivity)
