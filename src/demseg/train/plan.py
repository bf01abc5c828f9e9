"""Planning the label-budget protocol: its grid (tasks x models x training tiles x seeds) and the runs it asks for.

:mod:`demseg.train.experiment` runs the plan (locally with shared feature caches, or on Dask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from demseg.data.dataset import SplitData
from demseg.data.normalise import DEFAULT_RECIPE
from demseg.data.tiles import eligible_tiles
from demseg.errors import DemsegError
from demseg.models.registry import MODELS, uses_backbone
from demseg.runs.config import TrainConfig


class ExperimentConfig(BaseModel):
    """The protocol's grid and the training settings shared by its runs."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid", protected_namespaces=())
    tasks: list[str] = Field(["buildings"], description="Tasks to run, comma-separated (buildings, roads).")
    models: list[str] = Field(["mae-upernet", "unet"], description="Models to compare, comma-separated.")
    backbone_weights: list[str] = Field(["dem-tiny"], description="Backbone weights to compare for backbone "
                                                                 "models, comma-separated (dem-tiny, random, paths).")
    train_tiles: list[int] = Field([10, 50, 200, 450], description="Label budgets, comma-separated (nested subsets).")
    seeds: int = Field(3, gt=0, description="Seeds per cell (seeds 0..N-1).")
    base: TrainConfig = Field(default_factory=TrainConfig, description="Settings shared by every run.")
    preview_tiles: int = Field(4, ge=0, description="Validation tiles shown in each preview PNG (0: none).")
    score_on: list[str] = Field([], description="Other dataset specs, comma-separated: every run is also scored on "
                                                "every labelled pixel of their scenes (resampled to the training "
                                                "pixel size, windows blended as in predict).")

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in MODELS]
        if unknown:
            raise ValueError(f"unknown model {unknown[0]!r} (choose from {', '.join(MODELS)})")
        return value

    @model_validator(mode="after")
    def _crops_need_a_unet(self) -> ExperimentConfig:
        if self.base.crop_px and all(uses_backbone(model) for model in self.models):
            raise ValueError(f"--crop-px trains the unet on crops; the grid has no unet ({','.join(self.models)})")
        return self

@dataclass(frozen=True)
class Arm:
    """One compared model: a model name, for backbone models its weights, and the shared variant settings."""

    model: str
    weights: str
    finetune: str = "none"
    init: str | None = None
    coarsen: tuple[int, ...] = ()
    mix: str | None = None
    recipe: str = DEFAULT_RECIPE
    auxiliary: tuple[str, ...] = ()
    label_noise: str = ""
    crop_px: int | None = None

    @property
    def label(self) -> str:
        label = self.model if self.weights == "-" else f"{self.model}@{Path(self.weights).stem}"
        if self.recipe != DEFAULT_RECIPE:
            label += f"+{self.recipe}"
        if self.finetune != "none" and self.weights != "-":
            label += f"+ft-{self.finetune}"
        if self.init:
            label += f"+init-{Path(self.init).name}"
        if self.coarsen:
            label += "+coarsen-" + "-".join(map(str, self.coarsen))
        if self.mix:
            label += f"+mix-{Path(self.mix).parent.name if Path(self.mix).suffix else Path(self.mix).name}"
        if self.auxiliary:
            label += "+aux-" + "-".join(self.auxiliary)
        if self.label_noise:
            label += "+noise-" + self.label_noise.replace("=", "").replace(",", "-")
        if self.crop_px:
            label += f"+crop-{self.crop_px}"
        return label

def arms_of(config: ExperimentConfig) -> list[Arm]:
    """The models an experiment compares, backbone models once per weights."""
    arms = []
    for model in config.models:
        weights = config.backbone_weights if uses_backbone(model) else ["-"]
        if config.base.init:
            weights = weights[:1]  # the backbone comes from the --init run
        arms += [Arm(model, w, config.base.finetune, config.base.init, tuple(config.base.coarsen), config.base.mix,
                     config.base.recipe, tuple(config.base.auxiliary), config.base.label_noise,
                     config.base.crop_px if not uses_backbone(model) else None) for w in weights]
    return arms

def run_key(task: str, arm: Arm, train_tiles: int, seed: int) -> str:
    """A folder-safe id of one run of the protocol."""
    return f"{task}__{arm.label.replace('/', '_')}__{train_tiles:04d}tiles__seed{seed}"

def plan_runs(data: SplitData, config: ExperimentConfig) -> list[dict]:
    """Every run of the grid, in order: task, arm, training tiles, seed and its folder key."""
    plan = []
    for task in config.tasks:
        available = len(eligible_tiles(data.tiles, "train", task, config.base.min_labelled_fraction))
        too_many = [n for n in config.train_tiles if n > available]
        if too_many:
            raise DemsegError(f"asked for {max(too_many)} training tiles for {task} but the split has only "
                              f"{available}")
        for arm in arms_of(config):
            for n in config.train_tiles:
                for seed in range(config.seeds):
                    plan.append({"task": task, "arm": arm, "train_tiles": n, "seed": seed,
                                 "key": run_key(task, arm, n, seed)})
    return plan
