"""Run manifests: config, package versions, data hashes and tile ids, written beside the outputs."""

from __future__ import annotations

import json
from pathlib import Path

from demseg.data.spec import DatasetSpec
from demseg.io.atomic import write_text_atomic
from demseg.io.provenance import file_sha256, provenance


def spec_file_hashes(spec: DatasetSpec) -> dict[str, str]:
    """SHA-256 of every file a spec names, keyed by scene and role."""
    hashes = {}
    for scene in spec.scenes:
        files = {"dem": scene.dem, "dtm": scene.dtm}
        if scene.labels is not None:
            files["labels"] = scene.labels.raster
            files.update({f"vector_{task}": path for task, path in scene.labels.vector.items()})
        for role, relative in files.items():
            if relative:
                hashes[f"{scene.id}/{role}"] = file_sha256(spec.path(relative))
    return hashes


def write_manifest(path: str | Path, config: dict, spec: DatasetSpec | None, tile_ids: dict[str, list[str]],
                   argv: list[str] | None = None, extra: dict | None = None, tool: str = "train") -> Path:
    """Write a manifest JSON (atomically) describing how an output was made: :func:`provenance`, data, tiles."""
    manifest = {
        **provenance(tool, config, argv),
        "data": {"spec_name": spec.name, "spec_root": str(spec.root), "sha256": spec_file_hashes(spec)} if spec else None,
        "tiles": tile_ids,
    }
    if extra:
        manifest.update(extra)
    return write_text_atomic(path, json.dumps(manifest, indent=2, default=str))
