"""``activeseg rank``: the next core-set, pushed into Label Studio's queue."""

from __future__ import annotations

import argparse
import sys

from orchestrator.commands.common import (
    foreground,
    project_args,
    project_context,
)
from orchestrator.rank.strategies import DEFAULT_STRATEGY, STRATEGIES


def _cmd_rank(args: argparse.Namespace) -> int:
    from orchestrator.rank.ranking import check_choices

    check_choices(args.budget, args.strategy)
    ctx = project_context(args)
    asked = {"budget": args.budget, "strategy": args.strategy, "seed": args.seed}
    params = {k: v for k, v in asked.items() if v is not None}
    result = foreground(ctx, "rank", params)
    core = ", ".join(map(str, result["coreset"][:20])) + (" ..." if len(result["coreset"]) > 20 else "")
    print(
        f"round {result['round']}: {result['tasks']} tasks ranked by {result['strategy']} with "
        f"{result['ranked_with']}; core-set of {len(result['coreset'])}: tasks {core}"
    )
    print(
        f"Label Studio: {result['created']} predictions created, {result['rescored']} re-scored, "
        f"{result['duplicates_removed']} duplicates removed; project model version round-{result['round']}"
    )
    for task_id, error in result["errors"][:10]:
        print(f"  task {task_id} left out: {error}", file=sys.stderr)
    return 0


def add_rank(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rank",
        help="choose the core-set and order the annotators' queue in Label Studio",
        description="Score every unannotated task with the newest model (before nnU-Net: SAM encoder "
        "features and pseudo-label confidence), choose the core-set with a strategy, and push the order "
        "into Label Studio: 'Label All Tasks' then serves the core-set first, with pre-annotations.",
    )
    project_args(p)
    p.add_argument(
        "--budget",
        default=None,
        help="core-set size: a percentage of the unannotated tasks "
        "('5%%') or a count ('12'); default 5%%, then the last value given",
    )
    p.add_argument(
        "--strategy",
        choices=sorted(STRATEGIES),
        default=None,
        help=f"default: the project's stored choice, first {DEFAULT_STRATEGY} (docs/results.md)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.set_defaults(func=_cmd_rank)
