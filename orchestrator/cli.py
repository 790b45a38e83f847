"""The ``activeseg`` command line: the lab admin's entry point.

Each subcommand's arguments and handler live in ``orchestrator.commands``, grouped by the loop's
stages; this module lists them in order and turns the errors a user can fix (bad input files, an
unreachable server, a wrong token) into one line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import activeseg
from orchestrator.commands import demo, prelabel, project, rank, services, study, train
from orchestrator.commands.common import USER_ERRORS


def _cmd_version(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    print(f"activeseg {activeseg.__version__}")
    for dist in ("torch", "nnunetv2", "segment-anything", "label-studio-sdk"):
        print(f"  {dist} {version(dist)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="activeseg",
        description=(
            "Instance segmentation of microscopy images from a small annotated core-set: SAM "
            "pseudo-labels as Label Studio pre-annotations, nnU-Net trained on them, and the most "
            "informative images queued first for your annotators."
        ),
        epilog="Label Studio credentials come from LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("version", help="print the versions of activeseg and its main libraries")
    p.set_defaults(func=_cmd_version)
    # in the loop's order (try it, measure it, set up, pre-label, train, rank, fine-tune, look, export),
    # then the services and tools
    for add in (
        demo.add_demo, study.add_study, project.add_init, prelabel.add_prelabel, train.add_pretrain,
        rank.add_rank, train.add_finetune, project.add_status, project.add_export, services.add_watch,
        services.add_serve, services.add_worker, services.add_jobs, prelabel.add_models,
        prelabel.add_pseudolabels, demo.add_labelstudio,
    ):  # fmt: skip
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        print(f"activeseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("activeseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
