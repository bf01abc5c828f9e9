"""Gap filling shared by the DSM and the LiDAR channels: the nearest cell with a value, within a radius."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

ROW_BLOCK = 256  # rows per block when measuring fill distances: bounded temporaries on any grid


def fill_from_nearest(values: np.ndarray, sources: np.ndarray, sides_m: tuple[float, float],
                      radius_m: float) -> None:
    """Fill ``values`` in place: each non-source cell copies its nearest source cell, if within ``radius_m``.

    ``sources`` marks the cells that hold a measured value; ``sides_m`` is (pixel height, pixel width)
    in metres, distances are measured centre to centre. A source's value may itself be NaN (a DSM cell
    holding only water points): the cells it is nearest to stay NaN.
    """
    if radius_m <= 0 or not sources.any() or sources.all():
        return
    nearest = ndimage.distance_transform_edt(~sources, return_distances=False, return_indices=True)
    side_y, side_x = sides_m
    cols = np.arange(values.shape[1])[None, :]
    for top in range(0, values.shape[0], ROW_BLOCK):
        block = slice(top, top + ROW_BLOCK)
        rows = np.arange(top, min(top + ROW_BLOCK, values.shape[0]))[:, None]
        near_rows, near_cols = nearest[0, block], nearest[1, block]
        distance_sq = ((near_rows - rows) * side_y) ** 2 + ((near_cols - cols) * side_x) ** 2
        fill = ~sources[block] & (distance_sq <= radius_m**2)
        # sources are never themselves filled: in-place is safe
        values[block][fill] = values[near_rows[fill], near_cols[fill]]
