"""Experiment plots: the label-budget curves, the label-noise curves and the preview images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from demseg.data.scene import IGNORE
from demseg.evaluate.metrics import mean_ci95
from demseg.evaluate.tables import group_results, noise_curves, scored_on_names
from demseg.io.atomic import atomic_path


def _mean_with_band(ax, xs: list, values: list[list[float]], label: str, alpha: float) -> None:
    """One line of means (in %) over ``xs`` with its 95 % CI band (none where a point has one value)."""
    stats = [mean_ci95(v) for v in values]
    means = np.array([100 * m for m, _ in stats])
    halves = np.array([0.0 if math.isnan(h) else 100 * h for _, h in stats])
    ax.plot(xs, means, marker="o", label=label)
    ax.fill_between(xs, means - halves, means + halves, alpha=alpha)

def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path

def plot_noise(rows: list[dict], path: Path, metric: str = "iou", scored_on: str = "validation") -> Path | None:
    """noise.png: metric against the amount of each kind of label noise, one line per model (95 % CI bands).

    Returns None (and writes nothing) when no run has one kind of label noise.
    """
    curves = noise_curves(rows, metric, scored_on)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {"drop": "share of instances dropped", "shift": "largest shift, m", "width": "largest width error, m"}
    panels = sorted({(task, kind) for task, _, _, kind in curves})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), squeeze=False)
    budgets = {key[1] for key in curves}
    for ax, (task, kind) in zip(axes[0], panels, strict=True):
        for (row_task, budget, base, row_kind), amounts in curves.items():
            if (row_task, row_kind) != (task, kind):
                continue
            xs = sorted(amounts)
            _mean_with_band(ax, xs, [list(amounts[x].values()) for x in xs],
                            base if len(budgets) == 1 else f"{base}, {budget} tiles", alpha=0.15)
        ax.set_xlabel(units.get(kind, kind))
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.set_title(f"{task}: label noise '{kind}'")
        ax.set_ylim(0, 100)  # a CI band of two seeds can reach far past the possible scores
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save_figure(fig, path)

def plot_curves(rows: list[dict], path: Path, metric: str = "iou") -> Path:
    """curves.png: metric vs training tiles per model and task, with 95 % CI bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(task, name) for name in scored_on_names(rows)
              for task in sorted({task for task, _ in group_results(rows, metric, name)})]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (task, name) in zip(axes[0], panels, strict=True):
        grouped = group_results(rows, metric, name)
        for (row_task, label), cells in sorted(grouped.items()):
            if row_task != task:
                continue
            budgets = sorted(cells)
            _mean_with_band(ax, budgets, [cells[b] for b in budgets], label, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("training tiles")
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.set_title(task if name == "validation" else f"{task}, scored on {name}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save_figure(fig, path)

def write_preview(path: Path, hillshades: list[np.ndarray], targets: list[np.ndarray],
                  predictions: list[np.ndarray], title: str) -> Path:
    """A PNG grid, one row per tile: DEM hillshade, truth, prediction, errors (red FP, blue FN)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(hillshades)
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n), squeeze=False)
    for row, (shade, target, prediction) in enumerate(zip(hillshades, targets, predictions, strict=True)):
        known = target != IGNORE
        errors = np.zeros(target.shape + (3,), np.float32)
        errors[(prediction == 1) & (target == 1)] = (1, 1, 1)
        errors[(prediction == 1) & (target == 0)] = (1, 0.2, 0.2)
        errors[(prediction == 0) & (target == 1)] = (0.2, 0.4, 1)
        errors[~known] = (0.4, 0.4, 0.4)
        panels = [(shade, "gray", "DEM hillshade"), (np.where(known, target, 0.5), "gray", "truth"),
                  (prediction, "gray", "prediction"), (errors, None, "errors: red FP, blue FN")]
        for col, (image, cmap, name) in enumerate(panels):
            axes[row, col].imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


# ------------------------------------------------------------------ experiment folders
