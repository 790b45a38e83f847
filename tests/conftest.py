"""Shared fixtures: data locations, one real Label Studio server per test session, PostgreSQL and
Redis servers, and SIGTERM handled like Ctrl-C, so that a run stopped from outside still stops
every server and browser it started."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import requests
from flask import Flask, jsonify, request
from services import PostgresServer, RedisServer
from werkzeug.serving import make_server

from activeseg.brush import labels_to_results
from activeseg.datasets import BUNDLED_SAMPLE, Sample, read_dataset
from activeseg.imageio import read_label_image
from activeseg.labelconfig import RegionConfig
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LS_VERSION, LabelStudioServer, ensure_template, prepare_from_template
from orchestrator.prelabel.project_setup import init_project

REPO = Path(__file__).resolve().parent.parent
GROUND_TRUTH = "ground-truth"  # model version of the ground truth shown as a prediction
SHARED_DATA = Path(os.environ.get("ACTIVESEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 24-image CC0 sample bundled in the repository."""
    return BUNDLED_SAMPLE


@pytest.fixture(scope="session")
def dsb_train() -> Path:
    """The full DSB2018 fluorescence training folder; tests needing it skip where it is absent."""
    path = SHARED_DATA / "dsb2018_stage1_train_fluo"
    if not path.is_dir():
        pytest.skip(f"{path} not present (set ACTIVESEG_SHARED_DATA)")
    return path


def small_dataset(sample_dir: Path, target: Path, n: int = 20) -> Path:
    """The first ``n`` bundled images with their labels, as a dataset folder."""
    for sample in read_dataset(sample_dir)[:n]:
        for src, sub in ((sample.image, "images"), (sample.label, "labels")):
            (target / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target / sub / f"{sample.id}.png")
    return target


def ground_truth_result(dataset: Path, task: dict) -> list[dict]:
    labels = read_label_image(dataset / "labels" / f"{task['data']['name']}.png")
    return labels_to_results(labels.astype(np.uint32), "label", "image", "Cell")


def ground_truth_project(
    client: LabelStudioClient, samples: Sequence[Sample], title: str, files_root: Path, config: RegionConfig
) -> tuple[int, dict[str, int]]:
    """(project id, sample id -> task id) of a new project whose tasks show their ground truth as
    one prediction of the project's region kind, as ``activeseg prelabel`` uploads pseudo-labels."""
    project_id = init_project(client, samples, title, files_root, config).project_id
    tasks = {str(t["data"]["name"]): int(t["id"]) for t in client.tasks(project_id)}
    for sample in samples:
        labels = read_label_image(sample.label)
        client.create_prediction(tasks[sample.id], config.to_results(labels), GROUND_TRUTH, config)
    client.update_project(project_id, model_version=GROUND_TRUTH)
    return project_id, tasks


def assert_same_cells(actual: np.ndarray, expected: np.ndarray, min_iou: float = 0.5) -> None:
    """The same instance ids, each on the same cell: exact for brush regions; a polygon outline
    keeps a mask to within its boundary pixels (mean IoU over 0.9)."""
    ids = np.unique(expected[expected > 0])
    np.testing.assert_array_equal(np.unique(actual[actual > 0]), ids)
    ious = [np.sum((actual == i) & (expected == i)) / np.sum((actual == i) | (expected == i)) for i in ids]
    assert min(ious, default=1.0) >= min_iou and np.mean(ious or [1.0]) > 0.9, f"IoUs {sorted(ious)[:5]}"


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a timeout, a CI runner giving up) as Ctrl-C: pytest stops and tears down every
    fixture, so the servers and browsers they started stop too. Later SIGTERMs are ignored
    until then; a SIGKILL still ends the run at once."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)


def ls_template_dir() -> Path:
    """A migrated Label Studio data dir reused between runs (first start: ~25-60 s of migrations)."""
    default = Path.home() / ".cache" / "activeseg" / f"ls-template-{LS_VERSION}"
    return Path(os.environ.get("ACTIVESEG_LS_TEMPLATE", default))


@pytest.fixture(scope="session")
def ls_template() -> Path:
    return ensure_template(ls_template_dir())


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory, ls_template: Path) -> Iterator[LabelStudioServer]:
    """A real Label Studio 1.23.2 on a free port of 127.0.0.1, stopped at the end of the session."""
    data_dir = tmp_path_factory.mktemp("labelstudio") / "data"
    prepare_from_template(data_dir, ls_template)
    server = LabelStudioServer(data_dir, files_root=data_dir.parent / "files")
    server.start()
    print(f"\nLabel Studio up on {server.url} after {server.startup_seconds:.1f} s")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=secrets.token_urlsafe(16))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ls_client(label_studio: LabelStudioServer) -> LabelStudioClient:
    return LabelStudioClient(label_studio.url, label_studio.login.token)


def retrieve_predictions(server: LabelStudioServer, project_id: int) -> dict:
    """Label Studio's "Retrieve Predictions" action on every task: it calls the connected backend."""
    r = requests.post(
        f"{server.url}/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project_id},
        json={"selectedItems": {"all": True, "excluded": []}},
        headers={"Authorization": f"Token {server.login.token}"},
        timeout=300,
    )
    r.raise_for_status()
    return r.json()


class ThreadedServer:
    """A WSGI app served on a free port of 127.0.0.1 from a background thread."""

    def __init__(self, app: Flask) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()


class Recorder(ThreadedServer):
    """A stand-in peer on 127.0.0.1 that records what it is sent (for webhooks and ML backend calls)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        app = Flask("recorder")

        @app.route("/<path:path>", methods=["GET", "POST"])
        def record(path: str):
            body = request.get_json(silent=True) or {}
            self.requests.append((request.method, f"/{path}", body))
            return jsonify({"model_version": "recorder-v1"} if path == "setup" else {"status": "UP"})

        super().__init__(app)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()
