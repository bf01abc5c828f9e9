"""One footprint per building: blocks split where the roof height steps, LoD1 attributes per part."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_raster

from demseg.predict.config import PredictConfig
from demseg.predict.sliding import DemInput
from demseg.predict.split import split_labels
from demseg.predict.vectorise import vectorise_mask

SIZE = 60  # 1 m pixels


def terrace(tmp_path, roofs=((10.0, 16.0), (14.0, 14.0)), gable: bool = False, hole: bool = False):
    """A row of two houses sharing a wall (columns 10-29 and 30-49, rows 20-39) on 2 m ground."""
    ground = np.full((SIZE, SIZE), 2.0, np.float32)
    dsm = ground.copy()
    mask = np.zeros((SIZE, SIZE), np.uint8)
    counts = np.full((SIZE, SIZE), 4.0, np.float32)
    for (low, high), (c0, c1) in zip(roofs, ((10, 30), (30, 50)), strict=True):
        rows = np.arange(20, 40)
        if gable:  # ridge along the row's middle, eaves at `low`, ridge at `high`
            profile = low + (high - low) * (1 - np.abs(rows - 29.5) / 10.0)
        else:
            profile = np.full(rows.size, low)
        dsm[20:40, c0:c1] = profile[:, None] + 2.0
        mask[20:40, c0:c1] = 1
    if hole:
        dsm[25:27, 15:17] = -9999.0  # no return on part of a roof
    dem = write_raster(tmp_path / "dem.tif", dsm)
    dtm = write_raster(tmp_path / "dtm.tif", ground)
    write_raster(tmp_path / "point_count.tif", counts)
    labels = write_raster(tmp_path / "mask.tif", mask, nodata=255)
    return labels, DemInput(dem, dtm)


def buildings(labels, source, **config):
    return vectorise_mask(labels, "buildings", None, source, PredictConfig(**config))["buildings"]


def test_a_terrace_with_a_roof_step_becomes_two_buildings_with_lod1_heights(tmp_path):
    labels, source = terrace(tmp_path)
    layer = buildings(labels, source)
    assert len(layer.geometries) == 2
    order = np.argsort([g.centroid.x for g in layer.geometries])
    assert [round(layer.geometries[i].area) for i in order] == [400, 400]
    attributes = {name: layer.attributes[name][order] for name in layer.attributes}
    np.testing.assert_allclose(attributes["ground_m"], [2.0, 2.0])
    np.testing.assert_allclose(attributes["roof_m"], [12.0, 16.0])
    np.testing.assert_allclose(attributes["height_m"], [10.0, 14.0])
    np.testing.assert_allclose(attributes["roof_max_m"], [12.0, 16.0])
    np.testing.assert_allclose(attributes["point_count"], [1600, 1600])
    np.testing.assert_allclose(attributes["mean_height_m"], [10.0, 14.0])
    assert len(buildings(labels, source, split_step_m=None).geometries) == 1  # off: one block


def test_pitched_roofs_and_steps_below_the_threshold_stay_whole(tmp_path):
    labels, source = terrace(tmp_path, roofs=((6.0, 12.0), (6.0, 12.0)), gable=True)  # 50 degree slopes, same height
    assert len(buildings(labels, source).geometries) == 1
    labels, source = terrace(tmp_path, roofs=((10.0, 10.0), (11.0, 11.0)))  # a 1 m step under the 1.5 m default
    assert len(buildings(labels, source).geometries) == 1
    assert len(buildings(labels, source, split_step_m=0.5).geometries) == 2


def test_a_dormer_smaller_than_a_part_joins_its_roof_and_nodata_is_no_step(tmp_path):
    labels, source = terrace(tmp_path, roofs=((10.0, 10.0), (10.0, 10.0)), hole=True)
    layer = buildings(labels, source)
    assert len(layer.geometries) == 1 and np.isfinite(layer.attributes["roof_m"]).all()
    inside = np.zeros((20, 20), bool)
    inside[2:18, 2:18] = True
    dsm = np.full((20, 20), 10.0)
    dsm[5:10, 5:10] = 13.0  # a 25 m2 dormer: 9 pixels inside its step line
    assert split_labels(inside, dsm, 1.5, min_part_px=20).max() == 1
    parts = split_labels(inside, dsm, 1.5, min_part_px=4)
    assert parts.max() == 2 and (parts == parts[7, 7]).sum() == 25  # the step line goes to the part it bounds


def test_the_split_options_are_checked():
    with pytest.raises(ValueError):
        PredictConfig(split_step_m=0)
    with pytest.raises(ValueError):
        PredictConfig(min_part_m2=-1)


def test_every_part_is_one_piece_even_on_a_noisy_roof():
    rng = np.random.default_rng(0)
    inside = np.zeros((40, 40), bool)
    inside[2:38, 2:38] = True
    dsm = np.where(np.arange(40)[None, :] < 20, 10.0, 14.0) + rng.normal(0, 0.6, (40, 40))  # a step and noise
    parts = split_labels(inside, dsm, 1.5, min_part_px=20)
    from scipy import ndimage

    assert parts.max() >= 2
    for label in range(1, parts.max() + 1):
        assert ndimage.label(parts == label, structure=ndimage.generate_binary_structure(2, 1))[1] == 1
