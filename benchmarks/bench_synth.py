"""Synthetic world: generation time and building/road pixel fractions of every style.

Per style: CPU seconds per scene and the building and road pixel fractions (mean, min, max) over
``--scenes`` scenes; then whole worlds (``demseg synth``: generation and writing) of the default
style and of "suburban" (generator version 1), whose ratio is what the default costs over version 1.
CPU seconds are reported beside wall seconds: on a shared machine they are the fairer comparison.
Run: .venv/bin/python benchmarks/bench_synth.py [--scenes 10] [--size-px 896] [--world-scenes 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import save

from demseg.data import synth
from demseg.data.synth import DEFAULT_STYLE, STYLES, generate_scene, generate_world, scene_seed


def _summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def style_stats(style: str, scenes: int, size_px: int, pixel_size_m: float, seed: int) -> dict:
    """CPU seconds per scene and building/road pixel fractions over ``scenes`` scenes of ``style``."""
    buildings, roads = [], []
    started = time.process_time()
    for index in range(scenes):
        scene = generate_scene(scene_seed(seed, index), size_px, pixel_size_m, style)
        buildings.append(float((scene.labels == synth.BUILDING).mean()))
        roads.append(float((scene.labels == synth.ROAD).mean()))
    return {"cpu_s_per_scene": (time.process_time() - started) / scenes, "buildings": _summary(buildings),
            "roads": _summary(roads)}


def world_seconds(style: str, scenes: int, size_px: int, pixel_size_m: float, seed: int) -> dict:
    """Wall and CPU seconds to generate and write a world of ``scenes`` scenes of ``style``."""
    with tempfile.TemporaryDirectory() as folder:
        wall, cpu = time.perf_counter(), time.process_time()
        generate_world(Path(folder) / "world", scenes=scenes, size_px=size_px, pixel_size_m=pixel_size_m,
                       seed=seed, progress=False, style=style)
        return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def markdown(styles: dict, worlds: dict, args: argparse.Namespace) -> str:
    lines = [f"Synthetic styles: {args.scenes} scenes of {args.size_px} px at {args.pixel_size_m:g} m "
             f"(seed {args.seed})", "",
             "| style | buildings % (min-max) | roads % (min-max) | CPU s/scene |", "|---|---|---|---|"]
    for style, stats in styles.items():
        b, r = stats["buildings"], stats["roads"]
        lines.append(f"| {style} | {b['mean']:.1%} ({b['min']:.0%}-{b['max']:.0%}) | "
                     f"{r['mean']:.1%} ({r['min']:.0%}-{r['max']:.0%}) | {stats['cpu_s_per_scene']:.2f} |")
    lines += ["", f"Worlds of {args.world_scenes} scenes (generate and write):", "",
              "| style | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {style} | {times['wall_s']:.1f} | {times['cpu_s']:.1f} |"
              for style, times in worlds.items()]
    if len(worlds) == 2:
        ratio = worlds[DEFAULT_STYLE]["cpu_s"] / worlds["suburban"]["cpu_s"]
        lines += ["", f"{DEFAULT_STYLE} costs {ratio:.2f}x the CPU time of suburban (generator version 1)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=10, help="scenes per style for the fractions")
    parser.add_argument("--size-px", type=int, default=896)
    parser.add_argument("--pixel-size-m", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world-scenes", type=int, default=20, help="0 skips the whole-world timing")
    args = parser.parse_args()
    styles = {style: style_stats(style, args.scenes, args.size_px, args.pixel_size_m, args.seed)
              for style in STYLES}
    worlds = {style: world_seconds(style, args.world_scenes, args.size_px, args.pixel_size_m, args.seed)
              for style in (DEFAULT_STYLE, "suburban")} if args.world_scenes else {}
    save("synth", {"args": vars(args), "styles": styles, "worlds": worlds}, markdown(styles, worlds, args))


if __name__ == "__main__":
    main()
