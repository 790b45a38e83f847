"""What each kind of job does, and the entry point of a job's child process
(``python -m orchestrator.jobrun MODEL_DIR JOB_ID``, started by ``activeseg.worker``).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from activeseg.jobs import WORKING, Job, JobStore, jobs_dir

if TYPE_CHECKING:
    from orchestrator.context import ProjectContext


def run_job(job: Job, store: JobStore, model_dir: Path) -> dict[str, Any]:
    """Do the work of ``job`` in this process; returns its result (raises on failure)."""
    from orchestrator.context import ProjectContext
    from orchestrator.train.training import coreset_progress, finetune, pretrain

    ctx = ProjectContext.from_env(job.project, model_dir)

    def report(message: str) -> None:
        print(message, flush=True)

    if job.kind == "coreset-check":
        store.update(job.id, stage="checking")
        state = ctx.state()
        rnd = state.current_round
        if rnd is None:
            return {"status": "no round has been ranked yet"}
        if state.pretrained is None:  # ranked cold: nothing to fine-tune from yet
            return {"status": "waiting for 'activeseg pretrain'"}
        if rnd.finetuned is not None:
            return {"status": f"round {rnd.number} is already fine-tuned into {rnd.finetuned}"}
        progress = coreset_progress(rnd, ctx.tasks())
        if not progress.complete:
            return {"status": "waiting", "done": len(progress.done), "total": progress.total}
        store.update(job.id, stage=WORKING)
        info = finetune(ctx, report)
        return {"status": "fine-tuned", "model": info.version if info else None, "served": ctx.state().served}
    store.update(job.id, stage=WORKING)
    if job.kind == "pretrain":
        return {"status": "trained", "model": pretrain(ctx, report).version}
    if job.kind == "finetune":
        info = finetune(ctx, report, force=bool(job.params.get("force")))
        return {
            "status": "fine-tuned" if info else "nothing to do",
            "model": info.version if info else None,
            "served": ctx.state().served,
        }
    if job.kind == "rank":
        from orchestrator.rank.ranking import rank_project

        ranked = rank_project(
            ctx, job.params.get("budget"), job.params.get("strategy"), job.params.get("seed")
        )
        rnd, push = ranked.round, ranked.push
        return {
            "status": f"round {rnd.number} ranked", "round": rnd.number, "tasks": len(rnd.order),
            "strategy": rnd.strategy, "ranked_with": rnd.ranked_with, "coreset": rnd.coreset,
            "created": push.created, "rescored": push.rescored, "duplicates_removed": push.duplicates_removed,
            "errors": [list(e) for e in ranked.errors],
        }  # fmt: skip
    raise ValueError(f"job {job.id}: unknown kind {job.kind!r}")


def run_here(ctx: ProjectContext, kind: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a job in this process (CLI, demo) through the queue, so the project counts as busy;
    refused with ``JobError`` while another job of the project runs. Returns its result."""
    store = JobStore(jobs_dir(ctx.model_dir))
    try:
        return execute(store.start_here(kind, ctx.project_id, "cli", params), store, ctx.model_dir).result
    finally:
        wake_workers()  # jobs queued meanwhile (webhooks) waited for the project to be free


def wake_workers() -> None:
    """With REDIS_URL, tell the RQ workers to look at the queue (a failure only warns)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return
    from activeseg.worker import notify_rq

    try:
        notify_rq(url)
    except Exception as exc:
        print(f"activeseg: warning: could not reach Redis to wake the workers: {exc}", file=sys.stderr)


def execute(job: Job, store: JobStore, model_dir: Path) -> Job:
    """Run a claimed job here and record its outcome; exceptions are recorded, then re-raised."""
    try:
        with store.beating(job.id):
            result = run_job(job, store, model_dir)
    except BaseException as exc:
        store.finish(job.id, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise
    return store.finish(job.id, result=result)


def _terminate_handler(job_pid: int) -> Callable[[int, FrameType | None], None]:
    """SIGTERM in the job process raises KeyboardInterrupt, so the job is recorded as failed.

    Processes forked from it inherit the handler: nnU-Net's fork pools (e.g. listing dataset files)
    stop their workers with SIGTERM when done, and a worker that raised instead of dying could
    leave the pool's queue lock held and the job hung forever. They die as SIGTERM intends.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != job_pid:
            os._exit(128 + signum)
        raise KeyboardInterrupt

    return handler


def _child_main(model_dir: str, job_id: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate_handler(os.getpid()))
    # `kill -USR1 <pid>` writes every thread's stack to the job's log: where a stuck job waits
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    store = JobStore(jobs_dir(Path(model_dir)))
    job = store.update(job_id, pid=os.getpid())
    try:
        execute(job, store, Path(model_dir))
    except BaseException as exc:
        traceback.print_exc()
        print(f"job {job_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:3]))
