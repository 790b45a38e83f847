"""What the orchestrator remembers about one Label Studio project, beside its models.

    <MODEL_DIR>/projects/<project id>/state.json   rounds, model versions, settings
    <MODEL_DIR>/projects/<project id>/nnunet/      the nnU-Net workspace (activeseg.nnunet)
    <MODEL_DIR>/projects/<project id>/scores/<v>/  per-task scores and masks of model <v>
    <MODEL_DIR>/projects/<project id>/learning_curve.png

Label Studio stays the source of truth for tasks and annotations; this file only records our
own decisions (which tasks a round chose, which model was trained on what). The ML backend
reads it to know which model to serve. Writes are atomic and serialised by a file lock.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from activeseg.fsutil import atomic_write_text, locked
from activeseg.nnunet.workspace import Workspace

PRETRAIN_VERSION = "nnunet-r0"


def finetune_version(round_number: int) -> str:
    return f"nnunet-r{round_number}"


def round_version(round_number: int) -> str:
    """The Label Studio ``model_version`` of a round's ordering predictions."""
    return f"round-{round_number}"


@dataclass
class Round:
    number: int
    ranked_with: str  # model version whose scores ranked it ("cold-<pseudo version>" before nnU-Net)
    strategy: str
    k: int
    coreset: list[int]  # task ids, in rank order
    order: list[int]  # every ranked task id, core-set first
    clusters: dict[str, int] = field(default_factory=dict)  # task id -> diversity cluster
    budget: str = ""
    seed: int = 0
    created_at: float = field(default_factory=time.time)
    #: model trained on this round's corrections (set once: a second trigger never trains again)
    finetuned: str | None = None
    #: mSA of the pre-annotations shown for the core-set against what the annotators submitted
    coreset_msa: float | None = None
    n_annotated: int | None = None  # human-annotated tasks when the round was fine-tuned
    #: source (pseudo-label or model version) -> mSA/AP50/F1/n against this round's corrections,
    #: scored before they were used for fine-tuning (orchestrator.train.serving)
    comparison: dict[str, dict[str, float]] = field(default_factory=dict)
    decision: str = ""  # what the serving gate chose after this round, and why

    @property
    def version(self) -> str:
        return round_version(self.number)


#: what a fine-tune makes of the unannotated tasks' pseudo-labels (Settings.finetune_pseudo)
PSEUDO_CHOICES = ("teacher", "agreed")


@dataclass
class Settings:
    """The admin's choices, kept so that webhook-triggered jobs use them too."""

    epochs: int = 4
    iterations_per_epoch: int = 25
    finetune_epochs: int = 2
    finetune_iterations_per_epoch: int = 25
    #: None: by where the project's first model came from (orchestrator.train.training.finetune_lr)
    finetune_lr: float | None = None
    finetune_warmup: int = 0  # iterations of linear learning-rate warm-up (TrainBudget)
    #: the unannotated tasks' labels in a fine-tune: "teacher" (the pseudo-labels as they are) or
    #: "agreed" (their pixels where the parent model disagrees are ignored; training_data.py)
    finetune_pseudo: str = "teacher"
    #: training time budgets (None: epochs x iterations alone); on 2 CPU cores 10 minutes of
    #: 2d_lite on pseudo-labels already beat them (benchmarks/README.md)
    minutes: float | None = 20.0
    finetune_minutes: float | None = 5.0
    configuration: str | None = None  # nnU-Net configuration; None: the device's default
    #: the first model's starting weights: "auto" (the shipped starting point, if it fits), "none"
    #: (random) or a file (activeseg.nnunet.starting)
    init: str = "auto"
    #: pretraining minutes on the pseudo-labels when nnunet-r0 starts from a starting point; 0:
    #: none, r0 is the starting point (docs/training.md: each run measured lowered it)
    start_minutes: float = 0.0
    device: str = "cpu"
    strategy: str = "random"  # strategies.DEFAULT_STRATEGY (tests/test_strategies.py checks)
    budget: str = "5%"
    seed: int = 0
    with_pseudo: bool = True  # fine-tune on the other tasks' pseudo-labels too (docs/results.md)
    #: the pseudo-labels' mSA on a round's corrections below which fine-tuning sets them aside;
    #: None: orchestrator.train.teacher.POOR_TEACHER_MSA, 0: never
    poor_teacher_msa: float | None = None
    eval_labels: str | None = None  # folder of ground-truth label images, by image name


@dataclass
class ProjectState:
    project_id: int
    pseudo_version: str | None = None
    #: the pseudo-labeller this project chose (None: the backend's ACTIVESEG_PSEUDOLABELER)
    pseudolabeler: str | None = None
    #: labeller name -> mSA/AP50/F1/n/images_per_min/version against the project's corrections
    #: (orchestrator.prelabel.labeller_fit), from the last comparison
    labeller_fit: dict[str, dict[str, Any]] = field(default_factory=dict)
    pretrained: str | None = None
    #: the model whose masks the ML backend serves (None: the pseudo-labels); only a model that
    #: beat the served source on corrections it had not trained on (orchestrator.train.serving)
    served: str | None = None
    #: why the pseudo-labels no longer take part in fine-tuning ("" while they do): set once a
    #: round's corrections showed them poor (orchestrator.train.teacher)
    teacher_set_aside: str = ""
    rounds: list[Round] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    #: model version -> metrics on the admin's evaluation labels
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def latest(self) -> str | None:
        """The newest nnU-Net model: it ranks the next round and is fine-tuned from, served or not."""
        finetuned = [r.finetuned for r in self.rounds if r.finetuned]
        return finetuned[-1] if finetuned else self.pretrained

    @property
    def current_round(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProjectState:
        data = dict(data)
        data["rounds"] = [Round(**r) for r in data.get("rounds", [])]
        data["settings"] = Settings(**data.get("settings", {}))
        return cls(**data)


class ProjectDir:
    """The folder of one project under MODEL_DIR, and its state file."""

    def __init__(self, model_dir: Path, project_id: int) -> None:
        self.project_id = int(project_id)
        self.root = Path(model_dir).resolve() / "projects" / str(self.project_id)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def workspace(self) -> Workspace:
        return Workspace.open(self.root / "nnunet", create=True)

    def scores_dir(self, version: str) -> Path:
        return self.root / "scores" / version

    @property
    def curve_png(self) -> Path:
        return self.root / "learning_curve.png"

    def exists(self) -> bool:
        return self.state_file.is_file()

    def load(self) -> ProjectState:
        if not self.state_file.is_file():
            return ProjectState(self.project_id)
        return ProjectState.from_json(json.loads(self.state_file.read_text()))

    @contextlib.contextmanager
    def update(self) -> Iterator[ProjectState]:
        """Read, change and atomically write the state under an exclusive lock."""
        with locked(self.root / ".lock"):
            state = self.load()
            yield state
            atomic_write_text(self.state_file, json.dumps(asdict(state), indent=1))
