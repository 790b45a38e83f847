"""The job worker: takes the next runnable job from the queue and runs it in a child process.

Each job runs as ``python -m orchestrator.jobrun MODEL_DIR JOB_ID``, so a crash or a kill during
training costs that job only; the child's output goes to ``<jobs>/<id>.log``. If the child dies
without recording an outcome, the worker marks the job failed; if the worker dies too, the next
:meth:`JobStore.reap` (any process touching the queue) does. The same loop runs inside the ML
backend (default) or standalone as ``activeseg worker``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from activeseg.jobs import RUNNING, Job, JobStore, jobs_dir

log = logging.getLogger(__name__)
#: the module a job's child process runs (``orchestrator/jobrun.py``)
JOB_RUNNER = "orchestrator.jobrun"


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
        try:
            with open(log_path, "ab") as out:
                child = subprocess.Popen(
                    [sys.executable, "-m", JOB_RUNNER, str(self.model_dir), job.id],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C on the worker's terminal is not the job's
                )
        except OSError as exc:  # the job must not stay "running" under this live process
            return self.store.finish(job.id, error=f"could not start its process: {exc}")
        self.store.update(job.id, pid=child.pid)
        log.info("job %s (%s, project %s) runs as process %s", job.id, job.kind, job.project, child.pid)
        code = child.wait()
        final = self.store.get(job.id)
        if final.status == RUNNING:  # the child died before recording an outcome
            why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            final = self.store.finish(job.id, error=f"its process {why}; see {log_path}")
        log.info("job %s %s", job.id, final.status)
        return final

    def drain(self) -> int:
        """Run queued jobs until none can run; returns how many ran."""
        ran = 0
        while self.run_once() is not None:
            ran += 1
        return ran

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


# -- Redis (RQ): for labs whose workers run on other machines ---------------------------------
#
# The file queue stays the truth (job records, single flight, status); Redis only carries
# wake-ups. Each RQ job drains the file queue, so every RQ worker runs the very same jobs, and a
# wake-up lost or duplicated costs nothing. MODEL_DIR must be shared (e.g. one volume).

RQ_QUEUE = "activeseg"
RQ_TIMEOUT = 7 * 24 * 3600  # a wake-up may run a long training


def drain(model_dir: str | None = None) -> int:
    """Run queued jobs until none can run; returns how many ran. ``model_dir`` defaults to this
    process's MODEL_DIR (so workers may mount it elsewhere than the backend)."""
    return Worker(Path(model_dir or os.environ.get("MODEL_DIR", "model_dir"))).drain()


def _rq_queue(redis_url: str) -> Any:
    from redis import Redis
    from rq import Queue

    return Queue(RQ_QUEUE, connection=Redis.from_url(redis_url))


def notify_rq(redis_url: str) -> None:
    """Wake an RQ worker up to drain the queue."""
    _rq_queue(redis_url).enqueue(drain, job_timeout=RQ_TIMEOUT, result_ttl=3600)


def run_rq_worker(redis_url: str, burst: bool = False) -> None:
    """An RQ worker on the activeseg queue (``burst``: stop when Redis has nothing left)."""
    from rq import Worker as RqWorker

    queue = _rq_queue(redis_url)
    drain()  # jobs queued while no worker listened
    RqWorker([queue], connection=queue.connection).work(burst=burst)
