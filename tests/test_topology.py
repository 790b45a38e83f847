"""docker-compose.yml's topology without Docker: every service a separate process on 127.0.0.1.

Label Studio 1.23.2 on a PostgreSQL cluster started here (Debian's ``postgresql``), Redis with a
password, ``activeseg serve`` (gunicorn, ``ACTIVESEG_WORKER=rq`` because REDIS_URL is set) and
``activeseg worker`` (an RQ worker), all configured only through the environment, as in
``.env.example``. The admin's commands run as the CLI would, in their own processes. One round:
init -> prelabel -> pretrain -> rank -> an annotator submits the core-set in Label Studio -> Label
Studio's webhook reaches the backend, which wakes the worker through Redis -> the worker
fine-tunes -> Label Studio fetches the fine-tuned model's predictions from the backend. Then no
secret may appear in any log, in ``activeseg status`` or in ``activeseg jobs``.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ground_truth_result, retrieve_predictions, small_dataset
from services import PostgresServer, RedisServer, wait_for

from activeseg.jobs import DONE, JobStore, jobs_dir
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LabelStudioServer, free_port
from activeseg.projectstate import ProjectDir
from orchestrator.demo.annotator import SessionAnnotator

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]
N_IMAGES = 8


@pytest.fixture(scope="module")
def label_studio_pg(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabelStudioServer]:
    """A fresh Label Studio on the empty PostgreSQL database (it runs its migrations there)."""
    root = tmp_path_factory.mktemp("labelstudio-pg")
    server = LabelStudioServer(
        root / "data", files_root=root / "files", extra_env=postgres.label_studio_env()
    )
    server.start(timeout=900)
    print(f"\nLabel Studio on PostgreSQL up after {server.startup_seconds:.0f} s (migrations included)")
    yield server
    server.stop()


class Service:
    """One long-running ``activeseg`` command in its own process group, output to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", *args],
                env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def activeseg(env: dict[str, str], cwd: Path, *args: str, timeout: float = 900) -> str:
    """Run one admin command; its output (stdout and stderr) if it succeeded."""
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"activeseg {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_one_round_with_every_service_in_its_own_process(
    label_studio_pg: LabelStudioServer,
    postgres: PostgresServer,
    redis: RedisServer,
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    ls = label_studio_pg
    assert not (ls.data_dir / "label_studio.sqlite3").exists(), "Label Studio must not fall back to SQLite"
    backend_url = f"http://127.0.0.1:{free_port()}"
    basic_auth = ("lab-admin", secrets.token_urlsafe(16))
    model_dir = tmp_path / "models"
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.login.token,
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(ls.files_root),
        "MODEL_DIR": str(model_dir),
        "REDIS_URL": redis.url,
        "BASIC_AUTH_USER": basic_auth[0],
        "BASIC_AUTH_PASS": basic_auth[1],
        "ACTIVESEG_WEBHOOK_SECRET": secrets.token_urlsafe(16),
        "ACTIVESEG_BACKEND_URL": backend_url,
    }
    env.pop("ACTIVESEG_WORKER", None)
    secret_values = {
        "Label Studio API key": ls.login.token,
        "Label Studio admin password": ls.login.password,
        "basic-auth password": basic_auth[1],
        "webhook secret": env["ACTIVESEG_WEBHOOK_SECRET"],
        "PostgreSQL password": postgres.password,
        "Redis password": redis.password,
    }
    dataset = small_dataset(sample_dir, tmp_path / "dataset", n=N_IMAGES)
    port = backend_url.rsplit(":", 1)[1]
    backend = Service(["serve", "--port", port], env, tmp_path / "backend.log", tmp_path)
    worker = Service(["worker"], env, tmp_path / "worker.log", tmp_path)
    outputs: dict[str, str] = {}
    try:
        wait_for("the backend", lambda: _healthy(backend_url, basic_auth), timeout=120, proc=backend.process)
        assert requests.get(f"{backend_url}/health", timeout=5).status_code == 401  # basic auth is on
        assert "Control socket" not in backend.text()  # none in $HOME, shared by other backends
        wait_for("the RQ worker", lambda: "Listening on" in worker.text(), proc=worker.process)

        # the admin's round, each command in its own process
        outputs["init"] = activeseg(env, tmp_path, "init", "--images", str(dataset), "--project", "topology")
        pid = int(re.search(r"created project (\d+)", outputs["init"]).group(1))
        assert f"ML backend {backend_url} connected" in outputs["init"]
        # the tasks are in PostgreSQL, not in a file of Label Studio's data dir
        assert postgres.query(f"SELECT count(*) FROM task WHERE project_id = {pid}") == str(N_IMAGES)
        outputs["prelabel"] = activeseg(env, tmp_path, "prelabel", "--project", str(pid))
        assert f"{N_IMAGES} tasks pseudo-labelled" in outputs["prelabel"]
        outputs["pretrain"] = activeseg(
            env, tmp_path, "pretrain", "--project", str(pid), "--epochs", "1", "--iterations", "4"
        )
        assert "model nnunet-r0 trained" in outputs["pretrain"]
        with ProjectDir(model_dir, pid).update() as state:  # a CI-sized fine-tuning for the webhook's job
            state.settings.finetune_epochs, state.settings.finetune_iterations_per_epoch = 1, 4
            state.settings.finetune_minutes = None
        outputs["rank"] = activeseg(env, tmp_path, "rank", "--project", str(pid), "--budget", "2")
        coreset = [
            int(t) for t in re.search(r"core-set of 2: tasks ([\d, ]+)", outputs["rank"]).group(1).split(", ")
        ]

        # an annotator submits the core-set in Label Studio; nothing else is asked of anyone
        admin = LabelStudioClient(ls.url, ls.login.token)
        annotator = SessionAnnotator.sign_up(admin, "annotator@lab.example", secrets.token_urlsafe(12))
        for expected in coreset:
            task = annotator.next_task(pid)
            assert task is not None and task["id"] == expected
            annotator.submit(expected, ground_truth_result(dataset, task))
        assert postgres.query(f"SELECT count(*) FROM task_completion WHERE project_id = {pid}") == "2"

        # webhook -> backend -> Redis -> worker -> job process: the new model is served
        project = ProjectDir(model_dir, pid)
        wait_for("fine-tuning by the worker", lambda: project.load().latest == "nnunet-r1", timeout=900)
        store = JobStore(jobs_dir(model_dir))
        wait_for("the queue to drain", lambda: not any(j.active for j in store.list(pid)), timeout=120)
        finetuned = [j for j in store.list(pid) if j.result.get("status") == "fine-tuned"]
        assert len(finetuned) == 1 and finetuned[0].status == DONE
        job = finetuned[0]
        assert job.kind == "coreset-check" and job.trigger.startswith("webhook:")
        assert f"queued job {job.id}" in backend.text()  # the backend queued it; the worker ran it
        assert f"job {job.id} ({job.kind}, project {pid}) runs as process {job.pid}" in worker.text()
        assert "runs as process" not in backend.text()

        # Label Studio asks the backend process for predictions: it serves the fine-tuned model
        retrieve_predictions(ls, pid)
        state = project.load()
        served_source = state.served or state.pseudo_version
        served = postgres.query(
            "SELECT count(DISTINCT task_id) FROM prediction "
            f"WHERE project_id = {pid} AND model_version = '{served_source}'"
        )
        assert int(served) >= N_IMAGES - len(coreset)

        outputs["status"] = activeseg(env, tmp_path, "status", "--project", str(pid))
        assert "core-set 2/2 annotated" in outputs["status"] and "nnunet-r1" in outputs["status"]
        assert f"serving: {served_source}" in outputs["status"]
        outputs["jobs"] = activeseg(env, tmp_path, "jobs")
        assert job.id in outputs["jobs"]
    finally:
        backend.stop()
        worker.stop()

    # no secret in what the admin sees or what the services and jobs log
    logs = {"backend log": backend.text(), "worker log": worker.text()}
    logs |= {"Label Studio log": ls.log_path.read_text(errors="replace")}
    logs |= {"PostgreSQL log": postgres.log_path.read_text(errors="replace")}
    logs |= {f"job log {p.name}": p.read_text(errors="replace") for p in jobs_dir(model_dir).glob("*.log")}
    assert len(logs) > 4, "the jobs wrote no logs"
    for where, text in {**outputs, **logs}.items():
        for what, value in secret_values.items():
            assert value not in text, f"the {what} appears in the {where}"


def _healthy(url: str, auth: tuple[str, str]) -> bool:
    try:
        return requests.get(f"{url}/health", auth=auth, timeout=2).status_code == 200
    except requests.RequestException:
        return False
