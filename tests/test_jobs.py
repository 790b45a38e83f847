"""The file job queue: single flight per project, restart safety, and the worker's child processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from activeseg.jobs import DONE, FAILED, QUEUED, RUNNING, STALE_AFTER_S, WORKING, Job, JobError, JobStore
from activeseg.worker import Worker
from orchestrator import jobrun
from orchestrator.jobrun import _terminate_handler, execute


def test_submit_joins_an_equal_queued_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    first, created = store.submit("coreset-check", 1, "webhook:ANNOTATION_CREATED")
    assert created and first.status == QUEUED
    again, created = store.submit("coreset-check", 1, "webhook:START_TRAINING")
    assert not created and again.id == first.id
    other, created = store.submit("coreset-check", 2, "watch")
    assert created and other.id != first.id
    different, created = store.submit("pretrain", 1, "cli")
    assert created
    assert [j.id for j in store.list(1)] == [first.id, different.id]
    with pytest.raises(JobError, match="unknown job kind"):
        store.submit("dance", 1, "cli")


def test_one_running_job_per_project(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    a, _ = store.submit("coreset-check", 1, "t")
    b, _ = store.submit("pretrain", 1, "t")
    c, _ = store.submit("coreset-check", 2, "t")
    claimed = store.claim()
    assert claimed is not None and claimed.id == a.id and claimed.status == RUNNING
    second = store.claim()
    assert second is not None and second.id == c.id  # project 1 is busy; project 2 is not
    assert store.claim() is None
    with pytest.raises(JobError, match="already has a running job"):
        store.start_here("finetune", 1, "cli")
    store.finish(a.id, result={"status": "waiting"})
    third = store.claim()
    assert third is not None and third.id == b.id


def test_a_trigger_during_training_gets_the_running_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit("coreset-check", 1, "webhook:ANNOTATION_CREATED")
    store.claim()
    # still checking: a new event may be the one that completes the core-set, so it queues
    checking, created = store.submit("coreset-check", 1, "webhook:ANNOTATION_CREATED")
    assert created
    store.update(checking.id, status=DONE)  # (drop it again for the next step)
    store.update(job.id, stage=WORKING)
    joined, created = store.submit("coreset-check", 1, "webhook:START_TRAINING")
    assert not created and joined.id == job.id


def test_dead_process_is_marked_failed_and_can_be_rerun(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit("pretrain", 1, "cli")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store.claim(pid=gone.pid)
    reaped = store.reap()
    assert [j.id for j in reaped] == [job.id]
    failed = store.get(job.id)
    assert failed.status == FAILED and "died" in (failed.error or "")
    with pytest.raises(JobError, match="only failed jobs"):
        store.rerun(store.submit("coreset-check", 1, "t")[0].id)
    again = store.rerun(job.id)
    assert again.status == QUEUED and again.kind == "pretrain" and again.trigger == f"rerun:{job.id}"


def test_records_are_json_on_disk(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit("finetune", 7, "cli", {"force": True})
    record = json.loads((tmp_path / f"{job.id}.json").read_text())
    assert record["project"] == 7 and record["params"] == {"force": True}
    # another process (here: a fresh store) sees the same queue
    assert JobStore(tmp_path).get(job.id) == job
    with pytest.raises(JobError, match="no job"):
        store.get("../etc")


def test_concurrent_submits_create_one_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    ids: list[str] = []

    def trigger() -> None:
        ids.append(JobStore(tmp_path).submit("coreset-check", 1, "webhook")[0].id)

    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(store.list()) == 1


def test_execute_records_failures(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    job = store.start_here("coreset-check", 1, "cli")
    with pytest.raises(Exception, match="LABEL_STUDIO"):
        execute(job, store, tmp_path)  # no Label Studio configured: the job fails with that message
    failed = store.get(job.id)
    assert failed.status == FAILED and "LABEL_STUDIO" in (failed.error or "")


def test_worker_marks_a_killed_child_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's child process is killed mid-job: the job ends failed, with the reason."""
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")  # the child never gets that far
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "x")
    worker = Worker(tmp_path)
    job, _ = worker.store.submit("coreset-check", 1, "test")
    # make the child hang: it sleeps before doing anything, via a sitecustomize on its path
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", f"{hook}:{Path(__file__).resolve().parent.parent}")
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(worker.run_once()))
    runner.start()
    deadline = time.time() + 30
    pid = None
    while time.time() < deadline and pid in (None, os.getpid()):  # claimed by us, then handed to the child
        time.sleep(0.1)
        pid = worker.store.get(job.id).pid
    assert pid is not None
    os.kill(pid, 9)
    runner.join(30)
    final = worker.store.get(job.id)
    assert final.status == FAILED and "signal 9" in (final.error or "")
    assert outcome and outcome[0].id == job.id


def test_listing_ignores_temporary_and_broken_files(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit("pretrain", 1, "cli")
    (tmp_path / f".{job.id}.abc.tmp.json").write_text("")  # an atomic write cut short
    (tmp_path / "broken.json").write_text("{not json")
    assert [j.id for j in store.list()] == [job.id]
    assert store.claim() is not None


def test_idle_checks_are_pruned_and_lost_jobs_can_be_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    idle, _ = store.submit("coreset-check", 1, "watch")
    store.claim()
    store.finish(idle.id, result={"status": "waiting"})
    trained, _ = store.submit("coreset-check", 2, "webhook")
    store.claim()
    store.finish(trained.id, result={"status": "fine-tuned"})
    store.update(idle.id, finished_at=time.time() - 2 * 24 * 3600)
    store.update(trained.id, finished_at=time.time() - 2 * 24 * 3600)
    store.reap()
    assert [j.id for j in store.list()] == [trained.id]  # the record of a fine-tune stays
    remote, _ = store.submit("pretrain", 3, "cli")
    store.claim()
    store.update(remote.id, host="gpu-box-that-died")  # its heartbeat is recent: it may be running
    assert store.reap() == [] and store.get(remote.id).status == RUNNING
    failed = store.fail(remote.id, "lost")  # the admin knows better, without waiting
    assert failed.status == FAILED and store.rerun(remote.id).status == QUEUED
    with pytest.raises(JobError, match="not running"):
        store.fail(remote.id, "again")


def test_a_reused_pid_does_not_keep_a_job_alive(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit("pretrain", 1, "cli")
    store.claim(pid=os.getpid())
    store.update(job.id, started_at=time.time() - 3 * 24 * 3600)  # "before a reboot": this pid is younger
    assert [j.id for j in store.reap()] == [job.id]


def test_sigterm_fails_the_job_but_kills_its_forked_helpers() -> None:
    """nnU-Net stops its fork-pool workers with SIGTERM; a worker that raised KeyboardInterrupt
    like the job process could leave the pool's lock held and hang the job (seen in the demo)."""
    import signal

    handler = _terminate_handler(os.getpid())
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGTERM, None)
    pid = os.fork()
    if pid == 0:  # a forked helper: the inherited handler must end it at once
        handler(signal.SIGTERM, None)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM


def test_a_remote_job_is_failed_when_its_heartbeat_stops(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit("pretrain", 1, "webhook")
    store.claim()
    with store.beating(job.id, every=0.05):
        first = store.get(job.id).heartbeat_at
        assert first is not None
        deadline = time.time() + 10
        while store.get(job.id).heartbeat_at == first and time.time() < deadline:
            time.sleep(0.02)
        assert store.get(job.id).heartbeat_at > first  # beats while the block runs
    last = store.get(job.id).heartbeat_at
    time.sleep(0.2)
    assert store.get(job.id).heartbeat_at == last  # and stops after it
    where = f"{socket.gethostname()} (process {os.getpid()})"  # the PID for `kill -USR1` (docs/admin.md)
    assert store.get(job.id).detail.startswith(f"starting on {where}, heartbeat 0 s ago")
    # seen from another host: alive while it beats, dead once it has been silent too long
    store.update(job.id, host="gpu-box", heartbeat_at=time.time() - STALE_AFTER_S + 60)
    assert store.reap() == [] and store.get(job.id).status == RUNNING
    store.update(job.id, heartbeat_at=time.time() - STALE_AFTER_S - 60)
    (reaped,) = store.reap()
    assert reaped.id == job.id and reaped.status == FAILED
    assert "no heartbeat from host gpu-box for 11 min" in (reaped.error or "")
    assert f"activeseg jobs rerun {job.id}" in (reaped.error or "")
    # a record without heartbeats (an older worker) is judged by when it started
    old, _ = store.submit("pretrain", 2, "cli")
    store.claim()
    store.update(old.id, host="gpu-box", started_at=time.time() - 2 * STALE_AFTER_S)
    assert [j.id for j in store.reap()] == [old.id]


def test_execute_beats_while_the_job_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit("pretrain", 1, "cli")
    job = store.claim()
    seen = []

    def fake_run(job: Job, store: JobStore, model_dir: Path) -> dict:
        seen.append(store.get(job.id).heartbeat_at)
        return {"status": "trained"}

    monkeypatch.setattr(jobrun, "run_job", fake_run)
    done = execute(job, store, tmp_path)
    assert done.status == DONE and seen[0] is not None and seen[0] <= time.time()
