"""Experiment outputs: the runs' records read and checked, and experiments merged into one report.

The tables live in :mod:`demseg.evaluate.tables`, the plots in :mod:`demseg.evaluate.plots`;
their names are kept importable from here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from demseg.errors import DemsegError
from demseg.evaluate.plots import plot_curves, plot_noise, write_preview  # noqa: F401 (re-exported)
from demseg.evaluate.tables import (  # noqa: F401 (re-exported)
    EXTRA_COLUMNS,
    RESULT_COLUMNS,
    format_table,
    group_results,
    label_of,
    noise_curves,
    noise_of,
    noise_table,
    noisy_budget_table,
    paired_differences,
    scored_on_names,
    split_noise,
    summary_table,
    write_results_csv,
    write_summary,
)
from demseg.models.registry import MODELS, uses_backbone
from demseg.runs.config import TrainConfig


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
