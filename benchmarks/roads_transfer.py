"""Roads in a city the model never trained on: the route-planning block as an unseen city, in two halves.

The block (Amsterdam Nieuw-West, AHN + BGT road surfaces, 0.5 m, 600 x 400 px) is never trained
on here. It is cut at its middle column into a WEST half, on which recipes are CHOSEN, and an
EAST half, on which the chosen recipe is REPORTED (decided before any run was scored). Each run
predicts the whole block (``predict_scene``, the same windows and blending as ``demseg predict``);
its mask and its road network are then cut to each half and scored:

- pixel IoU of the road class (BGT carriageways, parking, cycle paths, tram beds: "all traffic
  areas"), nodata excluded;
- APLS of the predicted centreline network against demseg's centreline graph of the BGT mask
  (no official centrelines exist for this block), both cut to the half;
- network length, predicted over true.

Runs are grouped by their parent folder (one folder per recipe, one run per seed inside it) and
summarised as mean and 95 % CI (Student t over seeds).

Run: .venv/bin/python benchmarks/roads_transfer.py --runs RECIPE_DIR [RECIPE_DIR ...] [--name NAME]
Writes benchmarks/results/<NAME>.md and .json (default name roads_transfer), and for each recipe a
picture of its first run on the block: <NAME>_<RECIPE>.png (truth, prediction, errors).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import shapely
from bench_roads_real import BLOCK, ROAD, clipped, network, validation_area
from common import RESULTS, machine, save

from demseg.evaluate.metrics import mean_ci95 as mean_ci
from demseg.evaluate.topology import apls
from demseg.io.raster import GridSpec
from demseg.predict import predict_scene

HALVES = ("west", "east")  # west: choose; east: report
SPLIT_COLUMN = 300


def half_areas(grid: GridSpec) -> dict[str, tuple[slice, object]]:
    """Each half as (column slice, map polygon)."""
    left, top, size = grid.transform.c, grid.transform.f, grid.transform.a
    middle = left + SPLIT_COLUMN * size
    right, bottom = left + grid.width * size, top - grid.height * size
    return {"west": (slice(0, SPLIT_COLUMN), shapely.box(left, bottom, middle, top)),
            "east": (slice(SPLIT_COLUMN, grid.width), shapely.box(middle, bottom, right, top))}


def preview(path: Path, labels: np.ndarray, predicted: np.ndarray, title: str) -> None:
    """Truth, prediction and errors on the block, the halves' border drawn, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = (labels != 255) & (predicted != 255)
    truth, guess = labels == ROAD, predicted == 1
    errors = np.full(labels.shape + (3,), 1.0)
    errors[known & truth & guess] = (0.2, 0.6, 0.2)  # hit: green
    errors[known & ~truth & guess] = (0.85, 0.2, 0.2)  # invented: red
    errors[known & truth & ~guess] = (0.2, 0.35, 0.85)  # missed: blue
    errors[~known] = (0.8, 0.8, 0.8)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, image, name in zip(axes, (np.where(known, truth, np.nan), np.where(known, guess, np.nan), errors),
                               ("BGT road surfaces", "predicted road", "hit / invented / missed"), strict=True):
        ax.imshow(image, cmap="Greys" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.axvline(SPLIT_COLUMN - 0.5, color="orange", lw=2)
        ax.set_title(name)
        ax.set_axis_off()
    fig.suptitle(f"{title}: west half (left of the line) chooses, east half reports")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def predicted_mask(run: Path, folder: Path) -> np.ndarray:
    """The run's road mask of the whole block (1 road, 0 other, 255 nodata), as `demseg predict` makes it."""
    paths = predict_scene(run, BLOCK / "dsm_ground_plus_buildings.tif", folder / "pred", dtm_path=BLOCK / "dtm.tif",
                          progress=False)
    with rasterio.open(paths["mask"]) as src:
        return src.read(1)


def region_iou(run: Path, region_of: Path) -> float:
    """Road IoU of ``run``'s whole-block prediction inside the validation tiles of the block run ``region_of``
    (to set a model that never saw the block beside runs trained on the rest of it)."""
    from rasterio import features

    with rasterio.open(BLOCK / "labels.tif") as src:
        labels, transform = src.read(1), src.transform
    inside = features.rasterize([(validation_area(region_of), 1)], out_shape=labels.shape, transform=transform,
                                dtype="uint8").astype(bool)
    with tempfile.TemporaryDirectory() as tmp:
        predicted = predicted_mask(run, Path(tmp))
    known = inside & (labels != 255) & (predicted != 255)
    guess, truth = (predicted == 1) & known, (labels == ROAD) & known
    return float((guess & truth).sum() / max(1, (guess | truth).sum()))


def score_run(run: Path, preview_path: Path | None = None) -> dict:
    """Pixel IoU, APLS and network lengths of ``run`` on each half of the block."""
    with rasterio.open(BLOCK / "labels.tif") as src:
        labels = src.read(1)
        grid = GridSpec(src.crs, src.transform, src.width, src.height)
    truth_mask = np.where(labels == 255, 255, labels == ROAD).astype(np.uint8)
    row = {"run": str(run)}
    with tempfile.TemporaryDirectory() as tmp:
        predicted = predicted_mask(run, Path(tmp))
        if preview_path is not None:
            preview(preview_path, labels, predicted, f"{run.parent.name}/{run.name}")
        true_lines = network(truth_mask, grid, Path(tmp), "truth")
        predicted_lines = network((predicted == 1).astype(np.uint8), grid, Path(tmp), "pred")
    for half, (columns, area) in half_areas(grid).items():
        known = (labels[:, columns] != 255) & (predicted[:, columns] != 255)
        guess, truth = (predicted[:, columns] == 1) & known, (truth_mask[:, columns] == 1) & known
        true_half, predicted_half = clipped(true_lines, area), clipped(predicted_lines, area)
        true_km = sum(line.length for line in true_half) / 1e3
        predicted_km = sum(line.length for line in predicted_half) / 1e3
        row[half] = {"iou": float((guess & truth).sum() / max(1, (guess | truth).sum())),
                     "road_share": float(guess.sum() / max(1, known.sum())),
                     "true_km": true_km, "predicted_km": predicted_km,
                     "length_ratio": predicted_km / true_km if true_km else float("nan"),
                     **apls(true_half, predicted_half)}
    return row


def summary(recipe: str, rows: list[dict]) -> dict:
    out = {"recipe": recipe, "seeds": len(rows)}
    for half in HALVES:
        for key in ("iou", "apls", "length_ratio", "road_share"):
            values = [row[half][key] for row in rows]
            mean, ci = mean_ci(values)
            out[f"{half}_{key}"] = (mean, ci)
    return out


def _cell(value: tuple[float, float], scale: float = 1.0, digits: int = 1) -> str:
    mean, ci = value
    return f"{mean * scale:.{digits}f} ± {ci * scale:.{digits}f}" if ci == ci else f"{mean * scale:.{digits}f}"


def markdown(summaries: list[dict], cpu: str) -> str:
    lines = ["# Roads in a city never trained on: the route-planning block, west half (choose) / east half (report)",
             "", f"CPU: {cpu}. Mean ± 95 % CI over seeds (Student t).", "",
             "| recipe | seeds | IoU west | IoU east | APLS west | APLS east | length pred/true west | "
             "length pred/true east | road share east |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        lines.append(f"| {s['recipe']} | {s['seeds']} | {_cell(s['west_iou'], 100)} | {_cell(s['east_iou'], 100)} | "
                     f"{_cell(s['west_apls'], 1, 2)} | {_cell(s['east_apls'], 1, 2)} | "
                     f"{_cell(s['west_length_ratio'], 1, 2)} | {_cell(s['east_length_ratio'], 1, 2)} | "
                     f"{_cell(s['east_road_share'], 100)} |")
    lines += ["", "Truth: BGT road surfaces (all traffic areas) of the block; 16 % of the east half and 22 % of the "
                  "west half are road. Reference network: demseg's centreline graph of that mask."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True,
                        help="recipe folders, each holding one run folder per seed")
    parser.add_argument("--name", default="roads_transfer")
    parser.add_argument("--region-of", type=Path,
                        help="instead: score each run inside this block run's validation tiles only (IoU)")
    args = parser.parse_args()
    if args.region_of:
        for recipe_dir in args.runs:
            runs = sorted(p for p in recipe_dir.iterdir() if (p / "model.safetensors").exists())
            print(recipe_dir.name, [round(100 * region_iou(run, args.region_of), 1) for run in runs])
        return
    summaries, rows = [], {}
    for recipe_dir in args.runs:
        runs = sorted(p for p in recipe_dir.iterdir() if (p / "model.safetensors").exists())
        if not runs:
            raise SystemExit(f"no finished run in {recipe_dir}")
        picture = Path(args.name).with_name(f"{Path(args.name).name}_{recipe_dir.name}.png")
        rows[recipe_dir.name] = [score_run(run, RESULTS / picture if index == 0 else None)
                                 for index, run in enumerate(runs)]
        summaries.append(summary(recipe_dir.name, rows[recipe_dir.name]))
    save(args.name, {"summaries": summaries, "rows": rows}, markdown(summaries, f"{machine()['cpu']}, {machine()['threads']} threads"))


if __name__ == "__main__":
    main()
