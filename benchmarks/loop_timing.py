"""How long each step of the loop takes on a real Label Studio, per task: what an admin plans by.

Starts a Label Studio 1.23.2 from the tests' template data dir, then times: init (staging and
import), prelabel (classical), cold-start rank (LiteMedSAM encoder features + pushing the order),
pretrain (nnU-Net plan, preprocess, a small budget, scoring every task), and rank with nnU-Net
(scores already stored: push only). Run: ``python benchmarks/loop_timing.py [--n 100]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import SHARED_DATA, ls_template_dir  # noqa: E402

from activeseg.datasets import BUNDLED_SAMPLE, read_dataset  # noqa: E402
from activeseg.imagefetch import ImageSource  # noqa: E402
from activeseg.labelconfig import load_label_config  # noqa: E402
from activeseg.labellers.tasks import LabellerConfig, TaskLabeller  # noqa: E402
from activeseg.lsclient import LabelStudioClient  # noqa: E402
from activeseg.lsserver import LabelStudioServer, ensure_template, prepare_from_template  # noqa: E402
from orchestrator.context import ProjectContext  # noqa: E402
from orchestrator.prelabel.project_setup import init_project  # noqa: E402
from orchestrator.prelabel.pseudolabels import prelabel_project  # noqa: E402
from orchestrator.rank.ranking import rank_project  # noqa: E402
from orchestrator.train.training import pretrain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="images (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=20, help="pretraining iterations (2 epochs)")
    args = parser.parse_args()
    source = SHARED_DATA / "dsb2018_stage1_train_fluo"
    source = source if source.is_dir() else BUNDLED_SAMPLE
    work = Path(tempfile.mkdtemp(prefix="activeseg-loop-"))
    dataset = work / "dataset" / "images"
    dataset.mkdir(parents=True)
    for sample in read_dataset(source)[: args.n]:
        shutil.copy(sample.image, dataset / f"{sample.id}{sample.image.suffix}")
    n = len(list(dataset.iterdir()))
    data_dir = work / "ls" / "data"
    prepare_from_template(data_dir, ensure_template(ls_template_dir()))
    server = LabelStudioServer(data_dir, files_root=work / "ls" / "files")
    server.start()
    rows: list[tuple[str, float]] = []
    try:
        client = LabelStudioClient(server.url, server.login.token)

        def timed(name: str, fn):
            t0 = time.perf_counter()
            out = fn()
            rows.append((name, time.perf_counter() - t0))
            return out

        pid = timed(
            "init (display PNGs, import)",
            lambda: (
                init_project(
                    client, read_dataset(dataset.parent), "timing", server.files_root, load_label_config()
                ).project_id
            ),
        )
        images = ImageSource(server.url, server.login.token, server.files_root)
        labeller = TaskLabeller(LabellerConfig(), images, work / "md" / "cache")
        timed("prelabel (classical, upload)", lambda: prelabel_project(pid, client=client, service=labeller))
        ctx = ProjectContext(client, pid, work / "md", server.files_root)
        timed(
            "rank, cold start (LiteMedSAM features, push)",
            lambda: rank_project(ctx, budget="5%", progress=False),
        )
        with ctx.dir.update() as state:
            state.settings.epochs, state.settings.iterations_per_epoch = 2, args.iterations // 2
        timed(
            f"pretrain ({args.iterations} iterations, scoring all)",
            lambda: pretrain(ctx, report=lambda m: None),
        )
        timed(
            "re-rank with nnU-Net (stored scores, re-scores the round)",
            lambda: rank_project(ctx, budget="10%", progress=False),
        )
        timed("rank again (nothing changed)", lambda: rank_project(ctx, progress=False))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{n} images from {source.name}\n")
    print("| step | seconds | per image |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / n:.2f} s |")


if __name__ == "__main__":
    main()
