"""The ML backend registered with a real Label Studio 1.23.2, which really calls it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import ThreadedServer, assert_same_cells, retrieve_predictions

from activeseg.datasets import read_dataset
from activeseg.imageio import read_image
from activeseg.labelconfig import load_label_config
from activeseg.labellers.classical import ClassicalLabeler
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LabelStudioServer
from activeseg.regions import results_to_labels
from ml_backend.app import create_app
from ml_backend.config import BackendConfig
from orchestrator.prelabel.project_setup import import_images, local_files_url, stage_images

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]
CONFIG = load_label_config()


def make_project(server: LabelStudioServer, client: LabelStudioClient, sample_dir: Path, title: str, n: int):
    samples = read_dataset(sample_dir)[:n]
    project_id, _ = client.get_or_create_project(title, CONFIG)
    project_dir = server.files_root / title.replace(" ", "-")
    staged = stage_images(samples, project_dir)
    client.ensure_local_storage(project_id, str(project_dir))
    report = import_images(client, project_id, CONFIG, staged, server.files_root)
    return project_id, project_dir, staged, report.task_ids


@pytest.mark.parametrize("basic_auth", [None, ("ls-backend", "pw-123456")], ids=["open", "basic-auth"])
def test_retrieve_predictions_through_label_studio(
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    sample_dir: Path,
    tmp_path: Path,
    basic_auth,
) -> None:
    title = f"backend {'auth' if basic_auth else 'open'}"
    project_id, project_dir, staged, _ = make_project(label_studio, ls_client, sample_dir, title, 4)
    # one more task whose original is corrupt: it must not spoil the batch
    (project_dir / "raw" / "corrupt.png").write_bytes(b"\x89PNG broken")
    ls_client.import_tasks(project_id, [{"data": {
        "image": local_files_url(staged[0].display, label_studio.files_root),
        "raw": local_files_url(project_dir / "raw" / "corrupt.png", label_studio.files_root),
        "name": "corrupt"}}])  # fmt: skip

    # no local root: the backend downloads every image from Label Studio with its own token
    config = BackendConfig(
        label_studio_url=label_studio.url, api_key=label_studio.login.token,
        model_dir=tmp_path / "model_dir", basic_auth=basic_auth, worker="off",
    )  # fmt: skip
    backend = ThreadedServer(create_app(config))
    try:
        extra = {}
        if basic_auth:
            extra = {
                "auth_method": "BASIC_AUTH",
                "basic_auth_user": basic_auth[0],
                "basic_auth_pass": basic_auth[1],
            }
        ml = ls_client.sdk.ml.create(url=backend.url, project=project_id, title="activeseg", **extra)
        assert ml.state == "CO"
        retrieve_predictions(label_studio, project_id)
    finally:
        backend.close()

    version = ClassicalLabeler().version
    tasks = {t["data"]["name"]: t for t in ls_client.tasks(project_id)}
    for s in staged:
        (pred,) = tasks[s.id]["predictions"]
        assert pred["model_version"] == version
        expected = ClassicalLabeler().segment(read_image(s.raw))
        assert len(pred["result"]) == expected.n_instances
        assert_same_cells(results_to_labels(pred["result"], s.height, s.width), expected.labels)
    assert tasks["corrupt"]["predictions"] == []


def test_prelabel_command_uploads_and_resumes(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, sample_dir: Path, tmp_path: Path
) -> None:
    project_id, _, staged, task_ids = make_project(label_studio, ls_client, sample_dir, "prelabel", 3)
    env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.login.token,
               MODEL_DIR=str(tmp_path / "model_dir"))  # fmt: skip
    exe = Path(sys.executable).with_name("activeseg")
    cmd = [str(exe), "prelabel", "--project", str(project_id)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "3 tasks pseudo-labelled" in first.stdout and "0 already had one" in first.stdout
    assert label_studio.login.token not in first.stdout + first.stderr

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert (
        again.returncode == 0
        and "0 tasks pseudo-labelled" in again.stdout
        and "3 already had one" in again.stdout
    )
    for s in staged:
        (pred,) = ls_client.predictions(task_ids[s.id])
        expected = ClassicalLabeler().segment(read_image(s.raw))
        assert_same_cells(results_to_labels(pred["result"], s.height, s.width), expected.labels)

    wrong = subprocess.run(cmd, env=dict(env, LABEL_STUDIO_API_KEY="wrong-token-1"), capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert (
        wrong.returncode == 2 and "rejected the API key" in wrong.stderr and "Traceback" not in wrong.stderr
    )


def test_interactive_annotating_through_label_studio(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, sample_dir: Path, tmp_path: Path
) -> None:
    """Label Studio forwards a smart-tool box to the backend and gets one SAM outline back, a
    polygon as the shipped config says."""
    from skimage.measure import regionprops

    from activeseg.imageio import read_label_image
    from activeseg.regions import region_mask

    project_id, _, staged, task_ids = make_project(label_studio, ls_client, sample_dir, "interactive", 1)
    config = BackendConfig(label_studio_url=label_studio.url, api_key=label_studio.login.token,
                           model_dir=tmp_path / "model_dir", worker="off")  # fmt: skip
    backend = ThreadedServer(create_app(config))
    try:
        ml = ls_client.sdk.ml.create(url=backend.url, project=project_id, title="smart", is_interactive=True)
        gt = read_label_image(read_dataset(sample_dir)[0].label)
        r0, c0, r1, c1 = max(regionprops(gt), key=lambda r: r.area).bbox
        h, w = gt.shape
        context = {"result": [{
            "type": "rectanglelabels", "original_width": w, "original_height": h,
            "from_name": "smart_box", "to_name": "image",
            "value": {"x": 100 * c0 / w, "y": 100 * r0 / h, "width": 100 * (c1 - c0) / w,
                      "height": 100 * (r1 - r0) / h, "rectanglelabels": ["Cell"]}}]}  # fmt: skip
        r = requests.post(
            f"{label_studio.url}/api/ml/{ml.id}/interactive-annotating",
            json={"task": task_ids[staged[0].id], "context": context},
            headers={"Authorization": f"Token {label_studio.login.token}"},
            timeout=120,
        )
    finally:
        backend.close()
    assert r.status_code == 200, r.text
    (region,) = r.json()["data"]["result"]
    assert region["type"] == "polygonlabels" and region_mask(region, h, w)[r0:r1, c0:c1].any()


def test_wrong_backend_token_is_a_per_task_error(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, sample_dir: Path, tmp_path: Path
) -> None:
    from ml_backend.service import PredictionService

    project_id, _, _, _ = make_project(label_studio, ls_client, sample_dir, "backend token", 2)
    tasks = ls_client.tasks(project_id)
    service = PredictionService(BackendConfig(label_studio_url=label_studio.url, api_key="wrong-token-42",
                                              model_dir=tmp_path / "md"))  # fmt: skip
    results = service.predict(tasks, CONFIG.xml)
    assert len(results) == 2 and all("HTTP 401" in r["error"] for r in results)
    assert all("wrong-token-42" not in r["error"] for r in results)
