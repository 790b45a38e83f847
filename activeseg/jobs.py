"""A durable, single-flight job queue on the file system (no extra service).

Each job is one JSON file ``<root>/<id>.json``, written atomically, so queued and running jobs
survive a restart of the web process or the worker. Changes go through an exclusive file lock,
so the ML backend (webhooks), the CLI and workers in other processes can share one folder.

Rules, per Label Studio project:
- at most one job *runs* at a time (:meth:`JobStore.claim` skips projects with a running job);
- a trigger while an equal job is queued gets that job back instead of a new one, and so does a
  trigger while an equal job is past its checks and working (``stage`` ``"working"``): a second
  "Start Training" during training returns the running job's id;
- a running job whose process has died is marked ``failed`` (:meth:`JobStore.reap`) and can be
  re-run with :meth:`JobStore.rerun`. On the job's own host that is seen at once (its process is
  gone); a job of another host (a remote worker) counts as dead when it has not recorded a
  heartbeat (:meth:`JobStore.beating`) for :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from activeseg.fsutil import atomic_write_text, locked

log = logging.getLogger(__name__)
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: what a job can be asked to do (see ``orchestrator.jobrun``)
KINDS = ("coreset-check", "pretrain", "finetune", "rank")
#: finished core-set checks that found nothing to do are deleted after this long
CHECK_RECORDS_KEPT_S = 24 * 3600
#: ``stage`` of a running job that has passed its checks and is doing the expensive part
WORKING = "working"
#: a running job records a heartbeat this often...
HEARTBEAT_S = 60.0
#: ...and one of another host with none for this long is taken for dead (its machine was lost)
STALE_AFTER_S = 600.0


def jobs_dir(model_dir: Path) -> Path:
    """Where the queue of a MODEL_DIR lives (shared by the ML backend, the CLI and workers)."""
    return Path(model_dir) / "jobs"


class JobError(RuntimeError):
    """A job request that cannot be honoured; the message is one line for the user."""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    project: int
    status: str
    created_at: float
    trigger: str  # who asked: "cli", "webhook:START_TRAINING", "watch", "rerun:<id>"
    params: dict[str, Any] = field(default_factory=dict)
    stage: str = ""
    pid: int | None = None
    host: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    heartbeat_at: float | None = None

    @property
    def active(self) -> bool:
        return self.status in (QUEUED, RUNNING)

    @property
    def detail(self) -> str:
        """One line on where the job is or how it ended."""
        if self.status in (DONE, FAILED):
            return self.error or str(self.result.get("status", ""))
        if self.status == RUNNING and self.heartbeat_at is not None:
            where = f"{self.host} (process {self.pid})" if self.pid else self.host
            return f"{self.stage} on {where}, heartbeat {time.time() - self.heartbeat_at:.0f} s ago"
        return self.stage


def _pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` exists and, where Linux says, started before ``since`` (after a
    reboot the same pid may belong to another process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if since is None:
        return True
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    started = boot + ticks / os.sysconf("SC_CLK_TCK")
    return started <= since + 5.0  # btime has whole seconds


def _why_dead(job: Job) -> str | None:
    """Why a running job cannot be running any more, or None while it may be."""
    if job.host == socket.gethostname():
        if job.pid and not _pid_alive(job.pid, job.started_at):
            return f"its process {job.pid} died"
        return None
    last = job.heartbeat_at or job.started_at or job.created_at
    silent = time.time() - last
    if silent > STALE_AFTER_S:
        return f"no heartbeat from host {job.host} for {silent / 60:.0f} min (its worker was lost)"
    return None


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.root / ".lock")

    def _path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def _write(self, job: Job) -> Job:
        atomic_write_text(self._path(job.id), json.dumps(asdict(job), indent=1))
        return job

    def get(self, job_id: str) -> Job:
        path = self._path(job_id)
        if "/" in job_id or not path.is_file():
            raise JobError(f"no job {job_id!r} in {self.root}")
        return Job(**json.loads(path.read_text()))

    def list(self, project: int | None = None) -> list[Job]:
        """Jobs, oldest first."""
        if not self.root.is_dir():
            return []
        jobs = []
        for path in self.root.glob("[!.]*.json"):  # not the temporary files of atomic writes
            try:
                jobs.append(Job(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable job record %s: %s", path, exc)
        jobs.sort(key=lambda j: (j.created_at, j.id))
        return [j for j in jobs if project is None or j.project == project]

    @staticmethod
    def _new(kind: str, project: int, trigger: str, params: dict[str, Any] | None, **fields: Any) -> Job:
        if kind not in KINDS:
            raise JobError(f"unknown job kind {kind!r}; known: {', '.join(KINDS)}")
        return Job(
            id=f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}",
            kind=kind,
            project=int(project),
            status=fields.pop("status", QUEUED),
            created_at=time.time(),
            trigger=trigger,
            params=dict(params or {}),
            **fields,
        )

    def submit(
        self, kind: str, project: int, trigger: str, params: dict[str, Any] | None = None
    ) -> tuple[Job, bool]:
        """(job, created): a new queued job, or the equal job already queued or working."""
        params = dict(params or {})
        with self._locked():
            self._reap_locked()
            for job in self.list(project):
                same = job.kind == kind and job.params == params
                if same and (job.status == QUEUED or (job.status == RUNNING and job.stage == WORKING)):
                    return job, False
            return self._write(self._new(kind, project, trigger, params)), True

    def start_here(self, kind: str, project: int, trigger: str, params: dict[str, Any] | None = None) -> Job:
        """A new job, already running in this process (the CLI's foreground runs); refused with
        :class:`JobError` while another job of the project runs."""
        with self._locked():
            self._reap_locked()
            running = [j for j in self.list(project) if j.status == RUNNING]
            if running:
                raise JobError(
                    f"project {project} already has a running job {running[0].id} ({running[0].kind}); "
                    "wait for it (activeseg jobs) and try again"
                )
            job = self._new(kind, project, trigger, params, status=RUNNING, pid=os.getpid(),
                            host=socket.gethostname(), started_at=time.time(), stage="starting")  # fmt: skip
            return self._write(job)

    def claim(self, pid: int | None = None) -> Job | None:
        """Mark the oldest queued job of a project with nothing running as running for process
        ``pid`` (default: this one) and return it; None if no job can run now."""
        with self._locked():
            self._reap_locked()
            jobs = self.list()
            busy = {j.project for j in jobs if j.status == RUNNING}
            candidates = [j for j in jobs if j.status == QUEUED and j.project not in busy]
            if not candidates:
                return None
            job = replace(candidates[0], status=RUNNING, pid=pid or os.getpid(), host=socket.gethostname(),
                          started_at=time.time(), stage="starting")  # fmt: skip
            return self._write(job)

    def update(self, job_id: str, **changes: Any) -> Job:
        """Change fields of a job (stage, pid, result ...) under the lock."""
        with self._locked():
            return self._write(replace(self.get(job_id), **changes))

    def finish(self, job_id: str, result: dict[str, Any] | None = None, error: str | None = None) -> Job:
        """Mark a job done (or failed, when ``error`` is given)."""
        return self.update(
            job_id,
            status=FAILED if error else DONE,
            result=result or {},
            error=error,
            finished_at=time.time(),
            stage="",
        )

    @contextlib.contextmanager
    def beating(self, job_id: str, every: float = HEARTBEAT_S) -> Iterator[None]:
        """Record the job's ``heartbeat_at`` now and every ``every`` seconds while the block runs,
        so that workers on other hosts can tell a live job from one whose machine was lost."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self.update(job_id, heartbeat_at=time.time())
                except Exception as exc:  # a missed beat is no reason to stop the job
                    log.warning("job %s: could not record a heartbeat: %s", job_id, exc)

        self.update(job_id, heartbeat_at=time.time())
        thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def reap(self) -> list[Job]:
        """Mark running jobs whose process is gone as failed; returns them."""
        with self._locked():
            return self._reap_locked()

    def fail(self, job_id: str, reason: str) -> Job:
        """Mark a running job failed by hand: for a job whose worker died on another machine,
        without waiting for its heartbeat to go stale."""
        with self._locked():
            job = self.get(job_id)
            if job.status != RUNNING:
                raise JobError(f"job {job_id} is {job.status}, not running")
            return self._write(replace(job, status=FAILED, error=reason, finished_at=time.time()))

    def _reap_locked(self) -> list[Job]:
        self._prune_locked()
        dead = []
        for job in self.list():
            why = _why_dead(job) if job.status == RUNNING else None
            if why:
                error = f"{why} during stage {job.stage!r}; re-run with: activeseg jobs rerun {job.id}"
                dead.append(self._write(replace(job, status=FAILED, finished_at=time.time(), error=error)))
        return dead

    def _prune_locked(self) -> None:
        """Forget core-set checks that found nothing to do (one per annotation event or poll)."""
        cutoff = time.time() - CHECK_RECORDS_KEPT_S
        for job in self.list():
            idle = (
                job.kind == "coreset-check"
                and job.status == DONE
                and job.result.get("status") != "fine-tuned"
            )
            if idle and (job.finished_at or 0) < cutoff:
                self._path(job.id).unlink(missing_ok=True)
                (self.root / f"{job.id}.log").unlink(missing_ok=True)

    def rerun(self, job_id: str) -> Job:
        """Queue a failed job again (a new job with the same kind and parameters)."""
        old = self.get(job_id)
        if old.status != FAILED:
            raise JobError(f"job {job_id} is {old.status}; only failed jobs are re-run")
        job, _ = self.submit(old.kind, old.project, f"rerun:{old.id}", old.params)
        return job
