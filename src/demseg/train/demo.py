"""``demseg demo``: the synthetic world, the shipped pre-trained models, and the label-budget table.

Default (about 10 minutes on 2 CPU cores): buildings and roads at 10 training tiles, one seed,
three models on one validation region:

- ``unet``: a UNet from scratch (the paper's baseline);
- ``mae-upernet``: the paper's model, a frozen MAE ViT (the shipped ``dem-tiny`` encoder) + UperNet;
- ``mae-detail + synthetic``: demseg's best pre-trained variant: the same frozen encoder with a
  full-resolution detail path, started from the head shipped for the task (trained on thousands
  of synthetic tiles of another world) and rehearsing a second synthetic world in every batch
  while it adapts to the 10 tiles.

``--paper`` runs the paper's protocol instead (10/50/200/450 tiles, 3000 iterations, batch 8,
3 seeds, head width 256, UNet width 32): hours on a CPU, meant for a GPU or patience.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from demseg.data.synth import generate_world
from demseg.evaluate.report import summary_table
from demseg.models.encoders import SHIPPED_STARTS
from demseg.runs.config import TrainConfig
from demseg.train.experiment import ExperimentConfig, run_experiment

DEMO_SCENES = 12
PAPER_SCENES = 40
MIX_SCENES = 4  # the rehearsal world: another seed, never the demo world's scenes
MIX_SEED = 1000
DEMO_ITERS = 120
# the best variant starts from a head already trained for the task, and its full-resolution detail path
# costs ~4x a UNet step on a CPU: half the steps keep the demo near 10 minutes on an AVX2-only CPU
BEST_ITERS = 60
BEST = "mae-detail + synthetic"
NAMES = {"unet": "unet", "mae-upernet": "mae-upernet (paper)", "mae-detail": BEST}


def start_name(task: str) -> str:
    """The shipped starting point of the best variant for ``task``."""
    return f"synth-detail-{task}"


def demo_configs(paper: bool, mix_spec: str) -> dict[str, ExperimentConfig]:
    """The experiments the demo runs: the two reference models, and the best variant once per task."""
    if paper:
        base = TrainConfig(iters=3000, val_every=150, head_width=256, unet_width=32)
        budgets, seeds, preview = [10, 50, 200, 450], 3, 4
    else:
        base = TrainConfig(iters=DEMO_ITERS, val_every=40, unet_width=8, lr=2e-3)
        budgets, seeds, preview = [10], 1, 3
    shared = dict(backbone_weights=["dem-tiny"], train_tiles=budgets, seeds=seeds, preview_tiles=preview)
    configs = {"reference": ExperimentConfig(tasks=["buildings", "roads"], models=["unet", "mae-upernet"],
                                             base=base, **shared)}
    for task in ("buildings", "roads"):
        start = SHIPPED_STARTS[start_name(task)]
        best = base.model_copy(update={"model": "mae-detail", "init": start.name, "mix": mix_spec, "mix_tiles": 40,
                                       "head_width": 64, "neck_width": 64})
        if not paper:
            best = best.model_copy(update={"iters": BEST_ITERS, "val_every": BEST_ITERS // 3})
        configs[f"best_{task}"] = ExperimentConfig(tasks=[task], models=["mae-detail"], base=best, **shared)
    return configs


def _world(folder: Path, scenes: int, seed: int, progress: bool) -> Path:
    spec, done = folder / "dataset.yaml", folder / "world.json"
    if not (spec.exists() and done.exists() and all(json.loads(done.read_text()).get(k) == v
                                                    for k, v in {"scenes": scenes, "seed": seed}.items())):
        generate_world(folder, scenes=scenes, seed=seed, progress=progress)
    return spec


def run_demo(out: str | Path = "demo_out", paper: bool = False, progress: bool = True) -> str:
    """Generate (or reuse) the worlds, run (or resume) the protocol, and return the printed report."""
    out = Path(out)
    started = time.perf_counter()
    scenes = PAPER_SCENES if paper else DEMO_SCENES
    spec = _world(out / ("world_paper" if paper else "world"), scenes, 0, progress)
    mix = _world(out / "world_mix", MIX_SCENES, MIX_SEED, progress)
    configs = demo_configs(paper, str(mix))
    rows = []
    for name, config in configs.items():
        rows += run_experiment(spec, config, out / (f"{name}_paper" if paper else name), progress=progress)
    for row in rows:
        row["label"] = NAMES[row["model"]]
    minutes = (time.perf_counter() - started) / 60
    reference = configs["reference"]
    base = reference.base
    val_tiles = rows[0]["val_tiles"] if rows else "?"
    lines = [
        "",
        f"demseg demo: synthetic DEM world ({scenes} scenes of 896 px at 0.5 m, seed 0), validation on {val_tiles} "
        "tiles of held-out scenes",
        f"unet: from scratch, width {base.unet_width}. mae-upernet (paper): frozen ViT-{base.arch} 'dem-tiny' "
        f"(DEM-pretrained, shipped) + UperNet, head width {base.head_width}.",
        f"{BEST}: the same frozen encoder + UperNet + a full-resolution detail path, started from the head "
        "shipped for the task (synthetic pre-training on another world) and rehearsing a second synthetic "
        f"world ({MIX_SCENES} scenes, seed {MIX_SEED}) in half of every batch.",
        f"{base.iters} iterations ({BEST} {configs['best_buildings'].base.iters}), batch {base.batch_size}, "
        f"recipe {base.recipe}, best validation IoU"
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
