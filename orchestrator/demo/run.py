"""``activeseg demo``: the whole loop on real data, with a simulated annotator, no GPU, no network.

A local Label Studio and the ML backend start; a project is made from the images (a seeded part
is held out as test images); pseudo-labels, nnU-Net pretraining and ranking run; then a simulated
annotator account takes tasks from Label Studio's labelling queue (the ``next`` endpoint, as the
web UI does) and submits the ground-truth masks of the core-set, which is what a careful person
would submit. Label Studio's webhook makes the backend fine-tune; the demo waits for it, ranks the
next round (the fine-tuned model's masks become the pre-annotations) and prints mSA on the
held-out images for the pseudo-labels, the pretrained and the fine-tuned model.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from activeseg.datasets import BUNDLED_SAMPLE, DatasetError, Sample, read_dataset
from activeseg.fsutil import atomic_write_text
from activeseg.imagefetch import ImageSource
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.labelconfig import DEFAULT_LABEL_CONFIG, RegionConfig, load_label_config
from activeseg.labellers.tasks import LabellerConfig, TaskLabeller
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LabelStudioServer, LabelStudioServerError, free_port, port_in_use
from activeseg.metrics import score_dataset
from activeseg.projectstate import finetune_version
from orchestrator.context import LoopError, ProjectContext
from orchestrator.curve import CurvePoint, plot_learning_curve
from orchestrator.demo.annotator import SessionAnnotator
from orchestrator.jobrun import run_here
from orchestrator.prelabel.project_setup import init_project, slug, stage_images
from orchestrator.prelabel.pseudolabels import prelabel_project
from orchestrator.rank.strategies import DEFAULT_STRATEGY

DEFAULT_WORKSPACE = Path(".activeseg")
ANNOTATOR_EMAIL = "annotator@activeseg.local"


def server_for(workspace: Path, port: int | None = None) -> LabelStudioServer:
    """The workspace's Label Studio: data in ``<workspace>/labelstudio``, images in ``files``."""
    return LabelStudioServer(workspace / "labelstudio", files_root=workspace / "files", port=port)


@dataclass(frozen=True)
class DemoSettings:
    images: Path = BUNDLED_SAMPLE
    test_images: Path | None = None  # None: hold out ``test_fraction`` of ``images``
    test_fraction: float = 0.25
    title: str = "activeseg demo"
    label_config: Path = DEFAULT_LABEL_CONFIG
    port: int = 8080
    budget: str = "10%"
    strategy: str = DEFAULT_STRATEGY
    # training budgets in minutes (None: epochs x iterations), sized so the whole demo takes about
    # 10 minutes on 2 CPU cores; with minutes the epochs no longer limit training
    minutes: float | None = 4.0
    finetune_minutes: float | None = 2.0
    epochs: int = 8
    iterations: int = 25
    finetune_epochs: int = 4
    finetune_iterations: int = 25
    finetune_lr: float | None = None  # Settings.finetune_lr
    finetune_pseudo: str = "teacher"  # Settings.finetune_pseudo
    init: str = "auto"  # nnunet-r0's starting weights (activeseg.nnunet.starting)
    start_minutes: float = 0.0  # pseudo-label pretraining from a starting point (0: r0 is it)
    seed: int = 0
    keep: bool = False


@dataclass
class DemoResult:
    url: str
    project_id: int
    n_tasks: int
    n_test: int
    username: str
    password: str
    annotator: tuple[str, str]
    coreset: list[int]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # arm -> mSA, AP50, F1
    curve: Path | None = None
    serving: str = ""  # which masks annotators get next round, and why (the serving gate)


def split(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(tasks, held-out test images), a seeded and repeatable pick."""
    order = list(samples)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(order) * fraction))
    test = sorted(order[:n_test], key=lambda s: s.id)
    return [s for s in samples if s not in test], test


def _labelled(folder: Path) -> list[Sample]:
    samples = read_dataset(folder)
    missing = [s.id for s in samples if s.label is None]
    if missing:
        raise DatasetError(
            f"{folder}: the demo's simulated annotator needs labels/ for every image; "
            f"{len(missing)} have none (e.g. {missing[0]})"
        )
    return samples


class BackendProcess:
    """``activeseg serve`` as a child process (so its job worker runs as in production)."""

    def __init__(self, workspace: Path, env: dict[str, str]) -> None:
        self.pid_file = workspace / "backend.pid"
        self.log = workspace / "backend.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env

    def start(self, timeout: float = 120.0) -> None:
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(self.port)],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atomic_write_text(self.pid_file, str(proc.pid))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise LabelStudioServerError(f"the ML backend exited at start; see {self.log}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise LabelStudioServerError(f"the ML backend did not answer within {timeout:.0f} s; see {self.log}")


def stop_backend(workspace: Path) -> bool:
    """Stop a backend the demo left running (``--keep``); True if there was one."""
    pid_file = workspace / "backend.pid"
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def _annotator(client: LabelStudioClient, workspace: Path) -> tuple[SessionAnnotator, str]:
    """The demo's annotator account: signed up once (through the invite link), then logged in."""
    login = workspace / "annotator-login.json"
    if login.is_file():
        password = json.loads(login.read_text())["password"]
        return SessionAnnotator(client.url, ANNOTATOR_EMAIL, password), password
    password = secrets.token_urlsafe(12)
    annotator = SessionAnnotator.sign_up(client, ANNOTATOR_EMAIL, password)
    atomic_write_text(login, json.dumps({"email": ANNOTATOR_EMAIL, "password": password}))
    login.chmod(0o600)
    return annotator, password


def _simulate_annotator(
    annotator: SessionAnnotator,
    project_id: int,
    coreset: Sequence[int],
    truth: dict[str, Path],
    config: RegionConfig,
) -> list[int]:
    """Take tasks from the labelling queue and submit ground truth until the core-set is done."""
    served = []
    for _ in range(len(coreset)):
        task = annotator.next_task(project_id)
        if task is None:
            break
        served.append(int(task["id"]))
        labels = read_label_image(truth[task["data"]["name"]]).astype(np.uint32)
        annotator.submit(int(task["id"]), config.to_results(labels))
        print(f"  annotator: task {task['id']} ({len(served)}/{len(coreset)}) submitted")
    return served


def _wait_for_finetune(ctx: ProjectContext, version: str, timeout: float = 4 * 3600) -> None:
    from activeseg.jobs import FAILED, JobStore, jobs_dir

    store = JobStore(jobs_dir(ctx.model_dir))
    deadline, last = time.time() + timeout, ""
    while time.time() < deadline:
        jobs = store.list(ctx.project_id)
        # the job records the fine-tuned round before it ends: the demo's next step (rank) needs
        # the project's job slot, so it waits for the job to end too
        if any(r.finetuned == version for r in ctx.state().rounds) and not any(j.active for j in jobs):
            return
        failed = [j for j in jobs if j.status == FAILED and j.kind == "coreset-check"]
        if failed:
            raise LoopError(f"fine-tuning failed: {failed[-1].error}")
        running = [j for j in jobs if j.active]
        now = (
            f"{running[-1].kind} {running[-1].status} {running[-1].stage}"
            if running
            else "waiting for the webhook"
        )
        if now != last:
            print(f"  backend: {now}")
            last = now
        time.sleep(2)
    raise LoopError(f"no fine-tuned model after {timeout:.0f} s")


def _evaluate(
    ctx: ProjectContext, test: Sequence[Sample], versions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """mSA / AP50 / F1 on the held-out images: pseudo-labels and each nnU-Net version."""
    from activeseg.labellers import build_pseudolabeler
    from activeseg.nnunet.engine import Predictor

    images = [read_image(s.image) for s in test]
    truths = [read_label_image(s.label) for s in test if s.label is not None]
    arms = {
        "pseudo-labels (classical)": [build_pseudolabeler("classical").segment(im).labels for im in images]
    }
    for version in versions:
        predictor = Predictor(ctx.dir.workspace, version)
        arms[version] = [predictor.predict(model_channels(im)).labels for im in images]
    out = {}
    for arm, preds in arms.items():
        scores = score_dataset(zip(truths, preds, strict=True))
        out[arm] = {"mSA": scores.msa, "AP50": scores.ap[0.5], "F1": scores.f1}
    return out


def run_demo(settings: DemoSettings = DemoSettings(), workspace: Path = DEFAULT_WORKSPACE) -> DemoResult:
    """The loop, end to end; see the module docstring."""
    config = load_label_config(settings.label_config)
    samples = _labelled(settings.images)
    if settings.test_images is not None:
        tasks, test = samples, _labelled(settings.test_images)
    else:
        tasks, test = split(samples, settings.test_fraction, settings.seed)
    workspace = workspace.resolve()
    server = server_for(workspace, settings.port)
    # Read every image before starting anything: a bad file fails fast, by name.
    for sample in test:
        read_image(sample.image)
    stage_images(tasks, server.files_root / slug(settings.title))
    url = server.running_url()
    if url is None:
        if port_in_use(server.port):
            raise LabelStudioServerError(
                f"port {server.port} on 127.0.0.1 is taken by another program; choose one with --port"
            )
        print(f"starting Label Studio on {server.url} (the first start migrates a database) ...")
        server.start(progress=True)
        url = server.url
        print(f"Label Studio is up after {server.startup_seconds:.0f} s")
    else:
        print(f"Label Studio is already running at {url}")
    model_dir = workspace / "model_dir"
    secret = secrets.token_urlsafe(16)
    env = {
        "LABEL_STUDIO_URL": url,
        "LABEL_STUDIO_API_KEY": server.login.token,
        "MODEL_DIR": str(model_dir),
        "LOCAL_FILES_DOCUMENT_ROOT": str(server.files_root),
        "ACTIVESEG_WEBHOOK_SECRET": secret,
    }
    stop_backend(workspace)  # one left running by an earlier --keep
    backend = BackendProcess(workspace, env)
    backend.start()
    print(f"ML backend is up at {backend.url} (log: {backend.log})")
    client = LabelStudioClient(url, server.login.token)
    try:
        init = init_project(
            client, tasks, settings.title, server.files_root, config, backend.url, webhook_secret=secret
        )
        pid = init.project_id
        print(
            f"project {pid} '{settings.title}': {init.n_tasks} tasks ({init.n_new} new), "
            f"{len(test)} images held out for testing"
        )
        images = ImageSource(url, server.login.token, server.files_root)
        service = TaskLabeller(LabellerConfig(), images, model_dir / "cache")
        pre = prelabel_project(pid, client=client, service=service)
        print(f"pseudo-labels: {pre.predicted} new, {pre.skipped} already there")
        ctx = ProjectContext(client, pid, model_dir, server.files_root)
        with ctx.dir.update() as state:
            s = state.settings
            s.epochs, s.iterations_per_epoch = settings.epochs, settings.iterations
            s.finetune_epochs, s.finetune_iterations_per_epoch = (
                settings.finetune_epochs,
                settings.finetune_iterations,
            )
            s.minutes, s.finetune_minutes = settings.minutes, settings.finetune_minutes
            s.init, s.start_minutes = settings.init, settings.start_minutes
            s.finetune_lr, s.finetune_pseudo = settings.finetune_lr, settings.finetune_pseudo
        os.environ.update(env)  # the job's own Label Studio client
        print("pretraining nnU-Net on the pseudo-labels ...")
        run_here(ctx, "pretrain")
        ranked = run_here(
            ctx, "rank", {"budget": settings.budget, "strategy": settings.strategy, "seed": settings.seed}
        )
        coreset = list(ranked["coreset"])
        print(f"round {ranked['round']}: core-set {coreset} of {ranked['tasks']} tasks ({settings.strategy})")
        annotator, annotator_password = _annotator(client, workspace)
        truth = {s.id: s.label for s in tasks if s.label is not None}
        served = _simulate_annotator(annotator, pid, coreset, truth, config)
        if served != coreset:
            print(f"  note: the queue served {served}, the ranking asked for {coreset}")
        version = finetune_version(int(ranked["round"]))
        print("waiting for the webhook-triggered fine-tuning ...")
        _wait_for_finetune(ctx, version)
        state = ctx.state()
        serving = state.rounds[-1].decision
        print(f"serving gate, round {ranked['round']}: {serving}")
        nxt = run_here(ctx, "rank")
        shown = state.served or state.pseudo_version
        print(f"round {nxt['round']}: {nxt['tasks']} tasks now pre-annotated by {shown}")
        scores = _evaluate(ctx, test, ["nnunet-r0", version])
        curve = plot_learning_curve(
            [
                CurvePoint(0, scores["nnunet-r0"]["mSA"], "nnunet-r0"),
                CurvePoint(len(coreset), scores[version]["mSA"], version),
            ],
            workspace / "learning_curve.png",
            metric="mSA on held-out images",
            reference=scores["pseudo-labels (classical)"]["mSA"],
            reference_label="pseudo-labels",
        )
    finally:
        if not settings.keep:
            stop_backend(workspace)
            server.stop()
    return DemoResult(
        url=url,
        project_id=pid,
        n_tasks=init.n_tasks,
        n_test=len(test),
        username=server.login.username,
        password=server.login.password,
        annotator=(ANNOTATOR_EMAIL, annotator_password),
        coreset=coreset,
        scores=scores,
        curve=curve,
        serving=serving,
    )


def format_scores(result: DemoResult) -> str:
    lines = [f"held-out test images: {result.n_test}", "", "| model | mSA | AP50 | F1 |", "|---|---|---|---|"]
    for arm, s in result.scores.items():
        lines.append(f"| {arm} | {s['mSA']:.3f} | {s['AP50']:.3f} | {s['F1']:.3f} |")
    if result.serving:
        lines += ["", f"next round, annotators get: {result.serving}"]
    return "\n".join(lines)
