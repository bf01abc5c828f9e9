"""Copy a trained run into the package as a shipped model: a name that works wherever a run folder does.

The run folder's ``config.json``, ``model.safetensors`` and ``manifest.json`` are copied to
``src/demseg/weights/NAME/``; a backbone model's frozen backbone must be a shipped encoder (named in
the config, not copied); weights are stored in float16 (BatchNorm statistics in float32). The ``start.json`` sidecar records the
exact command, the data it learnt from (file hashes, cities, sources, pixel sizes, licences and
attributions, the synthetic world), how it was measured and its validation scores.

    .venv/bin/python scripts/ship_model.py RUN NAME --spec SPEC --command "exact train command" \\
        [--measured "docs/results/loco/README.md"]

Then add one ``ShippedModel`` entry to ``demseg/models/encoders.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from demseg.data.spec import load_spec
from demseg.io.raster import open_grid
from demseg.models.encoders import SHIPPED_ENCODERS, shipped
from demseg.models.registry import uses_backbone
from demseg.models.weights import load_encoder
from demseg.runs.folder import read_run_config

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "demseg" / "weights"

# the shared real data, by folder: where it is, who made it, and on what terms
SOURCES = {
    "ahn3_bag_amsterdam_bag3d": ("Amsterdam, Netherlands", "AHN3 LiDAR (Rijkswaterstaat) with BAG footprints "
                                 "(Kadaster), via 3D BAG", "CC0 1.0 (PDOK)"),
    "ahn_bgt_amsterdam_routeplanning": ("Amsterdam Nieuw-West, Netherlands", "AHN DSM with BGT surfaces",
                                        "CC0 1.0 (PDOK)"),
    "ign_lidarhd_decimated_1km": ("France (La Rochelle, Lamballe, Brittany)", "IGN LiDAR HD, class 6",
                                  "Licence Ouverte / Etalab 2.0; attribution: IGN, LiDAR HD"),
    "pnoa2018_sevilla_cityshademapper": ("Seville, Spain", "PNOA-LiDAR 2018, class 6",
                                         "CC BY 4.0; attribution: PNOA-LiDAR, scne.es"),
    "opengeos_elevation": ("near Washington DC, USA", "opengeos/data DSM with footprint polygons", "MIT"),
}


def data_sources(spec_path: Path) -> list[dict]:
    """One record per scene of the spec: city, source, licence, pixel size (from the raster)."""
    spec = load_spec(spec_path)
    records = []
    for scene in spec.scenes:
        folder = next((name for name in SOURCES if name in str(scene.dem)), None)
        city, source, licence = SOURCES.get(folder, ("unknown", str(scene.dem), "unknown"))
        records.append({"scene": scene.id, "city": city, "source": source, "licence": licence,
                        "pixel_size_m": open_grid(spec.path(scene.dem), scene.crs, "DEM").pixel_size_m,
                        "dtm": scene.dtm is not None})
    return records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--spec", type=Path, required=True, help="the spec the run was trained on")
    parser.add_argument("--command", required=True, help="the exact demseg train command")
    parser.add_argument("--measured", default="", help="where its measurements are written up")
    args = parser.parse_args()
    config = read_run_config(args.run)
    weights = load_file(str(args.run / "model.safetensors"))
    if uses_backbone(config.model):
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
    # float16 halves the package (buildings: 7.6 -> 3.8 MB; IoU on Amsterdam and Seville within 0.03 points);
    # BatchNorm running statistics stay float32 (their variances exceed float16's precision)
    weights = {k: v.half() if v.is_floating_point() and "running_" not in k else v for k, v in weights.items()}
    out = PACKAGE_WEIGHTS / args.name
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"))
    (out / "model.safetensors").chmod(0o644)  # safetensors writes owner-only files
    (out / "config.json").write_text(config.model_dump_json(indent=2))
    shutil.copyfile(args.run / "manifest.json", out / "manifest.json")
    manifest = json.loads((args.run / "manifest.json").read_text())
    metrics = json.loads((args.run / "metrics.json").read_text())
    scenes = data_sources(args.spec)
    synthetic = None
    world_json = args.spec.parent / "world.json"
    if world_json.exists():  # trained on a synthetic world alone: no real city, no licence beyond ours
        world = json.loads(world_json.read_text())
        scenes, synthetic = [], {"spec": str(args.spec.name), "licence": "generated by demseg (MIT)",
                                 **{k: world[k] for k in ("style", "scenes", "size_px", "pixel_size_m", "seed",
                                                         "version")}}
    elif config.mix:
        from demseg.data.synth.cache import NAMED_WORLDS, named_world_folder

        world = NAMED_WORLDS.get(config.mix)
        synthetic = ({"world": config.mix, "folder": named_world_folder(config.mix).name, "scenes": world.scenes,
                      "seed": world.seed, "tiles": len(manifest["tiles"].get("mix", [])),
                      "share_of_every_batch": config.mix_share, "licence": "generated by demseg (MIT)"}
                     if world else {"spec": config.mix, "tiles": len(manifest["tiles"].get("mix", []))})
    (out / "start.json").write_text(json.dumps({
        "name": args.name, "command": args.command, "model": config.model, "task": config.task,
        "encoder": config.backbone_weights if uses_backbone(config.model) else None,
        "pixel_size_m": config.pixel_size_m, "recipe": config.recipe,
        "cities": sorted({s["city"] for s in scenes}),
        "pixel_sizes_seen_m": sorted({s["pixel_size_m"] for s in scenes} | {config.pixel_size_m}
                                     | {config.pixel_size_m * f for f in config.coarsen}),
        "scenes": scenes, "synthetic": synthetic, "data": manifest.get("data"),
        "train_tiles": len(manifest["tiles"]["train"]), "iters": config.iters, "measured": args.measured,
        "validation": {k: metrics[k] for k in ("best_iter", "iou", "precision", "recall", "f1") if k in metrics},
    }, indent=2))
    print(f"shipped {args.run} as {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
