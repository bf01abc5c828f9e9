"""Normalisation recipes: values, channels, and nodata never entering as a number."""

from __future__ import annotations

import numpy as np
import pytest

from demseg.data.normalise import local_ground, normalise_tile, recipe_channels
from demseg.errors import DemsegError


def _tile(seed=0):
    rng = np.random.default_rng(seed)
    elevation = (100 + rng.normal(0, 1, (64, 64))).astype(np.float32)
    elevation[20:40, 20:40] += 15  # a 15 m building
    valid = np.ones_like(elevation, bool)
    valid[:4] = False
    elevation[~valid] = np.nan
    return elevation, valid


@pytest.mark.parametrize("recipe", ["minmax", "zscore", "percentile", "relief", "relief+slope+hillshade"])
def test_nodata_values_do_not_change_the_output(recipe):
    elevation, valid = _tile()
    a = normalise_tile(np.where(valid, elevation, -9999.0).astype(np.float32), valid, recipe, 0.5)
    b = normalise_tile(np.where(valid, elevation, 1e6).astype(np.float32), valid, recipe, 0.5)
    assert np.array_equal(a, b)
    assert np.isfinite(a).all() and (a[:, ~valid] == 0).all()
    assert a.shape == (recipe_channels(recipe), 64, 64)


def test_minmax_is_per_tile_zero_to_one_and_zscore_is_standardised():
    elevation, valid = _tile()
    minmax = normalise_tile(elevation, valid, "minmax")[0][valid]
    assert minmax.min() == 0.0 and minmax.max() == pytest.approx(1.0)
    z = normalise_tile(elevation, valid, "zscore")[0][valid]
    assert abs(z.mean()) < 1e-4 and z.std() == pytest.approx(1.0, abs=1e-3)


def test_relief_gives_building_height_with_a_dtm_and_without():
    elevation, valid = _tile()
    dtm = np.full_like(elevation, 100.0)
    with_dtm = normalise_tile(elevation, valid, "relief", 0.5, dtm=dtm)[0] * 10.0
    assert with_dtm[30, 30] == pytest.approx(15, abs=4)
    assert abs(np.median(with_dtm[valid & (np.arange(64)[:, None] > 45)])) < 1.0
    ground = local_ground(np.nan_to_num(elevation, nan=0.0), valid, pixel_size_m=0.5, window_m=30)
    assert abs(ground[30, 30] - 100) < 3  # the opening removes the building from the ground estimate


def test_relief_keeps_dynamic_range_that_minmax_hides():
    low, valid = _tile()
    tall = low.copy()
    tall[20:40, 20:40] += 30  # same footprint, a much taller building
    mm = [normalise_tile(t, valid, "minmax")[0][30, 30] for t in (low, tall)]
    rel = [normalise_tile(t, valid, "relief", 0.5)[0][30, 30] for t in (low, tall)]
    assert mm[0] == pytest.approx(mm[1], abs=0.1)
    assert rel[1] - rel[0] == pytest.approx(3.0, abs=0.5)


def test_flat_and_empty_tiles_do_not_divide_by_zero():
    flat = np.zeros((16, 16), np.float32)
    valid = np.ones_like(flat, bool)
    assert np.isfinite(normalise_tile(flat, valid, "minmax+zscore+percentile+slope+hillshade")).all()
    assert not normalise_tile(flat, np.zeros_like(valid), "relief").any()


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(DemsegError, match="unknown normalisation"):
        recipe_channels("relief+ndvi")
