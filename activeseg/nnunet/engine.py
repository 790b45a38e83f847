"""Thin adapters over stock nnunetv2 2.8.1: plan, train with our budget, fine-tune, predict.

No fork and no custom trainer class: a stock ``nnUNetTrainer`` gets its budget through the
attributes nnU-Net documents, so checkpoints name the stock trainer and predict without any
``nnUNet_extTrainer``. nnU-Net starts worker processes with *spawn*: callers must keep their
entry points free of work at import time (ours are).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.fsutil import atomic_write_text
from activeseg.nnunet.classes import SPLIT_DEPTH, classes_to_instances
from activeseg.nnunet.plans import (
    PLANS,
    STOCK,
    STOCK_CPU_BATCH,
    PlanChoice,
    add_lite_configuration,
    default_configuration,
    plan_choice,
)
from activeseg.nnunet.starting import StartingPoint, unwrapped
from activeseg.nnunet.workspace import Workspace, WorkspaceError

PREPROCESSED_CONFIGURATION = STOCK  # every configuration we train inherits its data from "2d"
#: an epoch limit that never binds: a budget in minutes alone ends training
UNBOUNDED_EPOCHS = 1_000_000


@dataclass(frozen=True)
class TrainBudget:
    """How much training to pay for: epochs of iterations, minutes of training, or both
    (whichever ends first). nnU-Net's own default (1000 x 250 iterations) would take days on a
    2-core CPU.

    The learning rate follows nnU-Net's poly decay (``lr * (1 - progress) ** 0.9``) over the
    budget's progress: the fraction of iterations done or, with ``minutes``, of the time spent,
    whichever is further, so a short budget still ends at a small learning rate. It is set before
    every step, and a budget in minutes is checked there too, so one slow epoch cannot overrun it.
    """

    epochs: int = 2
    iterations_per_epoch: int = 10
    val_iterations: int = 2
    initial_lr: float = 1e-2
    #: patches per iteration; None: the configuration's (``2d`` on a CPU: 2, since its planned
    #: batch targets GPU memory: 27 for 541 DSB images, ~20 s per iteration on 2 cores)
    batch_size: int | None = None
    #: training time in minutes (None: epochs alone); then ``epochs`` only caps it
    minutes: float | None = None
    #: steps over which the learning rate ramps up linearly before its decay: nnU-Net's SGD
    #: (momentum 0.99) starts every fine-tune with no momentum, and a full step at once kicks a
    #: trained network away from where it was
    warmup_iterations: int = 0

    @property
    def iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    @classmethod
    def of(cls, iterations: int | None, minutes: float | None, iterations_per_epoch: int = 25,
           **kwargs: Any) -> TrainBudget:  # fmt: skip
        """A budget from what a person asks for: ``iterations`` and/or ``minutes``."""
        if iterations is None and minutes is None:
            raise WorkspaceError("a training budget needs iterations or minutes")
        if minutes is not None and minutes <= 0:
            raise WorkspaceError(f"--minutes must be positive, got {minutes}")
        if iterations is not None and iterations < 1:
            raise WorkspaceError(f"--iterations must be positive, got {iterations}")
        per_epoch = min(iterations_per_epoch, iterations) if iterations else iterations_per_epoch
        epochs = max(1, round(iterations / per_epoch)) if iterations else UNBOUNDED_EPOCHS
        return cls(epochs=epochs, iterations_per_epoch=per_epoch, minutes=minutes, **kwargs)


@dataclass(frozen=True)
class EpochProgress:
    epoch: int
    epochs: int | None  # None: a budget in minutes alone
    train_loss: float
    pseudo_dice: list[float]
    seconds: float
    minutes: float = 0.0  # training time so far
    of_minutes: float | None = None  # the budget in minutes, if any


@dataclass
class ModelInfo:
    """What ``models/<version>/model.json`` records about one trained model."""

    version: str
    kind: str  # "pretrain" (pseudo-labels) or "finetune" (corrections)
    parent: str | None
    budget: dict[str, Any]
    fold: str
    device: str
    sources: dict[str, int]  # how many cases came from human annotations / pseudo-labels
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    seconds: float = 0.0
    #: nnU-Net configuration in the plans file (models made before it existed: the stock "2d")
    configuration: str = STOCK
    plan: dict[str, Any] = field(default_factory=dict)  # PlanChoice: what was chosen and why
    iterations: int = 0  # training iterations actually run (a budget in minutes decides them)
    training_seconds: float = 0.0  # the epochs alone, without start-up
    #: where the weights started: a parent (fine-tune), a starting point, or random, and why
    started_from: str = ""

    def checkpoint(self, ws: Workspace) -> Path:
        return (
            model_folder(ws, self.version, self.configuration) / f"fold_{self.fold}" / "checkpoint_final.pth"
        )

    @property
    def iterations_run(self) -> int:
        return self.iterations or int(
            self.budget.get("epochs", 0) * self.budget.get("iterations_per_epoch", 0)
        )


def model_folder(ws: Workspace, version: str, configuration: str = STOCK) -> Path:
    """nnU-Net's trainer output folder of a model version (what its predictor loads)."""
    return ws.models / version / "results" / ws.dataset_name / f"nnUNetTrainer__{PLANS}__{configuration}"


def list_models(ws: Workspace) -> list[ModelInfo]:
    """Every finished model of the workspace, oldest first."""
    infos = [ModelInfo(**json.loads(p.read_text())) for p in ws.models.glob("*/model.json")]
    return sorted(infos, key=lambda m: m.created_at)


def _device(name: str) -> Any:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise WorkspaceError("--device cuda was asked for but no CUDA GPU is available")
    if name == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    return torch.device(name)


def plan_and_preprocess(ws: Workspace, n_proc: int = 2) -> None:
    """nnU-Net's fingerprint, plan and 2-D preprocessing of the exported dataset (once per project)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    if not (ws.dataset_dir / "dataset.json").is_file():
        raise WorkspaceError(f"no exported dataset in {ws.dataset_dir}; export one first")
    with ws.env():
        extract_fingerprints(
            [ws.dataset_id], num_processes=n_proc, check_dataset_integrity=True, verbose=False
        )
        plan_experiments([ws.dataset_id])
    add_lite_configuration(ws)
    preprocess(ws, n_proc)


def preprocess(ws: Workspace, n_proc: int = 2) -> None:
    """Preprocess the current export with the existing plans (after a re-export with corrections)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess as nn_preprocess

    if not (ws.preprocessed_dir / f"{PLANS}.json").is_file():
        raise WorkspaceError(f"{ws.root} has no nnU-Net plans yet; run planning first")
    shutil.copyfile(ws.dataset_dir / "dataset.json", ws.preprocessed_dir / "dataset.json")
    stale = ws.preprocessed_dir / f"{PLANS}_{PREPROCESSED_CONFIGURATION}"
    if stale.is_dir():
        shutil.rmtree(stale)  # cases removed from the export must not linger in training
    with ws.env():
        nn_preprocess([ws.dataset_id], PLANS, configurations=(PREPROCESSED_CONFIGURATION,),
                      num_processes=(n_proc,), verbose=False)  # fmt: skip


def _trainer(
    ws: Workspace, fold: str, device: Any, resume: bool, budget: TrainBudget, choice: PlanChoice
) -> Any:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    plans = json.loads((ws.preprocessed_dir / f"{PLANS}.json").read_text())
    dataset_json = json.loads((ws.preprocessed_dir / "dataset.json").read_text())
    plans["configurations"][choice.configuration]["batch_size"] = choice.batch_size
    trainer = nnUNetTrainer(
        dict(plans, continue_training=resume), choice.configuration, fold, dataset_json, device=device
    )
    trainer.num_epochs = max(1, budget.epochs)  # nnU-Net's own scheduler divides by it; see train()
    trainer.num_iterations_per_epoch = budget.iterations_per_epoch
    trainer.num_val_iterations_per_epoch = budget.val_iterations
    trainer.initial_lr = budget.initial_lr  # read by initialize(), where the optimiser is built
    trainer.save_every = 1  # a crash loses at most one epoch
    return trainer


def _trained_seconds(trainer: Any) -> float:
    """Seconds spent in epochs (restored from a checkpoint's log on resume), the running one too."""
    log = trainer.logger
    starts, ends = log.get_value("epoch_start_timestamps", None), log.get_value("epoch_end_timestamps", None)
    done = float(sum(e - s for s, e in zip(starts, ends, strict=False)))
    return done + (time.time() - starts[-1] if len(starts) > len(ends) else 0.0)


class TimeUp(Exception):
    """Raised before the step that would start past a budget in minutes (caught by ``train``)."""


class _BudgetSchedule:
    """nnU-Net's poly learning rate over the budget's progress (iterations or minutes, whichever is
    further), after an optional linear warm-up, set before every training step; it replaces the
    trainer's own scheduler, which only knows epochs. It also counts the steps and ends a budget
    in minutes between two steps."""

    def __init__(self, trainer: Any, budget: TrainBudget) -> None:
        self.trainer, self.budget = trainer, budget
        self.steps = trainer.current_epoch * trainer.num_iterations_per_epoch  # resumed epochs count

    def progress(self) -> float:
        total = self.trainer.num_epochs * self.trainer.num_iterations_per_epoch
        by_steps = self.steps / total if total else 1.0
        by_time = _trained_seconds(self.trainer) / (60 * self.budget.minutes) if self.budget.minutes else 0.0
        return min(1.0, max(by_steps, by_time))

    def learning_rate(self, progress: float | None = None) -> float:
        progress = self.progress() if progress is None else progress
        lr = self.budget.initial_lr * (1 - progress) ** 0.9
        if self.budget.warmup_iterations:
            lr *= min(1.0, (self.steps + 1) / self.budget.warmup_iterations)
        return lr

    def step(self, current_step: int | None = None) -> None:
        """nnU-Net's scheduler call at each epoch's start (it logs the rate it finds), and ours
        before every step. At the start of a fresh training nothing has run yet: the milliseconds
        nnU-Net spends between stamping the epoch and this call are not progress."""
        fresh = current_step == 0 and self.steps == 0
        lr = self.learning_rate(0.0 if fresh else None)
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = lr

    def time_is_up(self) -> bool:
        return bool(self.budget.minutes) and _trained_seconds(self.trainer) >= 60 * self.budget.minutes

    def wrap(self, train_step: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``train_step`` with the rate set before it and the budget checked."""

        def step(batch: Any) -> Any:
            if self.time_is_up():
                raise TimeUp
            self.step()
            out = train_step(batch)
            self.steps += 1
            return out

        return step


def _watch_epochs(
    trainer: Any,
    schedule: _BudgetSchedule,
    on_epoch: Callable[[EpochProgress], None] | None,
    console: Any,
) -> None:
    """Report each finished epoch: wraps this trainer instance's own ``on_epoch_end``. The report
    prints to ``console`` (the terminal), not to the nnU-Net log the workspace redirects to."""
    original = trainer.on_epoch_end

    def on_epoch_end() -> None:
        original()  # saves checkpoint_latest (save_every = 1), then counts the epoch
        if on_epoch is not None:
            log = trainer.logger
            started, ended = (
                log.get_value("epoch_start_timestamps", step=-1),
                log.get_value("epoch_end_timestamps", step=-1),
            )
            epochs = None if trainer.num_epochs == UNBOUNDED_EPOCHS else trainer.num_epochs
            progress = EpochProgress(
                epoch=trainer.current_epoch, epochs=epochs,
                train_loss=float(log.get_value("train_losses", step=-1)),
                pseudo_dice=[float(d) for d in log.get_value("dice_per_class_or_region", step=-1)],
                seconds=float(ended - started), minutes=_trained_seconds(trainer) / 60,
                of_minutes=schedule.budget.minutes,
            )  # fmt: skip
            with contextlib.redirect_stdout(console):
                on_epoch(progress)

    trainer.on_epoch_end = on_epoch_end


def resolve_plan(ws: Workspace, device: str, configuration: str | None, batch_size: int | None) -> PlanChoice:
    """The configuration a new model trains with: the one asked for, else the device's default;
    on a CPU the stock plan trains with batch 2 (its planned batch targets GPU memory)."""
    configuration = configuration or default_configuration(device)
    if batch_size is None and configuration == STOCK and device != "cuda":
        batch_size = STOCK_CPU_BATCH
    return plan_choice(ws, configuration, batch_size)


def train(
    ws: Workspace,
    version: str,
    budget: TrainBudget,
    sources: dict[str, int],
    parent: str | None = None,
    device: str = "cpu",
    fold: str = "all",
    workers: int = 2,
    on_epoch: Callable[[EpochProgress], None] | None = None,
    configuration: str | None = None,
    start: StartingPoint | None = None,
    start_budget: TrainBudget | None = None,
) -> ModelInfo:
    """Train a model version on the preprocessed dataset; with ``parent``, fine-tune from it.

    ``start``: weights a new model (no parent) starts from when its network has their shape
    (``activeseg.nnunet.starting``); otherwise it starts from random weights, and ``model.json``
    says which and why. ``start_budget`` replaces ``budget`` when the starting point is loaded;
    ``TrainBudget(epochs=0)`` keeps its weights as they are (the model is the starting point, in
    this workspace's plans).

    ``configuration``: ``2d`` (nnU-Net's plan) or ``2d_lite`` (see ``activeseg.nnunet.plans``);
    None picks the device's default; a fine-tune always keeps its parent's network.
    Fine-tuning loads *all* of the parent's network weights (nnU-Net's ``-pretrained_weights``
    would re-initialise the segmentation head: pseudo-Dice 0.15 instead of 0.90 after 10
    iterations). A crashed run resumes from its last epoch when called again with the same version.
    """
    import torch

    target = ws.models / version
    if (target / "model.json").is_file():
        raise WorkspaceError(f"model {version} already exists in {ws.models}; choose another version")
    parent_info = None
    if parent is not None:
        parent_info = next((m for m in list_models(ws) if m.version == parent), None)
        if parent_info is None:
            raise WorkspaceError(f"parent model {parent} not found in {ws.models}")
        configuration = parent_info.configuration
    dev = _device(device)
    started = time.time()
    choice = resolve_plan(ws, device, configuration, budget.batch_size)
    results = target / "results"
    fold_dir = model_folder(ws, version, choice.configuration) / f"fold_{fold}"
    latest = fold_dir / "checkpoint_latest.pth"
    console = sys.stdout
    with ws.env(results=results, workers=workers):
        resume = latest.is_file()
        trainer = _trainer(ws, fold, dev, resume, budget, choice)
        trainer.initialize()
        trainer.num_epochs = budget.epochs  # 0: the weights as loaded (a starting point, a parent)
        mismatch = start.mismatch(trainer.network) if start is not None and parent_info is None else None
        use_start = start is not None and parent_info is None and mismatch is None
        if use_start and start_budget is not None:
            budget = start_budget
            trainer.num_epochs, trainer.num_iterations_per_epoch = budget.epochs, budget.iterations_per_epoch
        if parent_info is not None:
            started_from = f"its parent {parent}"
        elif use_start:
            started_from = f"starting point {start.describe()}"
        elif mismatch is not None:
            started_from = f"random weights (starting point {start.path.name} does not fit: {mismatch})"
        else:
            started_from = "random weights"
        if resume:
            trainer.load_checkpoint(str(latest))
        elif parent_info is not None:
            ckpt = torch.load(parent_info.checkpoint(ws), map_location=dev, weights_only=False)
            unwrapped(trainer.network).load_state_dict(ckpt["network_weights"])  # compiled on a GPU
        elif use_start:
            start.load_into(trainer.network)
        schedule = _BudgetSchedule(trainer, budget)
        trainer.lr_scheduler = schedule
        trainer.train_step = schedule.wrap(trainer.train_step)
        _watch_epochs(trainer, schedule, on_epoch, console)
        try:
            trainer.run_training()
        except TimeUp:
            trainer.on_train_end()  # what run_training does after its last epoch
        log = trainer.logger
        trained_epochs = bool(log.get_value("train_losses", None))
        metrics = {
            "train_loss": float(log.get_value("train_losses", step=-1)) if trained_epochs else None,
            "pseudo_dice": [float(d) for d in log.get_value("dice_per_class_or_region", step=-1)]
            if trained_epochs
            else [],
            "parameters": sum(p.numel() for p in trainer.network.parameters()),
        }
        steps_run, trained = schedule.steps, _trained_seconds(trainer)
    (fold_dir / "checkpoint_best.pth").unlink(missing_ok=True)  # we never load it
    info = ModelInfo(
        version=version, kind="finetune" if parent else "pretrain", parent=parent,
        budget=dict(asdict(budget), batch_size=choice.batch_size),
        fold=str(fold), device=device, sources=dict(sources), metrics=metrics, seconds=time.time() - started,
        configuration=choice.configuration, plan=asdict(choice),
        iterations=steps_run, training_seconds=round(trained, 1),
        started_from=started_from,
    )  # fmt: skip
    atomic_write_text(target / "model.json", json.dumps(asdict(info), indent=1))
    return info


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # instances (0 = background)
    classes: np.ndarray  # argmax class map
    probabilities: np.ndarray  # (3, H, W) float32 softmax
    features: np.ndarray  # pooled bottleneck activations, one vector per image
    #: with test-time augmentation: per-pixel std of the probabilities over the flips, averaged
    #: over classes (0 where all flips agree); None without
    disagreement: np.ndarray | None = None

    @property
    def entropy(self) -> np.ndarray:
        """Per-pixel softmax entropy, normalised to [0, 1]."""
        p = np.clip(self.probabilities, 1e-8, 1.0)
        return -(p * np.log(p)).sum(axis=0) / np.log(p.shape[0])


class Predictor:
    """A trained model version, loaded once, predicting one image at a time."""

    #: smallest instance kept, in pixels: a model early in training predicts speckle (thousands of
    #: 1-10 px fragments per image), which no annotator wants to delete by hand
    MIN_AREA = 16

    def __init__(
        self, ws: Workspace, version: str, device: str = "cpu", min_area: int = MIN_AREA,
        split_depth: float | None = SPLIT_DEPTH,
    ) -> None:  # fmt: skip
        info = next((m for m in list_models(ws) if m.version == version), None)
        if info is None:
            raise WorkspaceError(f"model {version} not found in {ws.models}")
        self.info = info
        self.min_area, self.split_depth = min_area, split_depth
        dev = _device(device)
        with ws.env():  # nnU-Net prints while it builds the predictor
            self._predictor = self._build(ws, version, info, dev)
        self._pooled: list[np.ndarray] = []
        self._predictor.network.encoder.register_forward_hook(self._keep_bottleneck)

    @staticmethod
    def _build(ws: Workspace, version: str, info: ModelInfo, dev: Any) -> Any:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(
            tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=dev,
            perform_everything_on_device=dev.type == "cuda", verbose=False, verbose_preprocessing=False,
            allow_tqdm=False,
        )  # fmt: skip
        predictor.initialize_from_trained_model_folder(
            str(model_folder(ws, version, info.configuration)),
            use_folds=(info.fold,),
            checkpoint_name="checkpoint_final.pth",
        )
        return predictor

    def _keep_bottleneck(self, module: Any, inputs: Any, output: Any) -> None:
        deepest = output[-1] if isinstance(output, (list, tuple)) else output
        self._pooled.append(deepest.detach().float().mean(dim=(2, 3)).cpu().numpy())

    def _probabilities(self, channels: np.ndarray) -> np.ndarray:
        data = channels[:, None].astype(np.float32)  # (C, 1, H, W): nnU-Net's 2-D layout
        _, probs = self._predictor.predict_single_npy_array(data, {"spacing": (999, 1, 1)}, None, None, True)
        return np.asarray(probs)[:, 0].astype(np.float32)

    def predict(self, channels: np.ndarray, tta: bool = False) -> Prediction:
        """``channels``: (C, H, W) raw values as exported (see ``activeseg.imageio.model_channels``).

        With ``tta`` the image is also predicted flipped (left-right, up-down, both); the mean of
        the four is the answer and their spread is the disagreement map, an uncertainty signal.
        """
        self._pooled = []
        probs = self._probabilities(channels)
        features = np.concatenate(self._pooled).mean(axis=0) if self._pooled else np.zeros(0, np.float32)
        disagreement = None
        if tta:
            stack = self._with_flips(channels, probs)
            probs, disagreement = stack.mean(axis=0), stack.std(axis=0).mean(axis=0)
        classes = probs.argmax(axis=0).astype(np.uint8)
        return Prediction(
            labels=classes_to_instances(classes, self.min_area, self.split_depth),
            classes=classes,
            probabilities=probs,
            features=features.astype(np.float32),
            disagreement=disagreement,
        )

    def flip_spread(self, channels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Per-pixel disagreement of the flipped predictions with ``probabilities`` (the plain
        prediction of ``channels``): as ``predict(tta=True).disagreement``, without changing the
        plain answer (whose entropy the other strategies rank by)."""
        return self._with_flips(channels, probabilities).std(axis=0).mean(axis=0)

    def _with_flips(self, channels: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """(4, K, H, W): ``probs`` and the predictions of the image flipped left-right, up-down and
        both, each flipped back."""
        runs = [probs]
        for axes in ((2,), (1,), (1, 2)):
            flipped = np.flip(channels, axis=axes).copy()
            runs.append(np.flip(self._probabilities(flipped), axis=axes))
        return np.stack(runs)

    def predict_many(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [self.predict(img) for img in images]
