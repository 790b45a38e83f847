"""``activeseg study``: how close a small corrected core-set gets to full supervision.

Every arm trains the same nnU-Net (planned on the pool's pseudo-labels, in the device's default
configuration: ``2d_lite`` on a CPU, nnU-Net's own ``2d`` on a GPU) with the same budget, in
iterations or in minutes, and is scored on the same held-out images:

| arm | trained on |
|---|---|
| pseudo-labels | nothing: the pseudo-labeller's own masks |
| pseudo model | P iterations on the pool's pseudo-labels (the loop's ``pretrain``), shared by all seeds |
| pseudo only | the pseudo model + F more iterations on the pool's pseudo-labels |
| random, instance-random, and each | the pseudo model + F iterations on k images corrected to ground truth, |
| candidate strategy by its name | repeated, plus the other pool images' pseudo-labels (or the k alone: |
|  | ``finetune_with_pseudo=False``) |
| full, from pseudo model | the pseudo model + F iterations on every pool image's ground truth |
| full, from scratch | ``full_iterations`` (default P + F) on every pool image's ground truth; its |
|  | learning curve at fractions of that budget (``full_curve``, first seed) says how near its plateau |
| each selection arm, "fine-tune ∝ k | with ``scaled_finetune`` (a budget such as 5 %): the same k images, |
| from 5%" | F iterations at that budget and in proportion to k at the others |
| poor teacher | with ``teacher_arms``: the default strategy's k images, corrected, alone (the |
|  | teacher set aside, as ``finetune`` does below ``POOR_TEACHER_MSA``), from the pseudo model |
| no teacher | with ``teacher_arms``: k images picked by typiclust on SAM image embeddings (no |
|  | model, no pseudo-labels), corrected, trained from scratch at the full arm's budget |

The simulated annotator corrects a chosen image's pseudo-label to its ground truth, which is what a
careful person submits; a selection arm's record says what that cost (cells in its images, and
pre-annotated cells that had to change), since a strategy that wins by picking the densest images
may cost more annotator time than it saves. Each candidate strategy ranks the pool as ``activeseg
rank`` does after pretraining (the pseudo model's foreground entropy, bottleneck features, cell
counts and disagreement with the pseudo-labels), and every arm of a seed fine-tunes from the same
pseudo model, so differences between arms are paired; fine-tuning mixes as the loop does (the
corrected images repeated to about half of the samples plus the other images' pseudo-labels) at
``finetune_lr`` (1e-2, measured by ``benchmarks/finetune_settings.py``). A seed sets the
selection and torch's generator; nnU-Net's augmentation workers draw their own randomness, so
seeds also show the run-to-run spread of training.
``finetune_with_pseudo=False`` makes the selection arms fine-tune on their k images only
(``activeseg finetune --no-with-pseudo``); ``full=False`` leaves out the two fully supervised arms
(for a second study that changes only how the selection arms fine-tune).

The images: one collection, ``data``, split by seed and image size into pool and held-out test
(``study.split``), which is how a lab uses the loop on its own images; or a ``train`` folder for the
pool and a ``test`` folder held out (e.g. DSB2018 stage-1 train and test: two distributions). Every
model is scored on (a) the held-out test images (the record's top-level metrics), (b) a seeded sample
of the pool images the arm did not annotate (``unannotated``: what ``activeseg export`` hands the
lab) and (c) ``shift``, another distribution (DSB2018 stage-1 test) as a domain-shift check.

Resumable: each finished arm x k x seed is a JSON file under ``runs/``; a crash during training
resumes from nnU-Net's last epoch. A study folder belongs to one set of training settings;
budgets and seeds can be added later. Its ``.gitignore`` keeps what another machine needs to go on
with the same pseudo model (the runs, the pool's scores, the pseudo model and nnU-Net's plans: about
17 MB with the CPU plan) and leaves out what the study makes again (datasets, preprocessed data), so
a study committed to a repository continues, still paired, in a later session.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from activeseg.datasets import Sample, held_out, read_dataset
from activeseg.fsutil import atomic_write_text, held_alone
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.metrics import score_dataset, score_image
from activeseg.nnunet import starting
from activeseg.nnunet.classes import SPLIT_DEPTH
from activeseg.nnunet.dataset import Case, export_dataset
from activeseg.nnunet.engine import (
    UNBOUNDED_EPOCHS,
    TrainBudget,
    list_models,
    plan_and_preprocess,
    preprocess,
    train,
)
from activeseg.nnunet.plans import default_configuration
from activeseg.nnunet.starting import StartingPoint
from activeseg.nnunet.workspace import Workspace
from activeseg.scores import disagreement, foreground_mean
from orchestrator.context import LoopError
from orchestrator.rank.strategies import (
    DEFAULT_STRATEGY,
    NEEDS_FLIPS,
    STRATEGIES,
    Candidates,
    budget_to_k,
    rank,
)
from orchestrator.study.split import split_pool_test
from orchestrator.train.training_data import oversample_human

PSEUDO_LABELS = "pseudo-labels"
PSEUDO_MODEL = "pseudo model"
PSEUDO_ONLY = "pseudo only"
FULL_FROM_PSEUDO = "full, from pseudo model"
FULL_FROM_SCRATCH = "full, from scratch"
REFERENCE_ARMS = (PSEUDO_LABELS, PSEUDO_MODEL, PSEUDO_ONLY, FULL_FROM_PSEUDO, FULL_FROM_SCRATCH)
BASELINES = ("random", "instance-random")
#: the strategies a study measures by default, besides the two random baselines
CANDIDATES = ("hybrid", "disagreement", "typiclust", "probcover", "entropy", "coreset", "tta", "count-strata")
#: without a trustworthy teacher (``teacher_arms``): the k corrections alone, from the pseudo model
#: or from scratch (images picked for diversity on SAM image embeddings, as a cold start would)
POOR_TEACHER = "poor teacher"
NO_TEACHER = "no teacher"
TEACHER_ARMS = (POOR_TEACHER, NO_TEACHER)  # ways of training, not strategies: never the winner
NO_TEACHER_STRATEGY = "typiclust"
PRETRAINED = "pseudo-r0"
#: a study folder's .gitignore: the state a later session needs to continue the study paired (what
#: runs read and cannot make again identically: the pseudo model, the plans it was trained under, the
#: pool's scores that picked every core-set) is kept; the rest the study makes again
PORTABLE_STATE = f"""# written by activeseg study: commit this folder to continue the study on another machine
*
!*/
!/.gitignore
!/study.json
!/pool_scores.npz
!/pool_embeddings.npz
!/runs/*.json
!/results.*
!/msa_vs_annotated.png
!/nnunet/nnUNet_preprocessed/*/nnUNetPlans.json
!/nnunet/nnUNet_preprocessed/*/dataset.json
!/nnunet/nnUNet_preprocessed/*/dataset_fingerprint.json
!/nnunet/models/{PRETRAINED}/**
/nnunet/models/{PRETRAINED}/**/checkpoint_latest.pth
"""
POOL_SEED = 0  # which training images form the pool: fixed, so every study seed sees the same pool
#: what a study folder made before a setting existed was run with
SETTINGS_BEFORE_THEY_EXISTED = {
    "finetune_with_pseudo": False,
    "configuration": "2d",
    "pretrain_minutes": None,
    "finetune_minutes": None,
    "init": "none",
    "data": None,
    "test_fraction": 0.2,
    "split_seed": 0,
    "unannotated_size": 0,
    "shift": None,
    "full_iterations": None,
    "finetune_warmup": 0,
    "split_depth": None,  # interior components were the instances before 2026-12-07
}


SCALED = ", fine-tune ∝ k from "


def scaled_arm(arm: str, reference: str) -> str:
    """A selection arm whose fine-tune grows with k: ``finetune_iterations`` at the ``reference``
    budget (e.g. "5%"), in proportion to k at the others; the reference is in the name (and so
    in the run's file), so runs anchored elsewhere are never mixed up."""
    return f"{arm}{SCALED}{reference}"


ROUNDS = ", rounds of "


def rounds_arm(arm: str, budget: str) -> str:
    """A multi-round arm: round after round of ``budget`` new images, each round fine-tuned from
    the previous round's model and picked with its scores, as the loop does; its runs' k is the
    images corrected so far."""
    return f"{arm}{ROUNDS}{budget}"


def is_rounds(arm: str) -> bool:
    return ROUNDS in arm


def base_arm(arm: str) -> str:
    """The strategy (or random baseline) behind an arm, scaled, multi-round or not."""
    if arm == POOR_TEACHER:
        return DEFAULT_STRATEGY
    if arm == NO_TEACHER:
        return NO_TEACHER_STRATEGY
    return arm.split(SCALED)[0].split(ROUNDS)[0]


def scaled_reference(arm: str) -> str | None:
    """The budget a scaled arm's fine-tune is anchored at; None for any other arm."""
    _, found, reference = arm.partition(SCALED)
    return reference if found else None


def is_scaled(arm: str) -> bool:
    return SCALED in arm


def curve_arm(fraction: float) -> str:
    """The learning-curve point of "full, from scratch" at ``fraction`` of its budget."""
    return f"{FULL_FROM_SCRATCH} at {fraction:g} of its budget"


def is_selection(arm: str) -> bool:
    """A strategy's (or a random baseline's) arm, as opposed to the references."""
    return arm not in REFERENCE_ARMS and not arm.startswith(FULL_FROM_SCRATCH)


Report = Callable[[str], None]


@dataclass(frozen=True)
class StudyConfig:
    train: Path | None = None  # images + labels/ (the pool is drawn from here)
    test: Path | None = None  # held-out images + labels/ (e.g. DSB2018 stage-1 test)
    #: one collection (images + labels/) split into pool and test instead of ``train`` and ``test``
    data: Path | None = None
    test_fraction: float = 0.2  # of ``data``, held out
    split_seed: int = 0  # which of ``data``'s images are held out
    #: (c) another distribution, scored as a domain-shift check (None: not scored)
    shift: Path | None = None
    pool_size: int | None = 300  # None: every training image
    test_size: int | None = None  # None: every held-out (and shifted) image
    #: (b) pool images sampled (by POOL_SEED) to score each arm on those it left unannotated; None: all
    unannotated_size: int | None = 50
    budgets: tuple[str, ...] = ("1%", "2%", "5%", "10%")
    seeds: tuple[int, ...] = (0, 1, 2)
    strategies: tuple[str, ...] = CANDIDATES  # one arm each, besides random and instance-random
    pretrain_iterations: int = 2000
    #: 750 at lr 1e-2: on training images 0.604 against 0.577 for 250 at 1e-3 (finetune_settings.py)
    finetune_iterations: int = 750
    iterations_per_epoch: int = 50
    full_iterations: int | None = None  # full, from scratch; None: pretrain + fine-tune iterations
    full_curve: tuple[float, ...] = ()  # fractions of full_iterations also run (first seed only)
    #: a budget (e.g. "5%"): also run every selection arm with finetune_iterations at that k and
    #: in proportion to k at the others, so each corrected image is seen as often at every k
    scaled_finetune: str | None = None
    #: budgets in minutes instead of iterations (then the iterations only cap them)
    pretrain_minutes: float | None = None
    finetune_minutes: float | None = None
    configuration: str | None = None  # nnU-Net configuration; None: the device's default
    #: the pseudo model's starting weights (activeseg.nnunet.starting); "full, from scratch" never.
    #: Not the shipped one by default: it learnt from the ground truth of DSB2018 stage-1 training
    #: images, the study's pool, so its arms would start from labels they are meant to buy
    init: str = "none"
    pretrain_lr: float = 1e-2
    finetune_lr: float = 1e-2
    finetune_warmup: int = 0  # iterations of linear warm-up at the start of each fine-tune
    #: multi-round arms: this many rounds of ``rounds_budget`` for each of ``rounds_strategies``
    rounds: int = 0
    rounds_budget: str = "5%"
    rounds_strategies: tuple[str, ...] = ("entropy", "random")
    finetune_with_pseudo: bool = True  # selection arms: + pseudo-labels of the rest, k oversampled
    teacher_arms: bool = False  # also the "poor teacher" and "no teacher" arms at every budget
    #: how a predicted class map becomes cells (activeseg.nnunet.classes); None: one per interior
    #: component, as every study measured before 2026-12-07
    split_depth: float | None = SPLIT_DEPTH
    full: bool = True  # run the fully supervised arms
    device: str = "cpu"
    workers: int = 2  # nnU-Net's augmentation processes (0: in the training process)

    def __post_init__(self) -> None:
        if self.data is None and (self.train is None or self.test is None):
            raise LoopError("the study needs --data, or both --train and --test")
        if not 0 < self.test_fraction < 1:
            raise LoopError(f"--test-fraction must be between 0 and 1, got {self.test_fraction}")
        for name in ("pretrain_iterations", "finetune_iterations"):
            value = getattr(self, name)
            if value < 1 or value % min(value, self.iterations_per_epoch):
                flag = "--" + name.replace("_", "-")
                raise LoopError(
                    f"{flag} must be a positive multiple of --iterations-per-epoch "
                    f"({self.iterations_per_epoch}), got {value}"
                )
        if not self.seeds:
            raise LoopError("the study needs at least one seed")
        unknown = [s for s in (*self.strategies, *self.rounds_strategies) if s not in STRATEGIES]
        if unknown:
            raise LoopError(f"unknown strategy {unknown[0]!r}; choose from {', '.join(sorted(STRATEGIES))}")
        if any(not 0 < f < 1 for f in self.full_curve):
            raise LoopError("--full-curve takes fractions between 0 and 1, e.g. 0.25,0.5")
        extra = [b for b in (self.scaled_finetune, self.rounds and self.rounds_budget) if b]
        for budget in (*self.budgets, *extra):
            try:
                budget_to_k(budget, 100)
            except ValueError as exc:
                raise LoopError(str(exc)) from None

    def fingerprint(self) -> dict[str, Any]:
        """What cached runs depend on; budgets, seeds, strategies, the learning curve, full, device and
        workers may change between calls (each only adds or leaves out runs)."""
        keep = ("pool_size", "test_size", "unannotated_size", "pretrain_iterations", "finetune_iterations",
                "iterations_per_epoch", "pretrain_lr", "finetune_lr", "finetune_with_pseudo",
                "pretrain_minutes", "finetune_minutes", "init", "test_fraction", "split_seed",
                "finetune_warmup", "split_depth")  # fmt: skip
        folders = {k: None if getattr(self, k) is None else str(getattr(self, k).resolve())
                   for k in ("train", "test", "data", "shift")}  # fmt: skip
        return (
            folders
            | {k: getattr(self, k) for k in keep}
            | {"configuration": self.configuration or default_configuration(self.device)}
            | {"full_iterations": self.full_iterations or self.pretrain_iterations + self.finetune_iterations}
        )

    def budget(
        self, iterations: int, lr: float, minutes: float | None = None, warmup: int = 0
    ) -> TrainBudget:
        per_epoch = min(iterations, self.iterations_per_epoch)
        if iterations % per_epoch:  # e.g. from scratch: pretrain + fine-tune iterations
            per_epoch = math.gcd(iterations, per_epoch)
        epochs = iterations // per_epoch if minutes is None else UNBOUNDED_EPOCHS
        return TrainBudget(epochs=epochs, iterations_per_epoch=per_epoch, initial_lr=lr, minutes=minutes,
                           warmup_iterations=warmup)  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One cell of the study: an arm, how many pool images it saw with ground truth, a seed."""

    arm: str
    k: int
    seed: int | None  # None: seed-independent references (pseudo-labels, pseudo model)

    @property
    def key(self) -> str:
        seed = "" if self.seed is None else f"_s{self.seed}"
        return re.sub(r"[^a-z0-9]+", "-", self.arm.lower()).strip("-") + f"_k{self.k}{seed}"


@dataclass(frozen=True)
class Image:
    id: str
    pixels: np.ndarray
    truth: np.ndarray


def _load(samples: Sequence[Sample], what: str) -> list[Image]:
    missing = [s.id for s in samples if s.label is None]
    if missing:
        raise LoopError(f"{what} image {missing[0]} has no label image: the study needs ground truth for all")
    return [
        Image(s.id, read_image(s.image), read_label_image(s.label))  # type: ignore[arg-type]
        for s in tqdm(samples, desc=f"reading {what} images", unit="image")
    ]


def pseudo_label(images: Iterable[Image]) -> list[np.ndarray]:
    """The default (classical) pseudo-labeller's instances: deterministic, so never cached."""
    from activeseg.labellers import build_pseudolabeler

    labeler = build_pseudolabeler("classical")
    return [labeler.segment(im.pixels).labels for im in images]


DATA_FOLDERS = ("train", "test", "data", "shift")


def _same_setting(key: str, theirs: Any, mine: Any) -> bool:
    """Settings match; a data folder by its name, since another machine (or a clone of a
    committed study) keeps the same data under another path."""
    if key in DATA_FOLDERS and theirs is not None and mine is not None:
        return Path(theirs).name == Path(mine).name
    return theirs == mine


class Study:
    """The study in ``out``: plans its runs, runs the missing ones, returns every record."""

    def __init__(self, config: StudyConfig, out: Path, keep_models: bool = False, report: Report = print):
        self.config, self.out, self.keep_models, self.report = config, Path(out), keep_models, report
        self.runs_dir = self.out / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._check_settings()
        if not (self.out / ".gitignore").is_file():
            atomic_write_text(self.out / ".gitignore", PORTABLE_STATE)
        self.ws = Workspace.open(self.out / "nnunet", create=True)
        self._pool: list[Image] | None = None
        self._test: list[Image] | None = None
        self._unannotated: list[Image] | None = None
        self._shifted: list[Image] | None = None
        self._pseudo: dict[str, np.ndarray] | None = None

    def _check_settings(self) -> None:
        path = self.out / "study.json"
        mine = self.config.fingerprint()
        if path.is_file():
            theirs = {**SETTINGS_BEFORE_THEY_EXISTED, **json.loads(path.read_text())}
            if theirs["full_iterations"] is None:  # it meant pretrain + fine-tune iterations
                theirs["full_iterations"] = theirs["pretrain_iterations"] + theirs["finetune_iterations"]
            changed = sorted(k for k in mine if not _same_setting(k, theirs.get(k), mine[k]))
            if changed:
                raise LoopError(f"{self.out} holds a study with other settings ({', '.join(changed)}); "
                                "use another --out or the same settings")  # fmt: skip
        else:
            atomic_write_text(path, json.dumps(mine, indent=1))

    # -- data ---------------------------------------------------------------------------------
    @property
    def pool(self) -> list[Image]:
        if self._pool is None:
            samples = self._split()[0] if self.config.data else read_dataset(self.config.train)
            size = self.config.pool_size
            if size is not None and size < len(samples):
                picked = np.sort(np.random.default_rng(POOL_SEED).choice(len(samples), size, replace=False))
                samples = [samples[i] for i in picked]
            self._pool = _load(samples, "pool")
        return self._pool

    @property
    def test(self) -> list[Image]:
        if self._test is None:
            samples = self._split()[1] if self.config.data else held_out(self.config.test)
            self._test = _load(samples[: self.config.test_size], "test")
        return self._test

    @property
    def unannotated(self) -> list[Image]:
        """(b): the pool images each arm is scored on, less those it annotated."""
        if self._unannotated is None:
            size, pool = self.config.unannotated_size, self.pool
            if size is None or size >= len(pool):
                self._unannotated = list(pool)
            else:
                picked = np.random.default_rng(POOL_SEED + 1).choice(len(pool), size, replace=False)
                self._unannotated = [pool[i] for i in sorted(picked)]
        return self._unannotated

    @property
    def shifted(self) -> list[Image]:
        """(c): images of another distribution (e.g. DSB2018 stage-1 test), none without ``shift``."""
        if self._shifted is None:
            shift = self.config.shift
            self._shifted = [] if shift is None else _load(held_out(shift)[: self.config.test_size], "shift")
        return self._shifted

    def _split(self) -> tuple[list[Sample], list[Sample]]:
        """``data``'s pool and held-out images (study.split)."""
        cfg = self.config
        return split_pool_test(read_dataset(cfg.data), cfg.test_fraction, cfg.split_seed)

    @property
    def pseudo(self) -> dict[str, np.ndarray]:
        """The pool's pseudo-labels (classical: deterministic and fast, so not cached on disk)."""
        if self._pseudo is None:
            labels = pseudo_label(tqdm(self.pool, desc="pseudo-labelling the pool", unit="image"))
            self._pseudo = {im.id: lab for im, lab in zip(self.pool, labels, strict=True)}
        return self._pseudo

    def cases(self, corrected: Sequence[str] | None) -> list[Case]:
        """Training cases: ground truth for the ``corrected`` pool images (None: all of them)."""
        if corrected is None:
            return [Case(im.id, im.pixels, im.truth, "human") for im in self.pool]
        wanted = set(corrected)
        return [Case(im.id, im.pixels, im.truth, "human") for im in self.pool if im.id in wanted]

    def pseudo_cases(self, leave_out: Sequence[str] = ()) -> list[Case]:
        skip = set(leave_out)
        return [Case(im.id, im.pixels, self.pseudo[im.id], "pseudo") for im in self.pool if im.id not in skip]

    def training_cases(self, arm: str, picked: Sequence[str] | None = None) -> list[Case]:
        """What an arm trains on after the pseudo model (``picked``: a selection arm's images)."""
        if arm == PSEUDO_ONLY:
            return self.pseudo_cases()
        if is_selection(arm):
            if picked is None:
                raise ValueError(f"arm {arm!r} needs the picked images")
            if self.config.finetune_with_pseudo and arm not in TEACHER_ARMS:
                return oversample_human(self.cases(picked) + self.pseudo_cases(leave_out=picked))
            return self.cases(picked)
        if arm == FULL_FROM_PSEUDO or arm.startswith(FULL_FROM_SCRATCH):
            return self.cases(None)
        raise ValueError(f"unknown arm {arm!r}")

    # -- plan ---------------------------------------------------------------------------------
    def ks(self) -> list[int]:
        return sorted({budget_to_k(b, len(self.pool)) for b in self.config.budgets})

    @property
    def selection_arms(self) -> tuple[str, ...]:
        """Every candidate strategy, then the two random baselines (each once)."""
        return tuple(dict.fromkeys((*self.config.strategies, *BASELINES)))

    def plan(self) -> list[Run]:
        """Seed by seed, budget by budget: an interrupted study has whole seeds to compare."""
        n, cfg = len(self.pool), self.config
        runs = [Run(PSEUDO_LABELS, 0, None), Run(PSEUDO_MODEL, 0, None)]
        for seed in cfg.seeds:
            runs.append(Run(PSEUDO_ONLY, 0, seed))
            runs += [Run(arm, k, seed) for k in self.ks() for arm in self.selection_arms]
            if cfg.scaled_finetune:  # at the reference k the scaled arm is the plain one
                reference = budget_to_k(cfg.scaled_finetune, n)
                runs += [Run(scaled_arm(arm, cfg.scaled_finetune), k, seed) for k in self.ks()
                         if k != reference for arm in self.selection_arms]  # fmt: skip
            if cfg.teacher_arms:
                runs += [Run(arm, k, seed) for k in self.ks() for arm in TEACHER_ARMS]
            if cfg.rounds:  # in order: each round starts from the one before
                step = budget_to_k(cfg.rounds_budget, n)
                runs += [Run(rounds_arm(arm, cfg.rounds_budget), step * i, seed)
                         for arm in cfg.rounds_strategies for i in range(1, cfg.rounds + 1)]  # fmt: skip
            if cfg.full:
                runs += [Run(FULL_FROM_PSEUDO, n, seed), Run(FULL_FROM_SCRATCH, n, seed)]
                if seed == cfg.seeds[0]:
                    runs += [Run(curve_arm(f), n, seed) for f in sorted(cfg.full_curve)]
        return runs

    def full_budget(self, fraction: float = 1.0) -> TrainBudget:
        """Full supervision from scratch: ``full_iterations`` (or pretrain + fine-tune) at ``fraction``."""
        cfg = self.config
        total = cfg.full_iterations or cfg.pretrain_iterations + cfg.finetune_iterations
        minutes = (cfg.pretrain_minutes or 0) + (cfg.finetune_minutes or 0) or None
        return self._times(total, minutes, fraction, cfg.pretrain_lr)

    def finetune_budget(self, r: Run) -> TrainBudget:
        """An arm's fine-tune: ``finetune_iterations``, in proportion to k for a scaled arm."""
        cfg = self.config
        reference = scaled_reference(r.arm)
        factor = 1.0 if reference is None else r.k / budget_to_k(reference, len(self.pool))
        return self._times(cfg.finetune_iterations, cfg.finetune_minutes, factor, cfg.finetune_lr,
                           cfg.finetune_warmup)  # fmt: skip

    def _times(
        self, iterations: int, minutes: float | None, factor: float, lr: float, warmup: int = 0
    ) -> TrainBudget:
        """A budget of ``factor`` x iterations (or minutes), rounded to whole epochs of at most
        ``iterations_per_epoch`` (a budget below one epoch is one shorter epoch)."""
        cfg = self.config
        if factor != 1:
            target = iterations * factor
            per_epoch = min(cfg.iterations_per_epoch, max(1, round(target)))
            iterations = max(per_epoch, round(target / per_epoch) * per_epoch)
            minutes = None if minutes is None else minutes * factor
        return cfg.budget(iterations, lr, minutes, warmup)

    def records(self) -> list[dict[str, Any]]:
        """Every finished run's record in this folder (also from earlier calls)."""
        return [json.loads(p.read_text()) for p in sorted(self.runs_dir.glob("*.json"))]

    def run(self) -> list[dict[str, Any]]:
        """Every planned run not finished yet; one study per folder at a time, because runs share
        the folder's nnU-Net dataset (a second one would re-export it under the first's trainer)."""
        with held_alone(self.out / ".lock") as alone:
            if not alone:
                raise LoopError(f"another study is running in {self.out}; wait for it, or use another --out")
            return self._run()

    def _run(self) -> list[dict[str, Any]]:
        plan = self.plan()
        todo = [r for r in plan if not (self.runs_dir / f"{r.key}.json").is_file()]
        self.report(
            f"study: {len(plan)} runs, {len(plan) - len(todo)} already done; pool of {len(self.pool)} "
            f"images, {len(self.test)} test images, device {self.config.device}"
        )
        for i, r in enumerate(todo, 1):
            self.report(
                f"[{i}/{len(todo)}] {r.arm}, k={r.k}" + ("" if r.seed is None else f", seed {r.seed}")
            )
            started = time.time()
            record = self._execute(r)
            seconds = round(time.time() - started, 1)
            record.update(arm=r.arm, k=r.k, seed=r.seed, pool=len(self.pool), seconds=seconds,
                          device=self.config.device)  # fmt: skip
            atomic_write_text(self.runs_dir / f"{r.key}.json", json.dumps(record, indent=1))
            self.report(f"    mSA {record['mSA']:.3f}  AP50 {record['AP50']:.3f}  F1 {record['F1']:.3f}")
        return self.records()

    # -- one run ------------------------------------------------------------------------------
    def _execute(self, r: Run) -> dict[str, Any]:
        cfg = self.config
        if r.arm == PSEUDO_LABELS:
            from activeseg.labellers import build_pseudolabeler

            labeler = build_pseudolabeler("classical")
            return self._evaluate(lambda im: labeler.segment(im.pixels).labels)
        self._pretrain()
        if r.arm == PSEUDO_MODEL:
            return self._score_model(PRETRAINED)
        version = r.key
        parent = PRETRAINED
        if is_rounds(r.arm):
            parent, picked = self.next_round(r)
        else:
            picked = self.select(r.arm, r.k, r.seed or 0) if is_selection(r.arm) else None
        cases = self.training_cases(r.arm, picked)
        if r.arm.startswith(FULL_FROM_SCRATCH):
            fraction = next((f for f in cfg.full_curve if r.arm == curve_arm(f)), 1.0)
            budget, parent = self.full_budget(fraction), None
        elif r.arm == NO_TEACHER:
            budget, parent = self.full_budget(), None
        else:
            budget = self.finetune_budget(r)
        self._train(version, cases, budget, parent, r.seed or 0)
        # the unannotated pool leaves out every image whose ground truth the arm trained on
        record = self._score_model(version, [c.id for c in cases if c.source == "human"])
        info = next(m for m in list_models(self.ws) if m.version == version)
        if is_rounds(r.arm):  # kept for the next round; the one before is no longer needed
            if parent != PRETRAINED and not self.keep_models:
                shutil.rmtree(self.ws.models / parent)
        elif not self.keep_models:
            shutil.rmtree(self.ws.models / version)
        cost = self.correction_cost(picked) if picked is not None else {}
        return dict(record, picked=picked, iterations=info.iterations_run,
                    training_minutes=round(info.training_seconds / 60, 2), **cost)  # fmt: skip

    def _train(
        self, version: str, cases: list[Case], budget: TrainBudget, parent: str | None, seed: int,
        start: StartingPoint | None = None,
    ) -> None:  # fmt: skip
        if any(m.version == version for m in list_models(self.ws)):
            return  # trained before a crash that came before scoring
        import torch

        export_dataset(self.ws, cases)
        if (self.ws.preprocessed_dir / "nnUNetPlans.json").is_file():
            preprocess(self.ws)
        else:
            plan_and_preprocess(self.ws)
        torch.manual_seed(seed)
        sources = {
            "human": sum(c.source == "human" for c in cases),
            "pseudo": sum(c.source == "pseudo" for c in cases),
        }
        train(self.ws, version, budget, sources, parent=parent, device=self.config.device,
              workers=self.config.workers, configuration=self.config.configuration, start=start)  # fmt: skip

    def _pretrain(self) -> None:
        """The shared pseudo model; nnU-Net plans itself on the pseudo-labels, as in the loop."""
        cfg = self.config
        budget = cfg.budget(cfg.pretrain_iterations, cfg.pretrain_lr, cfg.pretrain_minutes)
        self._train(PRETRAINED, self.pseudo_cases(), budget, None, POOL_SEED, starting.resolve(cfg.init))

    def _predictor(self, version: str) -> Any:
        from activeseg.nnunet.engine import Predictor

        return Predictor(self.ws, version, device=self.config.device, split_depth=self.config.split_depth)

    def _score_model(self, version: str, picked: Sequence[str] = ()) -> dict[str, Any]:
        predictor = self._predictor(version)
        return self._evaluate(lambda im: predictor.predict(model_channels(im.pixels)).labels, picked)

    def _evaluate(self, predict: Callable[[Image], np.ndarray], picked: Sequence[str] = ()) -> dict[str, Any]:
        """(a) held-out metrics at the top level; (b) ``unannotated``, the sampled pool images not in
        ``picked``; (c) ``shift``, when the study has a shifted set."""
        record: dict[str, Any] = self._score(self.test, predict, "testing")
        skip = set(picked)
        for name, images in (
            ("unannotated", [im for im in self.unannotated if im.id not in skip]),
            ("shift", self.shifted),
        ):
            if images:
                record[name] = self._score(images, predict, f"scoring {name}")
        return record

    @staticmethod
    def _score(images: Sequence[Image], predict: Callable[[Image], np.ndarray], what: str) -> dict[str, Any]:
        preds = [predict(im) for im in tqdm(images, desc=what, unit="image")]
        return dict(score_dataset(zip([im.truth for im in images], preds, strict=True)).as_row())

    def correction_cost(self, picked: Sequence[str]) -> dict[str, int]:
        """What correcting ``picked`` costs an annotator: the cells in them (``cells``), and the
        pre-annotated cells that had to change (``cells_changed``): true cells no pseudo-label
        cell matches at IoU 0.5 (redrawn) plus pseudo-label cells matching none (deleted)."""
        wanted = set(picked)
        cells = changed = 0
        for im in self.pool:
            if im.id in wanted:
                scores = score_image(im.truth, self.pseudo[im.id])
                cells, changed = cells + scores.n_true, changed + scores.fn + scores.fp
        return {"cells": cells, "cells_changed": changed}

    # -- selection ----------------------------------------------------------------------------
    def pool_scores(self) -> dict[str, np.ndarray]:
        """What the pseudo model says about each pool image (cached: one prediction per image, and
        four more, flipped, once a strategy needs the flip spread)."""
        path = self.out / "pool_scores.npz"
        scores: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as data:
                if "disagreement" in data.files:  # folders from before it was scored: score again
                    scores = {k: data[k] for k in data.files}
        flips = any(s in NEEDS_FLIPS for s in self.config.strategies)
        if scores and (not flips or "flip_spread" in scores):
            return scores
        self._pretrain()
        fresh = {
            "ids": np.array([im.id for im in self.pool]),
            **self._model_scores(PRETRAINED, self.pool, flips),
        }
        scores = {**fresh, **scores}  # what was cached stays, so earlier runs' picks stay the same
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **scores)
        tmp.replace(path)
        return scores

    def next_round(self, r: Run) -> tuple[str, list[str]]:
        """A multi-round run's parent (the previous round's model, or the pseudo model in round 1)
        and every image corrected so far: the previous rounds' and ``step`` new ones, ranked by
        the strategy on the parent's scores of the images not corrected yet."""
        step = budget_to_k(self.config.rounds_budget, len(self.pool))
        if r.k == step:
            return PRETRAINED, self.select(r.arm, step, r.seed or 0)
        before = Run(r.arm, r.k - step, r.seed)
        path = self.runs_dir / f"{before.key}.json"
        if not path.is_file() or not (self.ws.models / before.key / "model.json").is_file():
            arm_runs = f"{self.runs_dir}/{before.key.rsplit('_k', 1)[0]}_k*_s{r.seed}.json"
            raise LoopError(f"{r.arm}, seed {r.seed}: round {r.k // step} needs round {r.k // step - 1}'s "
                            f"model; delete {arm_runs} to run that arm's rounds again")  # fmt: skip
        done = list(json.loads(path.read_text())["picked"])
        scores = self._model_scores(before.key, self.pool)  # one pass: the rest, and the corrected centres
        corrected = np.isin([im.id for im in self.pool], done)
        rest = np.flatnonzero(~corrected)
        candidates = Candidates(
            task_ids=rest.astype(np.int64), uncertainty=scores["uncertainty"][rest],
            features=scores["features"][rest], instances=scores["instances"][rest],
            labelled_features=scores["features"][corrected], disagreement=scores["disagreement"][rest],
        )  # fmt: skip
        order = rank(candidates, step, strategy=base_arm(r.arm), seed=r.seed or 0).order[:step]
        return before.key, done + [self.pool[rest[i]].id for i in order]

    def _model_scores(
        self, version: str, images: Sequence[Image], flips: bool = False
    ) -> dict[str, np.ndarray]:
        """What a model says about ``images``: foreground entropy, bottleneck features, cell count,
        disagreement with the pseudo-labels (as the loop's scoring stores them) and, with ``flips``,
        the spread of four flipped predictions."""
        predictor = self._predictor(version)
        rows = []
        desc = f"scoring the pool with {version}" + (" and flips" if flips else "")
        for im in tqdm(images, desc=desc, unit="image"):
            channels = model_channels(im.pixels)
            pred = predictor.predict(channels)
            rows.append({
                "uncertainty": foreground_mean(pred.entropy, pred.classes),
                "instances": int(pred.labels.max()),
                "features": pred.features,
                "disagreement": disagreement(self.pseudo[im.id], pred.labels),
                **({"flip_spread": foreground_mean(predictor.flip_spread(channels, pred.probabilities),
                                                   pred.classes)} if flips else {}),
            })  # fmt: skip
        dtypes = {"uncertainty": np.float64, "instances": np.int64, "disagreement": np.float64}
        scores = {name: np.array([r[name] for r in rows], dtype=dtype) for name, dtype in dtypes.items()}
        if flips:
            scores["flip_spread"] = np.array([r["flip_spread"] for r in rows], dtype=np.float64)
        scores["features"] = np.stack([r["features"] for r in rows]).astype(np.float32)
        return scores

    def select(self, arm: str, k: int, seed: int) -> list[str]:
        """The k pool images an arm sends for correction."""
        if arm == NO_TEACHER:
            return self.select_without_model(k, seed)
        scores = self.pool_scores()
        features = scores["features"]
        candidates = Candidates(
            task_ids=np.arange(len(features), dtype=np.int64), uncertainty=scores["uncertainty"],
            features=features, instances=scores["instances"],
            labelled_features=np.zeros((0, features.shape[1]), np.float32),
            disagreement=scores["disagreement"], flip_spread=scores.get("flip_spread"),
        )  # fmt: skip
        order = rank(candidates, k, strategy=base_arm(arm), seed=seed).order[:k]
        return [str(scores["ids"][i]) for i in order]

    def pool_embeddings(self) -> np.ndarray:
        """Each pool image's SAM embedding (orchestrator.rank.scoring.ImageEmbedder), cached."""
        path = self.out / "pool_embeddings.npz"
        ids = np.array([im.id for im in self.pool])
        if path.is_file():
            with np.load(path) as data:
                if np.array_equal(data["ids"], ids):
                    return data["features"]
        from orchestrator.rank.scoring import ImageEmbedder

        embed = ImageEmbedder()
        images = tqdm(self.pool, desc="embedding the pool", unit="image")
        features = np.stack([embed(im.pixels) for im in images])
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, ids=ids, features=features)
        tmp.replace(path)
        return features

    def select_without_model(self, k: int, seed: int) -> list[str]:
        """A cold start's k images: NO_TEACHER_STRATEGY on the pool's embeddings alone."""
        features = self.pool_embeddings()
        n = len(features)
        candidates = Candidates(
            task_ids=np.arange(n, dtype=np.int64), uncertainty=np.zeros(n), features=features,
            instances=np.zeros(n, dtype=np.int64),
            labelled_features=np.zeros((0, features.shape[1]), np.float32),
        )  # fmt: skip
        order = rank(candidates, k, strategy=NO_TEACHER_STRATEGY, seed=seed).order[:k]
        return [self.pool[i].id for i in order]


def config_dict(config: StudyConfig) -> dict[str, Any]:
    """The settings as plain JSON values, for the report."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
