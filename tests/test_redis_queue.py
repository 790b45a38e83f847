"""Jobs woken through a real redis-server and run by ``activeseg worker`` as an RQ worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import RedisServer

from activeseg.jobs import DONE, JobStore, jobs_dir
from activeseg.projectstate import ProjectDir
from activeseg.worker import RQ_QUEUE
from ml_backend.app import create_app
from ml_backend.config import BackendConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path)
    yield server.url
    server.stop()


def test_webhook_wakes_an_rq_worker(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from redis import Redis
    from rq import Queue

    model_dir = tmp_path / "model_dir"
    env = {
        "REDIS_URL": redis_url,
        "MODEL_DIR": str(model_dir),
        "LABEL_STUDIO_URL": "http://127.0.0.1:9",  # a check of a project with no round never calls it
        "LABEL_STUDIO_API_KEY": "unused",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with ProjectDir(model_dir, 3).update():  # a project activeseg runs
        pass
    config = BackendConfig.from_env()
    assert config.worker == "rq" and config.redis_url == redis_url
    client = create_app(config).test_client()
    first = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}}).get_json()["job"]
    again = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 3}}).get_json()[
        "job"
    ]
    assert again == first
    queue = Queue(RQ_QUEUE, connection=Redis.from_url(redis_url))
    assert queue.count == 1  # one wake-up: the second trigger joined the queued job
    store = JobStore(jobs_dir(model_dir))
    assert store.get(first).status == "queued"

    # a worker on "another machine": its own process, same MODEL_DIR, woken through Redis
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "worker", "--burst"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    job = store.get(first)
    assert job.status == DONE and job.result == {"status": "no round has been ranked yet"}
    assert queue.count == 0


def test_rq_needs_redis_url() -> None:
    with pytest.raises(ValueError, match="REDIS_URL"):
        BackendConfig.from_env({"ACTIVESEG_WORKER": "rq"})
    with pytest.raises(ValueError, match="ACTIVESEG_WORKER"):
        BackendConfig.from_env({"ACTIVESEG_WORKER": "celery"})
    assert BackendConfig.from_env({}).worker == "inprocess"
