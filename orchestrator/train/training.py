"""The nnU-Net steps of the loop: pretrain on pseudo-labels, fine-tune on the corrected core-set.

Both are safe to re-run after a crash: the dataset export is idempotent, training resumes from
its last checkpoint, and a model version that finished is never trained again. After training,
every task is scored with the new model (uncertainty, features and its mask), so that ``rank``
and the ML backend read stored results instead of running the network again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.imageio import read_label_image
from activeseg.metrics import score_dataset
from activeseg.nnunet import starting
from activeseg.nnunet.dataset import Case, export_dataset
from activeseg.nnunet.engine import (
    UNBOUNDED_EPOCHS,
    EpochProgress,
    ModelInfo,
    TrainBudget,
    list_models,
    plan_and_preprocess,
    preprocess,
    train,
)
from activeseg.nnunet.plans import PlanChoice
from activeseg.projectstate import (
    PRETRAIN_VERSION,
    ProjectDir,
    ProjectState,
    Round,
    Settings,
    finetune_version,
)
from activeseg.scores import ScoreStore
from orchestrator.context import LoopError, ProjectContext, has_human_labels
from orchestrator.rank.scoring import NnunetScorer, score_tasks
from orchestrator.rank.strategies import NEEDS_FLIPS
from orchestrator.train.serving import LabelsOf, compare, decide
from orchestrator.train.teacher import POOR_TEACHER_MSA, set_aside_reason
from orchestrator.train.training_data import (
    CaseReport,
    best_labels,
    cases_from_tasks,
    mask_disagreement,
    oversample_human,
    result_labels,
    task_case_id,
)

Report = Callable[[str], None]


@dataclass(frozen=True)
class CoresetProgress:
    total: int
    done: list[int]
    pending: list[int]
    deleted: list[int]

    @property
    def complete(self) -> bool:
        return bool(self.done) and not self.pending


def coreset_progress(rnd: Round, tasks: Sequence[dict[str, Any]]) -> CoresetProgress:
    """Which core-set tasks have a submitted annotation (a deleted task no longer counts)."""
    by_id = {int(t["id"]): t for t in tasks}
    done = [t for t in rnd.coreset if t in by_id and has_human_labels(by_id[t])]
    deleted = [t for t in rnd.coreset if t not in by_id]
    pending = [t for t in rnd.coreset if t in by_id and t not in done]
    return CoresetProgress(len(rnd.coreset), done, pending, deleted)


def _epoch_printer(report: Report, version: str) -> Callable[[EpochProgress], None]:
    def on_epoch(p: EpochProgress) -> None:
        dice = ", ".join(f"{d:.2f}" for d in p.pseudo_dice)
        of = f"epoch {p.epoch}" + (f"/{p.epochs}" if p.epochs else "")
        if p.of_minutes:
            of += f", {p.minutes:.1f}/{p.of_minutes:g} min"
        report(f"{version}: {of} loss {p.train_loss:.3f} pseudo-Dice [{dice}] ({p.seconds:.0f} s)")

    return on_epoch


#: the fine-tune's learning rate when the admin chose none (docs/training.md). From the shipped
#: starting point (a network trained on ground truth) nnU-Net's own rate pulls the model back to
#: the pseudo-labels' level (demo: 0.518 against its parent's 0.549) and 3e-4 keeps it (0.553);
#: a model trained on pseudo-labels only learns from corrections at 1e-2 (study: 15 corrections
#: 0.604 against 0.577 at 1e-3; benchmarks/README.md, finetune_settings)
LR_FROM_STARTING_POINT = 3e-4
LR_FROM_PSEUDO_LABELS = 1e-2


def finetune_lr(settings: Settings, first: ModelInfo | None) -> float:
    """The admin's learning rate, else one by the lineage's first model (nnunet-r0)."""
    if settings.finetune_lr is not None:
        return settings.finetune_lr
    from_start = first is not None and first.started_from.startswith("starting point")
    return LR_FROM_STARTING_POINT if from_start and first.iterations_run == 0 else LR_FROM_PSEUDO_LABELS


def _existing(ctx: ProjectContext, version: str) -> ModelInfo | None:
    return next((m for m in list_models(ctx.dir.workspace) if m.version == version), None)


def _score_all(ctx: ProjectContext, version: str, tasks: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    settings = ctx.state().settings
    scorer = NnunetScorer(
        ctx.dir.workspace, version, ctx.images, ctx.config, settings.device, settings.strategy in NEEDS_FLIPS
    )
    _, errors = score_tasks(scorer, ScoreStore(ctx.dir.scores_dir(version)), tasks)
    return errors


def pretrain(ctx: ProjectContext, report: Report = print) -> ModelInfo:
    """Train nnU-Net on the pseudo-labels (and any human annotations) of every task."""
    tasks = ctx.tasks()
    pseudo = ctx.pseudo_version(tasks)
    settings = ctx.state().settings
    info = _existing(ctx, PRETRAIN_VERSION)
    if info is None:
        cases = cases_from_tasks(tasks, ctx.config, ctx.images, pseudo)
        if not cases.cases:
            raise LoopError(f"project {ctx.project_id}: no task has labels to train on")
        report(
            f"exporting {len(cases.cases)} cases ({cases.count('pseudo')} pseudo-labels, "
            f"{cases.count('human')} annotations; {len(cases.unlabelled)} tasks without either)"
        )
        ws = ctx.dir.workspace
        export_dataset(ws, cases.cases)
        if (ws.preprocessed_dir / "nnUNetPlans.json").is_file():  # a re-run after a crash: same plans
            report("nnU-Net preprocessing (existing plans)")
            preprocess(ws)
        else:
            report("nnU-Net planning and preprocessing")
            plan_and_preprocess(ws)
        budget = TrainBudget(
            epochs=settings.epochs if settings.minutes is None else UNBOUNDED_EPOCHS,
            iterations_per_epoch=settings.iterations_per_epoch, minutes=settings.minutes,
        )  # fmt: skip
        # from a starting point: its weights as they are unless the admin asks for pseudo-label
        # training too (docs/training.md: on the demo's images every such run lowered it)
        from_start = (
            replace(budget, minutes=settings.start_minutes, epochs=UNBOUNDED_EPOCHS)
            if settings.start_minutes
            else TrainBudget(epochs=0)
        )
        info = train(ws, PRETRAIN_VERSION, budget, _sources(cases), device=settings.device,
                     on_epoch=_epoch_printer(report, PRETRAIN_VERSION), configuration=settings.configuration,
                     start=starting.resolve(settings.init), start_budget=from_start)  # fmt: skip
        minutes = info.training_seconds / 60
        if info.iterations_run:
            report(f"{PRETRAIN_VERSION}: {info.iterations_run} iterations in {minutes:.1f} min "
                   f"with {PlanChoice(**info.plan).summary()}, from {info.started_from}")  # fmt: skip
        else:
            report(f"{PRETRAIN_VERSION} = {info.started_from}; used as it is, not trained on the "
                   "pseudo-labels (pretrain --start-minutes M would train it)")  # fmt: skip
    errors = _score_all(ctx, PRETRAIN_VERSION, tasks)
    with ctx.dir.update() as state:
        state.pseudo_version = pseudo
        state.pretrained = PRETRAIN_VERSION
    evaluate(ctx, [PRETRAIN_VERSION, pseudo], tasks)
    for task_id, error in errors:
        report(f"task {task_id} could not be scored: {error}")
    return info


def _sources(cases: CaseReport) -> dict[str, int]:
    return {"human": cases.count("human"), "pseudo": cases.count("pseudo")}


def finetune(ctx: ProjectContext, report: Report = print, force: bool = False) -> ModelInfo | None:
    """Fine-tune on the current round's corrections once its core-set is complete.

    Returns None (and trains nothing) when the round already has its fine-tuned model.
    """
    state = ctx.state()
    rnd = state.current_round
    if state.pretrained is None or rnd is None:
        raise LoopError(f"project {ctx.project_id}: run 'activeseg pretrain' and 'activeseg rank' first")
    if rnd.finetuned is not None:
        report(f"round {rnd.number} was already fine-tuned into {rnd.finetuned}; run 'activeseg rank' "
               "for the next round")  # fmt: skip
        return None
    tasks = ctx.tasks()
    progress = coreset_progress(rnd, tasks)
    if not progress.complete and not force:
        raise LoopError(
            f"core-set of round {rnd.number}: {len(progress.done)}/{progress.total - len(progress.deleted)} "
            f"tasks annotated; waiting for {', '.join(map(str, progress.pending[:10]))}"
        )
    version = finetune_version(rnd.number)
    parent = state.latest
    settings = state.settings
    # the serving gate, before the corrections are trained on (a re-run keeps the first scores)
    comparison = rnd.comparison or compare_on_corrections(ctx, rnd, tasks)
    decision = decide(state.served, state.pseudo_version, comparison)
    if not rnd.comparison:
        with ctx.dir.update() as st:
            current = next(r for r in st.rounds if r.number == rnd.number)
            current.comparison, current.decision = comparison, decision.reason
        report(f"round {rnd.number}: {decision.reason}")
    aside = teacher_set_aside(ctx.dir, rnd.number, comparison, report)
    info = _existing(ctx, version)
    if info is None:
        human = [t for t in tasks if has_human_labels(t)]
        rest = [t for t in tasks if not has_human_labels(t)] if settings.with_pseudo and not aside else []
        cases = cases_from_tasks(human + rest, ctx.config, ctx.images, state.pseudo_version)
        if not cases.cases:
            raise LoopError(f"project {ctx.project_id}: no annotated task to fine-tune on")
        if settings.finetune_pseudo == "agreed":
            cases.cases = _agreed_only(ctx, parent, rest, cases.cases)
        lr = finetune_lr(settings, _existing(ctx, PRETRAIN_VERSION))
        pseudo = f" and {cases.count('pseudo')} pseudo-labels" if rest else ""
        report(f"fine-tuning {parent} on {cases.count('human')} annotated images{pseudo} at lr {lr:g}")
        ws = ctx.dir.workspace
        export_dataset(ws, oversample_human(cases.cases))
        preprocess(ws)
        budget = TrainBudget(
            epochs=settings.finetune_epochs if settings.finetune_minutes is None else UNBOUNDED_EPOCHS,
            iterations_per_epoch=settings.finetune_iterations_per_epoch,
            initial_lr=lr, minutes=settings.finetune_minutes, warmup_iterations=settings.finetune_warmup,
        )  # fmt: skip
        info = train(ws, version, budget, _sources(cases), parent=parent, device=settings.device,
                     on_epoch=_epoch_printer(report, version))  # fmt: skip
    shown = _coreset_agreement(ctx, rnd, tasks)
    # every task: annotated ones give the next ranking its existing centres
    errors = _score_all(ctx, version, tasks)
    with ctx.dir.update() as st:
        st.served = decision.served
        current = next(r for r in st.rounds if r.number == rnd.number)
        current.finetuned = version
        current.coreset_msa = shown
        current.n_annotated = sum(has_human_labels(t) for t in tasks)
    evaluate(ctx, [version], tasks)
    for task_id, error in errors:
        report(f"task {task_id} could not be scored: {error}")
    report(f"annotators now get {decision.served or f'the pseudo-labels ({state.pseudo_version})'}; "
           f"{version} is served once round {rnd.number + 1}'s corrections show it beats that")  # fmt: skip
    return info


def teacher_set_aside(
    pdir: ProjectDir, round_number: int, comparison: dict[str, dict[str, float]], report: Report = print
) -> str:
    """Why the pseudo-labels are out of fine-tuning ("" while they are in); decided once, from
    the first round whose corrections show them poor (orchestrator.train.teacher), and kept."""
    state = pdir.load()
    if state.teacher_set_aside or not state.settings.with_pseudo:
        return state.teacher_set_aside
    threshold = state.settings.poor_teacher_msa
    reason = set_aside_reason(
        state.pseudo_version, comparison, round_number, POOR_TEACHER_MSA if threshold is None else threshold
    )
    if reason:
        with pdir.update() as st:
            st.teacher_set_aside = reason
        report(reason)
    return reason


def _agreed_only(
    ctx: ProjectContext, parent: str, tasks: Sequence[dict[str, Any]], cases: list[Case]
) -> list[Case]:
    """The pseudo-labelled cases with every pixel where the parent's stored masks disagree
    ignored; a task the parent has no masks of keeps its pseudo-labels whole."""
    store = ScoreStore(ctx.dir.scores_dir(parent))
    task_of = {task_case_id(t): int(t["id"]) for t in tasks}
    out = []
    for case in cases:
        model = store.labels(task_of[case.id]) if case.source == "pseudo" and case.id in task_of else None
        agreed = model is not None and model.shape == case.labels.shape
        out.append(mask_disagreement(case, model) if agreed else case)
    return out


def compare_on_corrections(
    ctx: ProjectContext, rnd: Round, tasks: Sequence[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """The pseudo-labels, the served model and the newest model against this round's corrections
    (none of them trained on these), for the serving gate."""
    state = ctx.state()
    by_id = {int(t["id"]): t for t in tasks}
    corrections = []
    for task_id in coreset_progress(rnd, tasks).done:
        human = best_labels(by_id[task_id], ctx.config, None)
        if human is not None:
            corrections.append(
                (by_id[task_id], result_labels(by_id[task_id], human[0], ctx.config, ctx.images))
            )
    names = [v for v in (state.pseudo_version, state.served, state.latest) if v]
    return compare(corrections, {name: _labels_of(ctx, name) for name in dict.fromkeys(names)})


def _labels_of(ctx: ProjectContext, version: str) -> LabelsOf:
    """A source's masks for a task: a model's stored ones, else its Label Studio prediction."""
    store = ScoreStore(ctx.dir.scores_dir(version))

    def labels(task: dict[str, Any], shape: tuple[int, int]) -> np.ndarray | None:
        stored = store.labels(int(task["id"]))
        if stored is not None:
            return stored
        preds = [p for p in task.get("predictions") or [] if p.get("model_version") == version]
        if not preds:
            return None
        return ctx.config.to_labels(preds[-1]["result"], shape[0], shape[1])

    return labels


def _coreset_agreement(ctx: ProjectContext, rnd: Round, tasks: Sequence[dict[str, Any]]) -> float | None:
    """mSA of what annotators were shown (the round's pre-annotation) against what they submitted:
    an honest score of the model on images it had not been trained on."""
    pairs = []
    by_id = {int(t["id"]): t for t in tasks}
    for task_id in coreset_progress(rnd, tasks).done:
        task = by_id[task_id]
        shown = [p for p in task.get("predictions") or [] if p.get("model_version") == rnd.version]
        human = best_labels(task, ctx.config, None)
        if not shown or human is None:
            continue
        truth = result_labels(task, human[0], ctx.config, ctx.images)
        h, w = truth.shape
        pairs.append((truth, ctx.config.to_labels(shown[0]["result"], h, w)))
    return round(score_dataset(pairs).msa, 4) if pairs else None


def _eval_label_file(folder: Path, name: str) -> Path | None:
    for suffix in (".png", ".tif", ".tiff"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def evaluate(ctx: ProjectContext, versions: Sequence[str], tasks: Sequence[dict[str, Any]]) -> None:
    """Score ``versions`` against the admin's evaluation labels (``Settings.eval_labels``) on the
    tasks nobody annotated, so no model is scored on images it was trained on as ground truth.

    A version is an nnU-Net model (its stored masks) or the pseudo-labeller (its predictions).
    """
    state: ProjectState = ctx.state()
    if not state.settings.eval_labels:
        return
    folder = Path(state.settings.eval_labels)
    truth: dict[int, np.ndarray] = {}
    for task in tasks:
        name = str((task.get("data") or {}).get("name") or "")
        path = _eval_label_file(folder, name) if name else None
        if path is not None and not has_human_labels(task):
            truth[int(task["id"])] = read_label_image(path)
    by_id = {int(t["id"]): t for t in tasks}
    results: dict[str, dict[str, Any]] = {}
    for version in versions:
        labels_of = _labels_of(ctx, version)
        pairs = [
            (gt, pred)
            for task_id, gt in truth.items()
            if (pred := labels_of(by_id[task_id], gt.shape)) is not None
        ]
        if pairs:
            scores = score_dataset(pairs)
            results[version] = {"msa": scores.msa, "ap50": scores.ap[0.5], "f1": scores.f1, "n": len(pairs)}
    with ctx.dir.update() as st:
        st.evaluations.update(results)
