"""``demseg demo``: the synthetic world, the shipped models, and the label-budget table.

Default (a few minutes on 2 CPU cores): buildings and roads at 10 training tiles, one seed, on
one validation region of held-out synthetic scenes:

- ``unet``: a UNet from scratch (the paper's baseline);
- ``mae-upernet``: the paper's model, a frozen MAE ViT (the shipped ``dem-tiny`` encoder) + UperNet;
- ``demseg default``: what ``demseg train`` trains when no flag says otherwise (the ``recommended``
  preset, :mod:`demseg.train.presets`): for buildings the shipped model ``buildings`` fine-tuned
  on the preset's own short schedule, rehearsing a synthetic world in half of every batch (here
  the first scenes of the demo's rehearsal world), and the same shipped model scored untrained
  (0 tiles). For roads the default is a UNet on relief + slope, the ``unet`` column's recipe, so
  it gets no run of its own.

The reference UNets train on random crops (``DEMO_CROP_PX``) of their tiles, which makes a step
about 3x cheaper on a CPU; validation sees whole tiles. ``--paper`` runs the paper's protocol
instead (10/50/200/450 tiles, 3000 iterations, batch 8, 3 seeds, head width 256, UNet width 32,
whole tiles): hours on a CPU, meant for a GPU or patience.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from demseg.data.synth import generate_world
from demseg.errors import DemsegError
from demseg.evaluate.report import summary_table
from demseg.runs.config import TrainConfig
from demseg.train.experiment import ExperimentConfig, run_experiment
from demseg.train.presets import DEFAULT_PRESET, preset_config

DEMO_SCENES = 12
PAPER_SCENES = 40
MIX_SCENES = 4  # the first scenes of the rehearsal world (another seed), never the demo world's scenes
MIX_SEED = 1000
MIX_TILES = 40
DEMO_ITERS = 100
DEMO_CROP_PX = 128
DEFAULT = "demseg default"
REFERENCE_NAMES = {"unet": "unet", "mae-upernet": "mae-upernet (paper)"}


def default_config(task: str, base: TrainConfig, mix_spec: str) -> TrainConfig:
    """The ``recommended`` preset for ``task``: from a shipped start on its own schedule, else on the demo's.

    A preset that rehearses a synthetic world rehearses the demo's small rehearsal world instead.
    """
    config = preset_config(DEFAULT_PRESET, task=task)
    if not config.init:
        config = config.model_copy(update={"iters": base.iters, "val_every": base.val_every, "crop_px": base.crop_px})
    if config.mix:
        config = config.model_copy(update={"mix": mix_spec, "mix_tiles": MIX_TILES})
    return config


def describe(config: TrainConfig) -> str:
    """A few words on a demo run's recipe, e.g. 'unet (width 16) on relief+slope, coarsened copies x2,4'."""
    parts = [f"{config.model} (width {config.unet_width}) on {config.recipe}"]
    if config.init:
        parts[0] = (f"the shipped model '{config.init}' ({parts[0]}), fine-tuned for {config.iters} iterations at "
                    f"learning rate {config.lr:g}")
    if config.coarsen:
        parts.append(f"coarsened copies x{','.join(map(str, config.coarsen))}")
    if config.auxiliary:
        parts.append(f"{'/'.join(config.auxiliary)} as an extra output")
    if config.mix:
        parts.append(f"rehearsing the training scenes among the first {MIX_SCENES} of its synthetic world (seed "
                     f"{MIX_SEED}) in "
                     f"{config.mix_share:.0%} of every batch")
    return ", ".join(parts)


def demo_configs(paper: bool, mix_spec: str) -> dict[str, ExperimentConfig]:
    """The experiments the demo runs: the two reference models, and demseg's default once per task."""
    if paper:
        base = TrainConfig(iters=3000, val_every=150, head_width=256, unet_width=32)
        budgets, seeds, preview = [10, 50, 200, 450], 3, 4
    else:
        base = TrainConfig(iters=DEMO_ITERS, val_every=50, unet_width=8, lr=2e-3, crop_px=DEMO_CROP_PX)
        budgets, seeds, preview = [10], 1, 3
    shared = dict(backbone_weights=["dem-tiny"], train_tiles=budgets, seeds=seeds, preview_tiles=preview)
    configs = {"reference": ExperimentConfig(tasks=["buildings", "roads"], models=["unet", "mae-upernet"],
                                             base=base, **shared)}
    for task in ("buildings", "roads"):
        default = default_config(task, base, mix_spec)
        if not is_reference_unet(default, base):
            configs[f"default_{task}"] = ExperimentConfig(tasks=[task], models=[default.model], base=default,
                                                          **shared)
    return configs


def is_reference_unet(default: TrainConfig, base: TrainConfig) -> bool:
    """Whether demseg's default for a task is the reference UNet's recipe (width and schedule aside): no run of its own."""
    recipe = ("recipe", "coarsen", "mix", "auxiliary", "label_noise", "views")
    return default.model == "unet" and all(getattr(default, name) == getattr(base, name) for name in recipe)


def zero_shot_row(start: str, spec: Path, base: TrainConfig) -> dict:
    """The shipped model ``start`` scored, untrained, on the buildings validation tiles every other column uses."""
    from demseg.data.dataset import load_split
    from demseg.data.tiles import eligible_tiles
    from demseg.evaluate.score import score_tiles
    from demseg.runs.folder import load_run

    model, config = load_run(start)
    data = load_split(spec, ["buildings"], base.split_config(), progress=False, pixel_size_m=config.pixel_size_m)
    tiles = eligible_tiles(data.tiles, "val", "buildings", base.min_labelled_fraction)
    scores = score_tiles(model, config, data, tiles, "buildings")
    return {"task": "buildings", "label": f"shipped '{start}', no training", "model": config.model,
            "backbone_weights": "-", "train_tiles": 0, "seed": 0, **scores}


def _article(config: TrainConfig) -> str:
    return "" if config.init else "a "


def _world(folder: Path, scenes: int, seed: int, progress: bool) -> Path:
    spec, done = folder / "dataset.yaml", folder / "world.json"
    if not (spec.exists() and done.exists() and all(json.loads(done.read_text()).get(k) == v
                                                    for k, v in {"scenes": scenes, "seed": seed}.items())):
        generate_world(folder, scenes=scenes, seed=seed, progress=progress, overwrite=True)
    return spec


# what a demo folder holds: its worlds and experiments, with and without --paper
DEMO_ENTRIES = {f"{name}{suffix}" for name in ("world", "reference", "default_buildings", "default_roads")
                for suffix in ("", "_paper")} | {"world_mix"}


def _demo_folder(out: str | Path) -> Path:
    """``out`` if it is new, empty or an earlier demo's folder (which the demo resumes); anything else is refused."""
    from demseg.io.folders import MARKER, check_output_path, made_by

    check_output_path(out)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DemsegError(f"output path exists and is not a folder: {out}")
    held = sorted(entry.name for entry in out.iterdir() if not entry.name.startswith(".demseg")) if out.is_dir() else []
    maker = made_by(out) if out.is_dir() else None
    if held and (maker not in (None, "", "demo") or not set(held) <= DEMO_ENTRIES):
        what = f"the output of `demseg {maker}`" if maker else f"files the demo did not write ({held[0]}, ...)"
        raise DemsegError(f"output folder {out} holds {what}; the demo writes only into a new folder or an earlier "
                          "demo's (which it resumes): give another -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("demo")
    except OSError as exc:
        from demseg.io.folders import os_error_message

        raise DemsegError(os_error_message(exc, f"the output folder {out}")) from exc
    return out


def run_demo(out: str | Path = "demo_out", paper: bool = False, progress: bool = True) -> str:
    """Generate (or reuse) the worlds, run (or resume) the protocol, and return the printed report."""
    out = _demo_folder(out)
    started = time.perf_counter()
    scenes = PAPER_SCENES if paper else DEMO_SCENES
    spec = _world(out / ("world_paper" if paper else "world"), scenes, 0, progress)
    mix = _world(out / "world_mix", MIX_SCENES, MIX_SEED, progress)
    configs = demo_configs(paper, str(mix))
    rows = []
    for name, config in configs.items():
        runs = run_experiment(spec, config, out / (f"{name}_paper" if paper else name), progress=progress)
        for row in runs:
            row["label"] = REFERENCE_NAMES[row["model"]] if name == "reference" else DEFAULT
        rows += runs
    start = default_config("buildings", configs["reference"].base, str(mix)).init
    if start:
        rows.append(zero_shot_row(start, spec, configs["reference"].base))
    minutes = (time.perf_counter() - started) / 60
    reference = configs["reference"]
    base = reference.base
    val_tiles = rows[0]["val_tiles"] if rows else "?"
    crops = f", UNets on random {base.crop_px} px crops (validation on whole tiles)" if base.crop_px else ""
    lines = [
        "",
        f"demseg demo: synthetic DEM world ({scenes} scenes of 896 px at 0.5 m, seed 0), validation on {val_tiles} "
        "tiles of held-out scenes",
        f"unet: from scratch, width {base.unet_width}. mae-upernet (paper): frozen ViT-{base.arch} 'dem-tiny' "
        f"(DEM-pretrained, shipped) + UperNet, head width {base.head_width}.",
        f"{DEFAULT}: what `demseg train` trains by default (preset '{DEFAULT_PRESET}'): "
        + "; ".join(f"for {task} {_article(configs[f'default_{task}'].base)}{describe(configs[f'default_{task}'].base)}"
                    if f"default_{task}" in configs
                    else f"for {task} the unet's recipe (its own run at width "
                         f"{default_config(task, base, str(mix)).unet_width} is not repeated here)"
                    for task in ("buildings", "roads")) + ".",
        f"unet and mae-upernet: {base.iters} iterations, batch {base.batch_size}{crops}, best validation IoU"
        + ("; a CPU-sized run, not the paper's protocol (use --paper for that)" if not paper else
           f"; the paper's protocol, {reference.seeds} seeds per cell"),
        "",
        "IoU of the target class, %:",
        summary_table(rows, "iou"),
        "",
        f"outputs: {out}/*/results.csv, summary.md, curves.png, runs/*/preview.png  ({minutes:.1f} min this "
        "invocation)",
    ]
    return "\n".join(lines)
