"""nnU-Net adapters: instance <-> class conversion, dataset export, and a CI-sized train /
predict / fine-tune run of the real nnunetv2 on CPU."""

from __future__ import annotations

import copy
import errno
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import activeseg.nnunet.dataset as dataset_mod
from activeseg.datasets import read_dataset
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.metrics import score_dataset
from activeseg.nnunet.classes import BORDER, IGNORE, INTERIOR, classes_to_instances, instances_to_classes
from activeseg.nnunet.dataset import Case, DatasetExportError, export_dataset
from activeseg.nnunet.workspace import Workspace, WorkspaceError
from orchestrator.train.training_data import mask_disagreement


def load_cases(root: Path, n: int, offset: int = 0) -> list[Case]:
    return [
        Case(s.id, read_image(s.image), read_label_image(s.label))
        for s in read_dataset(root)[offset : offset + n]
    ]


def test_touching_and_thin_instances_survive_the_round_trip() -> None:
    labels = np.zeros((20, 30), np.uint16)
    labels[2:12, 2:12] = 1
    labels[2:12, 12:22] = 2  # touches 1
    labels[15, 3:25] = 3  # one pixel thin: no interior at all
    classes = instances_to_classes(labels)
    assert classes[5, 5] == INTERIOR and classes[5, 11] == BORDER and classes[5, 12] == BORDER
    back = classes_to_instances(classes)
    assert score_dataset([(labels, back)]).msa == 1.0


def test_a_merged_interior_is_split_at_its_neck_and_an_ellipse_is_not() -> None:
    """A model that misses the border where two cells touch predicts one interior blob: the
    distance-peak split parts it, the old component seeds did not; one long cell stays whole."""
    yy, xx = np.mgrid[:40, :70]
    pair = ((yy - 20) ** 2 + (xx - 20) ** 2 < 12**2) | ((yy - 20) ** 2 + (xx - 43) ** 2 < 12**2)
    ellipse = ((yy - 20) / 8.0) ** 2 + ((xx - 35) / 25.0) ** 2 < 1
    for mask, cells in ((pair, 2), (ellipse, 1)):
        classes = np.where(mask, INTERIOR, 0).astype(np.uint8)
        assert classes_to_instances(classes).max() == cells
        assert classes_to_instances(classes, split_depth=None).max() == 1
    split = classes_to_instances(np.where(pair, INTERIOR, 0).astype(np.uint8))
    assert split[20, 20] != split[20, 43] and (split > 0).sum() == pair.sum()
    # a thin cell (interior one pixel wide, too shallow for a peak) touching a round one
    labels = np.zeros((40, 70), np.uint16)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 < 12**2] = 1
    labels[19:22, 32:60] = 2
    assert classes_to_instances(instances_to_classes(labels)).max() == 2


@pytest.mark.slow
def test_round_trip_on_real_dsb_labels(sample_dir: Path, dsb_train: Path) -> None:
    """What a perfect class map gives: the peak split costs some irregular true cells (it buys
    far more on real predictions, where touching cells lose their border)."""
    split, components = [], []
    for s in read_dataset(dsb_train):
        gt = read_label_image(s.label)
        classes = instances_to_classes(gt)
        split.append((gt, classes_to_instances(classes)))
        components.append((gt, classes_to_instances(classes, split_depth=None)))
    msa, msa_components = score_dataset(split).msa, score_dataset(components).msa
    print(f"\nDSB2018 train, 541 label images: ground truth -> 3 classes -> instances, mSA {msa:.4f} "
          f"(one per interior component: {msa_components:.4f})")  # fmt: skip
    assert msa >= 0.96  # measured 0.9696
    assert msa_components >= 0.98  # measured 0.9867


def test_export_is_idempotent_and_complete(tmp_path: Path, sample_dir: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    cases = load_cases(sample_dir, 3)
    meta = export_dataset(ws, cases)
    assert meta["numTraining"] == 3 and meta["channel_names"] == {"0": "zscore"}
    files = sorted(p for p in ws.dataset_dir.rglob("*.png"))
    assert len(files) == 6
    stamps = {p: p.stat().st_mtime_ns for p in files}
    export_dataset(ws, cases)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # nothing rewritten
    export_dataset(ws, cases[:2])
    assert len(list(ws.dataset_dir.rglob("*.png"))) == 4  # a dropped case leaves the dataset
    img = read_image(ws.dataset_dir / "imagesTr" / f"{cases[0].id}_0000.png")
    np.testing.assert_array_equal(img, model_channels(cases[0].image)[0])  # raw values, one channel


def test_export_lists_its_files_for_nnunet(
    tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nnU-Net reads the files from dataset.json's listing; without one it would search the folder
    with a fork pool, which can deadlock in our multi-threaded job processes."""
    import nnunetv2.utilities.utils as nnunet_utils

    ws = Workspace.open(tmp_path / "ws", create=True)
    cases = load_cases(sample_dir, 3)
    export_dataset(ws, cases)
    export_dataset(ws, cases[1:])  # the listing follows the latest export

    def no_fork_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("nnU-Net searched the dataset folder with its fork pool")

    monkeypatch.setattr(nnunet_utils, "Pool", no_fork_pool)
    found = nnunet_utils.get_filenames_of_train_images_and_targets(str(ws.dataset_dir))
    assert sorted(found) == sorted(c.id for c in cases[1:])
    for case_id, entry in found.items():
        assert entry["images"] == [str(ws.dataset_dir / "imagesTr" / f"{case_id}_0000.png")]
        assert entry["label"] == str(ws.dataset_dir / "labelsTr" / f"{case_id}.png")
        assert all(Path(f).is_file() for f in [*entry["images"], entry["label"]])


def test_export_errors(tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WorkspaceError, match="does not exist"):
        Workspace.open(tmp_path / "missing")
    ws = Workspace.open(tmp_path / "ws", create=True)
    (case,) = load_cases(sample_dir, 1)
    with pytest.raises(DatasetExportError, match="would be empty"):
        export_dataset(ws, [])
    with pytest.raises(DatasetExportError, match="labels are"):
        export_dataset(ws, [Case("a", case.image, case.labels[:-1])])
    with pytest.raises(DatasetExportError, match="no background"):
        export_dataset(ws, [Case("a", case.image, np.ones_like(case.labels))])
    with pytest.raises(DatasetExportError, match="not supported"):
        export_dataset(ws, [Case("a", case.image.astype(np.float32), case.labels)])

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset_mod, "atomic_write_bytes", full)
    with pytest.raises(DatasetExportError, match="disk full"):
        export_dataset(ws, [case])


@pytest.mark.slow
def test_plan_train_predict_finetune(
    tmp_path: Path, sample_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 DSB training images, 2 epochs x 10 iterations, 4 held-out predictions, 1 fine-tune epoch."""
    import torch

    from activeseg.nnunet import starting
    from activeseg.nnunet.engine import (
        EpochProgress,
        Predictor,
        TrainBudget,
        list_models,
        plan_and_preprocess,
        preprocess,
        train,
    )

    ws = Workspace.open(tmp_path / "ws", create=True)
    cases = load_cases(sample_dir, 12)
    export_dataset(ws, cases)
    plan_and_preprocess(ws, n_proc=2)
    assert (ws.preprocessed_dir / "nnUNetPlans.json").is_file()

    class Crash(Exception):
        pass

    def crash_after_first_epoch(progress: EpochProgress) -> None:
        raise Crash

    budget = TrainBudget(epochs=2, iterations_per_epoch=10, val_iterations=2)
    with pytest.raises(Crash):  # the machine "dies" after epoch 1
        train(ws, "pretrain-1", budget, sources={"pseudo": 12}, on_epoch=crash_after_first_epoch)
    epochs: list[EpochProgress] = []
    info = train(ws, "pretrain-1", budget, sources={"pseudo": 12}, on_epoch=epochs.append)
    assert [e.epoch for e in epochs] == [2]  # resumed from nnU-Net's checkpoint, epoch 1 not redone
    assert np.isfinite(epochs[0].train_loss) and len(epochs[0].pseudo_dice) == 2
    assert info.checkpoint(ws).is_file() and info.kind == "pretrain"
    assert not (info.checkpoint(ws).parent / "checkpoint_best.pth").exists()
    # on a CPU the compute-aware configuration, smaller than nnU-Net's own plan, is the default
    plans = json.loads((ws.preprocessed_dir / "nnUNetPlans.json").read_text())["configurations"]
    stock = plans["2d"]
    assert info.configuration == "2d_lite" and plans["2d_lite"]["inherits_from"] == "2d"
    assert info.plan["patch_size"][0] < stock["patch_size"][0]
    assert max(info.plan["features"]) < max(stock["architecture"]["arch_kwargs"]["features_per_stage"])
    assert info.budget["batch_size"] == info.plan["batch_size"] > 2 and "objects ~" in info.plan["reason"]
    assert info.iterations_run == 20 and info.metrics["parameters"] < 5_000_000

    predictor = Predictor(ws, "pretrain-1")
    # nnU-Net's printing (plans, epochs) went to the workspace log, not to the user's terminal
    printed = capsys.readouterr().out
    assert "plan.json" not in printed and "Epoch" not in printed
    assert "These are the global plan.json settings" in ws.log_file.read_text()
    held_out = load_cases(sample_dir, 4, offset=12)
    for case in held_out:
        pred = predictor.predict(model_channels(case.image))
        assert pred.labels.shape == case.labels.shape and pred.probabilities.shape == (3, *case.labels.shape)
        assert np.allclose(pred.probabilities.sum(axis=0), 1, atol=1e-3)
        assert pred.entropy.min() >= 0 and pred.entropy.max() <= 1 + 1e-6
        assert pred.features.ndim == 1 and pred.features.size >= 32
        assert pred.disagreement is None
    tta = predictor.predict(model_channels(held_out[0].image), tta=True)
    assert tta.disagreement is not None and tta.disagreement.shape == held_out[0].labels.shape
    assert tta.disagreement.min() >= 0 and np.allclose(tta.probabilities.sum(axis=0), 1, atol=1e-3)
    plain = predictor.predict(model_channels(held_out[0].image))  # the flip spread beside the plain answer
    spread = predictor.flip_spread(model_channels(held_out[0].image), plain.probabilities)
    np.testing.assert_allclose(spread, tta.disagreement, atol=1e-6)

    # corrections replace two pseudo-labels, whose pixels the model disagrees on are ignored;
    # fine-tune from the pretrained model with all its weights
    human = [Case(c.id, c.image, c.labels, "human") for c in cases[:2]]
    pseudo = [mask_disagreement(c, predictor.predict(model_channels(c.image)).labels) for c in cases[2:]]
    meta = export_dataset(ws, human + pseudo)
    assert meta["labels"]["ignore"] == IGNORE == max(meta["labels"].values())
    written = read_label_image(ws.dataset_dir / "labelsTr" / f"{pseudo[0].id}.png")
    assert (written == IGNORE).sum() == pseudo[0].ignore.sum() > 0  # an untrained model disagrees
    assert IGNORE not in read_label_image(ws.dataset_dir / "labelsTr" / f"{human[0].id}.png")
    preprocess(ws, n_proc=2)
    budget = TrainBudget(epochs=1, iterations_per_epoch=10, val_iterations=2, initial_lr=1e-3)
    ft = train(ws, "finetune-1", budget, sources={"human": 2, "pseudo": 10}, parent="pretrain-1",
               configuration="2d")  # fmt: skip
    assert ft.parent == "pretrain-1" and ft.kind == "finetune" and ft.budget["initial_lr"] == 1e-3
    assert ft.configuration == "2d_lite"  # a fine-tune keeps its parent's network, whatever is asked
    assert [m.version for m in list_models(ws)] == ["pretrain-1", "finetune-1"]
    with pytest.raises(WorkspaceError, match="already exists"):
        train(ws, "finetune-1", TrainBudget(), sources={})
    assert (
        Predictor(ws, "finetune-1").predict(model_channels(held_out[0].image)).labels.shape
        == held_out[0].labels.shape
    )

    # on a GPU nnU-Net compiles the network, and the compiled wrapper's keys carry "_orig_mod.":
    # a fine-tune must still load its parent's weights. Compiling forced on this CPU; no step runs,
    # so nothing is compiled for real, but the wrapper is there
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    monkeypatch.setattr(nnUNetTrainer, "_do_i_compile", lambda self: True)
    compiled = train(ws, "finetune-compiled", TrainBudget(epochs=0), sources={"human": 2},
                     parent="finetune-1")  # fmt: skip
    monkeypatch.undo()
    parent_weights = torch.load(ft.checkpoint(ws), weights_only=False)["network_weights"]
    compiled_weights = torch.load(compiled.checkpoint(ws), weights_only=False)["network_weights"]
    assert compiled_weights.keys() == parent_weights.keys()
    assert all(torch.equal(compiled_weights[k], w) for k, w in parent_weights.items())

    # a starting point made from pretrain-1 starts a new model; with a start budget of 0 epochs
    # (what pretraining from a starting point does by default) its weights stay the start's
    point_file = tmp_path / "start.pt"
    starting.save_starting_point(info.checkpoint(ws), point_file, {"trained_on": "pretrain-1"})
    point = starting.StartingPoint.load(point_file)
    assert info.started_from == "random weights" and ft.started_from == "its parent pretrain-1"
    two = TrainBudget(epochs=1, iterations_per_epoch=2, val_iterations=1)
    kept = TrainBudget(epochs=0)
    started = train(ws, "started-1", two, sources={"pseudo": 12}, start=point, start_budget=kept)
    assert started.started_from == "starting point start.pt: pretrain-1" and started.iterations_run == 0
    weights = torch.load(started.checkpoint(ws), weights_only=False)["network_weights"]
    assert all(torch.allclose(w, point.weights[k].to(w.dtype), atol=1e-3) for k, w in weights.items())
    # the shipped starting point fits the network planned for the bundled sample (the demo's)
    shipped = starting.resolve("auto")
    assert shipped is not None and shipped.mismatch(predictor._predictor.network) is None

    # nnU-Net's own plan, asked for: trained with batch 2 on a CPU, not its GPU-sized batch;
    # a starting point of another shape is not loaded, and model.json says so
    stock_info = train(ws, "stock-1", two, sources={"pseudo": 12}, configuration="2d", start=point,
                       start_budget=kept)  # fmt: skip
    assert stock_info.configuration == "2d" and stock_info.budget["batch_size"] == 2
    assert stock_info.iterations_run == 2  # not from the start: its own budget
    assert stock_info.started_from.startswith("random weights (starting point start.pt does not fit: ")
    assert Predictor(ws, "stock-1").predict(model_channels(held_out[0].image)).labels.shape == (
        held_out[0].labels.shape
    )


@pytest.mark.slow
def test_budget_in_minutes_ends_training_and_decays_the_learning_rate(
    tmp_path: Path, sample_dir: Path
) -> None:
    import torch

    from activeseg.nnunet.engine import UNBOUNDED_EPOCHS, TrainBudget, plan_and_preprocess, train

    ws = Workspace.open(tmp_path / "ws", create=True)
    export_dataset(ws, load_cases(sample_dir, 6))
    plan_and_preprocess(ws, n_proc=2)
    budget = TrainBudget.of(None, 0.15, iterations_per_epoch=2, val_iterations=1)
    assert budget.epochs == UNBOUNDED_EPOCHS and budget.minutes == 0.15
    info = train(ws, "timed", budget, sources={"pseudo": 6})
    # checked before every step, not after each epoch: ends within one step of the budget
    assert 9 <= info.training_seconds <= 9 + 3
    assert info.iterations_run >= 4
    lrs = torch.load(info.checkpoint(ws), weights_only=False)["logging"]["lrs"]
    assert lrs[0] == pytest.approx(1e-2, rel=1e-3) and all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[-1] < 0.5e-2  # poly decay over the time spent, not over the (unbounded) epochs
    with pytest.raises(WorkspaceError, match="needs iterations or minutes"):
        TrainBudget.of(None, None)
    with pytest.raises(WorkspaceError, match="--minutes must be positive"):
        TrainBudget.of(None, -1)


class _FakeLogger:
    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {"epoch_start_timestamps": [], "epoch_end_timestamps": []}

    def get_value(self, key: str, step: int | None) -> list[float]:
        return self.values[key]


def test_schedule_warms_up_decays_and_ends_a_budget_between_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The learning rate before each step: linear warm-up, then nnU-Net's poly decay over the
    iterations; a budget in minutes ends training before the step that would start past it."""
    import time
    from types import SimpleNamespace

    from activeseg.nnunet import engine
    from activeseg.nnunet.engine import TimeUp, TrainBudget

    group: dict[str, float] = {}
    optimizer = SimpleNamespace(param_groups=[group])
    trainer = SimpleNamespace(current_epoch=0, num_epochs=4, num_iterations_per_epoch=25,
                              logger=_FakeLogger(), optimizer=optimizer)  # fmt: skip
    budget = TrainBudget(epochs=4, iterations_per_epoch=25, initial_lr=0.01, warmup_iterations=10)
    schedule = engine._BudgetSchedule(trainer, budget)
    lrs = []
    step = schedule.wrap(lambda batch: lrs.append(group["lr"]))
    for _ in range(100):
        step(None)
    assert schedule.steps == 100
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01 * (1 - 0.09) ** 0.9)
    assert all(a < b for a, b in itertools.pairwise(lrs[:10]))  # warming up
    assert all(a > b for a, b in itertools.pairwise(lrs[10:]))  # then decaying, step by step
    assert lrs[-1] < 0.001

    # minutes: the running epoch's time counts; the step that would start past the budget is not run
    timed = engine._BudgetSchedule(trainer, TrainBudget(epochs=10**6, minutes=1.0))
    now = time.time()
    trainer.logger.values["epoch_start_timestamps"] = [now - 50.0]  # an epoch running for 50 s
    ran = []
    step = timed.wrap(lambda batch: ran.append(group["lr"]))
    step(None)
    assert ran and ran[0] == pytest.approx(0.01 * (1 - 50 / 60) ** 0.9, rel=0.01)
    trainer.logger.values["epoch_start_timestamps"] = [now - 61.0]
    with pytest.raises(TimeUp):
        step(None)
    assert len(ran) == 1 and timed.steps == 1


#: nnU-Net's 2-D plan for the DSB2018 nuclei, as far as the lite derivation reads it
STOCK_2D = {
    "patch_size": [256, 256], "batch_size": 27,
    "architecture": {"network_class_name": "PlainConvUNet", "arch_kwargs": {
        "n_stages": 7, "features_per_stage": [32, 64, 128, 256, 512, 512, 512],
        "kernel_sizes": [[3, 3]] * 7, "strides": [[1, 1]] + [[2, 2]] * 6,
        "n_conv_per_stage": [2] * 7, "n_conv_per_stage_decoder": [2] * 6}},
}  # fmt: skip


def test_lite_plan_follows_the_objects_size(tmp_path: Path) -> None:
    """The compute-aware configuration: patch from the objects' size, pooled to an 8 px
    bottleneck, 16-256 features, a batch of the same pixels per CPU step on any image size."""
    from PIL import Image

    from activeseg.nnunet.plans import derive_lite, object_diameter

    stock = copy.deepcopy(STOCK_2D)
    small, choice = derive_lite(stock, diameter=20)
    kwargs = small["architecture"]["arch_kwargs"]
    assert small["inherits_from"] == "2d" and small["patch_size"] == [128, 128] and choice.n_stages == 5
    assert kwargs["features_per_stage"] == [16, 32, 64, 128, 256] and len(kwargs["strides"]) == 5
    assert small["batch_size"] == 8 == choice.batch_size
    assert stock["architecture"]["arch_kwargs"]["n_stages"] == 7  # the stock plan is left as it was
    tiny, _ = derive_lite(stock, diameter=8)
    assert tiny["patch_size"] == [64, 64] and tiny["architecture"]["arch_kwargs"]["n_stages"] == 4
    assert tiny["batch_size"] == 32
    big, _ = derive_lite(stock, diameter=80)
    assert big["patch_size"] == [256, 256] and big["batch_size"] == 2  # never above the stock patch
    # 520x696 fields: nnU-Net plans 640x768 for a GPU; the CPU batch no longer follows that patch
    # (it was 60 at patch 128: 6-7 s a step), nor goes above 64 on the largest fields
    wide = dict(copy.deepcopy(STOCK_2D), patch_size=[640, 768])
    wide_lite, wide_choice = derive_lite(wide, diameter=20)
    assert wide_lite["patch_size"] == [128, 128] and wide_choice.batch_size == 8
    assert "whatever the image size" in wide_choice.reason
    huge = dict(copy.deepcopy(STOCK_2D), patch_size=[1024, 1024])
    assert all(derive_lite(huge, diameter=d)[1].batch_size <= 64 for d in (1, 4, 8, 20, 80, None))

    # the diameter is measured on nnU-Net's class labels: interior components plus their border
    labels = tmp_path / "labelsTr"
    labels.mkdir()
    classes = np.zeros((100, 100), np.uint8)
    yy, xx = np.mgrid[:100, :100]
    for cy, cx in ((25, 25), (25, 75), (75, 50)):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2
        classes[disc <= 100] = 2  # radius 10: diameter ~20
        classes[disc <= 81] = 1
    Image.fromarray(classes).save(labels / "a.png")
    assert object_diameter(labels) == pytest.approx(20, abs=1.5)
    assert object_diameter(tmp_path / "none") is None


def test_lite_plan_is_derived_once_so_a_fine_tune_keeps_its_parents_network(tmp_path: Path) -> None:
    """A re-export with corrections measures other object sizes; the configuration stays."""
    from PIL import Image

    from activeseg.nnunet.plans import LITE, add_lite_configuration

    ws = Workspace.open(tmp_path / "ws", create=True)
    stock = copy.deepcopy(STOCK_2D)
    ws.preprocessed_dir.mkdir(parents=True)
    plans_file = ws.preprocessed_dir / "nnUNetPlans.json"
    plans_file.write_text(json.dumps({"configurations": {"2d": stock}}))
    labels = ws.dataset_dir / "labelsTr"
    labels.mkdir(parents=True)
    classes = np.zeros((64, 64), np.uint8)
    classes[10:14, 10:14] = 1  # tiny objects: patch 64
    Image.fromarray(classes).save(labels / "a.png")
    first = add_lite_configuration(ws)
    assert first.patch_size == [64, 64] and "objects ~" in first.reason
    classes[:] = 0
    classes[5:45, 5:45] = 1  # the re-export sees large objects
    Image.fromarray(classes).save(labels / "a.png")
    assert add_lite_configuration(ws) == first
    assert json.loads(plans_file.read_text())["configurations"][LITE]["patch_size"] == [64, 64]
