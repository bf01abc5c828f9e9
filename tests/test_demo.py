"""The demo's protocol: three models on both tasks, the best variant from shipped starts and another world."""

from __future__ import annotations

from demseg.models.encoders import SHIPPED_STARTS, resolve_start
from demseg.runs.folder import read_run_config
from demseg.train.demo import MIX_SEED, demo_configs, start_name


def test_the_demo_compares_the_unet_the_papers_model_and_the_best_pre_trained_variant_on_both_tasks():
    configs = demo_configs(paper=False, mix_spec="mix/dataset.yaml")
    reference = configs["reference"]
    assert reference.models == ["unet", "mae-upernet"] and reference.tasks == ["buildings", "roads"]
    assert reference.backbone_weights == ["dem-tiny"]
    for task in ("buildings", "roads"):
        best = configs[f"best_{task}"]
        assert best.tasks == [task] and best.models == ["mae-detail"]
        assert best.base.init == start_name(task) and best.base.mix == "mix/dataset.yaml"
        assert best.train_tiles == reference.train_tiles and best.seeds == reference.seeds
    assert MIX_SEED != 0  # the rehearsal world is never the demo world


def test_every_start_the_demo_needs_is_shipped_and_matches_the_best_variant():
    for task in ("buildings", "roads"):
        entry = SHIPPED_STARTS[start_name(task)]
        config = read_run_config(resolve_start(entry.name))
        best = demo_configs(paper=False, mix_spec="m.yaml")[f"best_{task}"].base
        assert config.task == task == entry.task and config.model == best.model
        assert (config.head_width, config.neck_width, config.detail_width) == (best.head_width, best.neck_width,
                                                                                best.detail_width)
        assert config.backbone_weights == entry.encoder and config.recipe == best.recipe


def test_the_demos_best_variant_accepts_its_shipped_start():
    from demseg.train.run import resolve_init

    for task in ("buildings", "roads"):
        best = demo_configs(paper=False, mix_spec="m.yaml")[f"best_{task}"].base
        resolved = resolve_init(best.model_copy(update={"task": task}))  # the demo's UNet width differs: no matter
        assert resolved.backbone_weights == SHIPPED_STARTS[start_name(task)].encoder
