"""Instance-segmentation metrics as the field reports them (DSB2018, StarDist, Cellpose, micro-sam).

Ground truth and prediction are instance label images (0 = background, any positive ids).
Instances are paired by optimal (Hungarian) matching on IoU. At a threshold tau a matched pair
with IoU >= tau is a true positive; unmatched ground truth is a false negative, unmatched
prediction a false positive. AP(tau) = TP / (TP + FP + FN), and mSA (mean segmentation accuracy)
is the mean of AP over tau = 0.50, 0.55, ..., 0.95, computed per image and then averaged.

Convention for empty images: when both ground truth and prediction are empty there is nothing to
find and nothing was found, so AP, precision, recall and F1 are 1 (StarDist reports 0 there).
Any other 0/0 (precision without predictions, recall without ground truth) is 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every ground-truth instance (rows) with every predicted instance (columns).

    Rows and columns follow the sorted positive ids of each image. Computed from one joint
    histogram, so the cost is O(pixels + n_gt * n_pred), not one mask comparison per pair.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: ground truth {gt.shape}, prediction {pred.shape}")
    gt_ids, gt_idx = np.unique(gt.ravel(), return_inverse=True)
    pred_ids, pred_idx = np.unique(pred.ravel(), return_inverse=True)
    # Index 0 stands for background only when the image has background pixels.
    gt_off = 1 if gt_ids[0] > 0 else 0
    pred_off = 1 if pred_ids[0] > 0 else 0
    n_gt, n_pred = len(gt_ids) + gt_off, len(pred_ids) + pred_off
    joint = np.bincount((gt_idx + gt_off) * n_pred + pred_idx + pred_off, minlength=n_gt * n_pred)
    joint = joint.reshape(n_gt, n_pred)[1:, 1:].astype(np.float64)
    area_gt = np.bincount(gt_idx + gt_off, minlength=n_gt)[1:].astype(np.float64)
    area_pred = np.bincount(pred_idx + pred_off, minlength=n_pred)[1:].astype(np.float64)
    union = area_gt[:, None] + area_pred[None, :] - joint
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, joint / union, 0.0)


def match_instances(iou: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one pairs (rows, cols) with IoU >= tau.

    Like StarDist, the assignment first maximises the number of pairs above tau and then their
    summed IoU, so a low-IoU pair never displaces a valid match.
    """
    if iou.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    n = min(iou.shape)
    above = iou >= tau
    cost = -above.astype(np.float64) - iou / (2 * n)
    rows, cols = linear_sum_assignment(cost)
    keep = above[rows, cols]
    return rows[keep], cols[keep]


@dataclass(frozen=True)
class ImageScores:
    """Scores of one image; ``ap`` maps each threshold to TP / (TP + FP + FN)."""

    n_true: int
    n_pred: int
    ap: dict[float, float]
    msa: float
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    tp: int
    fp: int
    fn: int


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


def score_image(gt: np.ndarray, pred: np.ndarray) -> ImageScores:
    """All metrics for one image; precision, recall, F1 and matched IoU are at tau = 0.5."""
    iou = iou_matrix(gt, pred)
    n_true, n_pred = iou.shape
    empty = n_true == 0 and n_pred == 0
    ap: dict[float, float] = {}
    at_half = (0, 0.0)
    for tau in THRESHOLDS:
        rows, cols = match_instances(iou, tau)
        tp = len(rows)
        ap[tau] = _ratio(tp, n_true + n_pred - tp, empty)
        if tau == 0.5:
            at_half = (tp, float(iou[rows, cols].mean()) if tp else float("nan"))
    tp, matched_iou = at_half
    fp, fn = n_pred - tp, n_true - tp
    return ImageScores(
        n_true=n_true,
        n_pred=n_pred,
        ap=ap,
        msa=float(np.mean(list(ap.values()))),
        precision=_ratio(tp, tp + fp, empty),
        recall=_ratio(tp, tp + fn, empty),
        f1=_ratio(2 * tp, 2 * tp + fp + fn, empty),
        mean_matched_iou=matched_iou,
        tp=tp,
        fp=fp,
        fn=fn,
    )


@dataclass(frozen=True)
class DatasetScores:
    """Per-image metrics averaged over images (the DSB2018 / micro-sam convention)."""

    n_images: int
    msa: float
    ap: dict[float, float]
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    per_image: list[ImageScores] = field(repr=False)

    def as_row(self) -> dict[str, float]:
        """Flat numbers for a table or CSV row."""
        return {
            "images": self.n_images,
            "mSA": self.msa,
            "AP50": self.ap[0.5],
            "AP75": self.ap[0.75],
            "precision": self.precision,
            "recall": self.recall,
            "F1": self.f1,
            "matched_IoU": self.mean_matched_iou,
        }


def score_dataset(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> DatasetScores:
    """Average of :func:`score_image` over (ground truth, prediction) pairs."""
    per_image = [score_image(gt, pred) for gt, pred in pairs]
    if not per_image:
        raise ValueError("no images to score")

    def mean(values: Iterable[float]) -> float:
        arr = np.array([v for v in values if not np.isnan(v)], dtype=np.float64)
        return float(arr.mean()) if arr.size else float("nan")

    return DatasetScores(
        n_images=len(per_image),
        msa=mean(s.msa for s in per_image),
        ap={tau: mean(s.ap[tau] for s in per_image) for tau in THRESHOLDS},
        precision=mean(s.precision for s in per_image),
        recall=mean(s.recall for s in per_image),
        f1=mean(s.f1 for s in per_image),
        mean_matched_iou=mean(s.mean_matched_iou for s in per_image),
        per_image=per_image,
    )


__all__ = [
    "THRESHOLDS",
    "DatasetScores",
    "ImageScores",
    "iou_matrix",
    "match_instances",
    "score_dataset",
    "score_image",
]
