"""Training cases from a real Label Studio project: human annotations first, then pseudo-labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activeseg.brush import labels_to_results
from activeseg.datasets import read_dataset
from activeseg.imagefetch import ImageSource
from activeseg.imageio import read_image, read_label_image
from activeseg.labelconfig import load_label_config
from activeseg.labellers.classical import ClassicalLabeler
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LabelStudioServer
from activeseg.nnunet.dataset import Case
from orchestrator.prelabel.project_setup import import_images, stage_images
from orchestrator.train.training_data import (
    best_labels,
    cases_from_tasks,
    mask_disagreement,
    oversample_human,
    task_case_id,
)

CONFIG = load_label_config()


@pytest.mark.labelstudio
@pytest.mark.slow
def test_cases_prefer_human_annotations(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, sample_dir: Path
) -> None:
    samples = read_dataset(sample_dir)[:3]
    project_id, _ = ls_client.get_or_create_project("training data", CONFIG)
    project_dir = label_studio.files_root / "training-data"
    staged = stage_images(samples, project_dir)
    ls_client.ensure_local_storage(project_id, str(project_dir))
    task_ids = import_images(ls_client, project_id, CONFIG, staged, label_studio.files_root).task_ids

    classical = ClassicalLabeler()
    first, second, third = samples
    for s in (first, second):  # pseudo-labels on two tasks
        seg = classical.segment(read_image(s.image))
        result = CONFIG.to_results(seg.labels)  # polygons, as the shipped config says
        ls_client.create_prediction(task_ids[s.id], result, model_version=classical.version, config=CONFIG)
    # a person corrected the first task to the ground truth, with the brush: read exactly
    truth = read_label_image(first.label)
    gt_result = labels_to_results(truth, CONFIG.from_name, CONFIG.to_name, CONFIG.label)
    ls_client.sdk.annotations.create(id=task_ids[first.id], result=gt_result, was_cancelled=False)

    tasks = ls_client.tasks(project_id)
    images = ImageSource(label_studio.url, label_studio.login.token)
    report = cases_from_tasks(tasks, CONFIG, images, pseudo_version=classical.version)
    by_task = {c.id: c for c in report.cases}
    t = {task["id"]: task for task in tasks}
    human = by_task[task_case_id(t[task_ids[first.id]])]
    pseudo = by_task[task_case_id(t[task_ids[second.id]])]
    assert human.source == "human" and pseudo.source == "pseudo"
    np.testing.assert_array_equal(human.labels, truth)
    assert report.unlabelled == [task_ids[third.id]] and report.count("human") == 1
    assert human.image.shape[:2] == truth.shape
    # the annotation is only read: still one, unchanged
    (ann,) = ls_client.annotations(task_ids[first.id])
    assert ann["result"] == gt_result


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ({"annotations": [{"id": 1, "was_cancelled": True, "result": ["skip"]}],
          "predictions": [{"id": 5, "model_version": "v1", "result": ["pseudo"]}]}, (["pseudo"], "pseudo")),
        ({"annotations": [{"id": 1, "updated_at": "2026-01-02", "result": ["new"]},
                          {"id": 2, "updated_at": "2026-01-01", "result": ["old"]}]}, (["new"], "human")),
        ({"predictions": [{"id": 5, "model_version": "other", "result": ["x"]}]}, None),
        ({"annotations": [], "predictions": []}, None),
    ],
    ids=["cancelled-annotation-ignored", "latest-annotation", "other-version-ignored", "nothing"],
)  # fmt: skip
def test_best_labels(task: dict, expected: tuple | None) -> None:
    assert best_labels(task, CONFIG, pseudo_version="v1") == expected


def test_oversampling_gives_the_few_corrections_about_half_the_samples() -> None:
    image, labels = np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint16)
    human = [Case(f"h{i}", image, labels, "human") for i in range(3)]
    pseudo = [Case(f"p{i}", image, labels, "pseudo") for i in range(20)]
    cases = oversample_human(pseudo + human)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)) == 20 + 3 * 7  # round(20 / 3) copies of each correction
    assert sum(c.source == "human" for c in cases) == 21
    assert {i.split("_copy")[0] for i in ids if i.startswith("h")} == {"h0", "h1", "h2"}
    assert oversample_human(human) == human and oversample_human(pseudo) == pseudo  # nothing to balance
    assert [c.id for c in oversample_human(human + pseudo[:2])] == ["p0", "p1", "h0", "h1", "h2"]


def test_pixels_where_teacher_and_model_disagree_are_ignored() -> None:
    teacher = np.zeros((6, 6), np.uint16)
    teacher[1:4, 1:4] = 1  # the teacher's cell
    model = np.zeros((6, 6), np.uint16)
    model[2:5, 2:5] = 7  # the model's, shifted by one pixel and numbered differently
    case = mask_disagreement(Case("p", np.zeros((6, 6), np.uint8), teacher, "pseudo"), model)
    assert case.ignore.sum() == 9 + 9 - 2 * 4  # the two squares less their 2x2 overlap
    assert not case.ignore[2, 2] and case.ignore[1, 1] and case.ignore[4, 4] and not case.ignore[0, 5]
    assert case.labels is teacher and case.source == "pseudo"
    with pytest.raises(ValueError, match="model labels"):
        mask_disagreement(case, model[:5])
