"""Tree crowns as a LiDAR DSM shows them (generator version 3): rough, irregular and full of gaps.

A crown is a solid of its form (a dome for round trees, a flat-topped dome for spreading ones, a narrow
column, a cone for conifers) whose outline wobbles and frays, and whose surface is broken up by clumps of
foliage a metre or two across, by leaf-scale noise and by gaps where the first return comes from a branch
lower down. Where crowns overlap the highest one is seen, so touching crowns merge into a rough ribbon.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from scipy import ndimage

from demseg.data.synth.canvas import Canvas
from demseg.data.synth.trees import Trees

HARMONICS = np.array([2, 3, 5])  # of a crown's outline
OUTLINE_WOBBLE = 0.12  # largest share of the radius each harmonic adds or takes
EDGE_FRAY = 0.12  # noise on the distance from the trunk, as a share of the radius: ragged crown edges
CLUMP_M = 1.0  # size of foliage clumps
CLUMP_SHARE = 0.07  # clump relief as a share of the crown's height
LEAF_NOISE_M = 0.25
GAP_SHARE = 0.08  # share of crown pixels where the laser reaches a lower branch
# crown profile height = base + (top - base) * (1 - rho ** p) ** q, per form
PROFILE_P = np.array([2.0, 4.0, 2.0, 1.0])
PROFILE_Q = np.array([0.5, 0.35, 0.6, 1.0])
WINDOW_PIXELS_AT_ONCE = 400_000  # bounds the memory of rasterising crowns (about 50 bytes a pixel)


def unit_noise(rng: np.random.Generator, canvas: Canvas, size_m: float) -> np.ndarray:
    """White noise blurred over ``size_m``, scaled to unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(canvas.shape), size_m / canvas.pixel_size_m)
    return noise / max(float(noise.std()), 1e-9)


def _window_sizes(trees: Trees, reach_m: np.ndarray, canvas: Canvas) -> tuple[np.ndarray, ...]:
    """Each tree's window of half-width ``reach_m`` on the grid: first row, first column, rows, columns."""
    px = canvas.pixel_size_m
    x_m, y_m = trees.xy_m[:, 0], trees.xy_m[:, 1]
    col0 = np.clip(np.floor((x_m - reach_m) / px), 0, canvas.size_px).astype(int)
    col1 = np.clip(np.floor((x_m + reach_m) / px) + 1, 0, canvas.size_px).astype(int)
    row0 = np.clip(np.floor((canvas.extent_m - y_m - reach_m) / px), 0, canvas.size_px).astype(int)
    row1 = np.clip(np.floor((canvas.extent_m - y_m + reach_m) / px) + 1, 0, canvas.size_px).astype(int)
    return row0, col0, np.maximum(row1 - row0, 0), np.maximum(col1 - col0, 0)


def _chunks(pairs: np.ndarray, most: int) -> list[slice]:
    """Runs of consecutive trees whose windows hold at most ``most`` pixels together (one tree if more)."""
    ends = np.cumsum(pairs)
    chunks, start = [], 0
    while start < len(pairs):
        done = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, done + most, side="right")), start + 1)
        chunks.append(slice(start, stop))
        start = stop
    return chunks


def crown_solids(rng: np.random.Generator, trees: Trees, canvas: Canvas) -> np.ndarray:
    """Height above the ground of the highest crown over each pixel, 0 where there is none: each crown
    its form's solid with a wobbling, fraying outline. Done a few hundred thousand pixels of crown windows at
    a time, so memory stays bounded whatever the scene's size."""
    canopy = np.zeros(canvas.size_px * canvas.size_px)
    wobble = rng.uniform(0.0, OUTLINE_WOBBLE, size=(len(trees), len(HARMONICS)))
    phase = rng.uniform(0.0, 2 * np.pi, size=(len(trees), len(HARMONICS)))
    fray = unit_noise(rng, canvas, 0.5)
    reach_m = trees.crown_radius_m * (1 + wobble.sum(axis=1) + 3 * EDGE_FRAY)
    row0, col0, rows, cols = _window_sizes(trees, reach_m, canvas)
    xs_m, ys_m = canvas.xs_m(), canvas.ys_m()
    for chunk in _chunks(rows * cols, WINDOW_PIXELS_AT_ONCE):
        counts = (rows * cols)[chunk]
        tree = np.repeat(np.arange(chunk.start, chunk.stop), counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        row, col = np.divmod(offset, np.maximum(cols, 1)[tree])
        row, col = row0[tree] + row, col0[tree] + col
        dx_m, dy_m = xs_m[col] - trees.xy_m[tree, 0], ys_m[row] - trees.xy_m[tree, 1]
        angle = np.arctan2(dy_m, dx_m)
        outline = 1.0 + np.sum(wobble[tree] * np.cos(HARMONICS * angle[:, None] + phase[tree]), axis=1)
        rho = np.hypot(dx_m, dy_m) / (trees.crown_radius_m[tree] * outline) + EDGE_FRAY * fray[row, col]
        inside = rho < 1.0
        tree, rho = tree[inside], np.maximum(rho[inside], 0.0)
        form, top_m = trees.form[tree], trees.height_m[tree]
        base_m = trees.base_fraction[tree] * top_m
        height_m = base_m + (top_m - base_m) * (1.0 - rho ** PROFILE_P[form]) ** PROFILE_Q[form]
        np.maximum.at(canopy, row[inside] * canvas.size_px + col[inside], height_m)
    return canopy.reshape(canvas.shape)


def rough_canopy(rng: np.random.Generator, trees: Trees, canvas: Canvas) -> np.ndarray:
    """The crowns' surface above the ground as first returns see it, 0 where there is no crown: the solids
    broken up by foliage clumps, leaf noise and gaps down to lower branches; never below 0.3 m."""
    canopy = crown_solids(rng, trees, canvas)
    crown = canopy > 0
    clumps = unit_noise(rng, canvas, CLUMP_M)
    leaves = rng.normal(0.0, LEAF_NOISE_M, size=canvas.shape)
    gaps = crown & (unit_noise(rng, canvas, 0.6) > NormalDist().inv_cdf(1.0 - GAP_SHARE))
    surface = canopy * (1.0 + CLUMP_SHARE * clumps) + leaves
    surface = np.where(gaps, surface * rng.uniform(0.2, 0.8, size=canvas.shape), surface)
    return np.where(crown, np.maximum(surface, 0.3), 0.0)
