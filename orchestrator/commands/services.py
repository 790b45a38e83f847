"""``activeseg serve``, ``worker``, ``jobs`` and ``watch``: the long-running processes and the job queue."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from activeseg.labellers import PSEUDOLABELERS
from activeseg.lsclient import LabelStudioError, require_credentials
from orchestrator.commands.common import (
    USER_ERRORS,
    foreground,
    project_args,
    project_context,
)
from orchestrator.context import default_model_dir


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


def _cmd_watch(args: argparse.Namespace) -> int:
    import time

    ctx = project_context(args)
    print(f"checking project {args.project}'s core-set every {args.interval:g} s (Ctrl-C stops)")
    while True:
        try:
            result = foreground(ctx, "coreset-check")
        except USER_ERRORS as exc:  # another job is running, Label Studio is down...: try again later
            print(f"{time.strftime('%H:%M:%S')} not checked: {exc}")
        else:
            counts = f" ({result['done']}/{result['total']})" if "done" in result else ""
            print(f"{time.strftime('%H:%M:%S')} {result.get('status')}{counts}")
        if args.once:
            return 0
        time.sleep(args.interval)


def add_watch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch", help="poll Label Studio and fine-tune when the core-set is done (no webhooks)"
    )
    project_args(p)
    p.add_argument(
        "--interval", type=float, default=60.0, help="seconds between checks (default: %(default)s)"
    )
    p.add_argument("--once", action="store_true", help="check once and exit")
    p.set_defaults(func=_cmd_watch)


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


def add_serve(sub: argparse._SubParsersAction) -> None:
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


def add_worker(sub: argparse._SubParsersAction) -> None:
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


def add_jobs(sub: argparse._SubParsersAction) -> None:
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
