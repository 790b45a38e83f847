"""The smoke demo: a local Label Studio with a project of real nuclei images, ready to open.

Later issues extend it into the whole loop (pseudo-labels, nnU-Net, ranking, fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from activeseg.datasets import BUNDLED_SAMPLE, read_dataset
from activeseg.labelconfig import DEFAULT_LABEL_CONFIG, load_label_config
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LabelStudioServer, LabelStudioServerError, port_in_use
from orchestrator.project_setup import init_project, slug, stage_images

DEFAULT_WORKSPACE = Path(".activeseg")


def server_for(workspace: Path, port: int | None = None) -> LabelStudioServer:
    """The workspace's Label Studio: data in ``<workspace>/labelstudio``, images in ``files``."""
    return LabelStudioServer(workspace / "labelstudio", files_root=workspace / "files", port=port)


@dataclass(frozen=True)
class DemoResult:
    url: str
    project_id: int
    n_tasks: int
    n_new: int
    username: str
    password: str


def run_demo(
    images: Path = BUNDLED_SAMPLE,
    workspace: Path = DEFAULT_WORKSPACE,
    title: str = "activeseg demo",
    label_config: Path = DEFAULT_LABEL_CONFIG,
    port: int = 8080,
) -> DemoResult:
    """Start (or reuse) the workspace's Label Studio and fill a project with ``images``."""
    config = load_label_config(label_config)
    workspace = workspace.resolve()
    server = server_for(workspace, port)
    # Read and stage every image before starting anything: a bad file fails fast, by name.
    stage_images(read_dataset(images), server.files_root / slug(title))
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

    client = LabelStudioClient(url, server.login.token)
    result = init_project(client, images, title, server.files_root, config)
    print(("created" if result.created else "reusing") + f" project {result.project_id} '{title}'")
    return DemoResult(
        url=url,
        project_id=result.project_id,
        n_tasks=result.n_tasks,
        n_new=result.n_new,
        username=server.login.username,
        password=server.login.password,
    )
