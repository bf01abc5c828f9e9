"""Wall clock of the two commands a new user runs first: the default ``demseg train`` and ``demseg demo``.

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
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, save, timed

ROOT = Path(__file__).resolve().parents[1]
DEMSEG = str(Path(sys.executable).with_name("demseg"))


def timed_command(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of the child) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def step_seconds(width: int, size: int, channels: int = 3, batch: int = 8) -> float:
    """Median seconds of one UNet training step (forward, loss, backward, AdamW) on a (batch, channels, size, size)."""
    import torch

    from demseg.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(channels, 3, base_width=width)
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    images, target = torch.randn(batch, channels, size, size), torch.randint(0, 3, (batch, size, size))

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
    args = parser.parse_args()
    from demseg.data.synth.cache import named_world

    named_world("rehearsal", progress=True)
    steps = [(16, 224), (16, 160), (16, 128), (8, 224), (8, 128)]
    payload = {"train": [], "step_s": {f"width{w}_{size}px": step_seconds(w, size) for w, size in steps}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            out = Path(tmp) / f"run{repeat}"
            wall, rss = timed_command([DEMSEG, "train", "examples/amsterdam.yaml", "--train-tiles", "10",
                                       "--out", str(out), "--quiet"])
            metrics = json.loads((out / "metrics.json").read_text())
            payload["train"].append({"wall_s": wall, "peak_rss_mb": rss, "train_s": metrics["train_seconds"],
                                     "best_iter": metrics["best_iter"], "val_iou": metrics["iou"]})
            rows.append(f"| `demseg train examples/amsterdam.yaml --train-tiles 10` (run {repeat + 1}) | "
                        f"{wall:.0f} s | {metrics['train_seconds']:.0f} s | {rss:.0f} MB |")
            shutil.rmtree(out)
        if args.demo:
            wall, rss = timed_command([DEMSEG, "demo", "--out", str(Path(tmp) / "demo"), "--quiet"])
            payload["demo"] = {"wall_s": wall, "peak_rss_mb": rss}
            rows.append(f"| `demseg demo` | {wall:.0f} s ({wall / 60:.1f} min) | - | {rss:.0f} MB |")
    info = machine()
    markdown = "\n".join([
        f"# Speed of the first commands ({info['cpu']}, {info['threads']} threads, auto precision "
        f"{info['auto_precision']})",
        "",
        f"`.venv/bin/python benchmarks/bench_speed.py {' '.join(sys.argv[1:])}`".replace(" `", "`") +
        "; the rehearsal world was already in the cache.",
        "",
        "| command | wall clock | of which training | peak memory |",
        "|---|---|---|---|",
        *rows,
        "",
        "One training step of the UNet (batch 8, 3 channels, forward + backward + AdamW), median of 5:",
        "",
        "| UNet width | tile or crop | seconds per step | relative to width 16 on 224 px |",
        "|---|---|---|---|",
        *[f"| {w} | {size} px | {payload['step_s'][f'width{w}_{size}px']:.2f} | "
          f"{payload['step_s'][f'width{w}_{size}px'] / payload['step_s']['width16_224px']:.2f} |" for w, size in steps],
    ])
    save("speed", payload, markdown)


if __name__ == "__main__":
    main()
