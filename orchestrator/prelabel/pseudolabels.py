"""``activeseg prelabel``: pseudo-labels for every task of a project, uploaded through the API.

Same code path as the ML backend's ``/predict`` (image fetching, cache, validation), but driven
from the admin's side: it does not depend on Label Studio calling the backend, shows progress,
and can be interrupted and re-run: tasks that already carry a prediction of the current version
are skipped, and masks computed before come from the cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from activeseg.labellers.tasks import TASK_ERRORS, LabellerConfig, TaskLabeller
from activeseg.lsclient import LabelStudioClient
from orchestrator.context import ProjectContext, has_human_labels


@dataclass
class PrelabelReport:
    model_version: str
    predicted: int = 0
    from_cache: int = 0
    skipped: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def prelabel_project(
    project_id: int,
    pseudolabeler: str | None = None,
    model_dir: Path | None = None,
    client: LabelStudioClient | None = None,
    service: TaskLabeller | None = None,
    only_unannotated: bool = False,
) -> PrelabelReport:
    """Pseudo-label the tasks of ``project_id`` that lack a prediction of the current version
    (with ``only_unannotated``, only those nobody has annotated). The labeller is
    ``pseudolabeler``, else the one the project chose, else ACTIVESEG_PSEUDOLABELER."""
    client = client or LabelStudioClient()
    if service is None:
        ctx = ProjectContext.from_env(project_id, model_dir, client)
        env = LabellerConfig.from_env()
        config = dataclasses.replace(env, name=pseudolabeler or ctx.state().pseudolabeler or env.name)
        service = TaskLabeller(config, ctx.images, ctx.model_dir / "cache")
    brush = client.region_config(project_id)
    version = service.model_version
    report = PrelabelReport(model_version=version)
    tasks = client.tasks(project_id)
    todo = []
    for task in tasks:
        if any(p.get("model_version") == version for p in task.get("predictions") or []) or (
            only_unannotated and has_human_labels(task)
        ):
            report.skipped += 1
        else:
            todo.append(task)
    for task in tqdm(todo, desc=f"pseudo-labels ({version})", unit="task"):
        try:
            prediction, cached = service.predict_task(task, brush)
        except TASK_ERRORS as exc:
            report.errors.append((int(task["id"]), str(exc)))
            continue
        client.create_prediction(
            int(task["id"]),
            prediction["result"],
            model_version=version,
            config=brush,
            score=prediction["score"],
        )
        report.predicted += 1
        report.from_cache += int(cached)
    return report
