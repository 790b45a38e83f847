"""The ``activeseg`` command line: the lab admin's entry point.

Each subcommand is a thin wrapper; the work lives in the modules it calls. Errors that a user
can fix (bad input files, an unreachable server, a wrong token) are printed as one line and exit
with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import activeseg
from activeseg.datasets import BUNDLED_SAMPLE, DatasetError
from activeseg.imageio import ImageReadError
from activeseg.labelconfig import DEFAULT_LABEL_CONFIG, LabelConfigError
from activeseg.lsclient import LabelStudioError
from activeseg.lsserver import LabelStudioServerError

USER_ERRORS = (ImageReadError, DatasetError, LabelConfigError, LabelStudioError, LabelStudioServerError)


def _cmd_version(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    print(f"activeseg {activeseg.__version__}")
    for dist in ("torch", "nnunetv2", "segment-anything", "label-studio-sdk"):
        print(f"  {dist} {version(dist)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator.demo import run_demo

    result = run_demo(
        images=args.images, workspace=args.workspace, title=args.title,
        label_config=args.label_config, port=args.port,
    )  # fmt: skip
    print(
        f"\nProject with {result.n_tasks} tasks ({result.n_new} new) is ready:\n"
        f"  open     {result.url}/projects/{result.project_id}/data\n"
        f"  login    {result.username}\n"
        f"  password {result.password}\n"
        f"Label Studio keeps running; stop it with: activeseg labelstudio stop"
        + ("" if args.workspace == Path(".activeseg") else f" --workspace {args.workspace}")
    )
    return 0


def _cmd_labelstudio(args: argparse.Namespace) -> int:
    from orchestrator.demo import server_for

    server = server_for(args.workspace.resolve())
    url = server.running_url()
    if args.action == "stop":
        if url is None:
            print(f"no Label Studio is running for workspace {args.workspace}")
            return 0
        server.stop()
        print(f"stopped Label Studio at {url}")
        return 0
    if url is None:
        print(f"no Label Studio is running for workspace {args.workspace}")
        return 3
    print(f"Label Studio is running at {url} (login {server.login.username})")
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

    p = sub.add_parser(
        "demo",
        help="start a local Label Studio with a project of sample nuclei images",
        description=(
            "Start a local Label Studio (127.0.0.1), create a project from the label config and "
            "import the images (8-bit display PNGs for people, originals for the models). "
            "Re-running reuses the server and the project and adds only new images."
        ),
    )
    p.add_argument(
        "--images",
        type=Path,
        default=BUNDLED_SAMPLE,
        help="dataset folder (images/, optional labels/ and manifest.csv); "
        "default: the bundled 24-image DSB2018 sample",
    )
    p.add_argument(
        "--workspace",
        type=Path,
        default=Path(".activeseg"),
        help="where Label Studio's data and the staged images live (default: .activeseg)",
    )
    p.add_argument("--title", default="activeseg demo", help="project title (default: %(default)s)")
    p.add_argument(
        "--label-config",
        type=Path,
        default=DEFAULT_LABEL_CONFIG,
        help="Label Studio label config with one BrushLabels tag (default: label_config.xml)",
    )
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: %(default)s)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("labelstudio", help="status or stop of the workspace's local Label Studio")
    p.add_argument("action", choices=["status", "stop"])
    p.add_argument(
        "--workspace",
        type=Path,
        default=Path(".activeseg"),
        help="workspace given to 'activeseg demo' (default: .activeseg)",
    )
    p.set_defaults(func=_cmd_labelstudio)
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
