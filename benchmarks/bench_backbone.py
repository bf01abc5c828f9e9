"""Frozen-backbone forward throughput (batch 8, 224 px, 2 channels), bf16 vs fp32, and its share of matmul peak.

Run: .venv/bin/python benchmarks/bench_backbone.py [--archs tiny,base]
"""

from __future__ import annotations

import argparse

import torch
from common import matmul_gflops, save, timed

from demseg.models import ModelConfig, build_encoder, resolve_precision


def vit_forward_gflop(width: int, depth: int, tokens: int = 197, mlp_ratio: int = 4) -> float:
    """Multiply-adds x 2 of one ViT forward: QKV/proj/MLP matmuls plus attention scores and mixing."""
    per_block = 2 * tokens * (4 * width * width + 2 * mlp_ratio * width * width) + 2 * 2 * tokens * tokens * width
    return depth * per_block / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", default="tiny,base")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16, size=1024, repeats=2)}
    # the share is taken of the machine's best measured matmul rate, whatever dtype reaches it
    best_peak = max(peaks.values())
    widths = {"tiny": 192, "small": 384, "base": 768}
    rows = []
    x = torch.randn(8, 2, 224, 224)
    for arch in args.archs.split(","):
        for dtype in ("fp32", "bf16"):
            backbone = build_encoder(ModelConfig(arch=arch, backbone_weights="random", backbone_dtype=dtype))
            seconds = timed(lambda b=backbone: b(x), repeats=2 if arch == "base" or dtype == "bf16" else 3)
            gflop = 8 * vit_forward_gflop(widths[arch], 12)
            rows.append({"arch": arch, "dtype": dtype, "images_per_s": 8 / seconds, "gflop_per_s": gflop / seconds,
                         "share_of_matmul_peak": gflop / seconds / best_peak})
    lines = ["| arch | dtype | images/s (batch 8) | GFLOP/s | share of the best measured matmul rate |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['dtype']} | {r['images_per_s']:.2f} | {r['gflop_per_s']:.1f} | "
              f"{100 * r['share_of_matmul_peak']:.0f} % |" for r in rows]
    lines.append(f"\nmeasured 1024x1024 matmul: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s "
                 f"({args.threads} threads); auto picks {resolve_precision('auto')} here (measured, see "
                 "demseg.models.precision)")
    save("backbone_throughput", {"rows": rows, "matmul_peak_gflops": peaks}, "\n".join(lines))


if __name__ == "__main__":
    main()
