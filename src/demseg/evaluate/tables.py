"""Experiment tables: results.csv, summary.md (mean +- 95 % CI, the paper's Table 1 layout), label-noise tables."""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from pathlib import Path

from demseg.evaluate.metrics import mean_ci95
from demseg.io.atomic import write_text_atomic

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

def format_table(rows: list[dict]) -> str:
    """A plain-text IoU table for the terminal (mean over seeds, %)."""
    return summary_table(rows, "iou")
