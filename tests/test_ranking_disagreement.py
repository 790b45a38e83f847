"""The loop's disagreement scores: the model's instances against each task's pseudo-label."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from activeseg.datasets import read_dataset
from activeseg.imageio import read_label_image
from activeseg.labelconfig import load_label_config
from activeseg.scores import TaskScore, disagreement
from orchestrator.context import LoopError
from orchestrator.rank.ranking import _disagreement

CONFIG = load_label_config()


def test_disagreement_is_zero_for_the_teacher_and_one_for_nothing_alike(sample_dir: Path) -> None:
    truth = read_label_image(read_dataset(sample_dir)[0].label)
    assert disagreement(truth, truth) == 0.0
    assert disagreement(truth, np.zeros_like(truth)) == 1.0
    half = truth * (truth % 2 == 0)  # the model found every other cell
    assert 0.3 < disagreement(truth, half) < 0.7


def test_ranking_reads_the_pseudo_labels_of_every_scored_task(sample_dir: Path) -> None:
    truth = read_label_image(read_dataset(sample_dir)[0].label)
    tasks = [
        {"id": i, "predictions": [{"model_version": "classical-1", "result": CONFIG.to_results(truth)}]}
        for i in (1, 2)
    ]
    ctx = SimpleNamespace(find_pseudo_version=lambda tasks: "classical-1", config=CONFIG)
    features = np.zeros(4, np.float32)
    scores = [TaskScore(1, 0.1, 5, features, truth), TaskScore(2, 0.1, 0, features, np.zeros_like(truth))]
    values = _disagreement(ctx, tasks, scores)  # type: ignore[arg-type]
    assert values[0] < 0.05 and values[1] == 1.0  # the first model matches the polygons it was given
    tasks[1]["predictions"] = []
    with pytest.raises(LoopError, match="needs a pretrained nnU-Net and the pseudo-labels"):
        _disagreement(ctx, tasks, scores)  # type: ignore[arg-type]
