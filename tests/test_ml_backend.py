"""The ML backend's HTTP protocol, image rules, cache and job records (Flask test client and a
threaded server; the real Label Studio tests are in test_ml_backend_labelstudio.py)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests
import tifffile
from conftest import ThreadedServer, assert_same_cells

from activeseg.datasets import read_dataset
from activeseg.imagefetch import ImageFetchError, ImageSource
from activeseg.imageio import read_image, write_png
from activeseg.labelconfig import load_label_config
from activeseg.labellers import Segmentation
from activeseg.labellers.cache import PredictionCache
from activeseg.labellers.classical import ClassicalLabeler
from activeseg.regions import results_to_labels
from ml_backend.app import create_app
from ml_backend.config import BackendConfig
from ml_backend.service import PredictionService

CONFIG_XML = load_label_config().xml


@pytest.fixture
def files(tmp_path: Path, sample_dir: Path) -> Path:
    """A local-files root with a real image, the edge cases, and a file outside the root."""
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    first = read_dataset(sample_dir)[0]
    shutil.copyfile(first.image, root / "imgs" / "nuclei.png")
    raw = read_image(first.image)[..., 0]
    tifffile.imwrite(root / "imgs" / "nuclei16.tif", (raw.astype(np.uint16) * 40))  # 16-bit, dim
    write_png(np.zeros((50, 60), np.uint8), root / "imgs" / "zeros.png")
    write_png(np.full((8, 8), 9, np.uint8), root / "imgs" / "tiny.png")
    (root / "imgs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "secret.png").write_bytes((root / "imgs" / "tiny.png").read_bytes())
    return root


def local(name: str) -> str:
    return f"/data/local-files/?d=imgs/{name}"


@pytest.fixture
def config(tmp_path: Path, files: Path) -> BackendConfig:
    return BackendConfig(model_dir=tmp_path / "model_dir", local_files_root=files, worker="off")


def predict(client, names: list[str], label_config: str = CONFIG_XML) -> list[dict]:
    tasks = [{"id": i + 1, "data": {"image": local(n)}} for i, n in enumerate(names)]
    r = client.post("/predict", json={"tasks": tasks, "label_config": label_config, "project": "1.1"})
    assert r.status_code == 200
    return r.get_json()["results"]


def test_health_setup_versions(config: BackendConfig) -> None:
    client = create_app(config).test_client()
    assert client.get("/health").get_json()["status"] == "UP"
    version = client.post("/setup", json={"project": "1.1", "schema": CONFIG_XML}).get_json()["model_version"]
    assert version == ClassicalLabeler().version
    assert client.get("/versions").get_json() == {"versions": [version]}


def test_predict_batch_with_bad_and_odd_inputs(config: BackendConfig, files: Path) -> None:
    client = create_app(config).test_client()
    names = [
        "nuclei.png",
        "corrupt.png",
        "nuclei16.tif",
        "zeros.png",
        "tiny.png",
        "../../secret.png",
        "none.png",
    ]
    results = predict(client, names)
    assert len(results) == len(names)
    good, corrupt, tif16, zeros, tiny, escape, missing = results
    # a real image: one region per instance, decoding to the labeller's own masks
    expected = ClassicalLabeler().segment(read_image(files / "imgs" / "nuclei.png"))
    assert len(good["result"]) == expected.n_instances > 5
    assert_same_cells(results_to_labels(good["result"], *expected.labels.shape), expected.labels)
    assert good["model_version"] == ClassicalLabeler().version and 0 <= good["score"] <= 1
    # 16-bit TIFF is read with its raw values and segmented too
    assert len(tif16["result"]) > 5
    # empty and tiny images are correct, empty results; failures are per-task errors
    assert zeros["result"] == [] and tiny["result"] == []
    assert "result" not in corrupt and "corrupt.png: not a readable PNG" in corrupt["error"]
    assert "outside the local-files root" in escape["error"]
    assert "cannot read local file" in missing["error"]


def test_large_image_and_pixel_limit(config: BackendConfig, files: Path) -> None:
    write_png(np.zeros((4100, 4100), np.uint8), files / "imgs" / "big.png")
    client = create_app(config).test_client()
    (big,) = predict(client, ["big.png"])
    assert big["result"] == []  # larger than 4096^2 and still answered
    small_limit = create_app(
        BackendConfig(model_dir=config.model_dir, local_files_root=files, max_pixels=1000, worker="off")
    )
    (refused,) = predict(small_limit.test_client(), ["nuclei.png"])
    assert "ACTIVESEG_MAX_PIXELS" in refused["error"]


def test_label_config_without_brushlabels(config: BackendConfig) -> None:
    boxes = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="b" toName="image"><Label value="C"/></RectangleLabels></View>'
    )
    results = predict(create_app(config).test_client(), ["nuclei.png", "tiny.png"], boxes)
    assert [("no <PolygonLabels> or <BrushLabels>" in r["error"]) for r in results] == [True, True]


def test_bad_predict_body(config: BackendConfig) -> None:
    r = create_app(config).test_client().post("/predict", json={"nothing": 1})
    assert r.status_code == 400


def test_a_project_with_a_fine_tuned_model_gets_its_version(config: BackendConfig) -> None:
    from activeseg.projectstate import ProjectDir

    client = create_app(config).test_client()
    pseudo = client.post("/setup", json={}).get_json()["model_version"]
    with ProjectDir(config.model_dir, 4).update() as state:
        state.served = "nnunet-r1"
    assert client.post("/setup", json={"project": "4.1795837124"}).get_json() == {
        "model_version": "nnunet-r1"
    }
    assert client.post("/setup", json={"project": "5.1795837124"}).get_json() == {"model_version": pseudo}
    assert client.get("/versions").get_json() == {"versions": [pseudo, "nnunet-r1"]}


def _known_projects(config: BackendConfig, *ids: int) -> None:
    """Projects activeseg runs (they have a state file); events of others are ignored."""
    from activeseg.projectstate import ProjectDir

    for project in ids:
        with ProjectDir(config.model_dir, project).update():
            pass


def test_webhook_queues_one_coreset_check_per_project(config: BackendConfig) -> None:
    client = create_app(config).test_client()
    unknown = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 3}})
    assert unknown.status_code == 200 and unknown.get_json()["reason"] == "unknown project"
    _known_projects(config, 3, 4)
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
    assert r.status_code == 201
    job_id = r.get_json()["job"]
    record = json.loads((config.model_dir / "jobs" / f"{job_id}.json").read_text())
    assert record["kind"] == "coreset-check" and record["status"] == "queued" and record["project"] == 3
    assert record["trigger"] == "webhook:START_TRAINING"
    assert "token" not in json.dumps(record)  # the payload (with the project's invite token) is not kept
    # a second trigger while the check is queued joins it
    again = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 3, "token": "x"}})
    assert again.status_code == 201 and again.get_json()["job"] == job_id
    other = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 4}})
    assert other.get_json()["job"] != job_id
    r = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}})
    assert r.status_code == 200 and r.get_json()["status"] == "ignored"
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 400
    assert len(list((config.model_dir / "jobs").glob("*.json"))) == 2
    listed = client.get("/jobs?project=3").get_json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    assert client.get(f"/jobs/{job_id}").get_json()["status"] == "queued"
    assert client.get("/jobs/nope").status_code == 404


def test_webhook_secret(config: BackendConfig) -> None:
    _known_projects(config, 3)
    client = create_app(replace(config, webhook_secret="hook-s3cret")).test_client()
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 3}}
    assert client.post("/webhook", json=event).status_code == 403
    wrong = {"X-Activeseg-Webhook-Secret": "nope"}
    assert client.post("/webhook", json=event, headers=wrong).status_code == 403
    right = {"X-Activeseg-Webhook-Secret": "hook-s3cret"}
    assert client.post("/webhook", json=event, headers=right).status_code == 201
    # Label Studio's "Start Training" call cannot carry the header
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3}}).status_code == 201


def test_basic_auth(config: BackendConfig) -> None:
    client = create_app(replace(config, basic_auth=("ls", "s3cret"))).test_client()
    assert client.get("/health").status_code == 401
    assert client.get("/health", auth=("ls", "wrong")).status_code == 401
    assert client.get("/health", auth=("ls", "s3cret")).status_code == 200
    assert client.post("/predict", json={"tasks": []}, auth=("ls", "s3cret")).status_code == 200


def test_cache_makes_repeats_a_disk_read(config: BackendConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    service = PredictionService(config)
    client = create_app(config, service).test_client()
    first = predict(client, ["nuclei.png"])[0]
    entries = list((config.model_dir / "cache").rglob("*.npz"))
    assert len(entries) == 1

    def fail(image: np.ndarray) -> Segmentation:
        raise AssertionError("segmented again instead of reading the cache")

    monkeypatch.setattr(service.labeler, "segment", fail)
    assert predict(client, ["nuclei.png"])[0] == first
    entries[0].write_bytes(b"damaged")  # a damaged entry is recomputed, not served
    monkeypatch.undo()
    assert predict(client, ["nuclei.png"])[0] == first


def test_cache_round_trip(tmp_path: Path) -> None:
    cache = PredictionCache(tmp_path)
    seg = Segmentation(np.arange(12, dtype=np.uint32).reshape(3, 4) % 3, {1: 0.5, 2: 0.25})
    assert cache.get("v1", "ab" * 32) is None
    cache.put("v1", "ab" * 32, seg)
    back = cache.get("v1", "ab" * 32)
    assert back is not None and back.instance_scores == seg.instance_scores
    np.testing.assert_array_equal(back.labels, seg.labels)
    assert cache.get("v2", "ab" * 32) is None


def test_image_source_refuses_other_hosts_and_needs_credentials(files: Path) -> None:
    src = ImageSource("http://127.0.0.1:8080", "token-123", files)
    # refused before any connection is tried (other loopback addresses stand in for other hosts)
    with pytest.raises(ImageFetchError, match=r"127\.0\.0\.2:8080 is not the Label Studio host"):
        src.fetch("http://127.0.0.2:8080/data/upload/1/x.png")
    with pytest.raises(ImageFetchError, match="not the Label Studio host"):
        src.fetch("//127.0.0.1:9/x.png")
    assert src.fetch(local("tiny.png")).name == "tiny.png"
    with pytest.raises(ImageFetchError, match="set LABEL_STUDIO_URL"):
        ImageSource(None, None).fetch("/data/upload/1/x.png")
    with pytest.raises(ImageFetchError, match="set LABEL_STUDIO_API_KEY"):
        ImageSource("http://127.0.0.1:1", None).fetch("/data/upload/1/x.png")


@pytest.mark.slow
def test_concurrent_predictions(config: BackendConfig) -> None:
    """8 threads x 20 requests against a threaded server: every answer complete and identical."""
    server = ThreadedServer(create_app(config))
    tasks = [
        {"id": 1, "data": {"image": local("nuclei.png")}},
        {"id": 2, "data": {"image": local("tiny.png")}},
    ]

    def call(_: int) -> list:
        r = requests.post(
            f"{server.url}/predict", json={"tasks": tasks, "label_config": CONFIG_XML}, timeout=60
        )
        r.raise_for_status()
        return r.json()["results"]

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(160)))
    finally:
        server.close()
    assert len(answers) == 160
    assert all(a == answers[0] for a in answers) and len(answers[0][0]["result"]) > 5
