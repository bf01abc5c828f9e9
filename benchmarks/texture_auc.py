"""How well each texture channel tells buildings from other raised objects (trees, mostly), per city.

For every labelled pixel more than 2.5 m above ground (the DTM) that is building or background,
each channel's value is a score; the AUC is the probability that a random building pixel scores
"more building-like" than a random raised non-building pixel (0.5: no better than chance).
Every city is first resampled to 0.5 m, as ``--score-on`` does for a model trained on Amsterdam.
Roughness and planarity are computed at three window sizes: the window was chosen on the
selection cities (France, Seville) only; Washington DC is a report city (the route-planning
block has no trees, so no raised non-building pixel, and is left out).

Run: .venv/bin/python benchmarks/texture_auc.py   (about 20 s; needs ../shared/data)
Writes benchmarks/results/texture_auc.md and texture_auc.json.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from common import RESULTS, machine

from demseg.data import normalise
from demseg.data.resample import resample_scene
from demseg.data.scene import load_scenes
from demseg.data.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CITIES = {"amsterdam": "training", "france": "selection", "seville": "selection", "washington_dc": "report"}
WINDOWS_M = (1.5, 3.0, 5.0)
SAMPLE = 50_000
RAISED_M = 2.5


def auc(building: np.ndarray, other: np.ndarray) -> float:
    """P(building score > other score), ties counted half (Mann-Whitney U over ranks)."""
    values = np.concatenate([building, other])
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # mid-ranks for ties
    n = len(building)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(other)))


def features(elevation: np.ndarray, valid: np.ndarray, pixel_size_m: float) -> dict[str, np.ndarray]:
    """Each channel signed so that higher means more building-like."""
    out = {}
    for window_m in WINDOWS_M:
        residual, total = normalise.plane_residual_std(elevation, valid, pixel_size_m, window_m)
        out[f"roughness {window_m} m"] = -residual
        out[f"planarity {window_m} m"] = 1.0 - residual / (total + 0.1)
    out["curvature (abs)"] = -np.abs(normalise.CHANNELS["curvature"](elevation=elevation, valid=valid,
                                                                     pixel_size_m=pixel_size_m))
    out["slope"] = -normalise.CHANNELS["slope"](elevation=elevation, valid=valid, pixel_size_m=pixel_size_m)
    return out


def city_auc(name: str, rng: np.random.Generator) -> dict:
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    building, other = {}, {}
    for scene in load_scenes(spec, ["buildings"]):
        scene = resample_scene(scene, 0.5)
        valid = scene.valid_mask
        height = normalise.height_above_ground(scene.dem.elevation, valid, scene.dtm, 0.5)
        target = scene.targets["buildings"]
        raised = valid & (height > RAISED_M)
        for key, values in features(scene.dem.elevation, valid, 0.5).items():
            building.setdefault(key, []).append(values[raised & (target == 1)])
            other.setdefault(key, []).append(values[raised & (target == 0)])
    row = {"role": CITIES[name]}
    for key in building:
        b, o = np.concatenate(building[key]), np.concatenate(other[key])
        row["pixels"] = {"building": int(len(b)), "raised_other": int(len(o))}
        b = rng.choice(b, min(len(b), SAMPLE), replace=False)
        o = rng.choice(o, min(len(o), SAMPLE), replace=False)
        row[key] = round(auc(b, o), 3)
    return row


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    rng = np.random.default_rng(0)
    results = {name: city_auc(name, rng) for name in CITIES}
    keys = [k for k in next(iter(results.values())) if k not in ("role", "pixels")]
    lines = ["# Texture channels: buildings against other raised pixels, AUC per city", "",
             "`.venv/bin/python benchmarks/texture_auc.py`; every city resampled to 0.5 m; pixels more than "
             f"{RAISED_M} m above the DTM; {SAMPLE:,} pixels sampled per class (seed 0).", "",
             "| city | role | building px | raised other px | " + " | ".join(keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for name, row in results.items():
        lines.append(f"| {name} | {row['role']} | {row['pixels']['building']:,} | {row['pixels']['raised_other']:,} | "
                     + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    selection = [row for row in results.values() if row["role"] == "selection"]
    lines += ["", "Mean over the selection cities (France, Seville), the only ones the window was chosen on:", ""]
    lines += [f"- {k}: {np.mean([row[k] for row in selection]):.3f}" for k in keys if k.startswith("roughness")]
    lines += ["", f"Machine: {machine()['cpu']}"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "texture_auc.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "texture_auc.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
