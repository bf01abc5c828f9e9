"""Label noise (--label-noise drop=P,shift=M,width=M): each kind, determinism, nodata, training only."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from test_hostile_inputs import one_line_error

from demseg.data.noise import noisy_target, noisy_window, parse_label_noise, tile_rng
from demseg.data.scene import IGNORE
from demseg.data.synth import generate_world
from demseg.errors import DemsegError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Six 256 px synthetic scenes (5 train, 1 val), as the training tests use."""
    return generate_world(tmp_path_factory.mktemp("world"), scenes=6, size_px=256, seed=3, val_fraction=0.2,
                          progress=False)


def _footprints() -> np.ndarray:
    """A 120 px target: 16 square buildings of 8 px on a grid, a band of unknown pixels."""
    target = np.zeros((120, 120), np.uint8)
    for row in range(10, 110, 25):
        for col in range(10, 110, 25):
            target[row:row + 8, col:col + 8] = 1
    target[:, 114:] = IGNORE
    return target


def _instances(target: np.ndarray) -> int:
    return ndimage.label(target == 1)[1]


def test_drop_removes_about_that_share_of_instances_and_nothing_else():
    target = _footprints()
    assert _instances(noisy_target(target, {"drop": 1.0}, 0.5, tile_rng(0, "t"))) == 0
    kept = [_instances(noisy_target(target, {"drop": 0.5}, 0.5, tile_rng(seed, "t"))) for seed in range(20)]
    assert 0.35 < np.mean(kept) / 16 < 0.65
    once = noisy_target(target, {"drop": 0.5}, 0.5, tile_rng(3, "t"))
    assert ((once == 1) <= (target == 1)).all()  # dropping never adds or moves a pixel


def test_shift_moves_each_instance_by_at_most_that_many_metres_and_keeps_its_shape():
    target = _footprints()
    target[:, 114:] = 0
    moved = noisy_target(target, {"shift": 2.0}, 0.5, tile_rng(1, "t"))  # up to 4 px
    assert (moved == 1).sum() <= (target == 1).sum() and _instances(moved) == 16
    labels, count = ndimage.label(moved == 1)
    for centre in ndimage.center_of_mass(moved == 1, labels, range(1, count + 1)):
        nearest = min(np.hypot(centre[0] - r - 3.5, centre[1] - c - 3.5)
                      for r in range(10, 110, 25) for c in range(10, 110, 25))
        assert nearest <= 4.0 + 0.75
    assert not np.array_equal(moved, target)


def test_width_grows_or_shrinks_outlines_by_at_most_that_many_metres():
    target = _footprints()
    target[:, 114:] = 0
    areas = [ndimage.sum(noisy_target(target, {"width": 1.0}, 0.5, tile_rng(seed, "t")) == 1) for seed in range(5)]
    assert min(areas) >= 16 * 4 * 4 and max(areas) <= 16 * 12 * 12  # 8 px squares grown or shrunk by <= 2 px
    assert len(set(areas)) > 1


@pytest.mark.parametrize("noise", [{"drop": 0.3}, {"shift": 3.0}, {"width": 1.5},
                                   {"drop": 0.2, "shift": 1.0, "width": 0.5}])
def test_each_noise_is_fixed_by_seed_and_tile_and_keeps_unknown_pixels(noise):
    target = _footprints()
    a = noisy_target(target, noise, 0.5, tile_rng(7, "tile_a"))
    b = noisy_target(target, noise, 0.5, tile_rng(7, "tile_a"))
    c = noisy_target(target, noise, 0.5, tile_rng(8, "tile_a"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert ((a == IGNORE) == (target == IGNORE)).all()  # unknown stays unknown, nothing becomes unknown
    assert set(np.unique(a).tolist()) <= {0, 1, IGNORE}


def test_a_noisy_window_lets_a_neighbouring_instance_shift_in():
    target = np.zeros((64, 64), np.uint8)
    target[20:30, 34:44] = 1  # just right of the window
    window = (slice(0, 64), slice(0, 32))
    seen = [noisy_window(target, window, {"shift": 3.0}, 0.5, seed, "w").any() for seed in range(30)]
    assert any(seen)  # context around the tile: shifts bring labels in, as on a real misaligned map
    assert noisy_window(target, window, {}, 0.5, 0, "w").shape == (64, 32)


@pytest.mark.parametrize("text, message", [("blur=2", "kinds drop, shift, width"), ("drop=1.5", "between 0 and 1"),
                                           ("shift=-1", "between 0 and 50"), ("width=x", "needs a number"),
                                           ("drop", "KIND=VALUE")])
def test_bad_noise_settings_are_one_clear_error(text, message):
    with pytest.raises(DemsegError, match=message):
        parse_label_noise(text)


def test_label_noise_reaches_training_tiles_only(world, tmp_path):
    from test_train import prepared, tiny_config

    from demseg.train.run import run_arrays

    data, config, _, _ = prepared(world, tiny_config())
    clean_train, clean_val = run_arrays(data, config)[2:]
    noisy_train, noisy_val = run_arrays(data, config.model_copy(update={"label_noise": "drop=1"}))[2:]
    assert (noisy_train.targets == 1).sum() == 0 < (clean_train.targets == 1).sum()
    assert np.array_equal(noisy_val.targets, clean_val.targets)


@pytest.mark.parametrize("flag", ["drop=2", "fuzz=1", "shift=abc"])
def test_bad_label_noise_flags_exit_2_with_one_line(world, tmp_path, capsys, flag):
    one_line_error(capsys, ["experiment", world, "--label-noise", flag, "--out", tmp_path / "exp", "--quiet"],
                   "--label-noise")
    assert not (tmp_path / "exp").exists()


# ---------------------------------------------------------------------------- road class definitions


def _coded_scene(folder, classes: str):
    from conftest import city_dem, write_raster

    dem, buildings = city_dem(96)
    codes = buildings.copy()
    codes[40:46, :] = 11  # a carriageway
    codes[50:52, :] = 12  # a cycle path
    write_raster(folder / "dem.tif", dem)
    write_raster(folder / "labels.tif", codes, nodata=255)
    (folder / "spec.yaml").write_text("name: c\nscenes:\n  - id: a\n    dem: dem.tif\n"
                                      f"    labels: {{raster: labels.tif, classes: {classes}}}\n")
    return folder / "spec.yaml"


def test_a_road_class_can_be_several_codes(tmp_path):
    import warnings

    from demseg.data.scene import load_scenes
    from demseg.data.spec import load_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the other code is undeclared on purpose
        carriageway = load_scenes(load_spec(_coded_scene(tmp_path, "{roads: 11}")), ["roads"])[0]
    everything = load_scenes(load_spec(_coded_scene(tmp_path, "{buildings: 1, roads: [11, 12]}")), ["roads"])[0]
    assert (carriageway.targets["roads"] == 1).sum() == 6 * 96
    assert (everything.targets["roads"] == 1).sum() == 8 * 96


def test_a_road_class_that_matches_no_label_code_is_one_line(tmp_path, capsys):
    spec = _coded_scene(tmp_path, "{buildings: 1, roads: [21, 22]}")
    one_line_error(capsys, ["train", "--paper", spec, "--task", "roads", "--model", "unet", "--tile-size-px", 32,
                            "--out", tmp_path / "run", "--quiet"], "no pixel of any scene is labelled roads")
    assert not (tmp_path / "run").exists() or not [p for p in (tmp_path / "run").iterdir()
                                                    if not p.name.startswith(".demseg")]


def _row(label, seed, iou, task="roads", budget=10):
    return {"task": task, "model": label.split("+")[0], "backbone_weights": "-", "label": label,
            "train_tiles": budget, "seed": seed, "iou": iou, "scored_on": "validation"}


def test_noise_curves_pair_each_noisy_run_with_the_clean_run_of_its_seed(tmp_path):
    from demseg.evaluate.report import noise_curves, noise_table, plot_noise, split_noise

    assert split_noise("unet+noise-drop0.3") == ("unet", {"drop": 0.3})
    assert split_noise("mae-detail@dem-tiny+noise-drop0.3-shift1.5") == ("mae-detail@dem-tiny",
                                                                         {"drop": 0.3, "shift": 1.5})
    assert split_noise("unet+mix-world_v3") == ("unet+mix-world_v3", {})
    rows = [_row("unet", 0, 0.60), _row("unet", 1, 0.50),
            _row("unet+noise-drop0.3", 0, 0.55), _row("unet+noise-drop0.3", 1, 0.40),
            _row("unet+noise-drop0.6", 0, 0.30),
            _row("unet+noise-drop0.3-shift1", 0, 0.10)]  # several kinds at once: not on a one-kind curve
    curves = noise_curves(rows)
    assert curves == {("roads", 10, "unet", "drop"): {0.0: {0: 0.60, 1: 0.50}, 0.3: {0: 0.55, 1: 0.40},
                                                      0.6: {0: 0.30}}}
    table = noise_table(rows)
    # losses paired by seed: 0.05, 0.10 (drop 0.3) and 0.30 (drop 0.6): mean 15.0 points
    assert "| roads | 10 | unet | 55.0" in table and "| 15.0 ± " in table and "(n=3) |" in table
    assert plot_noise(rows, tmp_path / "noise.png").stat().st_size > 0
    assert plot_noise([_row("unet", 0, 0.6)], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_the_table2_shape_puts_many_noisy_tiles_beside_few_clean_ones():
    from demseg.evaluate.report import noisy_budget_table

    rows = [_row("unet", 0, 0.50), _row("unet", 0, 0.58, budget=24),
            _row("unet+noise-drop0.3-shift1.5", 0, 0.56, budget=24), _row("unet+noise-drop0.3", 0, 0.4)]
    table = noisy_budget_table(rows)
    assert "| 10 tiles, clean | 24 tiles, clean | 24 tiles, drop 0.3, shift 1.5 |" in table
    assert "| roads | unet | 50.0 (n=1) | 58.0 (n=1) | 56.0 (n=1) |" in table
    assert noisy_budget_table(rows[:2] + rows[3:]) == ""  # one kind at a time: a curve, not this table


def test_a_rows_label_noise_is_read_from_its_setting_and_older_rows_from_their_label():
    from demseg.evaluate.report import noise_of

    row = {"label": "unet+mix-w", "label_noise": "drop=0.3,shift=1", "model": "unet", "backbone_weights": "-"}
    assert noise_of(row) == ("unet+mix-w", {"drop": 0.3, "shift": 1.0})  # the setting, not the label's words
    assert noise_of({"label": "unet", "label_noise": ""}) == ("unet", {})
    assert noise_of({"label": "unet+noise-drop0.3"}) == ("unet", {"drop": 0.3})  # a folder from before
