"""The demo's protocol: the paper's two models and demseg's default, on both tasks, on a world of their own."""

from __future__ import annotations

from demseg.train.demo import (
    DEMO_CROP_PX,
    MIX_SEED,
    default_config,
    demo_configs,
    describe,
    is_reference_unet,
)
from demseg.train.presets import preset_config


def test_the_demo_compares_the_unet_the_papers_model_and_demsegs_default_on_both_tasks():
    configs = demo_configs(paper=False, mix_spec="mix/dataset.yaml")
    reference = configs["reference"]
    assert reference.models == ["unet", "mae-upernet"] and reference.tasks == ["buildings", "roads"]
    assert reference.backbone_weights == ["dem-tiny"]
    roads = configs["default_roads"]  # the roads default reads the micro-relief too: a run of its own
    assert roads.base.recipe == preset_config(task="roads").recipe != reference.base.recipe
    assert roads.base.iters == reference.base.iters and not roads.base.init  # no shipped start: the demo's schedule
    for task in ("buildings",):
        default = configs[f"default_{task}"]
        preset = preset_config(task=task)
        assert default.tasks == [task] and default.models == [preset.model]
        assert default.train_tiles == reference.train_tiles and default.seeds == reference.seeds
        # the preset itself: a shipped start fine-tuned on its own schedule; its rehearsal world is the demo's copy
        kept = {"mix", "mix_tiles"}
        assert {k: v for k, v in default.base.model_dump().items() if k not in kept} == \
            {k: v for k, v in preset.model_dump().items() if k not in kept}
        assert default.base.init and default.base.iters == preset.iters < reference.base.iters
        assert default.base.mix == ("mix/dataset.yaml" if preset.mix else None)
    assert configs["default_buildings"].base.mix
    assert MIX_SEED != 0  # the rehearsal world is never the demo world
    words = describe(configs["default_buildings"].base)
    assert "the shipped model 'buildings'" in words and "fine-tuned for 60 iterations" in words


def test_a_default_without_a_shipped_start_trains_on_the_demos_schedule():
    base = demo_configs(paper=False, mix_spec="m.yaml")["reference"].base
    scratch = default_config("roads", base, "m.yaml")
    assert not scratch.init and scratch.iters == base.iters and scratch.crop_px == DEMO_CROP_PX


def test_the_paper_protocol_trains_on_whole_tiles_with_the_papers_schedule():
    configs = demo_configs(paper=True, mix_spec="m.yaml")
    for config in configs.values():
        assert config.seeds == 3 and config.train_tiles == [10, 50, 200, 450]
        if not config.base.init:  # a shipped start keeps its own fine-tuning schedule
            assert config.base.crop_px is None and config.base.iters == 3000
    assert configs["reference"].base.iters == 3000


def test_a_default_that_adds_to_the_reference_unet_gets_its_own_run():
    base = demo_configs(paper=False, mix_spec="m.yaml")["reference"].base
    roads = default_config("roads", base, "m.yaml")
    assert is_reference_unet(roads.model_copy(update={"recipe": base.recipe}), base)
    assert not is_reference_unet(roads, base)  # it reads the micro-relief as well
    assert not is_reference_unet(default_config("buildings", base, "m.yaml"), base)
    assert not is_reference_unet(roads.model_copy(update={"recipe": base.recipe, "coarsen": [2]}), base)
