"""The configuration of one training run, saved with it (and read back by evaluate and predict).

Every default lives here (and in :class:`demseg.models.ModelConfig`, which this extends): the CLI
reads its defaults and help texts from these fields, so Python and CLI users get the same run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from demseg.data.augment import coarsen_within
from demseg.data.noise import format_label_noise, parse_label_noise
from demseg.data.tiles import DEFAULT_MIN_VALID_FRACTION, SplitConfig
from demseg.errors import DemsegError
from demseg.models.config import ModelConfig


class TrainConfig(ModelConfig):
    """Everything that defines a training run; every field is recorded in the run's config.json."""

    task: Literal["buildings", "roads"] = Field("buildings", description="Target class.")
    pixel_size_m: float | None = Field(
        None, gt=0, le=100, description="Pixel size (m) the model works at: every scene is resampled to it, bilinearly "
                                       "(labels by nearest). Default: the data's own (the median over scenes); "
                                       "with --init, the starting model's.")
    train_tiles: int = Field(10, gt=0, description="Training tiles (a nested subset for each seed).")
    val_tiles: int = Field(50, ge=0, description="Validation tiles: one spatial region, the same for every "
                                                 "budget, model and seed.")
    seed: int = Field(0, ge=0, description="Fixes the training subset, initialisation and sampling.")
    split_seed: int = Field(0, ge=0, description="Fixes the train/validation split (shared by all seeds).")
    min_train_fraction: float = Field(
        0.4, ge=0, lt=1, description="Share of each auto-split scene's tiles kept for training (the validation "
                                     "region and its buffer take at most the rest).")
    iters: int = Field(300, gt=0, description="Optimisation steps. Measured on Amsterdam at 10 tiles "
                                              "(benchmarks/results/schedule_amsterdam.md): 150 to 500 steps "
                                              "adds at most 1.1 IoU points, so the CPU default is 300; the "
                                              "paper's is 3000.")
    batch_size: int = Field(8, gt=0, description="Tiles per step.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate.")
    class_weighting: Literal["frequency", "none"] = Field(
        "frequency", description="Loss weights per class: frequency (inverse frequency in the training pixels, so a "
                                 "rare class counts as much as a common one) or none (plain cross entropy: keeps "
                                 "the balance a pre-trained start learnt).")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    connectivity: float = Field(
        0.0, ge=0, description="Weight of a connectivity loss (soft clDice: the predicted skeleton inside the true "
                               "mask, the true skeleton covered by the prediction) added to the cross entropy; a gap "
                               "that cuts a road costs more than its pixels. For roads, e.g. 0.5; 0: off.")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Linear warm-up share of the iterations.")
    poly_power: float = Field(0.9, gt=0, description="Polynomial decay power after warm-up.")
    val_every: int = Field(30, gt=0, description="Validate every N iterations (and at the last); the best-IoU "
                                                  "state is kept.")
    cached: bool = Field(True, description="Train from a feature cache: the frozen part of the backbone runs once "
                                           "per tile and view, each step runs only the tuned blocks and the head.",
                         json_schema_extra={"off_help": "Train without the feature cache: every step runs the whole "
                                                        "backbone on its batch (slower; the same batches)."})
    lp_fraction: float = Field(0.25, ge=0, lt=1, description="With fine-tuning: share of the iterations that train "
                                                             "the head alone before the tuned blocks join (LP-FT).")
    init: str | None = Field(None, description="Start from a trained run: a run folder or a shipped model's name "
                                               "(demseg models; a folder of that name wins): its weights, its "
                                               "backbone and its pixel size (the data are resampled to it); recipe, "
                                               "channels, task and architecture must match.")
    mix: str | None = Field(None, description="A second labelled dataset (e.g. a synthetic world from demseg synth) "
                                              "mixed into every batch: the model keeps what it learned there (trees "
                                              "are not buildings, coarse DEMs) while it adapts to the few real tiles. "
                                              "'rehearsal' names the recommended recipe's synthetic world, "
                                              "'streets' one with every traffic area (for roads), each "
                                              "generated once into the cache.")
    mix_tiles: int = Field(200, gt=0, description="Training tiles drawn from the --mix dataset's training split.")
    mix_share: float = Field(0.5, ge=0, lt=1, description="Share of each batch drawn from the --mix tiles.")
    cache_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Storage precision of cached features.")
    views: int = Field(8, ge=1, le=8, description="Dihedral views per tile (augmentation).")
    crop_px: int | None = Field(
        None, gt=0, description="Train on a random square crop of this many pixels of every drawn tile (a multiple "
                                "of 16, at most the tile size); validation and prediction see whole tiles. A step "
                                "costs about (crop / tile size)^2 of a whole-tile step. For the unet (an "
                                "experiment's backbone models train on whole tiles).")
    coarsen: list[Annotated[int, Field(ge=2)]] = Field([], description="Resolution augmentation: also train on every tile as a DEM of "
                                              "N x the pixel size would show it (e.g. 2,4: a 0.5 m tile also at "
                                              "1 m and 2 m), so the model holds up on coarser LiDAR.")
    label_noise: str = Field("", description="Noise on the training labels, to measure robustness: "
                                             "drop=P (each instance missing with probability P), shift=M (each "
                                             "moved up to M metres), width=M (each outline grown or shrunk by up "
                                             "to M metres), comma-separated, e.g. drop=0.2,shift=1. Validation "
                                             "labels stay clean; the noise is fixed by the split seed.")
    checkpoint_every: int | None = Field(
        None, gt=0, description="Save a resumable checkpoint (RUN/checkpoint.pt) every N steps, for long runs; "
                                "demseg train ... --resume continues from it exactly. none: no checkpoint.")
    min_labelled_fraction: float = Field(0.5, ge=0, le=1, description="Tiles must be this labelled for the task.")
    min_valid_fraction: float = Field(DEFAULT_MIN_VALID_FRACTION, ge=0, le=1,
                                      description="Tiles need this much valid elevation.")

    @field_validator("crop_px")
    @classmethod
    def _crop_fits(cls, value: int | None, info: ValidationInfo) -> int | None:
        tile = info.data.get("tile_size_px")
        if value is not None and value % 16:
            raise ValueError(f"must be a multiple of 16 (the UNet halves it four times), got {value}")
        if value is not None and tile is not None and value > tile:
            raise ValueError(f"must be at most the tile size ({tile}), got {value}")
        return value

    @field_validator("coarsen")
    @classmethod
    def _coarsen_fits(cls, value: list[int], info: ValidationInfo) -> list[int]:
        return coarsen_within(value, info.data.get("tile_size_px"))

    @field_validator("label_noise")
    @classmethod
    def _noise_form(cls, value: str) -> str:
        try:
            return format_label_noise(parse_label_noise(value))
        except DemsegError as exc:
            raise ValueError(str(exc).removeprefix("--label-noise: ")) from None

    def split_config(self) -> SplitConfig:
        """The settings that fix the validation region (never the budget, the model or the seed)."""
        return SplitConfig(tile_size_px=self.tile_size_px, val_tiles=self.val_tiles, split_seed=self.split_seed,
                           min_valid_fraction=self.min_valid_fraction, min_train_fraction=self.min_train_fraction)
