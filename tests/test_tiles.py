"""Tiles, spatially disjoint splits, nested training subsets and the tile index."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import write_raster

from demseg.data import load_scenes, load_spec, make_tiles, split_tiles, training_subset, write_tile_index
from demseg.data.tiles import _box_distance
from demseg.errors import DemsegError


def _big_scene_spec(tmp_path, size_px=32 * 12, n_scenes=1):
    lines = ["name: t", "scenes:"]
    for i in range(n_scenes):
        rng = np.random.default_rng(i)
        dem = rng.normal(10, 1, (size_px, size_px)).astype(np.float32)
        labels = (rng.random((size_px, size_px)) > 0.7).astype(np.uint8)
        write_raster(tmp_path / f"dem{i}.tif", dem, origin=(500000.0 + i * size_px, 5700000.0))
        write_raster(tmp_path / f"lab{i}.tif", labels, nodata=255, origin=(500000.0 + i * size_px, 5700000.0))
        lines += [f"  - id: s{i}", f"    dem: dem{i}.tif", f"    labels: {{raster: lab{i}.tif, classes: {{buildings: 1}}}}"]
    (tmp_path / "spec.yaml").write_text("\n".join(lines) + "\n")
    return load_spec(tmp_path / "spec.yaml")


def test_tiles_cover_the_scene_on_a_grid_and_drop_mostly_nodata_ones(scene_dir):
    (scene_dir / "spec.yaml").write_text("scenes:\n  - id: a\n    dem: dem.tif\n    labels: {raster: labels.tif}\n")
    scenes = load_scenes(load_spec(scene_dir / "spec.yaml"))
    tiles = make_tiles(scenes, tile_size_px=32)
    assert len(tiles) == 9
    assert {(t.row_off, t.col_off) for t in tiles} == {(r, c) for r in (0, 32, 64) for c in (0, 32, 64)}
    scenes[0].dem.valid_mask[:32, :32] = False
    assert len(make_tiles(scenes, tile_size_px=32)) == 8
    with pytest.raises(DemsegError, match="multiple of 16"):
        make_tiles(scenes, tile_size_px=30)
    with pytest.raises(DemsegError, match="larger than every scene"):
        make_tiles(scenes, tile_size_px=128)


@pytest.mark.parametrize("val_tiles", [5, 20, 40])
def test_no_validation_tile_touches_a_training_tile(tmp_path, val_tiles):
    spec = _big_scene_spec(tmp_path, n_scenes=2)
    tiles = make_tiles(load_scenes(spec), tile_size_px=32)
    split_tiles(tiles, {s.id: s.split for s in spec.scenes}, val_tiles=val_tiles, min_train_fraction=0.1, seed=3)
    train = np.array([t.bounds for t in tiles if t.split == "train"])
    val = np.array([t.bounds for t in tiles if t.split == "val"])
    assert len(val) >= min(val_tiles, 5) and len(train) >= 10
    # distance 0 would mean a shared edge or corner; the two scenes also sit side by side on one CRS
    assert _box_distance(train, val).min() > 0
    assert {t.split for t in tiles} <= {"train", "val", "buffer"}


def test_split_is_fixed_by_seed_and_changes_with_it(tmp_path):
    spec = _big_scene_spec(tmp_path)
    scenes = load_scenes(spec)

    def val_ids(seed):
        tiles = split_tiles(make_tiles(scenes, 32), {"s0": "auto"}, val_tiles=12, seed=seed)
        return sorted(t.id for t in tiles if t.split == "val")

    assert val_ids(1) == val_ids(1)
    assert any(val_ids(seed) != val_ids(1) for seed in range(2, 8))


def test_fixed_scene_splits_are_respected(tmp_path):
    spec = _big_scene_spec(tmp_path, size_px=64, n_scenes=3)
    tiles = make_tiles(load_scenes(spec), 32)
    split_tiles(tiles, {"s0": "train", "s1": "val", "s2": "train"}, val_tiles=50)
    assert {t.split for t in tiles if t.scene_id == "s1"} == {"val"}
    # s0 and s2 sit left and right of s1 on one CRS: only their tiles that touch s1 become buffer
    assert {t.split for t in tiles if t.scene_id == "s0"} == {"train", "buffer"}


def test_training_subsets_are_nested_and_bounded(tmp_path):
    spec = _big_scene_spec(tmp_path)
    tiles = split_tiles(make_tiles(load_scenes(spec), 32), {"s0": "auto"}, val_tiles=20, min_train_fraction=0.42)
    sizes = [5, 10, 40]
    subsets = [{t.id for t in training_subset(tiles, n, seed=7, task="buildings")} for n in sizes]
    assert [len(s) for s in subsets] == sizes
    assert subsets[0] < subsets[1] < subsets[2]
    assert {t.id for t in training_subset(tiles, 10, seed=8)} != subsets[1]
    assert all(t.split == "train" for t in training_subset(tiles, 40, seed=7))
    available = sum(t.split == "train" for t in tiles)
    with pytest.raises(DemsegError, match=f"only {available}"):
        training_subset(tiles, available + 1, seed=0)


def test_tile_index_lists_every_tile_with_fractions(tmp_path):
    spec = _big_scene_spec(tmp_path, size_px=64)
    tiles = split_tiles(make_tiles(load_scenes(spec), 32), {"s0": "auto"}, val_tiles=1, min_train_fraction=0.25)
    path = write_tile_index(tiles, tmp_path / "tiles.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["id"] for r in rows] == [t.id for t in tiles]
    assert 0.2 < float(rows[0]["fraction_buildings"]) < 0.4
    assert {r["split"] for r in rows} == {t.split for t in tiles}
