"""Stored task scores: what a strategy chosen later needs is computed then, the rest is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from activeseg.scores import ScoreStore, TaskScore, foreground_mean
from orchestrator.rank.scoring import score_tasks


class CountingScorer:
    """Scores a task from its id and counts the calls; ``flips`` as NnunetScorer's."""

    name = "m1"

    def __init__(self, flips: bool) -> None:
        self.flips, self.calls = flips, []

    def score(self, task: dict[str, Any]) -> TaskScore:
        self.calls.append(task["id"])
        spread = 0.01 * task["id"] if self.flips else None
        return TaskScore(task["id"], 0.5, 3, np.ones(4, np.float32), np.zeros((2, 2), np.uint16), spread)

    def complete(self, stored: TaskScore) -> bool:
        return stored.labels is not None and (not self.flips or stored.flip_spread is not None)


def test_scores_without_the_flip_spread_are_scored_again_only_when_it_is_needed(tmp_path: Path) -> None:
    store, tasks = ScoreStore(tmp_path / "m1"), [{"id": i} for i in (1, 2, 3)]
    plain = CountingScorer(flips=False)
    scores, errors = score_tasks(plain, store, tasks, progress=False)
    assert plain.calls == [1, 2, 3] and not errors and all(s.flip_spread is None for s in scores)
    again = CountingScorer(flips=False)
    score_tasks(again, store, tasks, progress=False)
    assert again.calls == []  # complete as stored
    flips = CountingScorer(flips=True)
    scores, _ = score_tasks(flips, store, tasks, progress=False)
    assert flips.calls == [1, 2, 3] and [s.flip_spread for s in scores] == [0.01, 0.02, 0.03]
    stored = store.get(2)
    assert stored is not None and stored.flip_spread == 0.02 and stored.labels is not None
    later = CountingScorer(flips=True)
    score_tasks(later, store, tasks, progress=False)
    assert later.calls == []


def test_foreground_mean_reads_the_dilated_cells_or_the_whole_image() -> None:
    classes = np.zeros((20, 20), np.uint8)
    values = np.zeros((20, 20))
    values[0, 0] = 1.0  # far from the cell: left out
    classes[10, 10] = 1
    values[10, 10] = 0.49  # inside the 7 x 7 diamond around it (dilation 3: 25 pixels)
    assert foreground_mean(values, classes) == 0.49 / 25
    assert foreground_mean(values, np.zeros_like(classes)) == (1.0 + 0.49) / 400
