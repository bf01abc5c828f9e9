"""Named training recipes: what ``demseg train`` does when no flag says otherwise.

:class:`~demseg.runs.config.TrainConfig`'s own defaults are the paper's model (a frozen MAE ViT +
UperNet, CPU-sized); a preset is a small set of field values laid over them, and every flag the
user gives is laid over the preset. ``demseg train`` starts from ``recommended``:

- buildings: fine-tune the shipped model ``buildings`` (a UNet pre-trained on every labelled real
  city of demseg's shared data and a synthetic world with trees, at 0.5, 1 and 2 m) for 60 steps
  at learning rate 3e-4, rehearsing the synthetic world in half of every batch; the data are
  resampled to the model's 0.5 m. Chosen on the France fold of the leave-one-city-out benchmark
  (a start pre-trained without France, fine-tuned on 10 French tiles) and reported on the
  Amsterdam fold: docs/results/loco/README.md.
- roads: a UNet on relief + slope + the ground's micro-relief (kerbs) from scratch: on the
  route-planning block's validation region, 10 training tiles, 3 seeds, whole-scene IoU 60.4
  against 49.9 for relief + slope (the previous default, issue 17) and 38.9-42.1 for fine-tuning
  the shipped model ``roads``, which itself scores 58.1 there without a single label
  (docs/results/roads_transfer/README.md). Chosen and reported on the same region: the one real
  road label set demseg has.

``scratch`` is the buildings recipe that was the default before (300 steps of a UNet from scratch
on relief + slope + roughness, coarsened copies, rehearsal, a vegetation output; issue 16) and for
roads the previous relief + slope UNet;
``paper`` keeps the paper's model (``TrainConfig``'s defaults), as ``--paper`` does. A preset's
shipped start is kept only where the user's flags fit it (:func:`laid_over`).
"""

from __future__ import annotations

from demseg.errors import DemsegError
from demseg.runs.config import TrainConfig

PRESETS: dict[str, dict[str, dict]] = {
    "recommended": {
        "buildings": {"init": "buildings", "model": "unet", "recipe": "relief+slope+roughness",
                      "auxiliary": ["vegetation"], "mix": "rehearsal", "mix_share": 0.5, "iters": 60, "val_every": 60,
                      "lr": 3e-4},
        "roads": {"model": "unet", "recipe": "relief+slope+microrelief"},
    },
    "scratch": {
        "buildings": {"model": "unet", "recipe": "relief+slope+roughness", "coarsen": [2, 4], "mix": "rehearsal",
                      "auxiliary": ["vegetation"]},
        "roads": {"model": "unet", "recipe": "relief+slope"},
    },
    "paper": {"buildings": {}, "roads": {}},
}
DEFAULT_PRESET = "recommended"
SCRATCH_PRESET = "scratch"  # where a preset's shipped start does not fit the user's flags


def preset_values(name: str, task: str) -> dict:
    """The field values preset ``name`` sets for ``task``."""
    if name not in PRESETS:
        raise DemsegError(f"--preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return dict(PRESETS[name][task])


def laid_over(name: str, task: str, given: dict) -> dict:
    """The field values of preset ``name`` for ``task`` with the user's ``given`` values laid over them.

    A preset that starts from a shipped model (``init``) keeps it only where the user's choices fit
    that model (same model, recipe, widths, auxiliary outputs, tile size); otherwise training
    starts from scratch and a log line says why, instead of an --init error for a flag the user
    never gave.
    """
    values = _following_encoder({**preset_values(name, task), **given}, given)
    start = preset_values(name, task).get("init")
    if start and "init" not in given:
        try:
            config = TrainConfig(**values)
        except ValueError:  # invalid values: the caller's validation names the flag
            return values
        misfit = start_misfit(start, config)
        if misfit:
            import logging

            logging.getLogger("demseg").warning(
                "not starting from the shipped model %r (it is a %s); training from scratch on the %r preset's "
                "schedule: pass --init none to say so", start, misfit, SCRATCH_PRESET)
            values = _following_encoder({**preset_values(SCRATCH_PRESET, task), **given, "init": None}, given)
    return values


def _following_encoder(values: dict, given: dict) -> dict:
    """``values`` with the recipe a ViT model's shipped encoder was pre-trained on, unless the user chose one.

    A preset's recipe is made for its own model; ``--model mae-detail`` on it takes the recipe its
    encoder reads (e.g. ``dem-tiny``: relief+slope) instead of failing on a channel count.
    """
    from demseg.models.encoders import SHIPPED_ENCODERS
    from demseg.models.registry import MODELS

    model = values.get("model", TrainConfig.model_fields["model"].default)
    weights = values.get("backbone_weights", TrainConfig.model_fields["backbone_weights"].default)
    if model in MODELS and MODELS[model].backbone and "recipe" not in given and weights in SHIPPED_ENCODERS:
        values = {**values, "recipe": SHIPPED_ENCODERS[weights].recipe}
    return values


def start_misfit(start: str, config: TrainConfig) -> str:
    """'' when ``config`` can start from the run or shipped model ``start``, else what the start is instead."""
    from demseg.models.encoders import resolve_model_dir
    from demseg.runs.folder import read_run_config
    from demseg.train.run import INIT_MUST_MATCH, _shapes_weights

    made = read_run_config(resolve_model_dir(start, "--init"))
    differ = [name for name in INIT_MUST_MATCH
              if getattr(made, name) != getattr(config, name) and _shapes_weights(name, config.model)]
    return ", ".join(f"{name} {getattr(made, name)!r}" for name in differ)


def preset_config(name: str = DEFAULT_PRESET, **values) -> TrainConfig:
    """``TrainConfig`` of preset ``name`` for ``values['task']`` (default buildings), ``values`` laid over it."""
    task = values.get("task", TrainConfig.model_fields["task"].default)
    return TrainConfig(**laid_over(name, task, values))


def _text(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def preset_default_texts() -> dict[str, str]:
    """For each field a preset sets, the help text of its default: the value under each preset and task."""
    fields = {name for tasks in PRESETS.values() for values in tasks.values() for name in values}
    texts = {}
    for name in sorted(fields):
        parts = []
        for preset, tasks in PRESETS.items():
            values = {task: _text(tasks[task].get(name, TrainConfig.model_fields[name].get_default(
                call_default_factory=True))) for task in tasks}
            same = len(set(values.values())) == 1
            parts.append(f"{preset}: " + (next(iter(values.values())) if same else
                                          ", ".join(f"{v} for {t}" for t, v in values.items())))
        texts[name] = "; ".join(parts)
    return texts
