"""Segmentation metrics for one target class, over labelled valid pixels only.

Pixel metrics (IoU, precision, recall, F1) accumulate confusion counts over tiles; boundary
IoU compares thin bands along object edges; object F1 matches building instances at IoU >= 0.5;
road completeness/correctness count pixels within a buffer of the other mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from demseg.data.scene import IGNORE


@dataclass
class ConfusionCounts:
    """True/false positive/negative pixel counts of the target class."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Count one tile: ``prediction`` 0/1, ``target`` 0/1/255 (255 ignored)."""
        known = target != IGNORE
        pred = (prediction == 1) & known
        truth = (target == 1) & known
        self.tp += int((pred & truth).sum())
        self.fp += int((pred & ~truth).sum())
        self.fn += int((~pred & truth).sum())
        self.tn += int((~pred & ~truth & known).sum())

    def scores(self) -> dict[str, float]:
        """IoU, precision, recall and F1 as fractions (NaN where undefined)."""
        tp, fp, fn = self.tp, self.fp, self.fn
        return {
            "iou": _ratio(tp, tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


def boundary_band(mask: np.ndarray, width_px: int) -> np.ndarray:
    """Pixels of ``mask`` within ``width_px`` of its edge."""
    eroded = ndimage.binary_erosion(mask, iterations=width_px, border_value=1)
    return mask & ~eroded


def object_matches(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray,
                   iou_threshold: float = 0.5, min_area_px: int = 10) -> tuple[int, int, int]:
    """(matched, predicted objects, true objects): connected components matched one-to-one at IoU >= threshold."""
    pred_labels, n_pred = ndimage.label(prediction & valid)
    true_labels, n_true = ndimage.label(target & valid)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    true_sizes = np.bincount(true_labels.ravel(), minlength=n_true + 1)
    keep_pred = {i for i in range(1, n_pred + 1) if pred_sizes[i] >= min_area_px}
    keep_true = {i for i in range(1, n_true + 1) if true_sizes[i] >= min_area_px}
    both = (pred_labels > 0) & (true_labels > 0)
    pairs, overlap = np.unique(np.stack([pred_labels[both], true_labels[both]]), axis=1, return_counts=True)
    matched_pred, matched_true = set(), set()
    # IoU > 0.5 pairs are unique per object, so a greedy pass by overlap is exact
    for (p, t), inter in sorted(zip(pairs.T.tolist(), overlap.tolist(), strict=True), key=lambda x: -x[1]):
        if p in matched_pred or t in matched_true or p not in keep_pred or t not in keep_true:
            continue
        union = pred_sizes[p] + true_sizes[t] - inter
        if inter / union >= iou_threshold:
            matched_pred.add(p)
            matched_true.add(t)
    return len(matched_pred), len(keep_pred), len(keep_true)


@dataclass
class SegmentationScorer:
    """Accumulates every metric over tiles of one task."""

    task: str
    pixel_size_m: float
    boundary_width_m: float = 1.5
    road_buffer_m: float = 2.0
    pixels: ConfusionCounts = field(default_factory=ConfusionCounts)
    boundary: ConfusionCounts = field(default_factory=ConfusionCounts)
    objects: list[int] = field(default_factory=lambda: [0, 0, 0])
    road: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def add(self, prediction: np.ndarray, target: np.ndarray, pixel_size_m: float | None = None) -> None:
        """Score one tile (``prediction`` 0/1, ``target`` 0/1/255), at its own pixel size if given."""
        pixel_size_m = pixel_size_m or self.pixel_size_m
        self.pixels.add(prediction, target)
        known = target != IGNORE
        pred = (prediction == 1) & known
        truth = target == 1
        width_px = max(1, int(round(self.boundary_width_m / pixel_size_m)))
        band = boundary_band(pred, width_px) | boundary_band(truth, width_px)
        self.boundary.add(np.where(band, prediction, 0), np.where(band & known, target, IGNORE))
        if self.task == "buildings":
            matched, n_pred, n_true = object_matches(pred, truth, known)
            self.objects = [self.objects[0] + matched, self.objects[1] + n_pred, self.objects[2] + n_true]
        else:
            buffer_px = max(1, int(round(self.road_buffer_m / pixel_size_m)))
            near_pred = ndimage.binary_dilation(pred, iterations=buffer_px)
            near_truth = ndimage.binary_dilation(truth, iterations=buffer_px)
            self.road[0] += int((truth & near_pred).sum())
            self.road[1] += int(truth.sum())
            self.road[2] += int((pred & near_truth).sum())
            self.road[3] += int(pred.sum())

    def scores(self) -> dict[str, float]:
        """All metrics as fractions 0-1 (NaN where undefined), and the pixel counts tp, fp, fn (for pooling)."""
        out = self.pixels.scores()
        out.update(tp=self.pixels.tp, fp=self.pixels.fp, fn=self.pixels.fn)
        out["boundary_iou"] = self.boundary.scores()["iou"]
        if self.task == "buildings":
            matched, n_pred, n_true = self.objects
            out["object_precision"] = _ratio(matched, n_pred)
            out["object_recall"] = _ratio(matched, n_true)
            out["object_f1"] = _ratio(2 * matched, n_pred + n_true)
        else:
            out["completeness"] = _ratio(self.road[0], self.road[1])
            out["correctness"] = _ratio(self.road[2], self.road[3])
        return out


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a 95 % Student-t confidence interval (NaN half-width for one value)."""
    from scipy import stats

    array = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(array) == 0:
        return float("nan"), float("nan")
    if len(array) == 1:
        return float(array[0]), float("nan")
    half = stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / np.sqrt(len(array))
    return float(array.mean()), float(half)
