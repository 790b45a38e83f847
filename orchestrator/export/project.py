"""``activeseg export``: the project's best labels for every image, as TIFFs and COCO.

For each task: the human annotation where there is one, else the latest model's mask (the
fine-tuned nnU-Net, else the pretrained one), else the pseudo-label. Read-only towards Label
Studio.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from activeseg.scores import ScoreStore
from orchestrator.context import ProjectContext
from orchestrator.export.formats import ExportItem, ExportReport, export_labels
from orchestrator.train.training_data import best_labels, result_labels, task_case_id


def _items(ctx: ProjectContext, tasks: list[dict[str, Any]]) -> Iterator[ExportItem]:
    state = ctx.state()
    # what annotators are served first (the gate's choice), then the pseudo-labels, then the newest model
    pseudo = ctx.find_pseudo_version(tasks)
    served = [(state.served, ScoreStore(ctx.dir.scores_dir(state.served)))] if state.served else []
    fallback = [(v, ScoreStore(ctx.dir.scores_dir(v))) for v in (state.latest,) if v and v != state.served]
    for task in tqdm(tasks, desc="export", unit="task"):
        task_id = int(task["id"])
        data = task.get("data") or {}
        labels, source = None, ""
        human = best_labels(task, ctx.config, None)
        if human is not None and human[1] == "human":
            labels, source = result_labels(task, human[0], ctx.config, ctx.images), "human"
        for version, store in served:
            if labels is None and (found := store.labels(task_id)) is not None:
                labels, source = found, version
        if labels is None and pseudo is not None and (found_pseudo := best_labels(task, ctx.config, pseudo)):
            labels, source = result_labels(task, found_pseudo[0], ctx.config, ctx.images), pseudo
        for version, store in fallback:
            if labels is None and (found := store.labels(task_id)) is not None:
                labels, source = found, version
        if labels is None:
            continue
        yield ExportItem(
            name=task_case_id(task), labels=labels, source=source, task_id=task_id,
            image_file=str(data.get("name") or data.get("raw") or data.get(ctx.config.image_key) or ""),
        )  # fmt: skip


def export_project(ctx: ProjectContext, out_dir: Path) -> ExportReport:
    return export_labels(_items(ctx, ctx.tasks()), out_dir)
