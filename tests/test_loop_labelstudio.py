"""The whole loop on a real Label Studio 1.23.2, the real ML backend and real nnU-Net (tiny budgets):
init -> prelabel -> pretrain (through the job queue, killed once and re-run) -> rank (2-image
core-set) -> an annotator account takes tasks from the labelling queue and submits ground truth ->
the webhook makes the backend's worker fine-tune once -> the new model is served -> status, export.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import ThreadedServer, ground_truth_result, retrieve_predictions, small_dataset
from services import wait_for

from activeseg.datasets import read_dataset
from activeseg.jobs import DONE, FAILED, RUNNING, WORKING, Job, JobStore, jobs_dir
from activeseg.labelconfig import load_label_config
from activeseg.lsclient import SECRET_HEADER, LabelStudioClient, LabelStudioError
from activeseg.lsserver import LabelStudioServer, prepare_from_template
from activeseg.nnunet.classes import IGNORE
from activeseg.nnunet.engine import list_models
from activeseg.projectstate import ProjectDir
from ml_backend.app import create_app
from ml_backend.config import BackendConfig
from ml_backend.service import PredictionService
from orchestrator.context import LoopError, ProjectContext
from orchestrator.demo.annotator import SessionAnnotator
from orchestrator.export.project import export_project
from orchestrator.prelabel.project_setup import init_project
from orchestrator.prelabel.pseudolabels import prelabel_project
from orchestrator.rank.ranking import rank_project
from orchestrator.status import format_status, project_status
from orchestrator.train.teacher import POOR_TEACHER_MSA
from orchestrator.train.training import coreset_progress

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]
CONFIG = load_label_config()
N_IMAGES = 20
SECRET = "hook-secret-for-tests"
AUTH = ("lab-admin", "basic-auth-for-tests")  # the backend behind basic auth: webhooks must carry it


@pytest.fixture(scope="module")
def env(label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The variables the backend's job processes inherit (credentials only from the environment)."""
    model_dir = tmp_path_factory.mktemp("loop") / "model_dir"
    values = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.login.token,
        "LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.files_root),
        "MODEL_DIR": str(model_dir),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        yield {**values, "model_dir": model_dir}


def test_full_loop(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, sample_dir: Path, env: dict, tmp_path: Path
) -> None:
    model_dir: Path = env["model_dir"]
    dataset = small_dataset(sample_dir, tmp_path / "dataset")
    config = BackendConfig.from_env()
    config = BackendConfig(**{**config.__dict__, "webhook_secret": SECRET, "basic_auth": AUTH})
    app = create_app(config)  # with its in-process job worker
    backend = ThreadedServer(app)
    try:
        # 1. init: project, tasks, ML backend, webhook with our secret header
        init = init_project(
            ls_client,
            read_dataset(dataset),
            "loop e2e",
            label_studio.files_root,
            CONFIG,
            backend_url=backend.url,
            backend_auth=AUTH,
            webhook_secret=SECRET,
        )
        pid = init.project_id
        assert init.n_tasks == init.n_new == N_IMAGES and init.ml_backend_id is not None
        hooks = ls_client.sdk.webhooks.list(project=str(pid))
        basic = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode()
        assert [(h.url, h.headers) for h in hooks] == [
            (f"{backend.url}/webhook", {SECRET_HEADER: SECRET, "Authorization": basic})
        ]
        again = init_project(
            ls_client,
            read_dataset(dataset),
            "loop e2e",
            label_studio.files_root,
            CONFIG,
            backend_url=backend.url,
            backend_auth=AUTH,
            webhook_secret=SECRET,
        )
        assert again.project_id == pid and again.n_new == 0 and again.ml_backend_id == init.ml_backend_id

        # 2. pseudo-labels
        pre = prelabel_project(pid, client=ls_client, service=PredictionService(config))
        assert pre.predicted == N_IMAGES and not pre.errors

        ctx = ProjectContext.from_env(pid, model_dir, client=ls_client)
        with ctx.dir.update() as state:
            s = state.settings
            s.epochs, s.iterations_per_epoch, s.minutes = 1, 6, None
            s.init = "none"  # random weights, so that pretraining trains (and is killed while it does)
            s.finetune_epochs, s.finetune_iterations_per_epoch, s.finetune_minutes = 1, 4, None
            s.finetune_pseudo = "agreed"
            s.eval_labels = str(dataset / "labels")

        # 3. pretrain through the queue; the job's process is killed once training has started
        store = JobStore(jobs_dir(model_dir))
        job, _ = store.submit("pretrain", pid, "test")
        models = ctx.dir.root / "nnunet" / "models" / "nnunet-r0"
        report = partial(_job_report, store, job.id)

        def training_started() -> bool:
            assert store.get(job.id).active, f"the job ended before training\n{report()}"
            return models.is_dir()

        wait_for("training to start", training_started, timeout=300, explain=report)
        running = store.get(job.id)
        assert running.status == RUNNING and running.stage == WORKING
        # `kill -USR1` writes the job's thread stacks to its log (docs/admin.md) and does not stop it
        log = store.root / f"{job.id}.log"
        os.kill(running.pid, signal.SIGUSR1)
        wait_for("the main thread's stack in the job log", lambda: "in _child_main" in log.read_text(), 30)
        assert "most recent call first" in log.read_text() and store.get(job.id).status == RUNNING
        os.killpg(running.pid, signal.SIGKILL)  # the job process and its data-loader children
        failed = wait_for("the kill to be noticed", lambda: _finished(store, job.id), timeout=60)
        assert failed.status == FAILED and "signal 9" in (failed.error or "")
        rerun = store.rerun(job.id)
        done = wait_for("the re-run", lambda: _finished(store, rerun.id), timeout=900,
                        explain=partial(_job_report, store, rerun.id))  # fmt: skip
        assert done.status == DONE, done.error
        state = ctx.state()
        assert state.pretrained == "nnunet-r0" and state.pseudo_version == pre.model_version
        assert {"nnunet-r0", pre.model_version} <= set(state.evaluations)

        # 4. rank: a 2-image core-set, pushed into Label Studio's queue
        result = rank_project(ctx, budget="2", seed=0, progress=False)  # the default strategy
        rnd = result.round
        assert rnd.strategy == "random" and rnd.ranked_with == "nnunet-r0"
        assert rnd.number == 1 and rnd.k == 2 and len(rnd.order) == N_IMAGES and not result.errors
        assert result.push.created == N_IMAGES
        project = ls_client.project(pid)
        assert project["model_version"] == "round-1" and project["sampling"] == "Uncertainty sampling"
        tasks = {int(t["id"]): t for t in ls_client.tasks(pid)}
        for rank, task_id in enumerate(rnd.order, start=1):
            ours = [p for p in tasks[task_id]["predictions"] if p["model_version"] == "round-1"]
            assert len(ours) == 1 and ours[0]["score"] == pytest.approx(rank / N_IMAGES)
            assert ours[0]["result"], "the round prediction carries the pre-annotation"
            assert tasks[task_id]["data"]["priority"] == rank
        views = [v.data for v in ls_client.sdk.views.list(project=pid)]
        assert any(v.get("title") == "Priority" and v["ordering"] == ["tasks:data.priority"] for v in views)
        # status names the core-set tasks still to do, with a link that opens the first one
        text = format_status(project_status(ctx))
        first, second = rnd.coreset
        assert f"core-set 0/2 annotated\n  still to annotate: tasks {first}, {second}\n" in text
        assert f"open the first: {label_studio.url}/projects/{pid}/data?task={first}\n" in text
        # re-running rank changes nothing and duplicates nothing
        same = rank_project(ctx, progress=False)
        assert same.round.order == rnd.order and same.push.created == 0 and same.push.rescored == 0

        # 5. an annotator works the queue: the core-set comes first, with our pre-annotations
        annotator = SessionAnnotator.sign_up(ls_client, "annotator@lab.example", "Annotator-pass-1")
        submitted = {}
        for expected in rnd.coreset:
            task = annotator.next_task(pid)
            assert task is not None and task["id"] == expected
            shown = [p for p in task.get("predictions", []) if p["model_version"] == "round-1"]
            assert shown and len(shown[0]["result"]) > 0
            submitted[expected] = annotator.submit(expected, ground_truth_result(dataset, task))
        third = annotator.next_task(pid)
        assert third is not None and third["id"] == rnd.order[2]
        before = {t: _annotation_facts(ls_client, t) for t in rnd.coreset}

        # 6. the webhook's core-set check fine-tunes, once; triggers during training join that job
        check = wait_for("a fine-tuning job", lambda: _working_check(store, pid), timeout=300,
                         explain=partial(_job_report, store))  # fmt: skip
        for _ in range(2):
            event = {"action": "START_TRAINING", "project": {"id": pid}}
            r = requests.post(f"{backend.url}/webhook", json=event, auth=AUTH, timeout=5)
            assert r.status_code == 201
            # joined while training; only if training had just ended is a (harmless) new check queued
            assert r.json()["job"] == check.id or store.get(check.id).status == DONE
        ls_client.sdk.ml.train(id=init.ml_backend_id)  # Label Studio's own "Start Training" call
        finished = wait_for("fine-tuning", lambda: _finished(store, check.id), timeout=900,
                            explain=partial(_job_report, store, check.id))  # fmt: skip
        assert finished.status == DONE and finished.result["model"] == "nnunet-r1"
        wait_for("the queue to drain", lambda: not any(j.active for j in store.list(pid)), timeout=120)
        trained = [j for j in store.list(pid) if j.result.get("status") == "fine-tuned"]
        assert [j.id for j in trained] == [check.id]
        assert [m.version for m in list_models(ctx.dir.workspace)] == ["nnunet-r0", "nnunet-r1"]
        state = ctx.state()
        assert state.rounds[0].finetuned == "nnunet-r1" and state.latest == "nnunet-r1"
        assert state.rounds[0].coreset_msa is not None and state.rounds[0].n_annotated == 2
        # the pseudo-labels' pixels where the barely trained nnunet-r0 disagrees were ignored
        exported = json.loads((ctx.dir.workspace.dataset_dir / "dataset.json").read_text())
        assert exported["labels"]["ignore"] == IGNORE
        # the serving gate scored the pseudo-labels and nnunet-r0 on the 2 corrections before
        # fine-tuning on them; the new nnunet-r1 waits for the next round's corrections
        comparison = state.rounds[0].comparison
        assert set(comparison) == {state.pseudo_version, "nnunet-r0"}
        assert all(c["n"] == 2 for c in comparison.values())
        r0_wins = comparison["nnunet-r0"]["msa"] > comparison[state.pseudo_version]["msa"]
        assert state.served == ("nnunet-r0" if r0_wins else None)
        assert finished.result["served"] == state.served and state.rounds[0].decision
        # the classical teacher finds these nuclei, so its pseudo-labels stay in the fine-tune
        assert comparison[state.pseudo_version]["msa"] >= POOR_TEACHER_MSA and not state.teacher_set_aside
        r1 = next(m for m in list_models(ctx.dir.workspace) if m.version == "nnunet-r1")
        assert r1.sources == {"human": 2, "pseudo": N_IMAGES - 2}
        served_source = state.served or state.pseudo_version

        # 7. the backend serves what the gate chose for the other tasks, never the unvouched r1
        retrieve_predictions(label_studio, pid)
        tasks = {int(t["id"]): t for t in ls_client.tasks(pid)}
        for task_id in rnd.order[2:]:
            versions = [p["model_version"] for p in tasks[task_id]["predictions"]]
            assert served_source in versions and "nnunet-r1" not in versions, versions

        # 8. status, learning curve, export; annotations untouched by all of it
        status = project_status(ctx)
        text = format_status(status)
        assert "core-set 2/2 annotated" in text and "nnunet-r1" in text and "2 annotated" in text
        assert "round 1: on its 2 corrections, before training on them:" in text
        assert f"serving: {served_source}" in text and "nnunet-r1 is kept but not served" in text
        assert "still to annotate" not in text
        assert status.curve is not None and status.curve.stat().st_size > 0
        report = export_project(ctx, tmp_path / "export")
        assert report.n_images == N_IMAGES and report.by_source == {"human": 2, served_source: N_IMAGES - 2}
        assert {t: _annotation_facts(ls_client, t) for t in rnd.coreset} == before

        # 9. the next round ranks with the fine-tuned model and shows its masks
        nxt = rank_project(ctx, budget="2", progress=False).round
        assert nxt.number == 2 and nxt.ranked_with == "nnunet-r1" and not set(nxt.order) & set(rnd.coreset)
        top = annotator.next_task(pid)
        assert top is not None and top["id"] in (nxt.order[0], rnd.order[2])  # a locked task is served again
        first = ls_client.task(nxt.order[0])
        shown = [p for p in first["predictions"] if p["model_version"] == "round-2"]
        if state.served:  # the served model's stored masks
            stored = ProjectDir(model_dir, pid).scores_dir(state.served) / f"{nxt.order[0]}.npz"
            with np.load(stored) as data:
                assert len(shown[0]["result"]) == len(np.unique(data["labels"])) - 1
        else:  # the pseudo-labels
            pseudo = [p for p in first["predictions"] if p["model_version"] == state.pseudo_version]
            assert shown[0]["result"] == pseudo[-1]["result"]
    finally:
        backend.close()
        app.config["worker"].stop()


def _annotation_facts(client: LabelStudioClient, task_id: int) -> list[tuple]:
    """What must never change in an annotation (not e.g. Label Studio's "created 1 minute ago")."""
    return [(a["id"], a["result"], a["updated_at"], a["was_cancelled"]) for a in client.annotations(task_id)]


def _job_report(store: JobStore, job_id: str | None = None) -> str:
    """What a failure should show about a job (default: the latest): its record and the end of its
    log, with the stacks of its threads while it still runs (a job that hangs shows where)."""
    job = store.get(job_id) if job_id else store.list()[-1]
    job_id = job.id
    log = store.root / f"{job_id}.log"
    if job.status == RUNNING and job.pid and job.pid != os.getpid():  # not yet the worker's child: no signal
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, signal.SIGUSR1)
            time.sleep(2)
    tail = log.read_text(errors="replace")[-8000:] if log.is_file() else "(no log yet)"
    return f"{job}\n--- the end of {log} ---\n{tail}"


def _finished(store: JobStore, job_id: str) -> Job | None:
    job = store.get(job_id)
    return job if job.status in (DONE, FAILED) else None


def _working_check(store: JobStore, project: int) -> Job | None:
    for job in store.list(project):
        if job.kind == "coreset-check" and job.status == RUNNING and job.stage == WORKING:
            return job
        if job.kind == "coreset-check" and job.result.get("status") == "fine-tuned":
            return job
    return None


def test_rank_survives_label_studio_stopping(
    ls_template: Path, sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Label Studio stops in the middle of pushing the order (cold start: no nnU-Net yet); the
    re-run completes it without duplicates. Then a skipped core-set task still counts as to do,
    and a deleted one no longer counts."""
    data_dir = tmp_path / "ls" / "data"
    prepare_from_template(data_dir, ls_template)
    server = LabelStudioServer(data_dir, files_root=tmp_path / "ls" / "files")
    server.start()
    try:
        client = LabelStudioClient(server.url, server.login.token)
        dataset = small_dataset(sample_dir, tmp_path / "dataset", n=8)
        pid = init_project(client, read_dataset(dataset), "cold", server.files_root, CONFIG).project_id
        config = BackendConfig(
            label_studio_url=server.url,
            api_key=server.login.token,
            model_dir=tmp_path / "md",
            local_files_root=server.files_root,
            worker="off",
        )
        prelabel_project(pid, client=client, service=PredictionService(config))
        ctx = ProjectContext(client, pid, tmp_path / "md", server.files_root)

        calls = {"n": 0}
        original = client.update_task_data

        def stop_midway(task_id: int, data: dict) -> None:
            calls["n"] += 1
            if calls["n"] == 4:
                server.stop()
            original(task_id, data)

        with pytest.raises(LoopError, match="no model yet: run 'activeseg pretrain' first"):
            rank_project(ctx, budget="25%", strategy="entropy", progress=False)  # it ranks by a model
        assert not ctx.state().rounds
        monkeypatch.setattr(client, "update_task_data", stop_midway)
        with pytest.raises(LabelStudioError, match="cannot reach Label Studio"):
            rank_project(ctx, budget="25%", strategy="typiclust", progress=False)
        monkeypatch.undo()
        server.start()
        client = LabelStudioClient(server.url, server.login.token)
        ctx = ProjectContext(client, pid, tmp_path / "md", server.files_root)
        result = rank_project(ctx, progress=False)
        rnd = result.round
        assert rnd.number == 1 and rnd.ranked_with.startswith("cold-") and rnd.k == 2
        assert result.push.created == 8 - 4 and len(ctx.state().rounds) == 1
        tasks = client.tasks(pid)
        for task in tasks:
            assert sum(p["model_version"] == "round-1" for p in task["predictions"]) == 1
        assert client.project(pid)["model_version"] == "round-1"

        # a skipped core-set task is still to do; a deleted one drops out of the core-set
        skipped, deleted = rnd.coreset
        results = [p for p in client.task(skipped)["predictions"] if p["model_version"] == "round-1"]
        annotator = SessionAnnotator.sign_up(client, "skipper@lab.example", "Skipper-pass-1")
        assert annotator.next_task(pid)["id"] == skipped
        annotator.submit(skipped, results[0]["result"], skipped=True)
        client.sdk.tasks.delete(id=str(deleted))
        progress = coreset_progress(ctx.state().current_round, client.tasks(pid))
        assert progress.pending == [skipped] and progress.deleted == [deleted] and not progress.complete

        # re-ranking a round with another budget keeps the core-set tasks already annotated
        annotator.submit(skipped, results[0]["result"])
        bigger = rank_project(ctx, budget="3", progress=False).round
        assert bigger.number == 1 and bigger.coreset[0] == skipped and len(bigger.coreset) == 3
        assert deleted not in bigger.order and len(ctx.state().rounds) == 1
        served = [t for t in client.tasks(pid) if t["id"] != skipped]
        assert all(sum(p["model_version"] == "round-1" for p in t["predictions"]) == 1 for t in served)
    finally:
        server.stop()
