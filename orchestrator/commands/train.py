"""``activeseg pretrain`` and ``finetune``: nnU-Net on the pseudo-labels, then on each round's corrections."""

from __future__ import annotations

import argparse
from pathlib import Path

from activeseg.nnunet.plans import CONFIGURATIONS
from activeseg.projectstate import PSEUDO_CHOICES
from orchestrator.commands.common import (
    foreground,
    minutes_flag,
    project_args,
    project_context,
    save_settings,
    start_minutes_flag,
)
from orchestrator.train.teacher import POOR_TEACHER_MSA


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from activeseg.nnunet import starting

    if args.init is not None:
        starting.resolve(args.init)  # a missing or foreign file fails here, not in the job
    start_minutes = start_minutes_flag(args.start_minutes)  # before connecting: a bad flag fails first
    ctx = project_context(args)
    save_settings(
        ctx,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        minutes=minutes_flag(args.minutes, args.epochs, args.iterations),
        configuration=args.plan,
        init=args.init,
        start_minutes=start_minutes,
        device=args.device,
        eval_labels=args.eval_labels,
    )
    result = foreground(ctx, "pretrain")
    print(f"model {result['model']} trained; next: activeseg rank --project {args.project}")
    return 0


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="train nnU-Net on the pseudo-labels (nnU-Net plans itself on them)",
        description="Export every task's best labels (annotation, else pseudo-label), let nnU-Net plan and "
        "preprocess, train the first model (nnunet-r0) and score every task with it. Resumes after a crash.",
    )
    project_args(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs (saved for later runs; default 4)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per epoch (default 25)")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training time budget; the epochs then only cap it (saved; 0, or --epochs/--iterations "
        "without --minutes, clears it; default: 20)",
    )
    p.add_argument(
        "--plan",
        choices=list(CONFIGURATIONS),
        default=None,
        help="nnU-Net configuration: 2d is nnU-Net's own plan, 2d_lite a smaller U-Net sized from the "
        "objects, which learns far more per CPU minute (benchmarks/README.md); default: 2d on cuda, "
        "2d_lite on cpu",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="auto|none|FILE",
        help="starting weights: auto, the shipped 2d_lite network trained on the ground truth of 517 "
        "public DSB2018 fluorescence images, when this project's network has its shape; none, random "
        "weights; or a starting-point file (saved; default: auto)",
    )
    p.add_argument(
        "--start-minutes",
        type=float,
        default=None,
        help="pretraining minutes on the pseudo-labels when r0 starts from a starting point (saved; "
        "default 0: r0 is the starting point, which training on classical pseudo-labels made worse in "
        "docs/training.md; --minutes applies to random weights)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cpu")
    p.add_argument(
        "--eval-labels",
        type=Path,
        default=None,
        help="folder of ground-truth label images named like the images, to measure models",
    )
    p.set_defaults(func=_cmd_pretrain)


def _cmd_finetune(args: argparse.Namespace) -> int:
    ctx = project_context(args)
    save_settings(
        ctx,
        finetune_epochs=args.epochs,
        finetune_iterations_per_epoch=args.iterations,
        finetune_minutes=minutes_flag(args.minutes, args.epochs, args.iterations),
        device=args.device,
        with_pseudo=args.with_pseudo,
        finetune_lr=args.lr,
        finetune_pseudo=args.pseudo,
        poor_teacher_msa=args.poor_teacher_msa,
        eval_labels=args.eval_labels,
    )
    if args.with_pseudo:  # the admin's word brings back pseudo-labels a round had set aside
        with ctx.dir.update() as state:
            state.teacher_set_aside = ""
    result = foreground(ctx, "finetune", {"force": True} if args.force else None)
    if result.get("model"):
        served = result.get("served") or "the pseudo-labels"
        print(f"model {result['model']} trained; annotators get {served}; next round: activeseg rank "
              f"--project {args.project}; see activeseg status for the comparison")  # fmt: skip
    return 0


def add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune nnU-Net on the corrected core-set and serve the new model",
        description="When every core-set task has a submitted annotation, fine-tune the newest model on the "
        "human annotations together with the other tasks' pseudo-labels, score every task, and have the ML "
        "backend serve the new model. The ML backend does this by itself when Label Studio's webhooks say "
        "the core-set is done.",
    )
    project_args(p)
    p.add_argument("--force", action="store_true", help="fine-tune even if the core-set is incomplete")
    p.add_argument("--epochs", type=int, default=None, help="epochs (saved; default 2)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per epoch (default 25)")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training time budget (saved; 0, or --epochs/--iterations without it, clears it; default: 5)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cpu")
    p.add_argument(
        "--with-pseudo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train on the pseudo-labels of unannotated tasks, with the annotated images "
        "repeated to about half of the samples (saved; default: on; --no-with-pseudo trains on the "
        "annotations only; --with-pseudo also brings back pseudo-labels a round set aside)",
    )
    p.add_argument(
        "--poor-teacher-msa",
        type=float,
        default=None,
        metavar="MSA",
        help="set the pseudo-labels aside for good (train on the corrections alone) once they score "
        f"below this mSA on a round's corrections (saved; default {POOR_TEACHER_MSA:g}; 0: never)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="initial learning rate (saved; default: 3e-4 when nnunet-r0 is the shipped starting point, "
        "trained on ground truth, else nnU-Net's own 1e-2)",
    )
    p.add_argument(
        "--pseudo",
        choices=PSEUDO_CHOICES,
        default=None,
        help="the unannotated tasks' pseudo-labels: teacher, as they are; agreed, with the pixels where "
        "the model being fine-tuned disagrees with them left out of the loss (saved; default: teacher)",
    )
    p.add_argument("--eval-labels", type=Path, default=None, help="as for pretrain")
    p.set_defaults(func=_cmd_finetune)
