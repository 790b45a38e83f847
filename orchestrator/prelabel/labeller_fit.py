"""``activeseg pseudolabels``: which pseudo-labeller fits this lab's images, and switching to it.

Every corrected task is ground truth the lab made itself: each available labeller segments those
images and is scored against the corrections (mSA, AP50, F1, images per minute). Switching a
project to another labeller pseudo-labels only the tasks nobody annotated, and the open round's
queue then shows its masks; annotations are never touched.

The corrections lean towards what annotators were shown (a mask left as it was agrees with the
labeller that drew it), so the labeller in use is favoured: another one that wins anyway wins
clearly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from activeseg.imagefetch import ImageFetchError, task_image_url
from activeseg.imageio import ImageReadError
from activeseg.labellers import PSEUDOLABELERS, ModelLoadError
from activeseg.labellers.tasks import LabellerConfig, TaskLabeller
from activeseg.lsclient import LabelStudioError
from activeseg.projectstate import ProjectState
from orchestrator.context import LoopError, ProjectContext, has_human_labels
from orchestrator.prelabel.pseudolabels import PrelabelReport, prelabel_project
from orchestrator.rank.queue_order import PushReport
from orchestrator.rank.ranking import refresh_round
from orchestrator.train.serving import compare
from orchestrator.train.training_data import best_labels, result_labels

SAM_KINDS = ("sam-box", "sam-auto")  # need ACTIVESEG_SAM_CHECKPOINT


def available_labellers(config: LabellerConfig) -> list[str]:
    """Every labeller this machine can run: the SAM kinds only with a checkpoint configured."""
    return [n for n in PSEUDOLABELERS if n not in SAM_KINDS or config.sam_checkpoint is not None]


def _service(ctx: ProjectContext, name: str) -> TaskLabeller:
    config = dataclasses.replace(LabellerConfig.from_env(), name=name)
    return TaskLabeller(config, ctx.images, ctx.model_dir / "cache")


def corrections(
    ctx: ProjectContext, tasks: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(task, corrected instance labels) of every task with a submitted annotation."""
    out = []
    for task in tasks:
        human = best_labels(task, ctx.config, None) if has_human_labels(task) else None
        if human is not None:
            out.append((task, result_labels(task, human[0], ctx.config, ctx.images)))
    return out


def compare_labellers(
    ctx: ProjectContext, names: Sequence[str] | None = None, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Score each labeller against the project's corrections and record the table in its state.

    Returns name -> {msa, ap50, f1, n, images_per_min, version}; ``images_per_min`` is None when
    every mask came from the cache (measured before: nothing to time).
    """
    names = list(names or available_labellers(LabellerConfig.from_env()))
    unknown = [n for n in names if n not in PSEUDOLABELERS]
    if unknown:
        raise LoopError(f"unknown pseudo-labeller {unknown[0]!r}; choose from {', '.join(PSEUDOLABELERS)}")
    pairs = corrections(ctx, ctx.tasks())
    if not pairs:
        raise LoopError(
            f"project {ctx.project_id} has no annotated task yet: labellers are scored against corrections"
        )
    images = {}
    for task, _ in pairs:
        try:
            images[int(task["id"])] = ctx.images.fetch(task_image_url(task, ctx.config.image_key))
        except (ImageFetchError, LabelStudioError) as exc:
            raise LoopError(f"task {task['id']}: {exc}") from None
    found: dict[str, dict[int, np.ndarray]] = {}
    speed: dict[str, float | None] = {}
    versions: dict[str, str] = {}
    for name in names:
        service = _service(ctx, name)
        try:
            labeler = service.labeler
            versions[name] = labeler.version
            labeler.load()  # before the clock starts: images/min is the labeller's, not the load's
        except ModelLoadError as exc:
            raise LoopError(f"{name}: {exc}") from None
        found[name], seconds, fresh = {}, 0.0, 0
        for task, truth in tqdm(pairs, desc=f"{name} on the corrections", unit="image", disable=not progress):
            fetched = images[int(task["id"])]
            start = time.perf_counter()
            try:
                seg, cached = service.segment_bytes(fetched.data, fetched.name, labeler)
            except (ImageReadError, ModelLoadError, ValueError) as exc:
                raise LoopError(f"{name} on task {task['id']}: {exc}") from None
            if not cached:
                seconds, fresh = seconds + time.perf_counter() - start, fresh + 1
            if seg.labels.shape == truth.shape:
                found[name][int(task["id"])] = seg.labels
        speed[name] = round(60.0 * fresh / seconds, 1) if fresh and seconds > 0 else None
    table = compare(pairs, {name: _lookup(found[name]) for name in names})
    fit = {name: {**table[name], "images_per_min": speed[name], "version": versions[name]} for name in table}
    with ctx.dir.update() as state:
        state.labeller_fit = fit
    return fit


def _lookup(masks: dict[int, np.ndarray]) -> Any:
    return lambda task, shape: masks.get(int(task["id"]))


def best_fit(fit: dict[str, dict[str, Any]]) -> str | None:
    """The labeller with the best mSA on the corrections."""
    return max(fit, key=lambda name: fit[name]["msa"]) if fit else None


@dataclass(frozen=True)
class SwitchReport:
    prelabel: PrelabelReport
    queue: PushReport | None  # the open round's pre-annotations, None without an open round


def use_labeller(ctx: ProjectContext, name: str, progress: bool = True) -> SwitchReport:
    """Make ``name`` the project's labeller: the backend and later commands use it; the tasks
    nobody annotated get its pseudo-labels, and so does the open round's queue (unless a trained
    model is served there)."""
    if name not in PSEUDOLABELERS:
        raise LoopError(f"unknown pseudo-labeller {name!r}; choose from {', '.join(PSEUDOLABELERS)}")
    service = _service(ctx, name)
    try:
        version = service.labeler.version
    except ModelLoadError as exc:
        raise LoopError(f"{name}: {exc}") from None
    report = prelabel_project(ctx.project_id, client=ctx.client, service=service, only_unannotated=True)
    if report.errors:  # the project keeps its labeller until every unannotated task has the new one
        task_id, error = report.errors[0]
        raise LoopError(
            f"{len(report.errors)} tasks could not be pseudo-labelled by {name} (task {task_id}: {error}); "
            "the project keeps its labeller: fix that and run this again (finished tasks are kept)"
        )
    with ctx.dir.update() as state:
        state.pseudolabeler, state.pseudo_version = name, version
    return SwitchReport(report, refresh_round(ctx, progress=progress))


def in_use(state: ProjectState) -> str:
    """The labeller whose pseudo-labels the project uses: its choice, else its pseudo-label version's."""
    if state.pseudolabeler:
        return state.pseudolabeler
    version = state.pseudo_version or ""
    by_length = sorted(PSEUDOLABELERS, key=len, reverse=True)  # sam-box before a shorter prefix
    return next((n for n in by_length if version.startswith(f"{n}-")), version or "-")


def format_fit(fit: dict[str, dict[str, Any]], in_use: str, project_id: int) -> list[str]:
    """The comparison as a table, with the advice it supports."""
    if not fit:
        return []
    n = next(iter(fit.values()))["n"]
    lines = [f"pseudo-labellers on the {n} corrected images (in use: {in_use}):",
             f"  {'labeller':21s} {'mSA':>6s} {'AP50':>6s} {'F1':>6s} {'img/min':>8s}"]  # fmt: skip
    for name, m in sorted(fit.items(), key=lambda kv: -kv[1]["msa"]):
        speed = "-" if m.get("images_per_min") is None else f"{m['images_per_min']:.1f}"
        lines.append(f"  {name:21s} {m['msa']:6.3f} {m['ap50']:6.3f} {m['f1']:6.3f} {speed:>8s}")
    best = best_fit(fit)
    if best == in_use or best is None:
        lines.append(f"  -> {in_use} fits best; keep it")
    elif in_use in fit:
        lines.append(
            f"  -> {best} fits better ({fit[best]['msa']:.3f} against {fit[in_use]['msa']:.3f}; the "
            f"corrections lean towards {in_use}, which annotators were shown): "
            f"activeseg pseudolabels use {best} --project {project_id}"
        )
    else:
        lines.append(f"  -> {best} fits best: activeseg pseudolabels use {best} --project {project_id}")
    return lines
