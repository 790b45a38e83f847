"""Put a folder of microscopy images into a Label Studio project.

Each image becomes one task: ``data.image`` is an 8-bit display PNG (browsers show no TIFF and
16-bit images look black), ``data.raw`` is a copy of the original for the models. Both are
served by Label Studio's local-files storage from under its document root. Re-running adds only
images that have no task yet; existing tasks and their annotations are never touched.
"""

from __future__ import annotations

import base64
import random
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tqdm import tqdm

from activeseg.datasets import Sample
from activeseg.fsutil import atomic_path
from activeseg.imageio import read_image, write_display_png
from activeseg.labelconfig import RegionConfig
from activeseg.labellers.modality import collection_kind
from activeseg.lsclient import SECRET_HEADER, LabelStudioClient


@dataclass(frozen=True)
class StagedImage:
    """An image copied under the document root, with its display PNG beside it."""

    id: str
    raw: Path
    display: Path
    height: int
    width: int


def describe_images(samples: Sequence[Sample], labeller: str, sample_size: int = 20, seed: int = 0) -> str:
    """A line for ``activeseg init``: what the images look like (modality, object size) and which
    pseudo-labeller will segment them, read from a seeded sample."""
    picked = random.Random(seed).sample(list(samples), min(sample_size, len(samples)))
    reading = tqdm(picked, desc="reading images", unit="img", leave=False)
    kind = collection_kind(read_image(s.image) for s in reading)
    if kind is None:
        return f"no images to read; pseudo-labeller {labeller}"
    how = " (it reads each image's modality for itself)" if labeller == "classical" else ""
    return f"{len(picked)} sampled images look like {kind.describe()}; pseudo-labeller {labeller}{how}"


def local_files_url(path: Path, files_root: Path) -> str:
    """The ``/data/local-files/?d=`` URL Label Studio serves ``path`` under ``files_root`` at."""
    rel = path.resolve().relative_to(files_root.resolve())
    return "/data/local-files/?d=" + quote(rel.as_posix(), safe="/")


def stage_images(samples: Sequence[Sample], project_dir: Path) -> list[StagedImage]:
    """Copy originals to ``project_dir/raw`` and write display PNGs to ``project_dir/display``.

    Every file is read first, so a corrupt image stops the run with its name before Label Studio
    sees anything. Files already staged are kept as they are.
    """
    staged = []
    for sample in tqdm(samples, desc="display PNGs", unit="img"):
        image = read_image(sample.image)
        raw = project_dir / "raw" / f"{sample.id}{sample.image.suffix.lower()}"
        display = project_dir / "display" / f"{sample.id}.png"
        if not raw.exists():
            with atomic_path(raw) as tmp:
                shutil.copyfile(sample.image, tmp)
        if not display.exists():
            write_display_png(image, display)
        staged.append(StagedImage(sample.id, raw, display, image.shape[0], image.shape[1]))
    return staged


@dataclass(frozen=True)
class ImportReport:
    """Task id of every staged image, and which images got a new task in this run."""

    task_ids: dict[str, int]
    new: list[str]


def import_images(
    client: LabelStudioClient,
    project_id: int,
    config: RegionConfig,
    staged: Sequence[StagedImage],
    files_root: Path,
) -> ImportReport:
    """Create one task per staged image that has none yet (matched on ``data.raw``)."""
    known = {t["data"].get("raw"): int(t["id"]) for t in client.tasks(project_id)}
    new = [s for s in staged if local_files_url(s.raw, files_root) not in known]
    tasks = [
        {
            "data": {
                config.image_key: local_files_url(s.display, files_root),
                "raw": local_files_url(s.raw, files_root),
                "name": s.id,
            }
        }
        for s in new
    ]
    # Label Studio creates the tasks in request order and returns their ids in that order.
    for s, task_id in zip(new, client.import_tasks(project_id, tasks), strict=True):
        known[local_files_url(s.raw, files_root)] = task_id
    return ImportReport(
        task_ids={s.id: known[local_files_url(s.raw, files_root)] for s in staged},
        new=[s.id for s in new],
    )


def slug(text: str) -> str:
    """A folder name for a project title."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "project"


@dataclass(frozen=True)
class InitResult:
    project_id: int
    created: bool
    n_tasks: int
    n_new: int
    ml_backend_id: int | None
    webhook_id: int | None


def init_project(
    client: LabelStudioClient,
    samples: Sequence[Sample],
    title: str,
    files_root: Path,
    label_config: RegionConfig,
    backend_url: str | None = None,
    backend_auth: tuple[str, str] | None = None,
    webhook_secret: str | None = None,
) -> InitResult:
    """Create (or reuse) the project, import new images, connect the ML backend and its webhook.

    The backend is connected for on-demand "Retrieve Predictions" and training triggers; the
    queue order is set later by ``rank`` (Label Studio points the project's model version at a
    newly connected backend's title, and ``rank`` points it back at the round).
    """
    project_dir = files_root.resolve() / slug(title)
    staged = stage_images(samples, project_dir)  # every file read before Label Studio sees any
    project_id, created = client.get_or_create_project(title, label_config)
    client.ensure_local_storage(project_id, str(project_dir))
    report = import_images(client, project_id, label_config, staged, files_root)
    ml_id = hook_id = None
    if backend_url:
        backend_url = backend_url.rstrip("/")
        ml_id = client.connect_ml_backend(project_id, backend_url, "activeseg", backend_auth)
        headers = {SECRET_HEADER: webhook_secret} if webhook_secret else {}
        if backend_auth is not None:  # Label Studio sends a webhook's stored headers and nothing else
            token = base64.b64encode(":".join(backend_auth).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        hook_id = client.ensure_webhook(project_id, f"{backend_url}/webhook", headers)
    return InitResult(project_id, created, len(report.task_ids), len(report.new), ml_id, hook_id)
