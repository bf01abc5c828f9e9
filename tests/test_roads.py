"""Roads that leave their block: street surfaces in the synthetic world, a UNet that sees far, and a
loss that keeps networks whole."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from demseg.data.spec import load_spec
from demseg.data.synth import generate_world
from demseg.data.synth.roads import SURFACE_CODES, TRAFFIC_SURFACES
from demseg.data.synth.scene import BUILDING, ROAD, generate_scene
from demseg.models.unet import UNet
from demseg.train.connectivity import cldice_loss, soft_skeleton

TRAFFIC = [SURFACE_CODES[name] for name in TRAFFIC_SURFACES]


@pytest.fixture(scope="module")
def streets():
    return [generate_scene(seed, 256, 0.5, "streets") for seed in (6, 3, 13)]


def test_streets_style_draws_every_traffic_surface_with_its_own_code(streets):
    found = set(np.unique(np.concatenate([scene.surfaces.ravel() for scene in streets])))
    assert {SURFACE_CODES[name] for name in SURFACE_CODES} <= found


def test_the_road_label_is_every_traffic_area_and_nothing_else(streets):
    for scene in streets:
        assert np.array_equal(scene.labels == ROAD, np.isin(scene.surfaces, TRAFFIC))
        assert np.array_equal(scene.labels == BUILDING, scene.surfaces == BUILDING)
        sidewalk = scene.surfaces == SURFACE_CODES["sidewalk"]
        assert sidewalk.any() and (scene.labels[sidewalk] == 0).all()


def test_cross_section_heights_kerb_up_from_the_road_to_the_sidewalk(streets):
    """Parking bays lie at road level, cycle paths above it, sidewalks above the cycle paths (median
    over a scene, measured against the nearest carriageway pixels' DTM through local means)."""
    from scipy import ndimage

    scene = streets[0]
    dtm = np.nan_to_num(scene.dtm)
    carriage = scene.surfaces == SURFACE_CODES["carriageway"]
    local = ndimage.uniform_filter(np.where(carriage, dtm, 0.0), 15)
    share = ndimage.uniform_filter(carriage.astype(float), 15)
    road_level = np.where(share > 0.05, local / np.maximum(share, 1e-9), np.nan)
    rise = {name: np.nanmedian((dtm - road_level)[scene.surfaces == code])
            for name, code in SURFACE_CODES.items() if name in ("parking", "cycle_path", "sidewalk")}
    assert abs(rise["parking"]) < 0.06
    assert 0.02 < rise["cycle_path"] < rise["sidewalk"]


def test_parked_cars_stand_in_the_bays(streets):
    bays = np.concatenate([(scene.surfaces == SURFACE_CODES["parking"]).ravel() for scene in streets])
    cars = np.concatenate([scene.car_mask.ravel() for scene in streets])
    assert cars[bays].mean() > 0.2  # bays are mostly occupied
    assert (scene_dsm_rise(streets[0])[streets[0].car_mask] > 1.0).mean() > 0.8


def scene_dsm_rise(scene):
    return np.nan_to_num(scene.dsm - scene.dtm)


def test_streets_are_deterministic_by_seed_and_differ_between_seeds():
    a, b, c = (generate_scene(seed, 128, 0.5, "streets") for seed in (11, 11, 12))
    assert np.array_equal(a.surfaces, b.surfaces) and np.array_equal(a.dsm, b.dsm, equal_nan=True)
    assert not np.array_equal(a.surfaces, c.surfaces)


def test_other_styles_keep_carriageway_and_sidewalk_only():
    scene = generate_scene(3, 256, 0.5, "mixed")
    codes = set(np.unique(scene.surfaces)) & set(SURFACE_CODES.values())
    assert codes <= {SURFACE_CODES["carriageway"], SURFACE_CODES["sidewalk"]}
    assert np.array_equal(scene.labels == ROAD, scene.surfaces == SURFACE_CODES["carriageway"])


def test_world_writes_surfaces_and_a_spec_that_chooses_them(tmp_path):
    spec_path = generate_world(tmp_path / "w", scenes=2, size_px=128, seed=5, style="streets", progress=False)
    surfaces_spec = load_spec(spec_path.parent / "surfaces.yaml")
    scene = surfaces_spec.scenes[0]
    assert scene.labels.codes("roads") == TRAFFIC
    with rasterio.open(surfaces_spec.path(scene.labels.raster)) as src:
        surfaces = src.read(1)
    with rasterio.open(spec_path.parent / scene.id / "labels.tif") as src:
        labels = src.read(1)
    assert np.array_equal(labels == ROAD, np.isin(surfaces, TRAFFIC))


def _reach_px(model: UNet, size: int = 256) -> int:
    """How far from the centre an input pixel still changes the centre pixel's output."""
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(1, 1, size, size, requires_grad=True)
    model(x)[0, 1, size // 2, size // 2].backward()
    rows, cols = np.nonzero(x.grad[0, 0].abs().numpy() > 0)
    return int(max(np.abs(rows - size // 2).max(), np.abs(cols - size // 2).max()))


def test_context_blocks_let_a_pixel_see_further():
    plain, wide = UNet(1, 2, base_width=4), UNet(1, 2, base_width=4, context_blocks=3)
    assert _reach_px(plain, 512) < 120
    assert _reach_px(wide, 512) > 250


def test_context_blocks_keep_the_output_shape():
    model = UNet(3, 2, base_width=4, context_blocks=2)
    assert model(torch.zeros(2, 3, 64, 96)).shape == (2, 2, 64, 96)


def _road(gap: bool = False, thin: bool = False) -> torch.Tensor:
    mask = torch.zeros(1, 64, 64)
    mask[0, 28:36, 4:60] = 1.0
    if gap:
        mask[0, 28:36, 30:34] = 0.0
    if thin:
        mask[0, 28:30, 4:60] = 0.0
        mask[0, 34:36, 4:60] = 0.0
    return mask


def test_soft_skeleton_of_a_bar_is_its_middle_line():
    skeleton = soft_skeleton(_road()[:, None])[0, 0]
    rows = torch.nonzero(skeleton[:, 32] > 0.5)[:, 0]
    assert len(rows) > 0 and rows.min() >= 30 and rows.max() <= 33


def test_connectivity_loss_punishes_a_gap_more_than_thinning():
    """Cutting a road (32 pixels) costs more than shaving 224 pixels off its sides."""
    truth = _road()
    valid = torch.ones_like(truth, dtype=torch.bool)
    cut = cldice_loss(_road(gap=True), truth, valid)
    thinner = cldice_loss(_road(thin=True), truth, valid)
    perfect = cldice_loss(truth, truth, valid)
    assert perfect < 0.01
    assert cut > thinner + 0.02


def test_connectivity_loss_ignores_unlabelled_pixels_and_has_gradients():
    truth = _road()
    valid = torch.ones_like(truth, dtype=torch.bool)
    valid[0, :, 30:34] = False  # the gap falls where nothing is known
    assert cldice_loss(_road(gap=True), truth, valid) < 0.05
    probability = torch.full((1, 64, 64), 0.5, requires_grad=True)
    cldice_loss(probability, truth, torch.ones_like(valid)).backward()
    assert probability.grad.abs().sum() > 0
    empty = torch.zeros(1, 64, 64)
    assert torch.isfinite(cldice_loss(empty, empty, torch.ones_like(valid)))


def test_open_blocks_leave_bare_ground_between_the_streets():
    """fill_blocks with open_p=1 builds nothing and claims every block; with 0 it builds."""
    from demseg.data.synth.canvas import Canvas
    from demseg.data.synth.districts import fill_blocks
    from demseg.data.synth.roads import STREETS, road_network

    canvas = Canvas(256, 0.5)
    network, _ = road_network(np.random.default_rng(1), canvas.extent_m, STREETS["perimeter"])
    zones = np.zeros(canvas.shape, dtype=int)
    built, _ = fill_blocks(np.random.default_rng(2), network, [], canvas, ("perimeter",), zones)
    empty, claimed = fill_blocks(np.random.default_rng(2), network, [], canvas, ("perimeter",), zones, open_p=1.0)
    assert built.buildings and not empty.buildings and not empty.gardens
    assert claimed is not None and claimed.area > 0


def test_unpaved_ground_gets_texture_and_paved_ground_none(streets):
    from demseg.data.synth.canvas import Canvas
    from demseg.data.synth.scene import UNPAVED_TEXTURE_M, unpaved_texture

    surfaces = streets[0].surfaces
    texture = unpaved_texture(np.random.default_rng(0), surfaces, Canvas(256, 0.5))
    paved = np.isin(surfaces, list(SURFACE_CODES.values()))
    assert (texture[paved] == 0).all()
    assert UNPAVED_TEXTURE_M[0] * 0.5 < texture[~paved].std() < UNPAVED_TEXTURE_M[1] * 1.5


def test_the_named_streets_world_is_made_in_its_style_and_kept_apart(tmp_path, monkeypatch):
    from demseg.data.synth import cache as world_cache
    from demseg.io.folders import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(world_cache.NAMED_WORLDS, "streets",
                        world_cache.NamedWorld(scenes=1, seed=1001, size_px=128, style="streets"))
    spec = world_cache.named_world("streets", progress=False)
    assert "-streets-" in spec.parent.name and spec.parent != world_cache.named_world_folder("rehearsal")
    assert (spec.parent / "surfaces.yaml").exists()
    with rasterio.open(spec.parent / "s000" / "surfaces.tif") as src:
        assert set(np.unique(src.read(1))) & {SURFACE_CODES["parking"], SURFACE_CODES["cycle_path"]}


def test_train_with_context_and_connectivity_writes_both_into_the_run_and_predicts(tmp_path):
    import json

    from safetensors.torch import load_file

    from demseg.cli import main

    spec = generate_world(tmp_path / "w", scenes=3, size_px=128, seed=7, style="streets", progress=False)
    run = tmp_path / "run"
    argv = ["train", str(spec.parent / "surfaces.yaml"), "--task", "roads", "--unet-width", "4", "--tile-size-px",
            "64", "--train-tiles", "4", "--val-tiles", "2", "--iters", "3", "--val-every", "3", "--unet-context",
            "2", "--connectivity", "0.5", "--out", str(run), "--quiet"]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["unet_context"], config["connectivity"], config["recipe"]) == (2, 0.5, "relief+slope+microrelief")
    assert any(key.startswith("context.blocks.1.") for key in load_file(str(run / "model.safetensors")))
    scene = spec.parent / "s000"
    assert main(["predict", str(run), str(scene / "dem.tif"), "--dtm", str(scene / "dtm.tif"), "--out",
                 str(tmp_path / "pred"), "--quiet"]) == 0


def test_connectivity_changes_training_and_zero_leaves_it_as_it_was(tmp_path):
    import csv

    from demseg.cli import main

    spec = generate_world(tmp_path / "w", scenes=3, size_px=128, seed=7, style="streets", progress=False)
    losses = {}
    for weight in ("0", "2"):
        run = tmp_path / f"run{weight}"
        assert main(["train", str(spec), "--task", "roads", "--unet-width", "4", "--tile-size-px", "64",
                     "--train-tiles", "4", "--val-tiles", "2", "--iters", "2", "--val-every", "2", "--connectivity",
                     weight, "--out", str(run), "--quiet"]) == 0
        with open(run / "history.csv", newline="") as handle:
            losses[weight] = float(next(csv.DictReader(handle))["loss"])
    assert losses["2"] > losses["0"]  # the same batches: the added clDice term is positive
