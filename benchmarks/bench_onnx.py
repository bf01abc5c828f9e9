"""torch against onnxruntime on the same run: windows per second and mask agreement.

The run is exported to a temporary ONNX file (``export_onnx``); both engines then classify the same
random-but-realistic windows (the run's training tiles are not needed: windows are cut from a
synthetic scene normalised with the run's recipe) through ``window_probabilities``, in batches of
8, after one warm-up batch. Mask agreement is the IoU of the two engines' target masks.

Run: .venv/bin/python benchmarks/bench_onnx.py --run RUN [--windows 64]
Writes benchmarks/results/onnx.md and onnx.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, save

from demseg.data.normalise import normalise_tile
from demseg.data.synth import generate_scene
from demseg.predict.onnx import OnnxModel, export_onnx
from demseg.predict.sliding import window_probabilities
from demseg.runs.folder import load_run


def windows(config, count: int) -> np.ndarray:
    """``count`` normalised windows of the run's tile size cut from synthetic scenes."""
    size = config.tile_size_px
    out = []
    seed = 0
    while len(out) < count:
        scene = generate_scene(seed, size_px=max(4 * size, 256), pixel_size_m=config.pixel_size_m or 0.5)
        seed += 1
        for row in range(0, scene.dsm.shape[0] - size + 1, size):
            for col in range(0, scene.dsm.shape[1] - size + 1, size):
                window = (slice(row, row + size), slice(col, col + size))
                valid = np.isfinite(scene.dsm[window])
                if valid.mean() > 0.9 and len(out) < count:
                    out.append(normalise_tile(np.where(valid, scene.dsm[window], np.nan).astype(np.float32), valid,
                                              config.recipe, config.pixel_size_m or 0.5, scene.dtm[window]))
    return np.stack(out)


def timed_probabilities(model, inputs: np.ndarray, batch: int = 8) -> tuple[np.ndarray, float]:
    window_probabilities(model, inputs[:batch])  # warm-up
    start = time.perf_counter()
    probabilities = np.concatenate([window_probabilities(model, inputs[i:i + batch])
                                    for i in range(0, len(inputs), batch)])
    return probabilities, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--windows", type=int, default=64)
    args = parser.parse_args()
    model, config = load_run(args.run)
    inputs = windows(config, args.windows)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = OnnxModel(export_onnx(args.run, Path(tmp) / "model.onnx"))
        torch_probability, torch_seconds = timed_probabilities(model.float(), inputs)
        onnx_probability, onnx_seconds = timed_probabilities(onnx_model, inputs)
    a, b = torch_probability > 0.5, onnx_probability > 0.5
    agreement = float((a & b).sum() / max(1, (a | b).sum()))
    row = {"run": str(args.run), "model": config.model, "tile_size_px": config.tile_size_px, "windows": len(inputs),
           "threads": torch.get_num_threads(), "torch_windows_per_s": len(inputs) / torch_seconds,
           "onnx_windows_per_s": len(inputs) / onnx_seconds, "onnx_over_torch": torch_seconds / onnx_seconds,
           "mask_iou": agreement, "max_probability_difference": float(np.abs(torch_probability - onnx_probability).max())}
    text = ["# torch against onnxruntime (same run, same windows)", "",
            "| run | model | tile px | windows | threads | torch windows/s | onnxruntime windows/s | onnx / torch speed "
            "| mask IoU | max prob. difference |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {Path(row['run']).name} | {row['model']} | {row['tile_size_px']} | {row['windows']} | {row['threads']} | "
            f"{row['torch_windows_per_s']:.1f} | {row['onnx_windows_per_s']:.1f} | {row['onnx_over_torch']:.2f}x | "
            f"{row['mask_iou']:.4f} | {row['max_probability_difference']:.2e} |", "", f"Machine: {machine()['cpu']}"]
    save("onnx", {"rows": [row]}, "\n".join(text))


if __name__ == "__main__":
    main()
