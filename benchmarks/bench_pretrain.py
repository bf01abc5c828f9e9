"""MAE pre-training throughput (images/s) per arch on this CPU, bf16 and fp32, light decoder (4 x 256).

Run: .venv/bin/python benchmarks/bench_pretrain.py [--archs tiny,small,base] [--crops 224,112]
"""

from __future__ import annotations

import argparse

import torch
from common import save, timed

from demseg.pretrain.mae import PretrainConfig, build_mae, masked_patch_loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", default="tiny,small,base")
    parser.add_argument("--crops", default="224,112")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bf16-all", action="store_true", help="also time bf16 for small and base")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for arch in args.archs.split(","):
        for crop in map(int, args.crops.split(",")):
            # emulated bf16 (no AVX512-BF16/AMX) is ~50x slower: measured on tiny only unless --bf16-all
            precisions = ("fp32", "bf16") if arch == "tiny" or args.bf16_all else ("fp32",)
            for precision in precisions:
                config = PretrainConfig(arch=arch, tile_size_px=crop, precision=precision)
                model = build_mae(config)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                patches = (crop // 16) ** 2
                x = torch.randn(args.batch_size, 2, crop, crop)
                valid = torch.ones(args.batch_size, crop, crop, dtype=torch.bool)
                noise = torch.rand(args.batch_size, patches)

                def step(model=model, optimizer=optimizer, x=x, valid=valid, noise=noise, precision=precision):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                        loss, _ = masked_patch_loss(model, x, valid, noise, 0.5)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()

                slow = arch == "base" or precision == "bf16"
                seconds = timed(step, repeats=1 if slow else 3)
                rows.append({"arch": arch, "crop_px": crop, "precision": precision,
                             "images_per_s": args.batch_size / seconds})
    lines = [f"MAE pre-training step (forward + backward + AdamW), batch {args.batch_size}, decoder 4 x 256, "
             "mask 75 %, 2 threads:", "", "| arch | crop px | precision | images/s |", "|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['crop_px']} | {r['precision']} | {r['images_per_s']:.1f} |" for r in rows]
    save("pretrain_throughput", {"rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
