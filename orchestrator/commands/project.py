"""``activeseg init``, ``status`` and ``export``: a project's start, where it stands, and its labels out."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from activeseg.regions import KINDS
from orchestrator.commands.common import (
    project_args,
    project_context,
)


def _cmd_init(args: argparse.Namespace) -> int:
    from activeseg.datasets import read_dataset
    from activeseg.labellers.tasks import LabellerConfig
    from activeseg.lsclient import LabelStudioClient
    from orchestrator.prelabel.project_setup import describe_images, init_project
    from orchestrator.prelabel.region_choice import project_label_config

    files_root = args.files_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    if not files_root:
        print(
            "activeseg: error: give --files-root or set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT to the folder "
            "Label Studio serves local files from",
            file=sys.stderr,
        )
        return 2
    user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    client, samples = LabelStudioClient(), read_dataset(args.images)
    config, why = project_label_config(client, args.title, samples, args.regions, args.label_config)
    print(f"images: {describe_images(samples, LabellerConfig.from_env().name)}")
    print(f"regions: {why}")
    result = init_project(
        client,
        samples,
        args.title,
        Path(files_root),
        config,
        backend_url=args.backend_url,
        backend_auth=(user, password) if user and password else None,
        webhook_secret=os.environ.get("ACTIVESEG_WEBHOOK_SECRET") or None,
    )
    print(
        ("created" if result.created else "reusing") + f" project {result.project_id} '{args.title}': "
        f"{result.n_tasks} tasks ({result.n_new} new)"
    )
    if result.ml_backend_id is not None:
        print(
            f"ML backend {args.backend_url} connected (id {result.ml_backend_id}), "
            f"webhook {result.webhook_id}"
        )
    print(f"next: activeseg prelabel --project {result.project_id}")
    return 0


def add_init(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="create or update a Label Studio project from a folder of images",
        description=(
            "Create (or reuse, by title) a project from the label config, write 8-bit display PNGs, register "
            "local storage, import one task per image (data.image = display PNG, data.raw = original), and "
            "connect the ML backend and its webhook. Re-running adds only new images. Needs "
            "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY; the images are staged under Label Studio's local "
            "files document root."
        ),
    )
    p.add_argument(
        "--images", type=Path, required=True, help="folder of images (PNG or TIFF; optional labels/)"
    )
    p.add_argument(
        "--project", dest="title", default="activeseg", help="project title (default: %(default)s)"
    )
    p.add_argument(
        "--files-root",
        type=Path,
        default=None,
        help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: that variable)",
    )
    p.add_argument(
        "--backend-url",
        default=os.environ.get("ACTIVESEG_BACKEND_URL"),
        help="the ML backend's URL as Label Studio reaches it (default: ACTIVESEG_BACKEND_URL)",
    )
    p.add_argument(
        "--regions",
        choices=("auto", *KINDS),
        default="auto",
        help="how cells are drawn: one polygon or one brush mask each. auto (default) pseudo-labels 20 of "
        "the images and takes polygons unless every one has at most 25 cells and outlines redraw them "
        "poorly (brush masks make Label Studio's page slow past 25 cells). An existing project keeps its own",
    )
    p.add_argument(
        "--label-config",
        type=Path,
        default=None,
        help="label config with one PolygonLabels or BrushLabels tag; overrides --regions "
        "(shipped: label_config.xml, polygons; label_config_brush.xml, brush masks)",
    )
    p.set_defaults(func=_cmd_init)


def _cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.status import format_status, project_status

    print(format_status(project_status(project_context(args))))
    return 0


def add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="tasks, core-set progress, models with metrics, jobs, learning curve")
    project_args(p)
    p.set_defaults(func=_cmd_status)


def _cmd_export(args: argparse.Namespace) -> int:
    from orchestrator.export.project import export_project

    report = export_project(project_context(args), args.out)
    sources = ", ".join(f"{n} {src}" for src, n in sorted(report.by_source.items()))
    print(f"{report.n_images} images, {report.n_instances} instances ({sources}) -> {report.out_dir}")
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="one instance label TIFF per image plus COCO JSON",
        description="Write labels/<task>.tif (the human annotation where there is one, else the newest "
        "model's prediction, else the pseudo-label), coco.json and manifest.csv.",
    )
    project_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_cmd_export)
