"""Copy an encoder made by `demseg pretrain` into the package as a shipped, documented backbone.

Stores the weights in float16 (half the size; they are loaded back into float32) next to a JSON
sidecar naming the command and data that made them, and a copy of the pre-training manifest.
Run: .venv/bin/python scripts/ship_encoder.py CKPT_DIR "exact pretrain command" [--name dem_mae_tiny]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from demseg.models.weights import load_encoder, save_encoder

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "demseg" / "weights"


def _manifest(checkpoint: Path, sources: list[str] | None) -> dict:
    """The run's manifest, or the same facts rebuilt from its last checkpoint if it was stopped early."""
    if (checkpoint / "manifest.json").exists():
        return json.loads((checkpoint / "manifest.json").read_text())
    import torch

    from demseg.io.provenance import file_sha256
    from demseg.pretrain.sources import discover_sources

    state = torch.load(checkpoint / "last" / "resume.pt", map_location="cpu", weights_only=True)
    meta = json.loads((checkpoint / "last" / "mae.json").read_text())
    found = discover_sources(sources or [])
    losses = state["losses"]
    return {"config": meta["pretrain_config"], "steps_done": int(state["step"]),
            "sources": [{"id": s.id, "dem": str(s.dem), "sha256": file_sha256(s.dem)} for s in found],
            "skipped_sources": ["smaller than a tile are skipped by the crop pool"],
            "loss_first_last": [losses[0], losses[-1]], "loss_curve_every_10": losses[::10],
            "note": f"stopped at step {state['step']} of {meta['pretrain_config']['steps']}; "
                    "`--resume` continues the same run"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("command")
    parser.add_argument("--name", default="dem_mae_tiny")
    parser.add_argument("--sources", nargs="*", help="the pretrain sources, when the run has no manifest yet "
                                                      "(stopped before its end)")
    args = parser.parse_args()
    manifest = _manifest(args.checkpoint, args.sources)
    source = json.loads((args.checkpoint / "encoder.json").read_text())
    encoder, _ = load_encoder(str(args.checkpoint / "encoder.safetensors"), source.get("arch"),
                              source["num_channels"], source["image_size"])
    metadata = {
        "normalisation": source["normalisation"],
        "method": "MAE pre-training on DEMs (demseg pretrain)",
        "source": "demseg pretrain",
        "command": args.command,
        "pretrain_config": manifest["config"],
        "data": [{"id": s["id"], "sha256": s["sha256"]} for s in manifest["sources"]],
        "skipped_sources": manifest["skipped_sources"],
        "steps": manifest["steps_done"],
        "loss_first_last": manifest["loss_first_last"],
        "stored_dtype": "float16",
    }
    PACKAGE_WEIGHTS.mkdir(parents=True, exist_ok=True)
    save_encoder(encoder.half(), PACKAGE_WEIGHTS / f"{args.name}.safetensors", metadata)
    (PACKAGE_WEIGHTS / f"{args.name}.manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"shipped {PACKAGE_WEIGHTS / (args.name + '.safetensors')}")


if __name__ == "__main__":
    main()
