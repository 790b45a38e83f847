"""The serving gate: a model is served only once it beats what is served on corrections it has
not trained on, scored on the same tasks for every source."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.train.serving import compare, decide


def _discs(centres: list[tuple[int, int]], radius: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


CENTRES = [(16, 16), (16, 48), (48, 32)]
TRUTH = _discs(CENTRES, 8)


def _source(masks: dict[int, np.ndarray | None]):
    return lambda task, shape: masks.get(int(task["id"]))


def _corrections(n: int = 2) -> list[tuple[dict, np.ndarray]]:
    return [({"id": i}, TRUTH) for i in range(1, n + 1)]


def test_compare_scores_every_source_on_the_same_tasks() -> None:
    good = _discs(CENTRES, 8)
    poor = _discs(CENTRES[:1], 5)  # misses two cells, the third too small
    comparison = compare(
        _corrections(3),
        {
            "classical-v1": _source({1: good, 2: good, 3: good}),
            "nnunet-r0": _source({1: poor, 2: poor}),  # task 3 was never scored by this model
        },
    )
    assert set(comparison) == {"classical-v1", "nnunet-r0"}
    assert comparison["classical-v1"]["n"] == comparison["nnunet-r0"]["n"] == 2
    assert comparison["classical-v1"]["msa"] == pytest.approx(1.0)
    assert comparison["classical-v1"]["msa"] > comparison["nnunet-r0"]["msa"]
    assert comparison["nnunet-r0"]["f1"] < 1 and comparison["nnunet-r0"]["ap50"] < 1
    assert compare(_corrections(1), {"a": _source({})}) == {}


def test_a_model_that_loses_to_the_pseudo_labels_is_not_served() -> None:
    comparison = {
        "classical-v1": {"msa": 0.52, "ap50": 0.7, "f1": 0.8, "n": 2},
        "nnunet-r0": {"msa": 0.43, "ap50": 0.6, "f1": 0.7, "n": 2},
    }
    decision = decide(None, "classical-v1", comparison)
    assert decision.served is None  # the pseudo-labels stay
    assert "keeps serving classical-v1" in decision.reason and "nnunet-r0 did not beat it" in decision.reason
    assert "0.430" in decision.reason and "2 corrections" in decision.reason


def test_a_model_that_beats_what_is_served_is_served() -> None:
    comparison = {
        "classical-v1": {"msa": 0.40, "ap50": 0.6, "f1": 0.7, "n": 3},
        "nnunet-r0": {"msa": 0.47, "ap50": 0.7, "f1": 0.8, "n": 3},
    }
    decision = decide(None, "classical-v1", comparison)
    assert decision.served == "nnunet-r0" and "serves nnunet-r0 instead of classical-v1" in decision.reason


def test_the_served_model_keeps_its_place_on_a_tie_and_yields_to_a_better_source() -> None:
    tie = {
        "classical-v1": {"msa": 0.40, "ap50": 0.6, "f1": 0.7, "n": 2},
        "nnunet-r0": {"msa": 0.45, "ap50": 0.7, "f1": 0.8, "n": 2},
        "nnunet-r1": {"msa": 0.45, "ap50": 0.7, "f1": 0.8, "n": 2},
    }
    assert decide("nnunet-r0", "classical-v1", tie).served == "nnunet-r0"
    worse = dict(tie, **{"nnunet-r0": {"msa": 0.30, "ap50": 0.5, "f1": 0.6, "n": 2}})
    assert decide("nnunet-r0", "classical-v1", worse).served == "nnunet-r1"
    back = {
        "classical-v1": {"msa": 0.50, "ap50": 0.6, "f1": 0.7, "n": 2},
        "nnunet-r0": {"msa": 0.30, "ap50": 0.5, "f1": 0.6, "n": 2},
    }
    # a served model that falls behind the pseudo-labels hands back to them
    assert decide("nnunet-r0", "classical-v1", back).served is None
    # nothing scored: nothing changes
    assert decide("nnunet-r0", "classical-v1", {}).served == "nnunet-r0"
