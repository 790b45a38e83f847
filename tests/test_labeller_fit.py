"""Which pseudo-labeller fits a project, scored on its corrections, and switching to another one,
against a real Label Studio: only unannotated tasks get new masks, annotations stay as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ground_truth_result, small_dataset

from activeseg.datasets import read_dataset
from activeseg.imageio import read_image, read_label_image
from activeseg.labelconfig import load_label_config
from activeseg.labellers import build_pseudolabeler
from activeseg.labellers.tasks import LabellerConfig
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LabelStudioServer
from activeseg.metrics import score_dataset
from ml_backend.config import BackendConfig
from ml_backend.service import PredictionService
from orchestrator.cli import main
from orchestrator.context import LoopError, ProjectContext
from orchestrator.prelabel.labeller_fit import available_labellers, compare_labellers, use_labeller
from orchestrator.prelabel.pseudolabels import prelabel_project
from orchestrator.rank.ranking import rank_project

CONFIG = load_label_config()


def _round_predictions(client: LabelStudioClient, task_id: int, version: str) -> list[dict]:
    """(id, score, cluster, result) of a task's predictions of ``version``."""
    return [
        {k: p.get(k) for k in ("id", "score", "cluster", "result")}
        for p in client.predictions(task_id)
        if p.get("model_version") == version
    ]


def _annotations(client: LabelStudioClient, task_id: int) -> list[tuple]:
    return [(a["id"], a["updated_at"], a["result"]) for a in client.annotations(task_id)]


def test_labellers_scored_on_corrections_and_a_switch_relabels_only_unannotated_tasks(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, sample_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from orchestrator.prelabel.project_setup import init_project

    model_dir = tmp_path / "model_dir"
    for name, value in {
        "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.login.token,
        "LOCAL_FILES_DOCUMENT_ROOT": str(label_studio.files_root), "MODEL_DIR": str(model_dir),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ACTIVESEG_SAM_CHECKPOINT", raising=False)
    dataset = small_dataset(sample_dir, tmp_path / "dataset", n=6)
    pid = init_project(
        ls_client, read_dataset(dataset), "labeller fit", label_studio.files_root, CONFIG
    ).project_id
    classical = build_pseudolabeler("classical").version
    assert prelabel_project(pid, client=ls_client, model_dir=model_dir).model_version == classical
    ctx = ProjectContext.from_env(pid, model_dir, client=ls_client)
    with pytest.raises(LoopError, match="no annotated task yet"):
        compare_labellers(ctx, ["classical"], progress=False)
    rnd = rank_project(ctx, budget="50%", strategy="random", progress=False).round
    annotated = rnd.coreset[:2]
    tasks = {int(t["id"]): t for t in ls_client.tasks(pid)}
    for task_id in annotated:
        ls_client.sdk.annotations.create(
            id=task_id, result=ground_truth_result(dataset, tasks[task_id]), was_cancelled=False
        )
    before = {t: _annotations(ls_client, t) for t in annotated}
    queue_before = {t: _round_predictions(ls_client, t, rnd.version) for t in tasks}

    # compare: every available labeller on the two corrected images
    variants = ["classical-fluorescence", "classical-stained", "classical-brightfield"]
    assert available_labellers(LabellerConfig.from_env()) == [
        "classical",
        *variants,
        "litemedsam",
        "litemedsam-unsure",
    ]
    fit = compare_labellers(ctx, progress=False)
    assert set(fit) == {"classical", *variants, "litemedsam", "litemedsam-unsure"} and all(
        m["n"] == 2 for m in fit.values()
    )
    # the sample is fluorescence: the default reads it so, and forcing that modality changes nothing
    assert fit["classical-fluorescence"]["msa"] == fit["classical"]["msa"]
    assert fit["classical-brightfield"]["version"].startswith("classical-brightfield-")
    pairs = []
    for task_id in annotated:
        name = tasks[task_id]["data"]["name"]
        image = read_image(dataset / "images" / f"{name}.png")
        pairs.append(
            (
                read_label_image(dataset / "labels" / f"{name}.png"),
                build_pseudolabeler("classical").segment(image).labels,
            )
        )
    assert fit["classical"]["msa"] == pytest.approx(
        score_dataset(pairs).msa, abs=1e-3
    )  # scored against the truth
    assert fit["classical"]["version"] == classical and fit["litemedsam"]["images_per_min"] > 0
    assert ctx.state().labeller_fit == fit  # kept for status
    assert main(["status", "--project", str(pid)]) == 0
    status = capsys.readouterr().out
    assert "pseudo-labellers on the 2 corrected images (in use: classical)" in status
    assert "litemedsam" in status.split("in use: classical")[1]

    # use litemedsam: the four unannotated tasks get its masks, in the prediction list and the queue
    switch = use_labeller(ctx, "litemedsam", progress=False)
    litemedsam = build_pseudolabeler("litemedsam").version
    assert switch.prelabel.model_version == litemedsam
    assert switch.prelabel.predicted == 4 and switch.prelabel.skipped == 2
    assert switch.prelabel.from_cache == 0  # the corrected images were the only ones compared
    state = ctx.state()
    assert (state.pseudolabeler, state.pseudo_version) == ("litemedsam", litemedsam)
    for task_id in tasks:
        versions = [p["model_version"] for p in ls_client.predictions(task_id)]
        assert (litemedsam in versions) == (task_id not in annotated)
        queued = _round_predictions(ls_client, task_id, rnd.version)
        if task_id in annotated:
            assert queued == queue_before[task_id]  # the annotated tasks' round prediction untouched
            assert _annotations(ls_client, task_id) == before[task_id]
        else:
            new = [p for p in ls_client.predictions(task_id) if p["model_version"] == litemedsam]
            assert len(queued) == 1 and queued[0]["result"] == new[0]["result"]
            assert queued[0]["score"] == queue_before[task_id][0]["score"]  # same place in the queue
    assert switch.queue is not None and switch.queue.refreshed == 4
    again = use_labeller(ctx, "litemedsam", progress=False)  # nothing left to do
    assert again.prelabel.predicted == 0 and again.queue is not None and again.queue.refreshed == 0

    # the ML backend follows the project's choice; other projects keep the backend's own
    service = PredictionService(BackendConfig.from_env())
    assert service.version_for(pid) == litemedsam and service.version_for(pid + 1000) == classical
    task = ls_client.task(next(t for t in tasks if t not in annotated))
    (prediction,) = service.predict([task], ls_client.project(pid)["label_config"], project_id=pid)
    assert prediction["model_version"] == litemedsam
    with pytest.raises(LoopError, match="needs SAM weights"):
        use_labeller(ctx, "sam-box", progress=False)
    assert ctx.state().pseudolabeler == "litemedsam"  # a failed switch changes nothing
