"""Label noise on training targets, to measure how each model degrades (the paper's open question 2).

Real labels are noisy in three ways that ``--label-noise drop=P,shift=M,width=M`` reproduces, each
drawn per labelled instance (a connected component of the target class):

- ``drop``: each instance is missing with probability P (unmapped buildings, incomplete roads);
- ``shift``: each instance is moved by a random offset of up to M metres in a random direction
  (misregistered footprints, vectors in a shifted datum);
- ``width``: each instance's outline grows or shrinks by up to M metres (a road buffered with the
  wrong width, footprints drawn at the eaves or the walls).

Only training tiles get noise; validation and scoring always use the clean labels. The noise of a
tile depends on its id and the split seed alone, so every training seed and budget sees the same
noisy labels, as with a real noisy dataset. Unknown pixels (255, nodata included) stay unknown:
an instance shifted onto them is simply not seen there.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import ndimage

from demseg.data.scene import IGNORE
from demseg.errors import DemsegError

NOISE_KINDS = {"drop": (0.0, 1.0), "shift": (0.0, 50.0), "width": (0.0, 20.0)}  # kind -> allowed range


def parse_label_noise(text: str) -> dict[str, float]:
    """``drop=0.2,shift=1.5`` as {"drop": 0.2, "shift": 1.5}; one clear error for unknown kinds or ranges."""
    noise: dict[str, float] = {}
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        kind, sep, value = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in NOISE_KINDS:
            raise DemsegError(f"--label-noise: expected KIND=VALUE with kinds {', '.join(NOISE_KINDS)} "
                              f"(e.g. drop=0.2,shift=1,width=0.5), got {part!r}")
        try:
            number = float(value)
        except ValueError:
            raise DemsegError(f"--label-noise: {kind} needs a number, got {value!r}") from None
        low, high = NOISE_KINDS[kind]
        if not low <= number <= high:
            unit = "a probability" if kind == "drop" else "metres"
            raise DemsegError(f"--label-noise: {kind} must be between {low:g} and {high:g} ({unit}), got {value}")
        noise[kind] = number
    return noise


def format_label_noise(noise: dict[str, float]) -> str:
    """The canonical text of a noise setting (kinds in a fixed order, zeros left out)."""
    return ",".join(f"{kind}={noise[kind]:g}" for kind in NOISE_KINDS if noise.get(kind, 0.0) > 0)


def noise_margin_px(noise: dict[str, float], pixel_size_m: float) -> int:
    """How far noise can move a label, in pixels: the context a tile needs around it."""
    return int(np.ceil((noise.get("shift", 0.0) + noise.get("width", 0.0)) / pixel_size_m)) + 1


def tile_rng(seed: int, tile_id: str) -> np.random.Generator:
    """A generator fixed by the seed and the tile id (never by the order tiles are drawn in)."""
    digest = hashlib.sha256(f"{seed}:{tile_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def noisy_target(target: np.ndarray, noise: dict[str, float], pixel_size_m: float,
                 rng: np.random.Generator) -> np.ndarray:
    """``target`` (0/1/255) with every instance of class 1 dropped, shifted and grown or shrunk at random."""
    if not any(noise.get(kind, 0.0) > 0 for kind in NOISE_KINDS):
        return target.copy()
    instances, count = ndimage.label(target == 1, structure=np.ones((3, 3), bool))
    out = np.zeros(target.shape, np.uint8)
    shift_px = noise.get("shift", 0.0) / pixel_size_m
    width_px = noise.get("width", 0.0) / pixel_size_m
    for index, box in enumerate(ndimage.find_objects(instances), start=1):
        # draw every number for every instance, so one kind's setting never changes another's draws
        dropped = rng.random() < noise.get("drop", 0.0)
        angle, radius = rng.uniform(0.0, 2 * np.pi), shift_px * np.sqrt(rng.random())
        grow = int(round(rng.uniform(-width_px, width_px)))
        if dropped or box is None:
            continue
        mask = instances[box] == index
        pad = abs(grow) + 1
        mask = np.pad(mask, pad)
        if grow > 0:
            mask = ndimage.binary_dilation(mask, iterations=grow)
        elif grow < 0:
            mask = ndimage.binary_erosion(mask, iterations=-grow)
        rows, cols = np.nonzero(mask)
        rows = rows + box[0].start - pad + int(round(radius * np.sin(angle)))
        cols = cols + box[1].start - pad + int(round(radius * np.cos(angle)))
        inside = (rows >= 0) & (rows < target.shape[0]) & (cols >= 0) & (cols < target.shape[1])
        out[rows[inside], cols[inside]] = 1
    out[target == IGNORE] = IGNORE
    return out


def noisy_window(target: np.ndarray, window: tuple[slice, slice], noise: dict[str, float], pixel_size_m: float,
                 seed: int, tile_id: str) -> np.ndarray:
    """A tile's noisy target: noise applied with the tile's context (so instances can move in), then cropped."""
    margin = noise_margin_px(noise, pixel_size_m)
    rows, cols = window
    top, left = max(0, rows.start - margin), max(0, cols.start - margin)
    bottom, right = min(target.shape[0], rows.stop + margin), min(target.shape[1], cols.stop + margin)
    context = noisy_target(target[top:bottom, left:right], noise, pixel_size_m, tile_rng(seed, tile_id))
    return context[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
