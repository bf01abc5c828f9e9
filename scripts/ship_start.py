"""Copy a trained run into the package as a shipped starting point for ``--init`` (e.g. synthetic pre-training).

The run's frozen backbone must be a shipped encoder (it is named in the copied config, not copied);
the trained head is stored in float16 (loaded back into float32). A ``start.json`` sidecar records
the command, the data (file hashes from the run's manifest) and the run's validation scores.
Run: .venv/bin/python scripts/ship_start.py RUN_DIR NAME "exact train command"
Then add one ``ShippedStart`` entry to ``demseg/models/encoders.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from demseg.models.encoders import SHIPPED_ENCODERS, shipped
from demseg.models.weights import load_encoder
from demseg.runs.folder import read_run_config

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "demseg" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("command")
    args = parser.parse_args()
    config = read_run_config(args.run)
    if config.backbone_weights not in SHIPPED_ENCODERS or config.finetune != "none":
        raise SystemExit(f"the run's backbone must be a frozen shipped encoder, got {config.backbone_weights!r} "
                         f"(finetune {config.finetune})")
    entry = shipped(config.backbone_weights)
    ours, _ = load_encoder(str(args.run / "backbone.safetensors"), entry.arch, entry.num_channels,
                           config.tile_size_px)
    theirs, _ = load_encoder(str(entry.path), entry.arch, entry.num_channels, config.tile_size_px)
    # the run may have kept its frozen backbone in bf16 (measured faster here): equal to bf16 precision
    if any(not torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-3)
           for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)):
        raise SystemExit("the run's backbone differs from the shipped encoder it names")
    out = PACKAGE_WEIGHTS / args.name
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(args.run / "model.safetensors")).items()}
    save_file(weights, str(out / "model.safetensors"))
    (out / "model.safetensors").chmod(0o644)  # safetensors writes owner-only files
    (out / "config.json").write_text(config.model_dump_json(indent=2))
    manifest = json.loads((args.run / "manifest.json").read_text())
    metrics = json.loads((args.run / "metrics.json").read_text())
    (out / "start.json").write_text(json.dumps({
        "name": args.name, "command": args.command, "encoder": config.backbone_weights,
        "data": manifest.get("data"), "train_tiles": len(manifest["tiles"]["train"]),
        "validation": {k: metrics[k] for k in ("best_iter", "iou", "precision", "recall", "f1") if k in metrics},
    }, indent=2))
    print(f"shipped {args.run} as {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
