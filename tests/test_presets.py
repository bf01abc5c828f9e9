"""`demseg train` with no flags trains the recommended recipe; its rehearsal world is made once, in the cache."""

from __future__ import annotations

import json

import pytest

from demseg.cli import main
from demseg.data.synth import GENERATOR_VERSION, generate_world
from demseg.data.synth import cache as world_cache
from demseg.errors import DemsegError
from demseg.io.folders import CACHE_ENV
from demseg.train.presets import PRESETS, preset_config

TILE = 64


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("w") / "world", scenes=3, size_px=192, seed=5, progress=False)


@pytest.fixture
def small_rehearsal(tmp_path, monkeypatch):
    """The named world shrunk to 2 small scenes, in a cache under tmp_path."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(world_cache.NAMED_WORLDS, "rehearsal",
                        world_cache.NamedWorld(scenes=2, seed=1000, size_px=192))
    return world_cache.named_world_folder("rehearsal")


def test_the_scratch_recipe_rehearses_a_world_made_once_in_the_cache(world, small_rehearsal, tmp_path, monkeypatch,
                                                                    capsys):
    argv = ["train", str(world), "--preset", "scratch", "--tile-size-px", str(TILE), "--iters", "2", "--val-every",
            "2", "--train-tiles", "2", "--unet-width", "4", "--mix-tiles", "2", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    preset = {k: v for k, v in PRESETS["scratch"]["buildings"].items() if k != "iters"}  # --iters 2 given
    assert {k: config[k] for k in preset} == preset and config["iters"] == 2
    assert small_rehearsal.name.startswith(f"rehearsal-v{GENERATOR_VERSION}-seed1000-")
    params = json.loads((small_rehearsal / "world.json").read_text())
    assert (params["scenes"], params["seed"], params["version"]) == (2, 1000, GENERATOR_VERSION)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["tiles"]["mix"]) == 2 * 3  # 2 rehearsal tiles, each also at 2x and 4x the pixel size

    def must_not_generate(*args, **kwargs):
        raise AssertionError("the cached world was generated again")

    monkeypatch.setattr(world_cache, "generate_world", must_not_generate)
    assert main([*argv, "--out", str(tmp_path / "run2")]) == 0  # the second run reuses the cached world


def test_a_cached_world_of_another_size_or_version_is_made_again(small_rehearsal):
    first = world_cache.named_world("rehearsal", progress=False)
    params = json.loads((small_rehearsal / "world.json").read_text())
    (small_rehearsal / "world.json").write_text(json.dumps({**params, "version": GENERATOR_VERSION - 1}))
    again = world_cache.named_world("rehearsal", progress=False)
    assert again == first and json.loads((small_rehearsal / "world.json").read_text())["version"] == GENERATOR_VERSION


def test_unknown_named_worlds_and_presets_are_one_line():
    with pytest.raises(DemsegError, match="unknown named world 'forest'.*rehearsal"):
        world_cache.named_world("forest")
    with pytest.raises(DemsegError, match="unknown preset 'best'"):
        preset_config("best")


def test_paper_preset_is_the_configs_own_defaults_and_flags_override_a_preset():
    from demseg.runs.config import TrainConfig

    assert preset_config("paper") == TrainConfig()
    assert preset_config("recommended", mix=None).mix is None
    assert preset_config("recommended", init=None).init is None
    assert preset_config("recommended", task="roads").model == "unet"
    assert preset_config("recommended", task="roads").mix is None  # roads: measured on real road tiles, no rehearsal


def test_a_misspelt_preset_or_mix_name_on_the_cli_is_one_line(world, tmp_path, capsys):
    assert main(["train", str(world), "--preset", "best", "--out", str(tmp_path / "r")]) == 2
    assert "invalid choice" in capsys.readouterr().err
    code = main(["train", str(world), "--preset", "scratch", "--mix", "rehearsals", "--tile-size-px", str(TILE),
                 "--iters", "2",
                 "--train-tiles", "2", "--unet-width", "4", "--out", str(tmp_path / "r2"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "rehearsals" in err
    assert not (tmp_path / "r2" / "config.json").exists()


def test_a_vit_model_on_the_default_preset_trains_from_scratch_on_its_encoders_recipe(world, small_rehearsal,
                                                                                       tmp_path, caplog):
    config = preset_config(model="mae-detail")
    scratch = preset_config("scratch")
    assert config.init is None and config.recipe == "relief+slope"  # what the shipped dem-tiny encoder reads
    assert (config.iters, config.lr, config.coarsen) == (scratch.iters, scratch.lr, scratch.coarsen)
    assert "training from scratch on the 'scratch' preset's schedule" in caplog.text
    assert preset_config(model="mae-detail", recipe="relief").recipe == "relief"  # a chosen recipe is kept
    assert preset_config(model="mae-detail", backbone_weights="random").recipe == scratch.recipe
    argv = ["train", str(world), "--model", "mae-detail", "--arch", "tiny", "--tile-size-px", str(TILE), "--iters",
            "2", "--val-every", "2", "--train-tiles", "2", "--mix-tiles", "2", "--coarsen", "none", "--quiet",
            "--out", str(tmp_path / "vit")]
    assert main(argv) == 0
    made = json.loads((tmp_path / "vit" / "config.json").read_text())
    assert (made["model"], made["recipe"], made["init"]) == ("mae-detail", "relief+slope", None)
