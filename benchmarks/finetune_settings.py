"""Which learning rate should a fine-tune on corrections use? Measured on *training* images only.

The parent is the budget benchmark's ``2d_lite`` model trained on the classical pseudo-labels of
the 541 DSB2018 fluorescence training images (run ``nnunet_budget.py`` first). A validation set of
50 training images is put aside; 5 % of the rest (25 images) are "corrected" to their ground
truth, and the parent is fine-tuned as ``activeseg finetune`` does (the corrections repeated to
about half of the samples, plus every other image's pseudo-label) for the same time at each
learning rate. Every arm, and the parent, is scored on the validation images' ground truth
(none of them was trained on it), so nothing here is tuned on the test images.

    python benchmarks/finetune_settings.py --lrs 1e-3,1e-2 --minutes 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from activeseg.datasets import read_dataset, shared_data
from activeseg.fsutil import atomic_write_text
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.metrics import score_dataset
from activeseg.nnunet.dataset import Case, export_dataset
from activeseg.nnunet.engine import Predictor, TrainBudget, list_models, preprocess, train
from activeseg.nnunet.workspace import Workspace
from ml_backend.pseudolabelers import build_pseudolabeler
from orchestrator.training_data import oversample_human

RESULTS = Path(__file__).resolve().parent / "results"
PARENT = "2d_lite-10min-cpu"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lrs", default="1e-3,1e-2", help="learning rates, comma-separated")
    parser.add_argument("--minutes", type=float, default=3.0, help="fine-tuning time per arm")
    parser.add_argument("--budget", type=float, default=0.05, help="share of the images corrected")
    parser.add_argument("--validation", type=int, default=50)
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--budget-workspace", type=Path, default=Path("benchmarks/out/nnunet_budget/pseudo"))
    parser.add_argument("--workspace", type=Path, default=Path("benchmarks/out/finetune_settings"))
    args = parser.parse_args()

    source = Workspace.open(args.budget_workspace)
    if PARENT not in {m.version for m in list_models(source)}:
        raise SystemExit(f"{args.budget_workspace} has no {PARENT}; run benchmarks/nnunet_budget.py first")
    samples = read_dataset(args.data / "dsb2018_stage1_train_fluo")
    order = np.random.default_rng(0).permutation(len(samples))
    validation = [samples[i] for i in order[: args.validation]]
    rest = [samples[i] for i in order[args.validation :]]
    corrected = {s.id for s in rest[: round(args.budget * len(rest))]}

    ws = Workspace.open(args.workspace / "ws", create=True)
    if not (ws.models / PARENT).is_dir():  # the parent and its plans, as the loop has them
        shutil.copytree(source.models / PARENT, ws.models / PARENT)
        ws.preprocessed_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(
            source.preprocessed_dir / "nnUNetPlans.json", ws.preprocessed_dir / "nnUNetPlans.json"
        )
        labeler = build_pseudolabeler("classical")
        cases = []
        for s in rest:  # validation images stay out of the fine-tuning set
            image = read_image(s.image)
            if s.id in corrected:
                cases.append(Case(s.id, image, read_label_image(s.label), "human"))
            else:
                cases.append(Case(s.id, image, labeler.segment(image).labels, "pseudo"))
        export_dataset(ws, oversample_human(cases))
        preprocess(ws)
    val = [(read_image(s.image), read_label_image(s.label)) for s in validation]

    def score(version: str) -> dict[str, float]:
        predictor = Predictor(ws, version)
        scores = score_dataset([(gt, predictor.predict(model_channels(im)).labels) for im, gt in val])
        return {"msa": round(scores.msa, 4), "ap50": round(scores.ap[0.5], 4), "f1": round(scores.f1, 4)}

    rows = [{"arm": f"parent ({PARENT}, pseudo-labels only)", **score(PARENT)}]
    for lr in (float(x) for x in args.lrs.split(",")):
        version = f"ft-lr{lr:g}-{args.minutes:g}min"
        t = time.perf_counter()
        if version not in {m.version for m in list_models(ws)}:
            budget = TrainBudget.of(None, args.minutes, iterations_per_epoch=25, initial_lr=lr)
            train(ws, version, budget, {"human": len(corrected), "pseudo": len(rest) - len(corrected)},
                  parent=PARENT)  # fmt: skip
        info = next(m for m in list_models(ws) if m.version == version)
        rows.append({"arm": f"fine-tuned, lr {lr:g}", "lr": lr, "iterations": info.iterations_run,
                     "minutes": round(info.training_seconds / 60, 2), **score(version)})  # fmt: skip
        print(f"lr {lr:g}: {rows[-1]} ({time.perf_counter() - t:.0f} s)", flush=True)

    print(f"\n{len(corrected)} corrected + {len(rest) - len(corrected)} pseudo-labelled training images; "
          f"scored on {len(val)} other training images' ground truth\n")  # fmt: skip
    print("| arm | iterations | minutes | mSA | AP50 | F1 |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r.get('iterations', '')} | {r.get('minutes', '')} | {r['msa']:.3f} | "
              f"{r['ap50']:.3f} | {r['f1']:.3f} |")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = {
        "corrected": len(corrected),
        "pseudo": len(rest) - len(corrected),
        "validation": len(val),
        "rows": rows,
    }
    atomic_write_text(RESULTS / "finetune_settings.json", json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
