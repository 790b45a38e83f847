"""Round bookkeeping without a server: core-set progress, project state, learning-curve points."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from activeseg.nnunet.engine import ModelInfo
from activeseg.projectstate import ProjectDir, ProjectState, Round, Settings
from orchestrator.context import has_human_labels
from orchestrator.status import curve_points
from orchestrator.train.training import (
    LR_FROM_PSEUDO_LABELS,
    LR_FROM_STARTING_POINT,
    coreset_progress,
    finetune_lr,
)


def task(task_id: int, *annotations: dict) -> dict:
    return {"id": task_id, "data": {}, "annotations": list(annotations), "predictions": []}


def test_coreset_progress_counts_submitted_annotations_only() -> None:
    rnd = Round(
        number=1, ranked_with="nnunet-r0", strategy="hybrid", k=4, coreset=[1, 2, 3, 4], order=[1, 2, 3, 4]
    )
    tasks = [
        task(1, {"id": 10, "was_cancelled": False, "result": []}),  # submitted (even if empty)
        task(2, {"id": 11, "was_cancelled": True, "result": []}),  # skipped: still to do
        task(3),  # untouched
        # task 4 was deleted
    ]
    progress = coreset_progress(rnd, tasks)
    assert progress.done == [1] and progress.pending == [2, 3] and progress.deleted == [4]
    assert not progress.complete
    tasks[1]["annotations"].append({"id": 12, "was_cancelled": False, "result": []})
    tasks[2]["annotations"].append({"id": 13, "was_cancelled": False, "result": []})
    assert coreset_progress(rnd, tasks).complete
    everything_deleted = coreset_progress(rnd, [])
    assert not everything_deleted.complete  # nothing to learn from


def test_has_human_labels() -> None:
    assert not has_human_labels(task(1))
    assert not has_human_labels(task(1, {"was_cancelled": True}))
    assert has_human_labels(task(1, {"was_cancelled": True}, {"was_cancelled": False}))


def test_state_updates_are_atomic_and_serialised(tmp_path: Path) -> None:
    pdir = ProjectDir(tmp_path, 5)
    assert not pdir.exists() and pdir.load() == ProjectState(5)

    def add_round(n: int) -> None:
        with pdir.update() as state:
            state.rounds.append(Round(n, "m", "random", 1, [n], [n]))

    threads = [threading.Thread(target=add_round, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = pdir.load()
    assert sorted(r.number for r in state.rounds) == list(range(10))  # no update lost
    assert json.loads(pdir.state_file.read_text())["project_id"] == 5
    assert state.rounds[0].version.startswith("round-")


def _model(version: str, human: int) -> ModelInfo:
    return ModelInfo(version=version, kind="x", parent=None, budget={}, fold="all", device="cpu",
                     sources={"human": human, "pseudo": 0})  # fmt: skip


def test_curve_points_prefer_evaluation_labels() -> None:
    state = ProjectState(
        1, evaluations={"nnunet-r0": {"msa": 0.2}, "nnunet-r1": {"msa": 0.3}, "pseudo": {"msa": 0.25}}
    )
    state.rounds = [Round(1, "nnunet-r0", "hybrid", 2, [1, 2], [1, 2], coreset_msa=0.4, n_annotated=2)]
    points, metric = curve_points(state, [_model("nnunet-r0", 0), _model("nnunet-r1", 2)])
    assert "evaluation" in metric
    assert [(p.n_annotated, p.value, p.label) for p in points] == [
        (0, 0.2, "nnunet-r0"),
        (2, 0.3, "nnunet-r1"),
    ]
    state.evaluations = {}
    points, metric = curve_points(state, [])
    assert "core-set" in metric and [(p.n_annotated, p.value) for p in points] == [(2, 0.4)]


def test_latest_model_and_status_show_the_serving_gate() -> None:
    """The newest model ranks and is fine-tuned from; status says what is served and why."""
    from orchestrator.status import ProjectStatus, format_status

    state = ProjectState(1, pseudo_version="classical-v1", pretrained="nnunet-r0")
    assert state.latest == "nnunet-r0"
    state.rounds = [
        Round(1, "nnunet-r0", "hybrid", 2, [1, 2], [1, 2], finetuned="nnunet-r1",
              comparison={"classical-v1": {"msa": 0.52, "ap50": 0.7, "f1": 0.8, "n": 2},
                          "nnunet-r0": {"msa": 0.43, "ap50": 0.6, "f1": 0.7, "n": 2}},
              decision="keeps serving classical-v1: nnunet-r0 did not beat it"),
    ]  # fmt: skip
    assert state.latest == "nnunet-r1" and state.served is None
    lite = {"configuration": "2d_lite", "patch_size": [128, 128], "n_stages": 5, "features": [16, 256],
            "batch_size": 8, "reason": "CPU: objects ~18 px across"}  # fmt: skip
    models = [
        ModelInfo("nnunet-r0", "pretrain", None, {}, "all", "cpu", {"pseudo": 18}, configuration="2d_lite",
                  plan=lite, iterations=800, training_seconds=240.0),
        ModelInfo("nnunet-r1", "finetune", "nnunet-r0", {}, "all", "cpu", {"human": 2, "pseudo": 16},
                  configuration="2d_lite", plan=lite, iterations=400, training_seconds=120.0),
    ]  # fmt: skip
    status = ProjectStatus(1, 20, 2, state, None, models, [], None, "http://ls")
    text = format_status(status)
    assert "serving: classical-v1" in text and "nnunet-r1 is kept but not served" in text
    assert "round 1: on its 2 corrections, before training on them:" in text
    lines = text.splitlines()
    first = lines.index("round 1: on its 2 corrections, before training on them:")
    assert lines[first + 2].split()[:2] == ["classical-v1", "0.520"]  # best first
    assert lines[first + 3].split()[:2] == ["nnunet-r0", "0.430"]
    assert lines[first + 4] == "  -> keeps serving classical-v1: nnunet-r0 did not beat it"
    assert "  800   4.0" in text and "2d_lite: patch 128x128, 5 stages 16-256, batch 8: CPU" in text


def test_finetune_learning_rate_follows_where_the_first_model_came_from() -> None:
    def r0(started_from: str, iterations: int) -> ModelInfo:
        return ModelInfo("nnunet-r0", "pretrain", None, {}, "all", "cpu", {"pseudo": 18},
                         iterations=iterations, started_from=started_from)  # fmt: skip

    shipped = r0("starting point start.pt: DSB2018 ground truth", 0)
    assert finetune_lr(Settings(), shipped) == LR_FROM_STARTING_POINT == 3e-4
    # trained on the pseudo-labels after the start, or from random weights: nnU-Net's own rate
    assert finetune_lr(Settings(), r0("starting point start.pt: DSB2018 ground truth", 200)) == 1e-2
    assert finetune_lr(Settings(), r0("random weights", 800)) == LR_FROM_PSEUDO_LABELS == 1e-2
    assert finetune_lr(Settings(), None) == 1e-2
    assert finetune_lr(Settings(finetune_lr=5e-3), shipped) == 5e-3  # the admin's choice wins
