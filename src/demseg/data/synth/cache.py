"""Named synthetic worlds, generated once into the user's cache and reused by every run that names them.

The recommended training recipe rehearses a synthetic world in every batch (``--mix rehearsal``).
That world is not shipped (177 MB); it is generated from its seed the first time a run asks for it
(about a minute and a half on 2 cores), into ``$DEMSEG_CACHE_DIR/demseg/worlds`` (or
``$XDG_CACHE_HOME``, or ``~/.cache``), under a name that holds the generator version, seed and
size, so a new generator never reuses an old world. Generation is atomic (the world is built in a
staging folder and renamed) and two processes asking at once wait for one another.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from demseg.data.synth.world import GENERATOR_VERSION, generate_world
from demseg.errors import DemsegError
from demseg.io.folders import cache_root, os_error_message


@dataclass(frozen=True)
class NamedWorld:
    scenes: int
    seed: int
    size_px: int = 896
    pixel_size_m: float = 0.5
    about: str = ""
    style: str = "mixed"


# The world that the recipe chosen in issue 16 rehearsed (`demseg synth world_v3 --scenes 40 --seed 1000`):
# another seed than any demo or test world, 40 scenes give 512 training tiles of 224 px.
NAMED_WORLDS: dict[str, NamedWorld] = {
    "rehearsal": NamedWorld(scenes=40, seed=1000, about="the recommended recipe's rehearsal world"),
    # roads (issue 24): street cross-sections with parking bays, cycle paths and tram beds, open blocks
    "streets": NamedWorld(scenes=40, seed=1001, style="streets",
                          about="streets with every traffic area, for roads (demseg synth --style streets)"),
}


def is_named_world(value: str | os.PathLike | None) -> bool:
    return isinstance(value, str) and value in NAMED_WORLDS


def named_world_folder(name: str) -> Path:
    world = NAMED_WORLDS[name]
    style = "" if world.style == "mixed" else f"-{world.style}"
    return cache_root() / "worlds" / (f"{name}-v{GENERATOR_VERSION}{style}-seed{world.seed}-"
                                      f"{world.scenes}x{world.size_px}px")


def _complete(folder: Path, world: NamedWorld) -> bool:
    try:
        params = json.loads((folder / "world.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = {"version": GENERATOR_VERSION, "seed": world.seed, "scenes": world.scenes, "size_px": world.size_px,
              "style": world.style}
    return all(params.get(key) == value for key, value in wanted.items()) and (folder / "dataset.yaml").exists()


def named_world(name: str, progress: bool = True) -> Path:
    """The dataset.yaml of named world ``name``, generated into the cache on first use."""
    if name not in NAMED_WORLDS:
        raise DemsegError(f"unknown named world {name!r} (known: {', '.join(sorted(NAMED_WORLDS))})")
    world, folder = NAMED_WORLDS[name], named_world_folder(name)
    if _complete(folder, world):
        return folder / "dataset.yaml"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemsegError(os_error_message(exc, f"the cache folder {folder.parent}")) from exc
    with _waiting_lock(folder.parent / f".{folder.name}.lock"):
        if not _complete(folder, world):  # another process may have made it while we waited
            if progress:
                print(f"generating the {name} world once ({world.scenes} scenes, seed {world.seed}) into {folder}")
            generate_world(folder, scenes=world.scenes, size_px=world.size_px, pixel_size_m=world.pixel_size_m,
                           seed=world.seed, style=world.style, progress=progress, overwrite=True)
    return folder / "dataset.yaml"


@contextlib.contextmanager
def _waiting_lock(path: Path):
    """An exclusive lock on ``path`` that waits for its holder (no locking where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        handle = open(path, "a")
    except OSError as exc:
        raise DemsegError(os_error_message(exc, f"the lock file {path}")) from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
