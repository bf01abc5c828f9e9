"""Schedules by measurement: best validation IoU against the number of iterations, per model, at one budget.

Each schedule is a separate run (warm-up and polynomial decay are stretched to its length), not a
point on one long run's curve. Writes benchmarks/results/<name>.md/.json and a plot.
Run: .venv/bin/python benchmarks/bench_schedule.py examples/amsterdam.yaml --iters 150,500,1500,3000 \\
     --models unet,mae-upernet,mae-detail --backbone-weights dem-tiny --seeds 1 --out /tmp/schedule
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from common import RESULTS, save

from demseg.evaluate.metrics import mean_ci95
from demseg.evaluate.report import label_of
from demseg.runs.config import TrainConfig
from demseg.train.experiment import ExperimentConfig, run_experiment


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--iters", default="150,500,1500,3000")
    parser.add_argument("--models", default="unet,mae-upernet,mae-detail")
    parser.add_argument("--backbone-weights", default="dem-tiny")
    parser.add_argument("--task", default="buildings")
    parser.add_argument("--train-tiles", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--score-on", default="", help="other specs, comma-separated (scored as in experiment)")
    parser.add_argument("--extra", default="{}", help="JSON of further TrainConfig fields, e.g. '{\"finetune\": \"top-4\"}'")
    parser.add_argument("--out", required=True, help="folder for the experiment runs (resumable)")
    parser.add_argument("--name", default="schedule")
    parser.add_argument("--collect", action="store_true",
                        help="only tabulate the results.csv already in --out (runs made by an earlier version)")
    args = parser.parse_args()
    rows, seconds = [], {}
    for iters in map(int, args.iters.split(",")):
        base = TrainConfig(iters=iters, val_every=max(10, iters // 10), **({"lr": args.lr} if args.lr else {}),
                           **json.loads(args.extra))
        config = ExperimentConfig(tasks=[args.task], models=args.models.split(","),
                                  backbone_weights=args.backbone_weights.split(","), train_tiles=[args.train_tiles],
                                  seeds=args.seeds, base=base, preview_tiles=0,
                                  score_on=[s for s in args.score_on.split(",") if s])
        started = time.perf_counter()
        folder = Path(args.out) / f"iters{iters:05d}"
        if args.collect:
            with open(folder / "results.csv", newline="") as handle:
                found = list(csv.DictReader(handle))
        else:
            found = run_experiment(args.spec, config, folder, progress=False)
        seconds[iters] = time.perf_counter() - started
        rows += [{**r, "schedule": iters} for r in found if r["scored_on"] in ("validation", "pooled")]
    def column(row: dict) -> str:
        return label_of(row) + ("" if row["scored_on"] == "validation" else f" [{row['scored_on']}]")

    labels = sorted({column(r) for r in rows}, key=lambda c: ("[" in c, c))
    schedules = sorted({r["schedule"] for r in rows})
    lines = [f"Best validation IoU (%) of {args.task} at {args.train_tiles} training tiles, {args.seeds} seed(s), "
             f"by schedule length ({args.spec}); [pooled]: the same runs scored on every labelled pixel of "
             f"{args.score_on or '-'}; (s): training seconds per run:", "",
             "| iterations | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    table = {}
    for iters in schedules:
        cells = []
        for label in labels:
            chosen = [r for r in rows if r["schedule"] == iters and column(r) == label]
            values = [float(r["iou"]) for r in chosen]
            mean, half = mean_ci95(values)
            seconds_per_run = sum(float(r["train_seconds"]) for r in chosen) / max(1, len(values))
            table[f"{iters}/{label}"] = {"iou": mean, "ci95": half, "seconds": seconds_per_run}
            cells.append("-" if not values else f"{100 * mean:.1f}" + ("" if half != half else f" ± {100 * half:.1f}")
                         + f" ({seconds_per_run:.0f} s)")
        lines.append(f"| {iters} | " + " | ".join(cells) + " |")
    _plot(table, labels, schedules, RESULTS / f"{args.name}.png")
    save(args.name, {"spec": args.spec, "table": table, "seconds": seconds,
                     "runs": [{k: r.get(k) for k in ("schedule", "model", "backbone_weights", "finetune", "scored_on", "seed",
                                               "iou", "best_iter")}
                              for r in rows]}, "\n".join(lines))


def _plot(table: dict, labels: list[str], schedules: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label in labels:
        ax.plot(schedules, [100 * table[f"{s}/{label}"]["iou"] for s in schedules], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("iterations (schedule length)")
    ax.set_ylabel("best validation IoU (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(json.dumps({"plot": str(path)}))


if __name__ == "__main__":
    main()
