"""Against a real Label Studio 1.23.2: project set-up, images served, brush masks round-trip."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from activeseg.brush import labels_to_results
from activeseg.datasets import read_dataset
from activeseg.imageio import read_image, read_label_image
from activeseg.labelconfig import LABEL_CONFIGS, load_label_config
from activeseg.lsclient import LabelStudioClient, LabelStudioError
from activeseg.lsserver import LabelStudioServer, free_port
from activeseg.regions import results_to_labels
from orchestrator.prelabel.project_setup import import_images, stage_images

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]
CONFIG = load_label_config(LABEL_CONFIGS["brush"])  # brush RLE is stored exactly


def test_server_identity(label_studio: LabelStudioServer, ls_client: LabelStudioClient) -> None:
    assert ls_client.whoami()["email"] == label_studio.login.username
    assert label_studio.running_url() == label_studio.url


def test_ground_truth_round_trips_through_label_studio(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, sample_dir
) -> None:
    samples = read_dataset(sample_dir)[:5]
    project_id, created = ls_client.get_or_create_project("round trip", CONFIG)
    assert created
    project_dir = label_studio.files_root / "round-trip"
    staged = stage_images(samples, project_dir)
    ls_client.ensure_local_storage(project_id, str(project_dir))
    report = import_images(ls_client, project_id, CONFIG, staged, label_studio.files_root)
    task_ids = report.task_ids
    assert len(task_ids) == 5 and report.new == [s.id for s in samples]
    for sample in samples:  # ids returned by the import belong to the right images
        assert ls_client.task(task_ids[sample.id])["data"]["name"] == sample.id

    for sample in samples:
        labels = read_label_image(sample.label)
        result = labels_to_results(labels, CONFIG.from_name, CONFIG.to_name, CONFIG.label)
        ls_client.create_prediction(
            task_ids[sample.id], result, model_version="ground-truth", config=CONFIG, score=0.5
        )

    # read back per task and in the task list; decode and compare pixel for pixel
    listed = {t["data"]["name"]: t for t in ls_client.tasks(project_id)}
    for sample in samples:
        labels = read_label_image(sample.label)
        (pred,) = ls_client.predictions(task_ids[sample.id])
        assert pred["model_version"] == "ground-truth" and pred["score"] == 0.5
        np.testing.assert_array_equal(results_to_labels(pred["result"], *labels.shape), labels)
        (listed_pred,) = listed[sample.id]["predictions"]
        np.testing.assert_array_equal(results_to_labels(listed_pred["result"], *labels.shape), labels)

    # a submitted annotation (what a corrected task looks like) comes back through the export
    first = samples[0]
    labels = read_label_image(first.label)
    result = labels_to_results(labels, CONFIG.from_name, CONFIG.to_name, CONFIG.label)
    ls_client.sdk.annotations.create(id=task_ids[first.id], result=result, was_cancelled=False)
    (ann,) = ls_client.annotations(task_ids[first.id])
    np.testing.assert_array_equal(results_to_labels(ann["result"], *labels.shape), labels)
    exported = {t["data"]["name"]: t for t in ls_client.export_json(project_id)}
    (exp_ann,) = exported[first.id]["annotations"]
    np.testing.assert_array_equal(results_to_labels(exp_ann["result"], *labels.shape), labels)

    # the display PNG Label Studio serves has the original's pixel size
    task = ls_client.task(task_ids[samples[0].id])
    r = requests.get(
        label_studio.url + task["data"]["image"],
        headers={"Authorization": f"Token {label_studio.login.token}"},
        timeout=10,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == staged[0].display.read_bytes()
    assert read_image(staged[0].display).shape == read_image(samples[0].image).shape[:2]


def test_reimport_adds_only_new_images(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, sample_dir
) -> None:
    samples = read_dataset(sample_dir)
    project_id, _ = ls_client.get_or_create_project("reimport", CONFIG)
    project_dir = label_studio.files_root / "reimport"
    root = label_studio.files_root
    with pytest.raises(LabelStudioError, match="does not exist"):  # Label Studio checks the folder
        ls_client.ensure_local_storage(project_id, str(project_dir))
    staged = stage_images(samples[:4], project_dir)
    ls_client.ensure_local_storage(project_id, str(project_dir))
    first = import_images(ls_client, project_id, CONFIG, staged[:3], root)
    again = import_images(ls_client, project_id, CONFIG, staged, root)
    assert len(ls_client.tasks(project_id)) == 4
    assert len(first.new) == 3 and again.new == [staged[3].id]
    assert all(again.task_ids[k] == v for k, v in first.task_ids.items())
    assert ls_client.get_or_create_project("reimport", CONFIG) == (project_id, False)
    assert ls_client.ensure_local_storage(project_id, str(project_dir)) == ls_client.ensure_local_storage(
        project_id, str(project_dir)
    )


def test_wrong_token_gives_one_clear_line(label_studio: LabelStudioServer) -> None:
    client = LabelStudioClient(label_studio.url, "not-the-token-123")
    with pytest.raises(LabelStudioError) as info:
        client.whoami()
    msg = str(info.value)
    assert "rejected the API key (401" in msg and label_studio.url in msg and "\n" not in msg
    assert "not-the-token-123" not in msg


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LabelStudioError, match=f"cannot reach Label Studio at {url}"):
        LabelStudioClient(url, "whatever-token").whoami()


def test_missing_object_and_config_without_cell_regions(ls_client: LabelStudioClient) -> None:
    with pytest.raises(LabelStudioError, match="404"):
        ls_client.project(987654)
    boxes = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="b" toName="image"><Label value="Cell"/></RectangleLabels></View>'
    )
    project = ls_client.sdk.projects.create(title="boxes only", label_config=boxes)
    with pytest.raises(LabelStudioError, match="no <PolygonLabels> or <BrushLabels>"):
        ls_client.region_config(project.id)
    with pytest.raises(LabelStudioError, match="no <PolygonLabels> or <BrushLabels>"):
        ls_client.get_or_create_project("boxes only", CONFIG)


def test_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioError, match="set LABEL_STUDIO_URL"):
        LabelStudioClient()
    with pytest.raises(LabelStudioError, match="set LABEL_STUDIO_API_KEY"):
        LabelStudioClient("http://127.0.0.1:1")


def test_loopback_webhooks_and_ml_backends_are_allowed(ls_client: LabelStudioClient, recorder) -> None:
    """The test server relaxes SSRF guards for 127.0.0.1 only; both kinds of call get through."""
    project_id, _ = ls_client.get_or_create_project("loopback", CONFIG)
    sdk = ls_client.sdk
    backend = sdk.ml.create(url=recorder.url, project=project_id, title="recorder", is_interactive=False)
    assert backend.state == "CO"
    assert ("GET", "/health", {}) in recorder.requests
    assert any(path == "/setup" for _, path, _ in recorder.requests)

    sdk.webhooks.create(url=f"{recorder.url}/hook", project=project_id, send_payload=True,
                        send_for_all_actions=False, actions=["TASKS_CREATED"])  # fmt: skip
    ls_client.import_tasks(project_id, [{"data": {"image": "/data/local-files/?d=none.png"}}])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        hooks = [body for _, path, body in recorder.requests if path == "/hook"]
        if hooks:
            break
        time.sleep(0.2)
    assert hooks and hooks[0]["action"] == "TASKS_CREATED"
