"""Experiment outputs: results.csv, summary.md (mean +- 95 % CI, the paper's Table 1 layout), curves.png, previews."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from demseg.data.scene import IGNORE
from demseg.errors import DemsegError
from demseg.evaluate.metrics import mean_ci95
from demseg.io.atomic import atomic_path, write_text_atomic
from demseg.models.registry import MODELS, uses_backbone
from demseg.runs.config import TrainConfig

RESULT_COLUMNS = ["task", "model", "backbone_weights", "train_tiles", "seed", "iters", "best_iter", "iou", "f1",
                  "precision", "recall", "train_seconds", "scored_on"]
EXTRA_COLUMNS = ["label", "finetune", "init", "label_noise", "boundary_iou", "object_f1", "completeness", "correctness", "val_tiles",
                 "arch", "recipe", "tp", "fp", "fn", "raised_fp_rate", "raised_fp", "raised_negatives"]


def write_results_csv(rows: list[dict], path: Path) -> Path:
    """results.csv: the required columns first, then the extra metrics."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS + EXTRA_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["task"], r.get("scored_on", "validation"), label_of(r),
                                           r["train_tiles"], r["seed"])):
        writer.writerow({k: _fmt(row.get(k, "")) for k in RESULT_COLUMNS + EXTRA_COLUMNS})
    return write_text_atomic(path, buffer.getvalue())


def _fmt(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return value


def label_of(row: dict) -> str:
    """The compared model of a row: its name, backbone weights and variant (fine-tuning, init)."""
    if row.get("label"):
        return row["label"]
    return row["model"] if row["backbone_weights"] in ("-", "") else f"{row['model']}@{row['backbone_weights']}"


def scored_on_names(rows: list[dict]) -> list[str]:
    """The datasets rows are scored on: validation first, pooled last."""
    names = sorted({r.get("scored_on", "validation") for r in rows})
    return sorted(names, key=lambda n: (n != "validation", n == "pooled", n))


def group_results(rows: list[dict], metric: str = "iou", scored_on: str = "validation"
                  ) -> dict[tuple[str, str], dict[int, list[float]]]:
    """{(task, model label): {train_tiles: [metric per seed]}} for the rows scored on one dataset."""
    grouped: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = row.get(metric)
        if row.get("scored_on", "validation") == scored_on and value not in ("", None) and not math.isnan(float(value)):
            grouped[(row["task"], label_of(row))][int(row["train_tiles"])].append(float(value))
    return grouped


def summary_table(rows: list[dict], metric: str = "iou", scored_on: str = "validation") -> str:
    """A markdown table: one row per training budget, one column per (model, task), mean +- CI in %."""
    grouped = group_results(rows, metric, scored_on)
    columns = sorted(grouped, key=lambda key: (key[0], not key[1].startswith("unet"), key[1]))
    budgets = sorted({b for cells in grouped.values() for b in cells})
    header = "| train tiles | " + " | ".join(f"{label} {task}" for task, label in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for budget in budgets:
        cells = []
        for key in columns:
            values = grouped[key].get(budget, [])
            mean, half = mean_ci95(values)
            if not values:
                cells.append("-")
            elif math.isnan(half):
                cells.append(f"{100 * mean:.1f} (n={len(values)})")
            else:
                cells.append(f"{100 * mean:.1f} ± {100 * half:.1f} (n={len(values)})")
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(rows: list[dict], reference: str, metric: str = "iou", scored_on: str = "validation") -> str:
    """A markdown table of each model minus ``reference`` (paired by task, budget and seed), mean ± 95 % CI, points."""
    by_key: dict[tuple, dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row.get("scored_on", "validation") == scored_on and row.get(metric) not in ("", None):
            by_key[(row["task"], int(row["train_tiles"]), int(row["seed"]))][label_of(row)] = float(row[metric])
    differences: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for (task, budget, _), values in by_key.items():
        if reference in values:
            for label, value in values.items():
                if label != reference:
                    differences[(task, budget, label)].append(value - values[reference])
    if not differences:
        return ""
    lines = [f"| task | train tiles | model | {metric.upper()} minus {reference}, points | CI excludes 0 |",
             "|---|---|---|---|---|"]
    for (task, budget, label), values in sorted(differences.items()):
        mean, half = mean_ci95(values)
        excludes = "-" if math.isnan(half) else ("yes" if abs(mean) > half else "no")
        interval = f" ± {100 * half:.1f}" if not math.isnan(half) else ""
        lines.append(f"| {task} | {budget} | {label} | {100 * mean:+.1f}{interval} (n={len(values)}) | {excludes} |")
    return "\n".join(lines)


def write_summary(rows: list[dict], path: Path, title: str, notes: list[str], reference: str = "unet") -> Path:
    """summary.md: per dataset scored on, IoU (mean ± 95 % CI over seeds, %), F1 and differences to ``reference``."""
    text = [f"# {title}", ""]
    for name in scored_on_names(rows):
        where = "the validation tiles" if name == "validation" else (
            "all labelled tiles of the other datasets together" if name == "pooled" else f"all labelled tiles of {name}")
        text += [f"## Scored on {name}", "", f"IoU of the target class on {where}, % (mean ± 95 % CI over seeds):",
                 "", summary_table(rows, "iou", name), "", "F1 of the target class, %:", "",
                 summary_table(rows, "f1", name), ""]
        differences = paired_differences(rows, reference, "iou", name)
        if differences:
            text += [f"Paired by seed, each model minus {reference}:", "", differences, ""]
        if group_results(rows, "raised_fp_rate", name):
            text += ["Raised false-positive rate, %: the share of non-target pixels more than 2.5 m above ground "
                     "(trees, mostly) marked as the target (lower is better):", "",
                     summary_table(rows, "raised_fp_rate", name), ""]
    noise = noise_table(rows, "iou")
    if noise:
        text += ["## Label noise", "", "Validation IoU, % (mean ± 95 % CI over seeds), of runs trained on labels with one "
                 "kind of noise (`--label-noise`), beside the same model's clean runs; the loss is paired by seed "
                 "and averaged over the noisy settings (lower: degrades less). Curves: noise.png.", "", noise, ""]
    table2 = noisy_budget_table(rows, "iou")
    if table2:
        text += ["## Many noisy tiles against few clean ones (the paper's Table 2 shape)", "",
                 "Validation IoU, % (mean ± 95 % CI over seeds): clean runs at each budget beside runs whose "
                 "training labels carry several kinds of noise at once.", "", table2, ""]
    text += [f"- {note}" for note in notes]
    return write_text_atomic(path, "\n".join(text) + "\n")


NOISE_SUFFIX = re.compile(r"\+noise-((?:[a-z]+[0-9.]+-?)+)$")
NOISE_PART = re.compile(r"([a-z]+)([0-9.]+)")


def noise_of(row: dict) -> tuple[str, dict[str, float]]:
    """A row's compared model without its label noise, and the noise as {kind: amount}.

    The noise is read from the row's own ``label_noise`` setting (e.g. ``drop=0.3,shift=1``); rows
    of folders written before it was recorded fall back to the suffix of their label.
    """
    label = label_of(row)
    setting = row.get("label_noise")
    if setting is None or (setting == "" and NOISE_SUFFIX.search(label)):  # an older row: only its label says
        return split_noise(label)
    from demseg.data.noise import parse_label_noise

    noise = parse_label_noise(setting)
    match = NOISE_SUFFIX.search(label)
    return (label[:match.start()] if match else label), noise


def split_noise(label: str) -> tuple[str, dict[str, float]]:
    """A run label as (the label without label noise, {kind: amount}); e.g. unet+noise-drop0.3 -> (unet, {drop: 0.3}).

    Only for rows written before the setting was recorded as data (:func:`noise_of`).
    """
    match = NOISE_SUFFIX.search(label)
    if not match:
        return label, {}
    return label[:match.start()], {kind: float(amount.rstrip(".")) for kind, amount in NOISE_PART.findall(match[1])}


def noise_curves(rows: list[dict], metric: str = "iou", scored_on: str = "validation"
                 ) -> dict[tuple[str, int, str, str], dict[float, dict[int, float]]]:
    """{(task, train tiles, model, noise kind): {amount: {seed: metric}}} for runs with one kind of label noise.

    The clean runs of the same model, task and budget are amount 0 of every kind measured for them.
    Runs with several kinds at once (the Table 2 shape) are left out: they are not on a one-kind curve.
    """
    clean: dict[tuple[str, int, str], dict[int, float]] = defaultdict(dict)
    noisy: dict[tuple[str, int, str, str], dict[float, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        value = row.get(metric)
        if row.get("scored_on", "validation") != scored_on or value in ("", None) or math.isnan(float(value)):
            continue
        base, noise = noise_of(row)
        key = (row["task"], int(row["train_tiles"]), base)
        if not noise:
            clean[key][int(row["seed"])] = float(value)
        elif len(noise) == 1:
            (kind, amount), = noise.items()
            noisy[(*key, kind)][amount][int(row["seed"])] = float(value)
    for (task, budget, base, _kind), amounts in noisy.items():
        if clean.get((task, budget, base)):
            amounts[0.0] = clean[(task, budget, base)]
    return {key: dict(sorted(amounts.items())) for key, amounts in sorted(noisy.items())}


def noise_table(rows: list[dict], metric: str = "iou", scored_on: str = "validation") -> str:
    """Markdown: per task, budget and model, the metric at each noise setting and its loss to clean, paired by seed."""
    curves = noise_curves(rows, metric, scored_on)
    settings = sorted({(kind, amount) for (*_, kind), amounts in curves.items() for amount in amounts if amount})
    if not settings:
        return ""
    models = sorted({key[:3] for key in curves})
    header = ("| task | train tiles | model | clean | " + " | ".join(f"{k} {a:g}" for k, a in settings)
              + " | mean loss to clean, points |")
    lines = [header, "|" + "---|" * (len(settings) + 5)]
    for task, budget, base in models:
        cells, losses = [], []
        clean = next((amounts[0.0] for key, amounts in curves.items() if key[:3] == (task, budget, base)
                      and 0.0 in amounts), {})
        cells.append(_cell(list(clean.values())))
        for kind, amount in settings:
            values = curves.get((task, budget, base, kind), {}).get(amount, {})
            cells.append(_cell(list(values.values())))
            losses += [clean[seed] - value for seed, value in values.items() if seed in clean]
        mean, half = mean_ci95(losses)
        loss = "-" if not losses else (f"{100 * mean:.1f}" + ("" if math.isnan(half) else f" ± {100 * half:.1f}")
                                       + f" (n={len(losses)})")
        lines.append(f"| {task} | {budget} | {base} | " + " | ".join(cells) + f" | {loss} |")
    return "\n".join(lines)


def noisy_budget_table(rows: list[dict], metric: str = "iou", scored_on: str = "validation") -> str:
    """Markdown, the paper's Table 2 shape: per model, clean runs at each budget beside runs on labels with
    several kinds of noise at once (e.g. many noisy tiles against few clean ones); empty without such runs."""
    cells: dict[tuple[str, str], dict[tuple[int, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    mixed = False
    for row in rows:
        value = row.get(metric)
        if row.get("scored_on", "validation") != scored_on or value in ("", None) or math.isnan(float(value)):
            continue
        base, noise = noise_of(row)
        if len(noise) == 1:
            continue
        mixed |= len(noise) > 1
        setting = "clean" if not noise else ", ".join(f"{k} {v:g}" for k, v in noise.items())
        cells[(row["task"], base)][(int(row["train_tiles"]), setting)].append(float(value))
    if not mixed:
        return ""
    columns = sorted({key for table in cells.values() for key in table}, key=lambda c: (c[0], c[1] != "clean", c[1]))
    lines = ["| task | model | " + " | ".join(f"{n} tiles, {setting}" for n, setting in columns) + " |",
             "|" + "---|" * (len(columns) + 2)]
    for (task, base), table in sorted(cells.items()):
        lines.append(f"| {task} | {base} | " + " | ".join(_cell(table.get(c, [])) for c in columns) + " |")
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, half = mean_ci95(values)
    return f"{100 * mean:.1f} (n={len(values)})" if math.isnan(half) else \
        f"{100 * mean:.1f} ± {100 * half:.1f} (n={len(values)})"


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


def collect_results(out: Path) -> list[dict]:
    """Every finished run's rows under ``out/runs``: its validation scores, then one row per other dataset.

    Each row carries ``scored_on`` ("validation" or the dataset's name); with two or more other
    datasets a "pooled" row sums their pixel counts (IoU over all their tiles together).
    """
    rows = []
    for path in sorted((out / "runs").glob("*/metrics.json")):
        record = read_run_record(path)
        elsewhere = record.pop("scored_on", {}) or {}
        rows.append({**record, "scored_on": "validation"})
        for name, scores in elsewhere.items():
            rows.append({**record, **scores, "scored_on": name})
        if len(elsewhere) > 1:
            rows.append({**record, **pooled_scores(list(elsewhere.values())), "scored_on": "pooled"})
    return rows


_TEXT_FIELDS = ("task", "model", "label", "backbone_weights", "finetune", "init", "arch", "recipe")
_COUNT_FIELDS = ("train_tiles", "seed")
_SCORE_FIELDS = ("iou", "f1", "precision", "recall", "boundary_iou", "object_f1", "object_precision", "object_recall",
                 "completeness", "correctness", "tp", "fp", "fn", "raised_fp", "raised_negatives", "raised_fp_rate",
                 "val_tiles", "scored_pixels", "iters", "best_iter", "train_seconds")


def read_run_record(path: Path) -> dict:
    """A run's metrics.json, checked: a file that is not JSON or holds the wrong types is one error naming it."""
    redo = f"delete {path.parent} and rerun the experiment to redo that run"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DemsegError(f"run results {path} are unreadable or not JSON; {redo}") from exc
    problem = _record_problem(record)
    if problem:
        raise DemsegError(f"run results {path} are not as demseg writes them ({problem}); {redo}")
    return record


def _record_problem(record) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    needed = ("task", "model") + (() if record.get("label") else ("backbone_weights",))
    for name in _TEXT_FIELDS:
        if name in needed and name not in record:
            return f"no {name}"
        if name in record and not isinstance(record[name], str):
            return f"{name} is {record[name]!r}, not text"
    for name in _COUNT_FIELDS:
        if not isinstance(record.get(name), int) or isinstance(record.get(name), bool):
            return f"{name} is {record.get(name)!r}, not a whole number"
    elsewhere = record.get("scored_on") or {}
    if not isinstance(elsewhere, dict):
        return "scored_on is not a mapping"
    for name, scores in elsewhere.items():
        problem = (f"scored_on.{name} is not a mapping" if not isinstance(scores, dict)
                   else _scores_problem(scores, f"scored_on.{name}."))
        if problem:
            return problem
    return _scores_problem(record)


def _scores_problem(scores: dict, prefix: str = "") -> str | None:
    for name in _SCORE_FIELDS:
        value = scores.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{prefix}{name} is {value!r}, not a number"
    return None


def pooled_scores(scores: list[dict]) -> dict:
    """Pixel IoU, precision, recall and F1 of several datasets' summed tp/fp/fn counts."""
    tp, fp, fn, raised_fp, raised_negatives = (sum(s.get(k, 0) for s in scores)
                                               for k in ("tp", "fp", "fn", "raised_fp", "raised_negatives"))
    pixels = sum(s.get("scored_pixels", 0) for s in scores)
    ratio = lambda a, b: float(a / b) if b else float("nan")  # noqa: E731 - a local shorthand
    return {"iou": ratio(tp, tp + fp + fn), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn), "tp": tp, "fp": fp, "fn": fn,
            "raised_fp": raised_fp, "raised_negatives": raised_negatives,
            "raised_fp_rate": ratio(raised_fp, raised_negatives),
            "val_tiles": sum(s.get("val_tiles", 0) for s in scores), "scored_pixels": pixels}


# what legitimately differs between the runs of one label: the grid's axes and each arm's own settings
_GRID_FIELDS = {"model", "backbone_weights", "train_tiles", "seed", "pixel_size_m", "task"}
# settings that do not touch a model of the other family (a UNet has no head; a ViT model takes no crops)
_BACKBONE_ONLY = {"arch", "tap_blocks", "head_width", "neck_width", "aux_head", "detail_width", "finetune",
                  "layer_decay", "backbone_dtype", "cached", "lp_fraction", "cache_dtype"}
_UNET_ONLY = {"unet_width", "crop_px"}


def _shared_settings(folder: Path) -> dict | None:
    """The training settings an experiment folder's runs share (defaults for fields it predates); None if unknown."""
    path = folder / "experiment.json"
    if not path.exists():
        return None
    try:
        base = json.loads(path.read_text()).get("base", {})
    except (ValueError, AttributeError) as exc:
        raise DemsegError(f"unreadable experiment settings: {path} ({exc})") from None
    defaults = TrainConfig().model_dump(mode="json")
    empty = lambda value: None if value in (None, "", []) else value  # noqa: E731 - older folders wrote None
    return {name: empty(base.get(name, defaults[name])) for name in TrainConfig.model_fields
            if name not in _GRID_FIELDS}


def label_apart(parts: list[tuple[Path, list[dict]]]) -> None:
    """Where one model label comes from experiments with different settings, add them to the label.

    Labels name a model's variant (recipe, init, mix...), not its schedule: two folders run with
    ``--iters 100`` and ``--iters 300`` would otherwise merge into one cell. Their rows become
    e.g. ``unet+crop-128 [iters=100]`` and ``unet+crop-128 [iters=300]``. Only settings that touch
    the label's model count (a UNet's label is not split by head width); folders without their
    experiment.json are left as they are.
    """
    settings = {folder: _shared_settings(folder) for folder, _ in parts}
    folders_of, model_of = defaultdict(list), {}
    for folder, rows in parts:
        for row in rows:
            model_of[label_of(row)] = row.get("model", "")
        if settings[folder] is not None:
            for label in sorted({label_of(row) for row in rows}):
                folders_of[label].append(folder)
    for label, folders in folders_of.items():
        model = model_of[label]
        ignored = set() if model not in MODELS else _UNET_ONLY if uses_backbone(model) else _BACKBONE_ONLY
        fields = sorted(set(settings[folders[0]]) - ignored)
        differing = [name for name in fields
                     if len({json.dumps(settings[folder][name], sort_keys=True) for folder in folders}) > 1]
        if not differing:
            continue
        for folder, rows in parts:
            if folder in folders:
                suffix = ", ".join(f"{name}={settings[folder][name]}" for name in differing)
                for row in rows:
                    if label_of(row) == label:
                        row["label"] = f"{label} [{suffix}]"


REPORT_FILES = {"results.csv", "summary.md", "curves.png", "noise.png"}


def combine_experiments(folders: list[str | Path], out: str | Path, title: str = "demseg experiments",
                        reference: str | None = None, overwrite: bool = False) -> list[dict]:
    """Merge the runs of several experiment folders into one results.csv, summary.md and curves.png in ``out``.

    ``reference`` is the model label the others are compared with: one the experiments ran (None:
    unet, where they ran one). An experiment folder named twice counts once. ``out`` may not be or lie in an experiment folder;
    an earlier report there is replaced only with ``overwrite``.
    """
    from demseg.io.folders import MARKER, check_output_path, out_dir

    parts = []
    unique = list(dict.fromkeys(Path(folder).resolve() for folder in folders))
    for folder in unique:
        if not (folder / "runs").is_dir():
            raise DemsegError(f"not an experiment folder (no runs/): {folder}")
        parts.append((folder, collect_results(folder)))
    label_apart(parts)
    rows = [row for _, folder_rows in parts for row in folder_rows]
    if not rows:
        raise DemsegError("the experiment folders hold no finished run")
    labels = {label_of(row) for row in rows}
    named, reference = reference is not None, reference or "unet"
    if reference not in labels and (split := sorted(x for x in labels if x.startswith(f"{reference} ["))):
        raise DemsegError(f"--reference {reference} was run with different settings; name one: {'; '.join(split)}")
    if named and reference not in labels:
        raise DemsegError(f"--reference {reference} is none of the models these experiments ran: "
                          f"{', '.join(sorted(labels))}")
    out = Path(out)
    check_output_path(out, unique)
    if out.is_dir() and (out / "runs").exists():
        raise DemsegError(f"--out {out} is an experiment folder: give a new folder for the report")
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if names and not (out / MARKER).exists() and {"results.csv", "summary.md"} <= names <= REPORT_FILES:
        (out / MARKER).write_text("report")  # a report of an earlier demseg: its own files only
    with out_dir(out, overwrite, finished=lambda folder: (folder / "results.csv").exists(), command="report",
                 inputs=unique):
        write_results_csv(rows, out / "results.csv")
        write_summary(rows, out / "summary.md", title, [f"experiments: {', '.join(str(f) for f in folders)}",
                                                        "95 % CI: Student t over seeds."], reference)
        plot_curves(rows, out / "curves.png")
        plot_noise(rows, out / "noise.png")
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text IoU table for the terminal (mean over seeds, %)."""
    return summary_table(rows, "iou")
