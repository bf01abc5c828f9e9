"""Resolution augmentation: a 0.5 m tile as a coarser LiDAR DEM would record it, on the same grid."""

from __future__ import annotations

import numpy as np

from demseg.data.arrays import augmented_rows, tile_arrays
from demseg.data.augment import coarsened
from demseg.data.dataset import load_split
from demseg.data.spec import load_spec
from demseg.data.tiles import SplitConfig


def test_coarsened_heights_keep_flat_roofs_and_smooth_their_edges():
    heights = np.zeros((64, 64), np.float32)
    heights[16:48, 16:48] = 10.0
    out, valid = coarsened(heights, np.ones_like(heights, bool), 4)
    assert out.shape == heights.shape and valid.all()
    assert np.allclose(out[24:40, 24:40], 10.0) and np.allclose(out[:8, :8], 0.0)
    edge = out[32, 10:22]
    assert np.all(np.diff(edge) >= 0) and 0 < edge[5] < 10  # a ramp where the wall was a step


def test_coarsened_never_mixes_nodata_into_heights():
    heights = np.full((32, 32), 5.0, np.float32)
    valid = np.ones_like(heights, bool)
    heights[:, :12] = -9999.0  # a nodata fill value that must not leak
    valid[:, :12] = False
    out, out_valid = coarsened(heights, valid, 4)
    assert np.allclose(out[out_valid], 5.0)
    assert not out_valid[:, :8].any() and out_valid[:, 16:].all()
    assert np.isnan(out[~out_valid]).all()


def test_factor_one_is_the_identity():
    heights = np.random.default_rng(0).normal(size=(20, 20)).astype(np.float32)
    out, valid = coarsened(heights, np.ones_like(heights, bool), 1)
    assert np.array_equal(out, heights) and valid.all()


def test_tile_arrays_append_coarser_copies_with_the_same_targets(scene_dir):
    spec = scene_dir / "spec.yaml"
    spec.write_text("name: t\nscenes:\n  - id: a\n    dem: dem.tif\n    dtm: dtm.tif\n"
                    "    labels: {raster: labels.tif, classes: {buildings: 1}, ignore: 255}\n")
    data = load_split(load_spec(spec), ["buildings"], SplitConfig(tile_size_px=32, val_tiles=2), progress=False)
    tiles = [t for t in data.tiles if t.split == "train"][:3]
    plain = tile_arrays(data.scenes, tiles, "buildings", "relief+slope")
    augmented = tile_arrays(data.scenes, tiles, "buildings", "relief+slope", coarsen=[2, 4])
    assert len(augmented) == 3 * len(plain)
    assert np.array_equal(augmented.inputs[:3], plain.inputs)
    assert augmented.ids[3:6] == [f"{t.id}@2x" for t in tiles]
    known = plain.targets != 255
    for k in (1, 2):
        block = augmented.targets[3 * k:3 * k + 3]
        assert np.array_equal(block[known & (block != 255)], plain.targets[known & (block != 255)])
        assert not np.allclose(augmented.inputs[3 * k:3 * k + 3], plain.inputs)  # slopes change at edges
    assert augmented_rows([0, 2], 3, [2, 4]) == [0, 2, 3, 5, 6, 8]
