"""Put a ranking into Label Studio so that "Label All Tasks" serves the core-set first.

Mechanics (verified on 1.23.2, ``../shared/docs/labelstudio.md`` section 6): the project uses
"Uncertainty sampling", which serves the task whose prediction of ``project.model_version`` has
the lowest ``score``. Each ranked task gets exactly one prediction of the round's version
(``round-N``) carrying the pre-annotation, with ``score`` = rank / N and ``cluster`` = its
diversity cluster; then the project's ``model_version`` is set to ``round-N`` (Label Studio
refuses that until a prediction of the version exists). The rank is mirrored into
``data.priority`` and a shared "Priority" tab for people browsing the Data Manager.

Idempotent and resumable: a task that already has its round prediction is re-scored in place
(a re-run after a crash never duplicates), extra copies of our own round version are removed,
and annotations are never read for writing, let alone changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from activeseg.labelconfig import RegionConfig
from activeseg.lsclient import UNCERTAINTY_SAMPLING, LabelStudioClient

PRIORITY_TAB = "Priority"
PRIORITY_VIEW = {
    "ordering": ["tasks:data.priority"],
    "columnsDisplayType": {"tasks:data.priority": "Number"},
}


@dataclass
class PushReport:
    created: int = 0
    rescored: int = 0
    duplicates_removed: int = 0
    refreshed: int = 0  # round predictions replaced because their regions changed
    priorities_written: int = 0


def push_order(
    client: LabelStudioClient,
    project_id: int,
    config: RegionConfig,
    version: str,
    order: Sequence[int],
    todo: Sequence[int],
    clusters: dict[int, int],
    pre_annotation: Callable[[dict[str, Any]], list[dict[str, Any]]],
    tasks: dict[int, dict[str, Any]],
    round_number: int,
    progress: bool = True,
    refresh: bool = False,
) -> PushReport:
    """Make Label Studio serve ``order`` (task ids, most informative first).

    Only the tasks in ``todo`` (those still to annotate) are written; each keeps the score of
    its place in the whole ``order``, so a re-run after annotations changes nothing.
    ``pre_annotation(task)`` gives the brush regions shown for a task that has no prediction
    of ``version`` yet. ``tasks`` are the listed tasks (with predictions) by id. With
    ``refresh``, a round prediction showing other regions than ``pre_annotation(task)`` is
    replaced (same score and cluster): how another pseudo-labeller reaches an open round.
    """
    report = PushReport()
    n = max(len(order), 1)
    place = {task_id: rank for rank, task_id in enumerate(order, start=1)}
    for task_id in tqdm(todo, desc=f"ordering queue ({version})", unit="task", disable=not progress):
        rank = place[task_id]
        task = tasks[task_id]
        score = rank / n
        cluster = int(clusters.get(task_id, 0))
        ours = sorted(
            (p for p in task.get("predictions") or [] if p.get("model_version") == version),
            key=lambda p: p["id"],
        )
        if ours and refresh and ours[0].get("result") != pre_annotation(task):
            for old in ours:  # the new one is created below, with the same place in the queue
                client.delete_prediction(int(old["id"]))
            report.refreshed += 1
            ours = []
        if ours:
            keep, *extra = ours
            if keep.get("score") != score or keep.get("cluster") != cluster:
                client.update_prediction(int(keep["id"]), score=score, cluster=cluster)
                report.rescored += 1
            for dup in extra:
                client.delete_prediction(int(dup["id"]))
                report.duplicates_removed += 1
        else:
            client.create_prediction(
                task_id, pre_annotation(task), model_version=version, config=config, score=score,
                cluster=cluster,
            )  # fmt: skip
            report.created += 1
        data = dict(task.get("data") or {})
        if data.get("priority") != rank or data.get("round") != round_number:
            data.update(priority=rank, round=round_number)
            client.update_task_data(task_id, data)
            report.priorities_written += 1
    if todo:
        client.update_project(project_id, sampling=UNCERTAINTY_SAMPLING, model_version=version)
        client.ensure_view(project_id, PRIORITY_TAB, PRIORITY_VIEW)
    return report
