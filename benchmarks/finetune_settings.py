"""How should a fine-tune on corrections learn: which learning rate, and with or without the
other images' pseudo-labels? Measured on *training* images only.

The parent is the pseudo-label starting point's model (``scripts/make_starting_point.py --labels
pseudo``: ``2d_lite`` trained on the classical pseudo-labels of 517 DSB2018 fluorescence training
images; not the shipped one, which learnt from these images' ground truth). A validation set of
50 training images is put aside; 5 % of the rest are "corrected" to their ground truth, and the
parent is fine-tuned for the same time in each arm:

- ``with-pseudo``: as ``activeseg finetune`` does by default, the corrections repeated to about
  half of the samples, plus every other image's pseudo-label;
- ``corrections-only``: the corrected images alone.

Every arm, and the parent, is scored on the validation images' ground truth (no model trained
on it; the parent saw their pseudo-labels, as a lab's model sees its own unlabelled images), so
nothing here is tuned on the test images.

    python benchmarks/finetune_settings.py --lrs 1e-3,1e-2 --mixes with-pseudo,corrections-only --minutes 3

Resumable: finished arms are kept in the workspace and not trained again.
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
MIXES = ("with-pseudo", "corrections-only")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lrs", default="1e-3,1e-2", help="learning rates, comma-separated")
    parser.add_argument("--mixes", default=",".join(MIXES), help=f"of {', '.join(MIXES)}")
    parser.add_argument("--minutes", type=float, default=3.0, help="fine-tuning time per arm")
    parser.add_argument("--budget", type=float, default=0.05, help="share of the images corrected")
    parser.add_argument("--validation", type=int, default=50)
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--parent-workspace", type=Path, default=Path("benchmarks/out/starting_point"))
    parser.add_argument("--parent", default="start-25min", help="model version in --parent-workspace")
    parser.add_argument("--workspace", type=Path, default=Path("benchmarks/out/finetune_settings"))
    args = parser.parse_args()

    source = Workspace.open(args.parent_workspace)
    if args.parent not in {m.version for m in list_models(source)}:
        raise SystemExit(
            f"{args.parent_workspace} has no {args.parent}; "
            "run scripts/make_starting_point.py --labels pseudo"
        )
    samples = read_dataset(args.data / "dsb2018_stage1_train_fluo")
    order = np.random.default_rng(0).permutation(len(samples))
    validation = [samples[i] for i in order[: args.validation]]
    rest = [samples[i] for i in order[args.validation :]]
    corrected = {s.id for s in rest[: round(args.budget * len(rest))]}
    pseudo_file = args.workspace / "pseudo_labels.npz"
    if not pseudo_file.is_file():  # the classical labeller once, for every mix
        labeler = build_pseudolabeler("classical")
        pseudo = {s.id: labeler.segment(read_image(s.image)).labels for s in rest if s.id not in corrected}
        pseudo_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(pseudo_file, **pseudo)
    pseudo = dict(np.load(pseudo_file))

    def workspace(mix: str) -> Workspace:
        """The parent with its plans, and this mix's training set exported and preprocessed."""
        ws = Workspace.open(args.workspace / mix, create=True)
        if not (ws.preprocessed_dir / "dataset.json").is_file():
            shutil.copytree(source.models / args.parent, ws.models / args.parent, dirs_exist_ok=True)
            ws.preprocessed_dir.mkdir(parents=True, exist_ok=True)
            plans = source.preprocessed_dir / "nnUNetPlans.json"
            shutil.copyfile(plans, ws.preprocessed_dir / "nnUNetPlans.json")
            cases = [
                Case(s.id, read_image(s.image), read_label_image(s.label), "human")
                if s.id in corrected else Case(s.id, read_image(s.image), pseudo[s.id], "pseudo")
                for s in rest
                if s.id in corrected or mix == "with-pseudo"
            ]  # fmt: skip
            export_dataset(ws, oversample_human(cases))
            preprocess(ws)
        return ws

    val = [(read_image(s.image), read_label_image(s.label)) for s in validation]

    def score(ws: Workspace, version: str) -> dict[str, float]:
        predictor = Predictor(ws, version)
        scores = score_dataset([(gt, predictor.predict(model_channels(im)).labels) for im, gt in val])
        return {"msa": round(scores.msa, 4), "ap50": round(scores.ap[0.5], 4), "f1": round(scores.f1, 4)}

    rows = [{"arm": f"parent ({args.parent}, pseudo-labels only)", **score(source, args.parent)}]
    print(f"parent: {rows[0]}", flush=True)
    for mix in args.mixes.split(","):
        ws = workspace(mix)
        n_pseudo = len(rest) - len(corrected) if mix == "with-pseudo" else 0
        for lr in (float(x) for x in args.lrs.split(",")):
            version = f"ft-lr{lr:g}-{args.minutes:g}min"
            t = time.perf_counter()
            if version not in {m.version for m in list_models(ws)}:
                budget = TrainBudget.of(None, args.minutes, iterations_per_epoch=25, initial_lr=lr)
                train(ws, version, budget, {"human": len(corrected), "pseudo": n_pseudo}, parent=args.parent)
            info = next(m for m in list_models(ws) if m.version == version)
            rows.append({"arm": f"{mix}, lr {lr:g}", "mix": mix, "lr": lr, "iterations": info.iterations_run,
                         "minutes": round(info.training_seconds / 60, 2), **score(ws, version)})  # fmt: skip
            print(f"{mix}, lr {lr:g}: {rows[-1]} ({time.perf_counter() - t:.0f} s)", flush=True)

    print(f"\n{len(corrected)} corrected + {len(rest) - len(corrected)} pseudo-labelled training images; "
          f"scored on {len(val)} other training images' ground truth\n")  # fmt: skip
    print("| arm | iterations | minutes | mSA | AP50 | F1 |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r.get('iterations', '')} | {r.get('minutes', '')} | {r['msa']:.3f} | "
              f"{r['ap50']:.3f} | {r['f1']:.3f} |")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = {
        "parent": args.parent,
        "corrected": len(corrected),
        "pseudo": len(rest) - len(corrected),
        "validation": len(val),
        "minutes_per_arm": args.minutes,
        "rows": rows,
    }
    atomic_write_text(RESULTS / "finetune_settings.json", json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
