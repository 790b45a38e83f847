"""``activeseg status``: where a project stands, as a table, plus the learning curve.

Counts come from Label Studio (the truth about annotations); rounds, models and metrics from the
project's state under MODEL_DIR; jobs from the queue. No secret is ever printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from activeseg.jobs import QUEUED, RUNNING, Job, JobStore, jobs_dir
from activeseg.nnunet.engine import ModelInfo, list_models
from activeseg.nnunet.plans import PlanChoice
from activeseg.projectstate import ProjectState
from orchestrator.context import ProjectContext, has_human_labels
from orchestrator.curve import CurvePoint, plot_learning_curve
from orchestrator.prelabel.labeller_fit import format_fit, in_use
from orchestrator.train.training import CoresetProgress, coreset_progress


@dataclass(frozen=True)
class ProjectStatus:
    project_id: int
    n_tasks: int
    n_annotated: int
    state: ProjectState
    coreset: CoresetProgress | None
    models: list[ModelInfo]
    jobs: list[Job]
    curve: Path | None
    label_studio_url: str


def curve_points(state: ProjectState, models: list[ModelInfo]) -> tuple[list[CurvePoint], str]:
    """Points of the learning curve and what they measure.

    With evaluation labels: each model's mSA on them, against the human-annotated images it was
    trained on. Without: per fine-tuned round, how well the pre-annotations shown for its core-set
    matched the corrections (images no model had been trained on).
    """
    annotated = {m.version: m.sources.get("human", 0) for m in models}
    evaluated = [
        CurvePoint(annotated[v], float(e["msa"]), v) for v, e in state.evaluations.items() if v in annotated
    ]
    if len(evaluated) >= 2:
        return evaluated, "mSA on the evaluation labels"
    shown = [
        CurvePoint(r.n_annotated or 0, r.coreset_msa, f"round {r.number}")
        for r in state.rounds
        if r.coreset_msa is not None
    ]
    return shown, "mSA of the pre-annotations on each core-set"


def project_status(ctx: ProjectContext) -> ProjectStatus:
    tasks = ctx.tasks()
    state = ctx.state()
    if state.pseudo_version is None:  # recorded at pretraining; before it, what the tasks carry
        state.pseudo_version = ctx.find_pseudo_version(tasks)
    models = list_models(ctx.dir.workspace) if ctx.dir.exists() else []
    points, metric = curve_points(state, models)
    curve = None
    if len(points) >= 2:
        curve = plot_learning_curve(points, ctx.dir.curve_png, metric=metric)
    jobs = [j for j in JobStore(jobs_dir(ctx.model_dir)).list(ctx.project_id)]
    return ProjectStatus(
        project_id=ctx.project_id,
        n_tasks=len(tasks),
        n_annotated=sum(has_human_labels(t) for t in tasks),
        state=state,
        coreset=coreset_progress(state.current_round, tasks) if state.current_round else None,
        models=models,
        jobs=jobs,
        curve=curve,
        label_studio_url=ctx.client.url,
    )


def format_status(status: ProjectStatus) -> str:
    state = status.state
    lines = [
        f"project {status.project_id}: {status.n_tasks} tasks, {status.n_annotated} annotated",
        f"pseudo-labels: {state.pseudo_version or '-'}; "
        f"serving: {state.served or state.pseudo_version or '-'}",
    ]
    if state.latest and state.latest != state.served:
        lines.append(
            f"  {state.latest} is kept but not served: a model is served once a round's corrections, "
            "scored before it trains on them, show it beats what is served"
        )
    if status.coreset is not None and state.current_round is not None:
        rnd, cs = state.current_round, status.coreset
        lines.append(
            f"round {rnd.number} ({rnd.strategy}, ranked with {rnd.ranked_with}): core-set "
            f"{len(cs.done)}/{cs.total - len(cs.deleted)} annotated"
            + (f", {len(cs.deleted)} deleted" if cs.deleted else "")
            + (f"; fine-tuned into {rnd.finetuned}" if rnd.finetuned else "")
        )
        if cs.pending:
            shown = ", ".join(map(str, cs.pending[:10])) + (" ..." if len(cs.pending) > 10 else "")
            lines.append(f"  still to annotate: tasks {shown}")
            project = f"{status.label_studio_url}/projects/{status.project_id}"
            lines.append(f"  open the first: {project}/data?task={cs.pending[0]}")
    else:
        lines.append("no round ranked yet (activeseg rank)")
    if status.models or state.evaluations:
        lines.append("")
        lines.append(
            f"{'model':14s} {'kind':9s} {'human':>5s} {'pseudo':>6s} {'iters':>5s} {'min':>5s} "
            f"{'eval mSA':>8s}  {'parent':12s} plan"
        )
        for m in status.models:
            ev = state.evaluations.get(m.version, {}).get("msa")
            shown_ev = "-" if ev is None else f"{ev:.3f}"
            lines.append(
                f"{m.version:14s} {m.kind:9s} {m.sources.get('human', 0):5d} {m.sources.get('pseudo', 0):6d} "
                f"{m.iterations_run:5d} {m.training_seconds / 60:5.1f} {shown_ev:>8s}  "
                f"{m.parent or '-':12s} {m.configuration}"
            )
        plans = {m.configuration: m.plan for m in status.models if m.plan}
        for plan in plans.values():
            lines.append(f"plan {PlanChoice(**plan).summary()}: {plan['reason']}")
        for m in status.models:
            if m.kind == "pretrain" and m.started_from:
                lines.append(f"{m.version} started from {m.started_from}")
        pseudo_eval = state.evaluations.get(state.pseudo_version or "", {}).get("msa")
        if pseudo_eval is not None:
            lines.append(
                f"{state.pseudo_version:14s} {'pseudo':9s} {'':5s} {'':6s} {'':5s} {pseudo_eval:8.3f}"
            )
    for rnd in state.rounds:
        if rnd.coreset_msa is not None:
            lines.append(f"round {rnd.number}: pre-annotations vs corrections mSA {rnd.coreset_msa:.3f}")
        if rnd.comparison:
            n = next(iter(rnd.comparison.values()))["n"]
            lines.append(f"round {rnd.number}: on its {n} corrections, before training on them:")
            lines.append(f"  {'source':16s} {'mSA':>6s} {'AP50':>6s} {'F1':>6s}")
            for name, m in sorted(rnd.comparison.items(), key=lambda kv: -kv[1]["msa"]):
                lines.append(f"  {name:16s} {m['msa']:6.3f} {m['ap50']:6.3f} {m['f1']:6.3f}")
            lines.append(f"  -> {rnd.decision}")
    if state.teacher_set_aside:
        lines.append(f"pseudo-labels set aside: {state.teacher_set_aside}")
    if state.labeller_fit:
        lines += format_fit(state.labeller_fit, in_use(state), status.project_id)
    active = [j for j in status.jobs if j.status in (QUEUED, RUNNING)]
    lines.append("")
    queued, running = sum(j.status == QUEUED for j in active), sum(j.status == RUNNING for j in active)
    lines.append(f"jobs: {queued} queued, {running} running")
    for job in status.jobs[-5:]:
        lines.append(f"  {job.id} {job.kind:13s} {job.status:8s} {job.trigger:24s} {job.detail}")
    if status.curve is not None:
        lines.append(f"learning curve: {status.curve}")
    return "\n".join(lines)
