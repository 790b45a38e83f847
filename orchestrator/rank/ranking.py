"""``activeseg rank``: score the unannotated tasks, choose the core-set, order the queue.

Scores come from the newest nnU-Net model (stored when it was trained) or, before there is
one, from the cold-start scorer. The round is recorded before anything is pushed, so a re-run
after a failure (Label Studio stopped, Ctrl-C) pushes the same round again and completes it.

Pre-annotations shown to annotators: the served source's masks, i.e. the pseudo-labels until a
model has beaten them on a round's corrections (the serving gate, ``orchestrator.train.serving``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from activeseg.projectstate import ProjectState, Round
from activeseg.scores import ScoreStore, TaskScore, disagreement
from orchestrator.context import LoopError, ProjectContext, has_human_labels
from orchestrator.rank.queue_order import PushReport, push_order
from orchestrator.rank.scoring import ColdStartScorer, NnunetScorer, Scorer, score_tasks, stack_features
from orchestrator.rank.strategies import (
    NEEDS_DISAGREEMENT,
    NEEDS_FLIPS,
    NEEDS_MODEL,
    Candidates,
    budget_to_k,
    get_strategy,
    rank,
)


@dataclass(frozen=True)
class RankResult:
    round: Round
    push: PushReport
    errors: list[tuple[int, str]]


def check_choices(budget: str | None, strategy: str | None) -> None:
    """Refuse a bad budget or strategy before anything is saved or computed."""
    try:
        if budget is not None:
            budget_to_k(budget, 100)
        if strategy is not None:
            get_strategy(strategy)
    except ValueError as exc:
        raise LoopError(str(exc)) from None


def _scorer_name(ctx: ProjectContext, state: ProjectState, tasks: list[dict[str, Any]]) -> str:
    return state.latest or ColdStartScorer.name_for(ctx.pseudo_version(tasks))


def _scorer(ctx: ProjectContext, state: ProjectState, tasks: list[dict[str, Any]]) -> Scorer:
    """The scorer (models load here; only when something must be scored)."""
    model = state.latest
    if model is not None:
        flips = state.settings.strategy in NEEDS_FLIPS
        return NnunetScorer(ctx.dir.workspace, model, ctx.images, ctx.config, state.settings.device, flips)
    return ColdStartScorer(ctx.pseudo_version(tasks), ctx.images, ctx.config)


def _pre_annotation(
    ctx: ProjectContext, state: ProjectState, pseudo: str | None
) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    cfg = ctx.config
    store = ScoreStore(ctx.dir.scores_dir(state.served)) if state.served else None

    def regions(task: dict[str, Any]) -> list[dict[str, Any]]:
        if store is not None:
            labels = store.labels(int(task["id"]))
            if labels is not None:
                return cfg.to_results(labels.astype(np.uint32))
        preds = [p for p in task.get("predictions") or [] if p.get("model_version") == pseudo]
        return max(preds, key=lambda p: p["id"])["result"] if preds else []

    return regions


def rank_project(
    ctx: ProjectContext,
    budget: str | None = None,
    strategy: str | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> RankResult:
    """Rank every unannotated task and push the order; ``None`` arguments use the saved settings.

    Idempotent within a round: asked again with the same model and settings, the round's order
    is pushed again as it is (a re-run after a failure completes it). With other settings, the
    round is re-ranked, but core-set tasks already annotated stay in its core-set; so is a round
    that misses unannotated tasks (imported since, or not scored last time).
    """
    check_choices(budget, strategy)
    wanted = strategy or ctx.state().settings.strategy
    if wanted in NEEDS_MODEL and ctx.state().latest is None:  # before any image is scored
        raise LoopError(
            f"the {wanted} strategy ranks by a trained nnU-Net and this project has no model yet: run "
            "'activeseg pretrain' first, or rank before it with another --strategy (e.g. typiclust or random)"
        )
    with ctx.dir.update() as st:  # remember the admin's choices for webhook-triggered rounds
        st.settings.budget = budget or st.settings.budget
        st.settings.strategy = strategy or st.settings.strategy
        st.settings.seed = st.settings.seed if seed is None else seed
    state = ctx.state()
    settings = state.settings
    tasks = ctx.tasks()
    annotated = {int(t["id"]) for t in tasks if has_human_labels(t)}
    scorer = _scorer(ctx, state, tasks)
    current = state.current_round
    open_round = current if current is not None and current.finetuned is None else None
    same = open_round is not None and (open_round.ranked_with, open_round.strategy, open_round.budget,
                                       open_round.seed) == (scorer.name, settings.strategy, settings.budget,
                                                            settings.seed)  # fmt: skip
    errors: list[tuple[int, str]] = []
    if same and open_round is not None:
        rnd = open_round
    else:
        rnd, errors = _new_ranking(ctx, scorer, tasks, annotated, open_round, len(state.rounds) + 1, progress)
        with ctx.dir.update() as st:
            st.rounds = [r for r in st.rounds if r.number != rnd.number] + [rnd]
    return RankResult(rnd, _push_round(ctx, state, rnd, tasks, progress), errors)


def _push_round(
    ctx: ProjectContext, state: ProjectState, rnd: Round, tasks: list[dict[str, Any]], progress: bool,
    refresh: bool = False,
) -> PushReport:  # fmt: skip
    """Push the round's order for its unannotated tasks, showing what is served now."""
    by_id = {int(t["id"]): t for t in tasks}
    todo = [t for t in rnd.order if t in by_id and not has_human_labels(by_id[t])]
    return push_order(
        ctx.client, ctx.project_id, ctx.config, rnd.version, rnd.order, todo,
        {int(k): v for k, v in rnd.clusters.items()},
        _pre_annotation(ctx, state, ctx.find_pseudo_version(tasks)), by_id, rnd.number, progress=progress,
        refresh=refresh,
    )  # fmt: skip


def refresh_round(ctx: ProjectContext, progress: bool = True) -> PushReport | None:
    """Show the open round's unannotated tasks what is served now (e.g. after another
    pseudo-labeller was chosen), keeping their order; None when no round is open."""
    state = ctx.state()
    rnd = state.current_round
    if rnd is None or rnd.finetuned is not None:
        return None
    return _push_round(ctx, state, rnd, ctx.tasks(), progress, refresh=True)


def _disagreement(ctx: ProjectContext, tasks: list[dict[str, Any]], scores: list[TaskScore]) -> np.ndarray:
    """Per scored task, how much the model's instances disagree with the task's pseudo-label."""
    version = ctx.find_pseudo_version(tasks)
    by_id = {int(t["id"]): t for t in tasks}
    values = []
    for score in scores:
        pseudo = [
            p for p in by_id[score.task_id].get("predictions") or [] if p.get("model_version") == version
        ]
        if score.labels is None or not pseudo:
            raise LoopError(
                "the disagreement strategy needs a pretrained nnU-Net and the pseudo-labels of every task: "
                "run activeseg prelabel and pretrain first"
            )
        height, width = score.labels.shape
        values.append(disagreement(ctx.config.to_labels(pseudo[-1]["result"], height, width), score.labels))
    return np.array(values, dtype=np.float64)


def _new_ranking(
    ctx: ProjectContext,
    scorer: Scorer,
    tasks: list[dict[str, Any]],
    annotated: set[int],
    open_round: Round | None,
    next_number: int,
    progress: bool,
) -> tuple[Round, list[tuple[int, str]]]:
    settings = ctx.state().settings
    store = ScoreStore(ctx.dir.scores_dir(scorer.name))
    todo = [t for t in tasks if int(t["id"]) not in annotated]
    scores, errors = score_tasks(scorer, store, todo, progress=progress)
    done_scores = [s for s in (store.get(t) for t in sorted(annotated)) if s is not None]
    candidates = Candidates(
        task_ids=np.array([s.task_id for s in scores], dtype=np.int64),
        uncertainty=np.array([s.uncertainty for s in scores], dtype=np.float64),
        features=stack_features(scores) if scores else np.zeros((0, 1), np.float32),
        instances=np.array([s.instances for s in scores], dtype=np.int64),
        labelled_features=stack_features(done_scores) if done_scores else np.zeros((0, 1), np.float32),
        disagreement=_disagreement(ctx, tasks, scores) if settings.strategy in NEEDS_DISAGREEMENT else None,
        flip_spread=np.array([s.flip_spread for s in scores], dtype=np.float64)
        if settings.strategy in NEEDS_FLIPS
        else None,
    )
    # core-set members of an open round that are already annotated keep their place in it
    kept = [t for t in open_round.coreset if t in annotated] if open_round else []
    k = max(budget_to_k(settings.budget, len(scores) + len(kept)) - len(kept), 0)
    ranking = rank(candidates, min(k, len(scores)), settings.strategy, settings.seed)
    order = [int(candidates.task_ids[i]) for i in ranking.order]
    clusters = {str(int(candidates.task_ids[i])): int(c) for i, c in enumerate(ranking.clusters)}
    rnd = Round(
        number=open_round.number if open_round else next_number, ranked_with=scorer.name,
        strategy=settings.strategy, k=len(kept) + ranking.k, coreset=kept + order[: ranking.k],
        order=kept + order, clusters=clusters, budget=settings.budget, seed=settings.seed,
    )  # fmt: skip
    return rnd, errors
