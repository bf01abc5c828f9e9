"""Gaps in a grid filled by linear interpolation on a Delaunay triangulation (TIN) of some of its cells.

Blocks: the grid is filled ``block_cells`` x ``block_cells`` cells at a time, each block from the
TIN of only the vertex cells in a halo around it. A triangle of that local TIN is a triangle of the
TIN of all vertex cells when no vertex at all lies inside its circumcircle (a KD-tree of all
vertices, ~50 bytes each, answers that). The halo doubles until every triangle that fills a cell of
the block passes that test and every gap cell well inside the convex hull of all vertices is
covered. So the result is the global TIN's (cells on the hull's very edge aside), while Qhull's
memory (~0.7 kB a vertex) follows the largest gap, not the grid.

Ties: cell centres are cocircular in fours, which makes the Delaunay triangulation ambiguous (and
Qhull slow). Each centre is moved by a sub-pixel jitter hashed from its global (row, col), so every
block sees the same, tie-free positions and picks the same triangles as the global TIN would.

Rasterising: the triangles' corners are cell centres, so in (row, col) index space a cell centre
lies in a triangle exactly when its three integer barycentric weights are >= 0 (a cell on a shared
edge gets the same height from both sides; a jittered triangle of collinear centres has zero area
and is skipped). Triangles are processed in batches of equal power-of-two bounding boxes: a few
numpy operations over ``batch_cells`` candidate cells each.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError, cKDTree

BLOCK_CELLS = 512
FIRST_HALO_CELLS = 64
JITTER_PX = 2e-3


def fill_gaps(heights: np.ndarray, vertices: np.ndarray, missing: np.ndarray, sides_m: tuple[float, float],
              block_cells: int = BLOCK_CELLS, first_halo_cells: int = FIRST_HALO_CELLS) -> None:
    """Write TIN heights from the ``vertices`` cells into the ``missing`` cells of ``heights`` (in place).

    Missing cells outside the convex hull of the vertex cells (or on its edge) may stay NaN.
    """
    hull = _hull_equations(vertices)
    rows, cols = np.nonzero(vertices)
    everywhere = cKDTree(_metres(rows, cols, (0, 0), sides_m))  # every vertex, to test local triangles
    del rows, cols
    height, width = missing.shape
    for top in range(0, height, block_cells):
        for left in range(0, width, block_cells):
            block = (slice(top, min(top + block_cells, height)), slice(left, min(left + block_cells, width)))
            if missing[block].any():
                filled = _block_heights(heights, vertices, missing, block, sides_m, hull, everywhere,
                                        first_halo_cells)
                heights[block] = np.where(missing[block], filled, heights[block])


def _hull_equations(vertices: np.ndarray) -> np.ndarray | None:
    """Half-planes (a, b, c: a*row + b*col + c <= 0 inside) of the vertex cells' hull; None if it is flat."""
    rows = np.nonzero(vertices.any(axis=1))[0]
    if len(rows) == 0:
        return None
    first = vertices[rows].argmax(axis=1)
    last = vertices.shape[1] - 1 - vertices[rows, ::-1].argmax(axis=1)
    extremes = np.column_stack([np.concatenate([rows, rows]), np.concatenate([first, last])]).astype(float)
    try:  # the hull of each row's first and last vertex is the hull of them all
        return ConvexHull(extremes).equations
    except QhullError:
        return None


def _block_heights(heights: np.ndarray, vertices: np.ndarray, missing: np.ndarray, block: tuple[slice, slice],
                   sides_m: tuple[float, float], hull: np.ndarray | None, everywhere: cKDTree,
                   halo: int) -> np.ndarray:
    """TIN heights on one block, from the vertices in a halo grown until they match the global TIN."""
    shape = missing.shape
    while True:
        region = tuple(slice(max(0, part.start - halo), min(size, part.stop + halo))
                       for part, size in zip(block, shape, strict=True))
        inner = tuple(slice(part.start - outer.start, part.stop - outer.start)
                      for part, outer in zip(block, region, strict=True))
        rows, cols = np.nonzero(vertices[region])
        wanted = np.zeros(vertices[region].shape, bool)
        wanted[inner] = missing[block]
        values = heights[region][rows, cols].astype(np.float64)
        origin = (region[0].start, region[1].start)
        out, circles = tin_interpolate(rows, cols, values, wanted, sides_m, offset=origin)
        whole = all(part.start == 0 and part.stop == size for part, size in zip(region, shape, strict=True))
        if whole or (circles is not None and not _holds_a_vertex(circles, origin, sides_m, everywhere)
                     and not _uncovered_in_hull(out[inner], wanted[inner], block, hull)):
            return out[inner]
        halo *= 2


def _holds_a_vertex(circles: np.ndarray, origin: tuple[int, int], sides_m: tuple[float, float],
                    everywhere: cKDTree) -> bool:
    """True if a circumcircle (empty of the local vertices) holds one of all the vertices."""
    centres = circles[:, :2] + np.array(origin) * np.array(sides_m)
    radii = circles[:, 2] * (1 - 1e-9) - 1e-9  # a triangle's own corners lie on its circle
    return bool((everywhere.query_ball_point(centres, radii, return_length=True) > 0).any())


def _uncovered_in_hull(out: np.ndarray, wanted: np.ndarray, block: tuple[slice, slice],
                       hull: np.ndarray | None) -> bool:
    """True if a wanted cell left NaN lies inside the global hull (a larger halo would cover it).

    Cells within half a cell of the hull's edge do not count: an edge there may join two vertices
    a whole grid apart, and the nearest vertex gives them a better height than that edge would.
    """
    rows, cols = np.nonzero(wanted & np.isnan(out))
    if hull is None or len(rows) == 0:
        return False
    points = np.column_stack([rows + block[0].start, cols + block[1].start]).astype(float)
    return bool(((points @ hull[:, :2].T + hull[:, 2]) < -0.5).all(axis=1).any())


def _jitter(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A fixed sub-pixel offset per global cell, in [-JITTER_PX, JITTER_PX], from a hash of (row, col)."""
    key = rows.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    key ^= cols.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    key ^= key >> np.uint64(29)
    mask = np.uint64(0xFFFF)
    fractions = np.column_stack([(key >> np.uint64(11)) & mask, (key >> np.uint64(40)) & mask])
    return (fractions / 0xFFFF - 0.5) * 2 * JITTER_PX


def _metres(rows: np.ndarray, cols: np.ndarray, offset: tuple[int, int],
            sides_m: tuple[float, float]) -> np.ndarray:
    """Jittered cell positions in metres, relative to the cell ``offset``: the triangulation's input."""
    shifted = _jitter(rows + offset[0], cols + offset[1])
    return np.column_stack([(rows + shifted[:, 0]) * sides_m[0], (cols + shifted[:, 1]) * sides_m[1]])


def tin_interpolate(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, wanted: np.ndarray,
                    sides_m: tuple[float, float], offset: tuple[int, int] = (0, 0),
                    batch_cells: int = 1 << 18) -> tuple[np.ndarray, np.ndarray | None]:
    """Heights on ``wanted`` cells inside the TIN of cells (rows, cols), NaN elsewhere, and the
    circumcircles (centre row, centre col, radius, in metres) of the triangles used; None if no
    TIN could be built (fewer than three cells, or all on one line).

    ``offset`` is the global (row, col) of index (0, 0), so that the jitter is the same in every block.
    """
    out = np.full(wanted.shape, np.nan)
    if len(rows) < 3:
        return out, None
    metres = _metres(rows, cols, offset, sides_m)
    try:
        simplices = Delaunay(metres).simplices
    except QhullError:
        return out, None
    tri_rows, tri_cols = rows[simplices], cols[simplices]
    used = np.zeros(len(simplices), bool)
    top, left = tri_rows.min(axis=1), tri_cols.min(axis=1)
    box_rows = _next_power_of_two(tri_rows.max(axis=1) - top + 1)
    box_cols = _next_power_of_two(tri_cols.max(axis=1) - left + 1)
    for box_h, box_w in set(zip(box_rows.tolist(), box_cols.tolist(), strict=True)):
        members = np.nonzero((box_rows == box_h) & (box_cols == box_w))[0]
        strip_h = max(1, min(box_h, batch_cells // box_w))
        per_batch = max(1, batch_cells // (strip_h * box_w))
        for start in range(0, len(members), per_batch):
            batch = members[start:start + per_batch]
            for row_offset in range(0, box_h, strip_h):
                hit = _fill(out, wanted, tri_rows[batch], tri_cols[batch], values[simplices[batch]],
                            top[batch] + row_offset, left[batch], min(strip_h, box_h - row_offset), box_w)
                used[batch[hit]] = True
    return out, _circumcircles(metres[simplices[used]])


def _next_power_of_two(n: np.ndarray) -> np.ndarray:
    return np.left_shift(1, np.ceil(np.log2(n)).astype(np.int64))


def _circumcircles(corners: np.ndarray) -> np.ndarray:
    """(centre y, centre x, radius) of triangles given as (n, 3, 2) corner coordinates."""
    origin = corners[:, 0]
    (by, bx), (cy, cx) = (corners[:, 1] - origin).T, (corners[:, 2] - origin).T
    d = 2 * (bx * cy - by * cx)
    centre_x = (cy * (bx**2 + by**2) - by * (cx**2 + cy**2)) / d
    centre_y = (bx * (cx**2 + cy**2) - cx * (bx**2 + by**2)) / d
    return np.column_stack([centre_y + origin[:, 0], centre_x + origin[:, 1], np.hypot(centre_x, centre_y)])


def _fill(out: np.ndarray, wanted: np.ndarray, tri_rows: np.ndarray, tri_cols: np.ndarray,
          tri_values: np.ndarray, top: np.ndarray, left: np.ndarray, box_h: int, box_w: int) -> np.ndarray:
    """Write each triangle's linear height on the wanted cells of its (box_h, box_w) box at (top, left);
    returns the indices of the triangles that wrote a cell."""
    y = (top[:, None, None] + np.arange(box_h)[None, :, None]).astype(np.float64)
    x = (left[:, None, None] + np.arange(box_w)[None, None, :]).astype(np.float64)
    (y1, y2, y3), (x1, x2, x3) = ([a[:, k, None, None].astype(np.float64) for k in range(3)]
                                  for a in (tri_rows, tri_cols))
    area2 = (y2 - y3) * (x1 - x3) + (x3 - x2) * (y1 - y3)
    sign = np.sign(area2)
    w1 = ((y2 - y3) * (x - x3) + (x3 - x2) * (y - y3)) * sign
    w2 = ((y3 - y1) * (x - x3) + (x1 - x3) * (y - y3)) * sign
    w3 = np.abs(area2) - w1 - w2
    inside = (w1 >= 0) & (w2 >= 0) & (w3 >= 0) & (area2 != 0)

    def picked(array: np.ndarray) -> np.ndarray:  # values at the inside cells, broadcast to the box first
        return np.broadcast_to(array, inside.shape)[inside]

    y, x = picked(y).astype(np.intp), picked(x).astype(np.intp)
    keep = wanted[y, x]
    if not keep.any():
        return np.zeros(0, np.intp)
    weights = np.stack([picked(w1), picked(w2), picked(w3)])[:, keep] / np.abs(picked(area2)[keep])
    owner = picked(np.arange(len(top))[:, None, None])[keep]
    out[y[keep], x[keep]] = (weights * tri_values[owner].T).sum(axis=0)
    return np.unique(owner)
