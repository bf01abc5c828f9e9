"""Leave one city out: models that never saw a city, zero-shot and fine-tuned on 10 of its tiles.

Each fold names a left-out city (a spec) and a start: a model pre-trained on everything demseg
learns from except that city (``examples/pretrain/buildings_without_<city>.yaml`` + the synthetic
world). Each arm is a ``demseg train`` command line run as a user runs it (timed, wall clock), then
scored on the city's validation tiles, the same tiles for every arm and seed (the split depends on
the spec and split settings only; every scene resampled to the fold's pixel size). ``zero-shot``
scores the start itself, untrained on the city. Reruns skip finished runs.

    python benchmarks/loco.py --fold france=examples/france.yaml:/work/runs/pre/without_france \\
        --arm zero-shot= --arm "shipped=--init {start} --preset recommended" --seeds 5 --out loco_sel

Writes ``results.csv`` and ``summary.md`` (IoU and the raised false-positive rate, mean ± 95 % CI over
seeds, pooled over folds, and paired differences between arms) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from common import machine

from demseg.data.arrays import tile_arrays
from demseg.data.dataset import load_split
from demseg.data.tiles import eligible_tiles
from demseg.evaluate.metrics import mean_ci95
from demseg.evaluate.score import score_tiles
from demseg.models.inference import adapt_batchnorm
from demseg.runs.config import TrainConfig
from demseg.runs.folder import load_run

DEMSEG = str(Path(sys.executable).with_name("demseg"))
COLUMNS = ["fold", "arm", "seed", "iou", "tp", "fp", "fn", "raised_fp", "raised_negatives", "raised_fp_rate",
           "seconds", "val_tiles", "elsewhere_iou", "elsewhere_raised_fp_rate", "command"]


def parse_fold(text: str) -> tuple[str, str, str]:
    name, _, rest = text.partition("=")
    spec, _, start = rest.partition(":")
    if not (name and spec and start):
        raise SystemExit(f"--fold NAME=SPEC:START, got {text}")
    return name, spec, start


def score(run: str, spec: str, pixel_size_m: float, adapt_bn: bool = False) -> dict:
    """Scores of a run (or start) on the validation tiles of ``spec``'s default split at ``pixel_size_m``.

    With ``adapt_bn`` the BatchNorm statistics are first re-estimated on every tile of the city
    (its labels unused): AdaBN on the scene being mapped.
    """
    model, config = load_run(run)
    if abs(config.pixel_size_m - pixel_size_m) > 1e-6:  # else the tiles scored would not be the tiles it kept apart
        raise SystemExit(f"{run} works at {config.pixel_size_m} m, the fold at {pixel_size_m} m: add --pixel-size-m")
    split = TrainConfig().split_config()
    data = load_split(spec, [config.task], split, progress=False, pixel_size_m=pixel_size_m)
    tiles = eligible_tiles(data.tiles, "val", config.task, config.min_labelled_fraction)
    if adapt_bn:
        every = [t for t in data.tiles if t.split in ("train", "val", "buffer")]
        adapt_batchnorm(model, tile_arrays(data.scenes, every, config.task, config.recipe).inputs)
    return {**score_tiles(model, config, data, tiles, config.task), "val_tiles": len(tiles)}


def score_elsewhere(run: str, spec: str) -> dict:
    """Scores of a run on every labelled pixel of a city it never saw (windows blended as predict does)."""
    from demseg.evaluate.scenes import scene_windows, score_windows
    from demseg.models.inference import predict_images

    model, config = load_run(run)
    windows = scene_windows(spec, config.task, config)
    probabilities = predict_images(model, windows.arrays.inputs, config.use_amp(), probabilities=True)
    scores = score_windows(probabilities, windows, config.task, config.pixel_size_m)
    return {f"elsewhere_{key}": scores[key] for key in ("iou", "tp", "fp", "fn", "raised_fp", "raised_negatives",
                                                         "raised_fp_rate")}


def run_arm(out: Path, fold: str, spec: str, start: str, arm: str, flags: str, seed: int, pixel_size_m: float,
            tiles: int, elsewhere: str | None = None) -> dict:
    folder = out / "runs" / fold / arm / f"seed{seed}"
    record_path = folder.with_suffix(".json")
    if record_path.exists():
        return json.loads(record_path.read_text())
    adapt_bn = "--adapt-bn" in flags.split()  # not a train flag: AdaBN on the city before scoring
    flags = " ".join(part for part in flags.split() if part != "--adapt-bn")
    if not flags.strip():  # zero-shot: the start as it is, the same for every seed
        command, seconds, run = "(none: the pre-trained start, no fine-tuning)", 0.0, start
    else:
        argv = [DEMSEG, "train", spec, "--train-tiles", str(tiles), "--seed", str(seed), "--quiet",
                *shlex.split(flags.format(start=start, pixel=pixel_size_m)), "--out", str(folder), "--overwrite"]
        command = shlex.join(["demseg", *argv[1:]])
        began = time.perf_counter()
        subprocess.run(argv, check=True)
        seconds, run = time.perf_counter() - began, str(folder)
    record = {"fold": fold, "arm": arm, "seed": seed, "seconds": seconds, "command": command,
              **score(run, spec, pixel_size_m, adapt_bn), **(score_elsewhere(run, elsewhere) if elsewhere else {})}
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1, default=float))
    return record


def _cell(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    mean, half = mean_ci95([v * scale for v in values])
    return f"{mean:.1f} ± {half:.1f} (n={len(values)})" if len(values) > 1 else f"{mean:.1f} (n=1)"


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def pooled(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (arm, seed): pixels summed over every fold (folds without that seed are skipped)."""
    folds = sorted({r["fold"] for r in rows})
    by = defaultdict(dict)
    for r in rows:
        by[(r["arm"], int(r["seed"]))][r["fold"]] = r
    out = {}
    for key, per_fold in by.items():
        if len(per_fold) < len(folds):
            continue
        s = {k: sum(float(per_fold[f][k]) for f in folds) for k in ("tp", "fp", "fn", "raised_fp", "raised_negatives")}
        out[key] = {"iou": _ratio(s["tp"], s["tp"] + s["fp"] + s["fn"]),
                    "raised_fp_rate": _ratio(s["raised_fp"], s["raised_negatives"])}
    return out


def summary(rows: list[dict], arms: list[str], title: str) -> str:
    folds = sorted({r["fold"] for r in rows})
    pool = pooled(rows)
    lines = [f"# {title}", "", f"Machine: {json.dumps(machine())}", ""]
    for metric, name in (("iou", "IoU of buildings, %"), ("raised_fp_rate",
                                                          "raised false-positive rate, % (lower is better)"),
                         ("seconds", "wall-clock seconds of the demseg train command")):
        lines += [f"## {name}", "", "| arm | " + " | ".join(folds) + (" | pooled |" if metric != "seconds" else " |"),
                  "|---" * (len(folds) + 1 + (metric != "seconds")) + "|"]
        for arm in arms:
            cells = []
            for fold in folds:
                values = [float(r[metric]) for r in rows if r["arm"] == arm and r["fold"] == fold]
                cells.append(_cell(values, 1.0 if metric == "seconds" else 100.0))
            if metric != "seconds":
                cells.append(_cell([v[metric] for (a, _), v in sorted(pool.items()) if a == arm]))
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    if any("elsewhere_iou" in r for r in rows):
        lines += ["## Scored on the city none of them saw (every labelled pixel), %", "",
                  "| arm | " + " | ".join(f"{fold}: IoU | {fold}: raised FP" for fold in folds) + " |",
                  "|---" * (2 * len(folds) + 1) + "|"]
        for arm in arms:
            cells = []
            for fold in folds:
                for key in ("elsewhere_iou", "elsewhere_raised_fp_rate"):
                    cells.append(_cell([float(r[key]) for r in rows if r["arm"] == arm and r["fold"] == fold
                                        and r.get(key) not in (None, "")]))
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Paired differences (IoU points; same seed, same tiles)", "",
              "| arm minus reference | " + " | ".join(folds) + " | pooled |", "|---" * (len(folds) + 2) + "|"]
    for reference in arms:
        for arm in arms:
            if arm == reference:
                continue
            cells = []
            for fold in folds:
                ref = {int(r["seed"]): float(r["iou"]) for r in rows if r["arm"] == reference and r["fold"] == fold}
                got = {int(r["seed"]): float(r["iou"]) for r in rows if r["arm"] == arm and r["fold"] == fold}
                if len(ref) == 1:  # zero-shot: one value for every seed
                    ref = {seed: next(iter(ref.values())) for seed in got}
                cells.append(_cell([got[s] - ref[s] for s in sorted(got) if s in ref]))
            ref_pool = {s: v["iou"] for (a, s), v in pool.items() if a == reference}
            if len(ref_pool) == 1:
                ref_pool = {s: next(iter(ref_pool.values())) for (a, s) in pool if a == arm}
            cells.append(_cell([v["iou"] - ref_pool[s] for (a, s), v in sorted(pool.items())
                                if a == arm and s in ref_pool]))
            lines.append(f"| {arm} - {reference} | " + " | ".join(cells) + " |")
    lines += ["", "## Commands", ""]
    for arm in arms:
        example = next((r["command"] for r in rows if r["arm"] == arm), "")
        lines.append(f"- **{arm}**: `{example}`")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], arms: list[str], path: Path, title: str) -> None:
    """IoU and raised false-positive rate per arm and fold (mean, 95 % CI; dots: seeds), and seconds per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = sorted({r["fold"] for r in rows})
    panels = [("iou", "IoU of buildings, %", 100.0),
              ("raised_fp_rate", "raised non-buildings marked, % (lower is better)", 100.0),
              ("seconds", "seconds per demseg train run", 1.0)]
    if any(r.get("elsewhere_iou") not in (None, "") for r in rows):
        panels.insert(1, ("elsewhere_iou", "IoU in the city none of them saw, %", 100.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    width = 0.8 / max(len(folds), 1)
    for panel, (metric, label, scale) in zip(axes, panels, strict=True):
        for k, fold in enumerate(folds):
            xs, means, halves = [], [], []
            for i, arm in enumerate(arms):
                values = [float(r[metric]) * scale for r in rows if r["arm"] == arm and r["fold"] == fold
                          and r.get(metric) not in (None, "")]
                if not values:
                    continue
                mean, half = mean_ci95(values) if len(values) > 1 else (values[0], 0.0)
                x = i + (k - (len(folds) - 1) / 2) * width
                xs.append(x), means.append(mean), halves.append(half)
                panel.scatter([x] * len(values), values, s=8, color="black", zorder=3)
            panel.bar(xs, means, width * 0.9, yerr=halves, capsize=3, label=fold, alpha=0.75)
        panel.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
        panel.set_title(label, fontsize=10)
        panel.grid(axis="y", alpha=0.3)
    axes[0].legend(title="fold")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fold", action="append", required=True, type=parse_fold,
                        help="NAME=SPEC:START (START: the model pre-trained without that city)")
    parser.add_argument("--arm", action="append", required=True,
                        help="NAME=FLAGS of demseg train ({start}: the fold's start; empty: zero-shot; --adapt-bn: "
                             "AdaBN on the city's tiles before scoring)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tiles", type=int, default=10)
    parser.add_argument("--pixel-size-m", type=float, default=0.5)
    parser.add_argument("--elsewhere", help="SPEC of a city neither the start nor the runs ever saw: every run is "
                                            "also scored on all its labelled pixels (columns elsewhere_*)")
    parser.add_argument("--title", default="Leave one city out")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    arms = [tuple(a.split("=", 1)) for a in args.arm]
    rows = []
    for fold, spec, start in args.fold:
        for arm, flags in arms:
            zero_shot = not [part for part in flags.split() if part != "--adapt-bn"]
            for seed in ([0] if zero_shot else range(args.seeds)):
                rows.append(run_arm(args.out, fold, spec, start, arm, flags, seed, args.pixel_size_m, args.tiles,
                                    args.elsewhere))
                print(f"{fold} {arm} seed {seed}: iou {rows[-1]['iou']:.3f} raised fp "
                      f"{rows[-1]['raised_fp_rate']:.3f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    text = summary(rows, [a for a, _ in arms], args.title)
    (args.out / "summary.md").write_text(text)
    plot(rows, [a for a, _ in arms], args.out / "loco.png", args.title)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
