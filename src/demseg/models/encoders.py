"""The encoders and trained models shipped inside the package, by name: what each is, what it saw, how it was made.

A shipped name (e.g. ``dem-tiny``) works wherever weights are accepted: ``--backbone-weights``,
:func:`demseg.models.build`, :func:`demseg.models.build_backbone`, :func:`load_encoder`. Each entry
records the architecture, channels, normalisation recipe and pre-training objective it needs
downstream; the data it was trained on (file hashes) and the exact command live in the JSON
sidecar beside the weights (``describe(name)`` reads it). Adding an encoder is one entry here
plus its ``.safetensors`` and ``.json`` in ``demseg/weights/``.

A shipped model (e.g. ``buildings``) is a whole trained run folder in ``demseg/weights/<name>/``;
its name works wherever a run folder is accepted (``--init``, predict, evaluate, export), and a
folder of that name in the working directory wins over it (:func:`resolve_model_dir`).
"""

from __future__ import annotations

import json
import os
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
class ShippedModel:
    """A trained run shipped in ``demseg/weights/<folder>/``: usable wherever a run folder is accepted.

    It is a run folder (``config.json``, ``model.safetensors``, ``manifest.json``; ``start.json`` says
    how it was made, on what data, under which licences). A backbone model's frozen backbone is a
    shipped encoder, named in its config instead of copied.
    """

    name: str
    folder: str
    model: str
    task: str
    encoder: str | None
    summary: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.folder


SHIPPED_MODELS: dict[str, ShippedModel] = {
    "buildings": ShippedModel(
        "buildings", "buildings", "unet", "buildings", None,
        "UNet for buildings at 0.5 m, trained on every labelled real city in demseg's shared data (Amsterdam, "
        "France, Seville, Washington DC) and a synthetic world with trees, at 0.5, 1 and 2 m: demseg train's "
        "default start, and demseg predict buildings without labels"),
    "roads": ShippedModel(
        "roads", "roads", "unet", "roads", None,
        "UNet for roads (every traffic area: carriageways, parking, cycle paths, tram beds) at 0.5 m on "
        "relief+slope+microrelief, trained on a synthetic world of European streets alone (style streets, 40 "
        "scenes, seed 1001; no real road label): demseg predict roads DEM --dtm DTM, or --init roads"),
    "synth-detail-buildings": ShippedModel(
        "synth-detail-buildings", "synth-detail-buildings", "mae-detail", "buildings", "dem-tiny",
        "mae-detail head (dem-tiny frozen) trained on 300 tiles of a 40-scene synthetic world (seed 1000), "
        "with resolution augmentation 2,4"),
    "synth-detail-roads": ShippedModel(
        "synth-detail-roads", "synth-detail-roads", "mae-detail", "roads", "dem-tiny",
        "mae-detail head (dem-tiny frozen) trained for roads on 300 tiles of a 40-scene synthetic world "
        "(seed 1000), with resolution augmentation 2,4"),
}


def shipped_model_names() -> list[str]:
    """The names of every shipped model (those installed)."""
    return sorted(name for name, entry in SHIPPED_MODELS.items() if (entry.path / "config.json").exists())


def resolve_model_dir(run: str | os.PathLike, flag: str = "run") -> Path:
    """The run folder a run argument names: an existing folder of that name wins, else a shipped model's name.

    A bare name (no folder, no suffix) that is neither is one error line listing the shipped models;
    any other path is returned as it is (the caller reports what is missing in it).
    """
    path = Path(run)
    if path.is_dir():
        return path
    name = str(run)
    if name in SHIPPED_MODELS:
        entry = SHIPPED_MODELS[name]
        if not (entry.path / "config.json").exists():
            raise DemsegError(f"the shipped model {name!r} is missing from this install: {entry.path}")
        return entry.path
    if looks_like_shipped_name(name):
        known = ", ".join(shipped_model_names()) or "none"
        raise DemsegError(f"{flag} {name}: no run folder and no shipped model of that name (shipped: {known})")
    return path


def is_shipped_model(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` is a shipped model's folder inside the package (read-only to demseg)."""
    resolved = Path(run_dir).resolve()
    return any(resolved == entry.path.resolve() for entry in SHIPPED_MODELS.values())


def describe_model(name: str) -> dict:
    """A shipped model's registry entry and its sidecar (command, data, cities, licences, scores)."""
    entry = SHIPPED_MODELS[name]
    sidecar = entry.path / "start.json"
    return {"name": name, "model": entry.model, "task": entry.task, "encoder": entry.encoder,
            "summary": entry.summary, **(json.loads(sidecar.read_text()) if sidecar.exists() else {})}


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
