"""The encoders shipped inside the package, by name: what each is, what it saw, and how it was made.

A shipped name (e.g. ``dem-tiny``) works wherever weights are accepted: ``--backbone-weights``,
:func:`demseg.models.build`, :func:`demseg.models.build_backbone`, :func:`load_encoder`. Each entry
records the architecture, channels, normalisation recipe and pre-training objective it needs
downstream; the data it was trained on (file hashes) and the exact command live in the JSON
sidecar beside the weights (``describe(name)`` reads it). Adding an encoder is one entry here
plus its ``.safetensors`` and ``.json`` in ``demseg/weights/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from demseg.errors import DemsegError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class ShippedEncoder:
    """One encoder in ``demseg/weights``: its file and the inputs it was pre-trained for."""

    name: str
    file: str
    arch: str
    num_channels: int
    recipe: str
    objective: str
    summary: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


SHIPPED_ENCODERS: dict[str, ShippedEncoder] = {
    "dem-tiny": ShippedEncoder(
        "dem-tiny", "dem_mae_tiny.safetensors", "tiny", 2, "relief+slope", "mae",
        "ViT-tiny MAE, 1200 steps on 20 synthetic scenes + 10 real DEMs (v1 world)"),
}


@dataclass(frozen=True)
class ShippedStart:
    """A trained run shipped in ``demseg/weights/<folder>/`` as a starting point for ``--init``.

    It is a run folder (``config.json``, ``model.safetensors``; ``start.json`` says how it was
    made) whose frozen backbone is a shipped encoder, named in its config instead of copied.
    """

    name: str
    folder: str
    model: str
    task: str
    encoder: str
    summary: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.folder


SHIPPED_STARTS: dict[str, ShippedStart] = {
    "synth-detail-buildings": ShippedStart(
        "synth-detail-buildings", "synth-detail-buildings", "mae-detail", "buildings", "dem-tiny",
        "mae-detail head (dem-tiny frozen) trained on 300 tiles of a 40-scene synthetic world (seed 1000), "
        "with resolution augmentation 2,4"),
    "synth-detail-roads": ShippedStart(
        "synth-detail-roads", "synth-detail-roads", "mae-detail", "roads", "dem-tiny",
        "mae-detail head (dem-tiny frozen) trained for roads on 300 tiles of a 40-scene synthetic world "
        "(seed 1000), with resolution augmentation 2,4"),
}


def resolve_start(init: str) -> Path:
    """The run folder an ``--init`` value names: a shipped starting point by name, else the path itself."""
    if init in SHIPPED_STARTS:
        entry = SHIPPED_STARTS[init]
        if not (entry.path / "config.json").exists():
            raise DemsegError(f"the shipped starting point {init!r} is missing from this install: {entry.path}")
        return entry.path
    if looks_like_shipped_name(init) and not Path(init).exists():
        known = ", ".join(sorted(SHIPPED_STARTS)) or "none"
        raise DemsegError(f"--init {init}: no run folder and no shipped starting point of that name (shipped: {known})")
    return Path(init)


def shipped_names() -> list[str]:
    """The names of every shipped encoder."""
    return sorted(SHIPPED_ENCODERS)


def looks_like_shipped_name(weights: str) -> bool:
    """True for a bare name such as ``dem-tiny`` (no folder, no suffix, no hub owner)."""
    return "/" not in weights and "\\" not in weights and "." not in weights and weights != "random"


def shipped(name: str) -> ShippedEncoder:
    """The registry entry of a shipped encoder; an unknown name lists the known ones."""
    if name not in SHIPPED_ENCODERS:
        raise DemsegError(f"no shipped encoder named {name!r}; shipped: {', '.join(shipped_names())} "
                          "(or give random, a folder, a hub id like facebook/vit-mae-base, a .pth or a .safetensors)")
    entry = SHIPPED_ENCODERS[name]
    if not entry.path.exists():
        raise DemsegError(f"the shipped encoder {name!r} is missing from this install: {entry.path}")
    return entry


def resolve_weights(weights: str) -> str:
    """A weights argument as the loader wants it: shipped names become package file paths."""
    if weights in SHIPPED_ENCODERS:
        return str(shipped(weights).path)
    if looks_like_shipped_name(weights) and not Path(weights).exists():
        shipped(weights)  # raises with the list of names
    return weights


def describe(name: str) -> dict:
    """The sidecar description of a shipped encoder (command, data hashes, recipe, steps)."""
    entry = shipped(name)
    return {"name": name, "arch": entry.arch, "num_channels": entry.num_channels, "recipe": entry.recipe,
            "objective": entry.objective, "summary": entry.summary,
            **json.loads(entry.path.with_suffix(".json").read_text())}
