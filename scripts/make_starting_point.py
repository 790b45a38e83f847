"""Train the starting point activeseg ships for fluorescence nuclei (``activeseg.nnunet.starting``).

The ``2d_lite`` network is trained on the ground-truth labels (``--labels pseudo``: the classical
pseudo-labels, no human label) of the DSB2018 stage-1 fluorescence training images, less the 24
images bundled in ``activeseg/sample_data/`` (the demo's pool and held-out images), then stored in half
precision with what it was trained on. The shipped file:

    .venv/bin/python scripts/make_starting_point.py --minutes 25

Resumable: the workspace keeps the preprocessed data and nnU-Net's latest checkpoint.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

from activeseg.datasets import BUNDLED_SAMPLE, held_out, read_dataset, shared_data
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.labellers import build_pseudolabeler
from activeseg.metrics import score_dataset
from activeseg.nnunet.dataset import Case, export_dataset
from activeseg.nnunet.engine import Predictor, TrainBudget, list_models, plan_and_preprocess, train
from activeseg.nnunet.plans import LITE
from activeseg.nnunet.starting import SHIPPED, save_starting_point
from activeseg.nnunet.workspace import Workspace


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--minutes", type=float, default=25.0, help="training minutes")
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--data", type=Path, default=shared_data() / "dsb2018_stage1_train_fluo")
    parser.add_argument(
        "--test", type=Path, default=shared_data() / "dsb2018_stage1_test",
        help="scored on these for the record (the 49 DSB2018 stage-1 test fluorescence images)",
    )  # fmt: skip
    parser.add_argument(
        "--labels", choices=["ground-truth", "pseudo"], default="ground-truth",
        help="train on the data's own labels (default) or on their classical pseudo-labels (no human label)",
    )  # fmt: skip
    parser.add_argument("--workspace", type=Path, help="default: benchmarks/out/starting_point[_gt]")
    parser.add_argument("--out", type=Path, default=SHIPPED)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()

    bundled = {s.id for s in read_dataset(BUNDLED_SAMPLE)}
    samples = [s for s in read_dataset(args.data) if s.id not in bundled]
    gt = args.labels == "ground-truth"
    default_ws = Path("benchmarks/out/starting_point" + ("_gt" if gt else ""))
    ws = Workspace.open(args.workspace or default_ws, create=True)
    if not (ws.preprocessed_dir / "nnUNetPlans.json").is_file():
        labeler = None if gt else build_pseudolabeler("classical")
        cases = []
        for s in samples:
            image = read_image(s.image)
            labels = labeler.segment(image).labels if labeler else read_label_image(s.label)
            cases.append(Case(s.id, image, labels, "human" if gt else "pseudo"))
        export_dataset(ws, cases)
        plan_and_preprocess(ws, n_proc=2)
    version = f"start-{args.minutes:g}min"
    if version not in {m.version for m in list_models(ws)}:
        budget = TrainBudget.of(None, args.minutes, iterations_per_epoch=args.iterations_per_epoch)
        train(ws, version, budget, sources={"human" if gt else "pseudo": len(samples)}, device=args.device,
              configuration=LITE, on_epoch=lambda p: print(f"epoch {p.epoch}: {p.minutes:.1f}/"
                                                           f"{args.minutes:g} min, loss {p.train_loss:.3f}",
                                                           flush=True))  # fmt: skip
    info = next(m for m in list_models(ws) if m.version == version)
    predictor, tests = Predictor(ws, version, device=args.device), held_out(args.test)
    pairs = [(read_label_image(t.label), predictor.predict(model_channels(read_image(t.image))).labels)
             for t in tests]  # fmt: skip
    test_scores = score_dataset(pairs)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    about = {
        "trained_on": (
            f"the ground-truth labels of {len(samples)} DSB2018 stage-1 fluorescence training images"
            if gt
            else f"classical pseudo-labels of {len(samples)} DSB2018 stage-1 fluorescence training images"
        )
        + f" (BBBC038v1, CC0), the {len(bundled)} bundled sample images left out"
        + ("" if gt else "; no human labels"),
        "iterations": info.iterations_run,
        "training_minutes": round(info.training_seconds / 60, 1),
        "batch_size": int(info.budget["batch_size"]),
        "plan": info.plan.get("reason", ""),
        "test": f"mSA {test_scores.msa:.3f}, AP50 {test_scores.ap[0.5]:.3f}, F1 {test_scores.f1:.3f} on "
        f"{len(tests)} DSB2018 stage-1 test fluorescence images",
        "machine": f"{platform.machine()}, {args.device}",
        "made": time.strftime("%Y-%m-%d"),
        "activeseg_commit": commit.strip(),
    }
    save_starting_point(info.checkpoint(ws), args.out, about)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {about}")


if __name__ == "__main__":
    main()
