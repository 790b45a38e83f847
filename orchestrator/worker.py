"""Running the job queue (``activeseg.jobs``): what each kind of job does, and the worker.

The worker takes the next runnable job and runs it in a child process
(``python -m orchestrator.worker MODEL_DIR JOB_ID``), so a crash or a kill during training costs
that job only; the child's output goes to ``<jobs>/<id>.log``. If the child dies without
recording an outcome, the worker marks the job failed; if the worker dies too, the next
:meth:`JobStore.reap` (any process touching the queue) does. The same worker loop runs inside
the ML backend (default) or standalone as ``activeseg worker``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from activeseg.jobs import RUNNING, WORKING, Job, JobStore

log = logging.getLogger(__name__)


def jobs_dir(model_dir: Path) -> Path:
    return Path(model_dir) / "jobs"


def run_job(job: Job, store: JobStore, model_dir: Path) -> dict[str, Any]:
    """Do the work of ``job`` in this process; returns its result (raises on failure)."""
    from orchestrator.context import ProjectContext
    from orchestrator.training import coreset_progress, finetune, pretrain

    ctx = ProjectContext.from_env(job.project, model_dir)

    def report(message: str) -> None:
        print(message, flush=True)

    if job.kind == "coreset-check":
        store.update(job.id, stage="checking")
        state = ctx.state()
        rnd = state.current_round
        if rnd is None:
            return {"status": "no round has been ranked yet"}
        if rnd.finetuned is not None:
            return {"status": f"round {rnd.number} is already fine-tuned into {rnd.finetuned}"}
        progress = coreset_progress(rnd, ctx.tasks())
        if not progress.complete:
            return {"status": "waiting", "done": len(progress.done), "total": progress.total}
        store.update(job.id, stage=WORKING)
        info = finetune(ctx, report)
        return {"status": "fine-tuned", "model": info.version if info else None}
    store.update(job.id, stage=WORKING)
    if job.kind == "pretrain":
        return {"status": "trained", "model": pretrain(ctx, report).version}
    if job.kind == "finetune":
        info = finetune(ctx, report, force=bool(job.params.get("force")))
        return {"status": "fine-tuned" if info else "nothing to do", "model": info.version if info else None}
    if job.kind == "prelabel":
        from orchestrator.prelabel import prelabel_project

        pre = prelabel_project(job.project, model_dir=model_dir, client=ctx.client)
        return {"status": "pseudo-labelled", "predicted": pre.predicted, "errors": len(pre.errors)}
    raise ValueError(f"job {job.id}: unknown kind {job.kind!r}")


def execute(job: Job, store: JobStore, model_dir: Path) -> Job:
    """Run a claimed job here and record its outcome; exceptions are recorded, then re-raised."""
    try:
        result = run_job(job, store, model_dir)
    except BaseException as exc:
        store.finish(job.id, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise
    return store.finish(job.id, result=result)


class Worker:
    """Runs queued jobs one at a time per project, each in a child process."""

    def __init__(self, model_dir: Path, poll_seconds: float = 2.0) -> None:
        self.model_dir = Path(model_dir)
        self.store = JobStore(jobs_dir(model_dir))
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()

    def run_once(self) -> Job | None:
        """Claim and run the next job to completion; None when nothing was runnable."""
        job = self.store.claim()
        if job is None:
            return None
        log_path = self.store.root / f"{job.id}.log"
        with open(log_path, "ab") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.worker", str(self.model_dir), job.id],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C on the worker's terminal is not the job's
            )
            self.store.update(job.id, pid=child.pid)
            log.info("job %s (%s, project %s) runs as process %s", job.id, job.kind, job.project, child.pid)
            code = child.wait()
        final = self.store.get(job.id)
        if final.status == RUNNING:  # the child died before recording an outcome
            why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            final = self.store.finish(job.id, error=f"its process {why}; see {log_path}")
        log.info("job %s %s", job.id, final.status)
        return final

    def run_forever(self) -> None:
        self.store.reap()
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # a broken job must not stop the queue
                log.exception("worker error")
                ran = None
            if ran is None:
                self._stop.wait(self.poll_seconds)

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="activeseg-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def _child_main(model_dir: str, job_id: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # terminate -> KeyboardInterrupt -> recorded
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
