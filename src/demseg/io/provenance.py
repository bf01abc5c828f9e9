"""Provenance of outputs: file hashes and the versions of the packages a result depends on."""

from __future__ import annotations

import hashlib
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("demseg", "torch", "transformers", "numpy", "rasterio", "shapely", "pyproj", "safetensors", "laspy")


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions of Python and of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(tool: str, config: dict, argv: list[str] | None = None) -> dict:
    """The keys every demseg manifest starts with: which command made it, when, with what settings and versions.

    Train runs, experiments, pre-training and rasterize all build their ``manifest.json`` on it and
    add their own keys (data hashes, tiles, inputs) after.
    """
    return {"tool": f"demseg {tool}", "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(argv if argv is not None else sys.argv), "config": config,
            "versions": package_versions()}
