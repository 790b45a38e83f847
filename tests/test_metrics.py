"""Instance metrics: hand-computed cases and a cross-check against a brute-force implementation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from activeseg.metrics import THRESHOLDS, iou_matrix, match_instances, score_dataset, score_image


def square(n: int = 10) -> np.ndarray:
    out = np.zeros((n, n), np.uint16)
    out[:, :] = 1
    return out


def test_thresholds_are_the_dsb_ten() -> None:
    assert THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_identical_images_score_one() -> None:
    gt = np.zeros((20, 20), np.uint16)
    gt[2:8, 2:8], gt[10:15, 4:19], gt[16:20, 0:3] = 3, 7, 12
    s = score_image(gt, gt * 2)  # ids differ, instances are the same
    assert s.msa == 1.0 and s.f1 == 1.0 and s.mean_matched_iou == 1.0
    assert (s.tp, s.fp, s.fn) == (3, 0, 0)


def test_empty_prediction() -> None:
    gt = np.zeros((10, 10), np.uint16)
    gt[1:4, 1:4], gt[6:9, 6:9] = 1, 2
    s = score_image(gt, np.zeros_like(gt))
    assert s.msa == 0.0 and s.recall == 0.0 and s.precision == 0.0 and s.f1 == 0.0
    assert (s.tp, s.fp, s.fn) == (0, 0, 2)
    assert np.isnan(s.mean_matched_iou)


def test_empty_ground_truth() -> None:
    pred = np.zeros((10, 10), np.uint16)
    pred[1:4, 1:4] = 5
    s = score_image(np.zeros_like(pred), pred)
    assert s.msa == 0.0 and s.precision == 0.0 and (s.tp, s.fp, s.fn) == (0, 1, 0)


def test_both_empty_is_perfect() -> None:
    empty = np.zeros((6, 6), np.uint8)
    s = score_image(empty, empty)
    assert s.msa == 1.0 and s.precision == 1.0 and s.recall == 1.0 and s.f1 == 1.0


def test_split() -> None:
    # one 10x10 ground-truth cell predicted as two 10x5 halves: IoU 0.5 each
    gt = square()
    pred = np.ones((10, 10), np.uint16)
    pred[:, 5:] = 2
    s = score_image(gt, pred)
    assert s.ap[0.5] == pytest.approx(1 / 2)  # TP 1, FP 1, FN 0
    assert all(s.ap[t] == 0.0 for t in THRESHOLDS[1:])  # TP 0, FP 2, FN 1
    assert s.msa == pytest.approx(0.05)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    assert s.precision == 0.5 and s.recall == 1.0 and s.f1 == pytest.approx(2 / 3)


def test_merge() -> None:
    gt = np.ones((10, 10), np.uint16)
    gt[:, 5:] = 2
    s = score_image(gt, square())
    assert s.ap[0.5] == pytest.approx(1 / 2) and s.ap[0.55] == 0.0
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)


def test_shifted_cell_counts_only_above_its_iou() -> None:
    gt = np.zeros((10, 20), np.uint16)
    pred = np.zeros_like(gt)
    gt[:, 0:10] = 1
    pred[:, 2:12] = 1  # overlap 80, union 120: IoU 2/3
    s = score_image(gt, pred)
    assert s.mean_matched_iou == pytest.approx(2 / 3)
    expected = [1.0 if t <= 2 / 3 else 0.0 for t in THRESHOLDS]
    assert [s.ap[t] for t in THRESHOLDS] == expected
    assert s.msa == pytest.approx(np.mean(expected))


def test_matching_is_optimal_not_greedy() -> None:
    # gt a overlaps pred x strongly and pred y weakly; gt b overlaps only x, weakly.
    iou = np.array([[0.9, 0.3], [0.35, 0.0]])
    rows, cols = match_instances(iou, 0.3)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]  # two pairs beat one
    rows, cols = match_instances(iou, 0.5)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0)]


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        iou_matrix(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8))


def test_dataset_average_is_per_image() -> None:
    gt = square()
    perfect = score_image(gt, gt)
    none = score_image(gt, np.zeros_like(gt))
    ds = score_dataset([(gt, gt), (gt, np.zeros_like(gt))])
    assert ds.n_images == 2
    assert ds.msa == pytest.approx((perfect.msa + none.msa) / 2) == pytest.approx(0.5)
    assert ds.mean_matched_iou == 1.0  # images without a match do not count
    assert set(ds.as_row()) >= {"mSA", "AP50", "F1"}
    with pytest.raises(ValueError):
        score_dataset([])


# ---- independent brute force ------------------------------------------------------------


def brute_iou(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    g_ids = [i for i in np.unique(gt) if i]
    p_ids = [i for i in np.unique(pred) if i]
    out = np.zeros((len(g_ids), len(p_ids)))
    for a, gi in enumerate(g_ids):
        for b, pi in enumerate(p_ids):
            inter = np.logical_and(gt == gi, pred == pi).sum()
            union = np.logical_or(gt == gi, pred == pi).sum()
            out[a, b] = inter / union
    return out


def brute_tp(iou: np.ndarray, tau: float) -> int:
    """Largest number of one-to-one pairs with IoU >= tau, by trying every assignment."""
    n_g, n_p = iou.shape
    if n_g == 0 or n_p == 0:
        return 0
    best = 0
    small, large = (n_g, n_p) if n_g <= n_p else (n_p, n_g)
    mat = iou if n_g <= n_p else iou.T
    for perm in itertools.permutations(range(large), small):
        best = max(best, sum(mat[i, j] >= tau for i, j in enumerate(perm)))
    return best


small_labels = arrays(np.uint8, (6, 6), elements=st.integers(0, 4))


@settings(max_examples=200, deadline=None)
@given(small_labels, small_labels)
def test_against_brute_force(gt: np.ndarray, pred: np.ndarray) -> None:
    iou = brute_iou(gt, pred)
    np.testing.assert_allclose(iou_matrix(gt, pred), iou)
    s = score_image(gt, pred)
    n_g, n_p = iou.shape
    for tau in THRESHOLDS:
        tp = brute_tp(iou, tau)
        expected = 1.0 if n_g + n_p == 0 else tp / (n_g + n_p - tp)
        assert s.ap[tau] == pytest.approx(expected)
    # low thresholds are where greedy matching goes wrong; check one through AP(0.1)
    assert len(match_instances(iou_matrix(gt, pred), 0.1)[0]) == brute_tp(iou, 0.1)
