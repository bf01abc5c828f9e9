"""Wall clock of the commands a new user runs first: the default ``demseg train`` and ``demseg demo``.

The default ``demseg train`` fine-tunes the shipped model for 60 steps; it is timed as it runs here
(``auto`` precision) and again with ``DEMSEG_PRECISION=fp32``, the precision an AVX2-only CPU gets.
``--scratch`` also times the previous default (``--preset scratch``, 300 steps from scratch).

Also the cost of one training step of the default UNet on whole 224 px tiles and on crops
(``--crop-px``), and of a width-8 UNet: the levers a shorter default would pull.

Each command runs as a subprocess with the CPU's threads, as a user would run it; the rehearsal
world is generated (into the cache) before the clock starts, since a user pays for it once.
Writes benchmarks/results/speed.{json,md}.

    .venv/bin/python benchmarks/bench_speed.py            # default train on 10 Amsterdam tiles
    .venv/bin/python benchmarks/bench_speed.py --demo     # ... and the demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, save, timed

ROOT = Path(__file__).resolve().parents[1]
DEMSEG = str(Path(sys.executable).with_name("demseg"))


# runs one command and prints its own peak RSS (KB): RUSAGE_CHILDREN of this process holds only that command
_PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def timed_command(argv: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one command."""
    import os

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *argv], check=True, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    return time.perf_counter() - start, int(done.stdout.split()[-1]) / 1024


def step_seconds(width: int, size: int, batch: int = 8) -> float:
    """Median seconds of one training step (forward, loss, backward, AdamW) of the default recipe's UNet.

    The ``recommended`` buildings model (3 input channels, 3 classes with vegetation) at UNet width
    ``width``, on a batch of ``size`` px tiles or crops.
    """
    import torch

    from demseg.models import build
    from demseg.train.presets import preset_config

    config = preset_config("recommended", unet_width=width, pixel_size_m=0.5)
    model = build(config, seed=0)
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    images = torch.randn(batch, 3, size, size)
    target = torch.randint(0, config.num_classes(), (batch, size, size))

    def step():
        loss = torch.nn.functional.cross_entropy(model(images), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return timed(step, repeats=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="also time demseg demo")
    parser.add_argument("--repeats", type=int, default=2, help="runs of the train command")
    parser.add_argument("--scratch", action="store_true", help="also time the previous default (--preset scratch)")
    args = parser.parse_args()
    from demseg.data.synth.cache import named_world

    named_world("rehearsal", progress=True)
    steps = [(16, 224), (16, 160), (16, 128), (8, 224), (8, 128)]
    payload = {"train": [], "step_s": {f"width{w}_{size}px": step_seconds(w, size) for w, size in steps}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [([], {}, f"run {r + 1}") for r in range(args.repeats)]
        runs += [([], {"DEMSEG_PRECISION": "fp32"}, f"fp32, run {r + 1}") for r in range(args.repeats)]
        if args.scratch:
            runs.append((["--preset", "scratch"], {}, "the previous default, --preset scratch"))
        for index, (extra, env, label) in enumerate(runs):
            out = Path(tmp) / f"run{index}"
            wall, rss = timed_command([DEMSEG, "train", "examples/amsterdam.yaml", "--train-tiles", "10", *extra,
                                       "--out", str(out), "--quiet"], env)
            metrics = json.loads((out / "metrics.json").read_text())
            payload["train"].append({"label": label, "wall_s": wall, "peak_rss_mb": rss,
                                     "train_s": metrics["train_seconds"], "best_iter": metrics["best_iter"],
                                     "val_iou": metrics["iou"]})
            rows.append(f"| `demseg train examples/amsterdam.yaml --train-tiles 10 {' '.join(extra)}` ({label}) | "
                        f"{wall:.0f} s | {metrics['train_seconds']:.0f} s | {rss:.0f} MB | {100 * metrics['iou']:.1f} |")
            shutil.rmtree(out)
        if args.demo:
            wall, rss = timed_command([DEMSEG, "demo", "--out", str(Path(tmp) / "demo"), "--quiet"])
            payload["demo"] = {"wall_s": wall, "peak_rss_mb": rss}
            rows.append(f"| `demseg demo` | {wall:.0f} s ({wall / 60:.1f} min) | - | {rss:.0f} MB | - |")
    info = machine()
    markdown = "\n".join([
        f"# Speed of the first commands ({info['cpu']}, {info['threads']} threads, auto precision "
        f"{info['auto_precision']})",
        "",
        f"`.venv/bin/python benchmarks/bench_speed.py {' '.join(sys.argv[1:])}`".replace(" `", "`") +
        "; the rehearsal world was already in the cache.",
        "",
        "| command | wall clock | of which training | peak memory | validation IoU, % |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "One training step of the default recipe's UNet (batch 8, 3 channels, 3 classes, forward + backward + "
        "AdamW), median of 5:",
        "",
        "| UNet width | tile or crop | seconds per step | relative to width 16 on 224 px |",
        "|---|---|---|---|",
        *[f"| {w} | {size} px | {payload['step_s'][f'width{w}_{size}px']:.2f} | "
          f"{payload['step_s'][f'width{w}_{size}px'] / payload['step_s']['width16_224px']:.2f} |" for w, size in steps],
    ])
    save("speed", payload, markdown)


if __name__ == "__main__":
    main()
