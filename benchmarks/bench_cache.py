"""Frozen-backbone training, cached vs uncached (backbone every step, as MMSegmentation/TerraTorch do).

Same data, same iterations, same seed; reports time per run, the speed ratio, and both IoUs.
Also: peak memory of a 450-tile cached run (8 views), measured by filling such a cache.
Run: .venv/bin/python benchmarks/bench_cache.py --world demo_out/world/dataset.yaml [--iters 200]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from common import peak_rss_mb, save

from demseg.data.dataset import load_split
from demseg.evaluate.metrics import SegmentationScorer
from demseg.models import build
from demseg.models.features import encode_views
from demseg.runs.config import TrainConfig
from demseg.train.loop import fit
from demseg.train.run import run_arrays


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", required=True)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--train-tiles", type=int, default=10)
    parser.add_argument("--weights", default="dem-tiny")
    parser.add_argument("--arch", default="tiny", choices=["tiny", "small", "base"])
    parser.add_argument("--memory-tiles", type=int, default=450, help="0 skips the memory measurement")
    parser.add_argument("--name", default="cache_vs_uncached", help="results file name")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = TrainConfig(arch=args.arch, backbone_weights=args.weights, train_tiles=args.train_tiles, iters=args.iters,
                         val_every=max(1, args.iters // 4), head_width=64, neck_width=64, lr=2e-3)
    data = load_split(args.world, ["buildings"], config.split_config(), progress=False)
    config = config.model_copy(update={"pixel_size_m": data.pixel_size_m()})
    _, _, train, val = run_arrays(data, config)
    results = {}
    for cached in (True, False):
        run_config = config.model_copy(update={"cached": cached})
        model = build(run_config)
        start = time.perf_counter()
        result = fit(run_config, model, train, val, SegmentationScorer, progress=False)
        results["cached" if cached else "uncached"] = {"seconds": time.perf_counter() - start,
                                                       "iou": result.best_scores["iou"],
                                                       "best_iter": result.best_iter}
    ratio = results["uncached"]["seconds"] / results["cached"]["seconds"]
    lines = [
        f"training {args.iters} iterations on {args.train_tiles} tiles (buildings, ViT-{args.arch} '{args.weights}', "
        "head width 64, batch 8), 2 threads:",
        "",
        "| path | seconds | best val IoU | best iter |",
        "|---|---|---|---|",
        *[f"| {k} | {v['seconds']:.1f} | {v['iou']:.3f} | {v['best_iter']} |" for k, v in results.items()],
        "",
        f"speed-up of the feature cache: {ratio:.1f}x (cache filling included in the cached time)",
    ]
    payload = {"results": results, "ratio": ratio}
    if args.memory_tiles:
        lines, payload = _memory(args, config, train, lines, payload)
    save(args.name, payload, "\n".join(lines))


def _memory(args, config, train, lines, payload):
    """Fill a cache of ``--memory-tiles`` random tiles (content does not change its size) and read peak RSS."""
    model = build(config)
    before = peak_rss_mb()
    inputs = np.random.default_rng(0).normal(size=(args.memory_tiles, train.inputs.shape[1], 224, 224)).astype(
        np.float32)
    targets = np.zeros((args.memory_tiles, 224, 224), np.uint8)
    start = time.perf_counter()
    cache = encode_views(model.backbone, inputs, targets, 8)
    cache_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"{args.memory_tiles}-tile cache, 8 views, bf16 storage: {cache.nbytes / 2**20:.0f} MiB of features, "
                  f"filled in {cache_seconds:.0f} s; process peak RSS {peak:.0f} MiB (before filling: {before:.0f} MiB)"]
    payload.update({"cache_mib": cache.nbytes / 2**20, "cache_seconds": cache_seconds, "peak_rss_mib": peak})
    return lines, payload


if __name__ == "__main__":
    main()
