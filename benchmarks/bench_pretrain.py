"""Pre-training throughput (images/s) per arch and objective on this CPU, bf16 and fp32, light decoder (4 x 256).

Run: .venv/bin/python benchmarks/bench_pretrain.py [--archs tiny,small,base] [--crops 224,112]
     [--objectives mae,mae+ground]
"""

from __future__ import annotations

import argparse

import torch
from common import save, timed

from demseg.pretrain.mae import PretrainConfig, build_mae
from demseg.pretrain.objectives import pretext_loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", default="tiny,small,base")
    parser.add_argument("--crops", default="224,112")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--objectives", default="mae")
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    cases = [(arch, crop, objective, precision) for arch in args.archs.split(",")
             for crop in map(int, args.crops.split(",")) for objective in args.objectives.split(",")
             for precision in args.precisions.split(",")]
    for arch, crop, objective, precision in cases:
        config = PretrainConfig(arch=arch, tile_size_px=crop, precision=precision, objective=objective)
        model = build_mae(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        patches = (crop // 16) ** 2
        x = torch.randn(args.batch_size, 2, crop, crop)
        valid = torch.ones(args.batch_size, crop, crop, dtype=torch.bool)
        ground = torch.rand(args.batch_size, crop, crop)
        noise = torch.rand(args.batch_size, patches)

        def step(model=model, optimizer=optimizer, x=x, valid=valid, noise=noise, precision=precision,
                 ground=ground):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss, _ = pretext_loss(model, x, valid, ground, noise, 0.5)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        seconds = timed(step, repeats=1 if arch == "base" else 3)
        rows.append({"arch": arch, "crop_px": crop, "objective": objective, "precision": precision,
                     "images_per_s": args.batch_size / seconds})
    lines = [f"Pre-training step (forward + backward + AdamW), batch {args.batch_size}, decoder 4 x 256, "
             "2 threads:", "", "| arch | crop px | objective | precision | images/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['crop_px']} | {r['objective']} | {r['precision']} | {r['images_per_s']:.1f} |"
              for r in rows]
    save("pretrain_throughput", {"rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
