"""What does an nnU-Net training budget buy on this machine? mSA on held-out DSB2018 test images
after training on the 541 DSB2018 fluorescence training images (ground-truth labels) for several
budgets, with the time per iteration. It tells the loop which budget is worth paying on a CPU.

    python benchmarks/nnunet_budget.py --budgets 250,1000,3000         # hours on 2 CPU cores
    python benchmarks/nnunet_budget.py --budgets 50,200 --device cpu   # a quick look

Resumable: the workspace (default benchmarks/out/nnunet_budget) keeps the preprocessed data and
every finished model; a budget already trained is only evaluated again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from activeseg.datasets import held_out, read_dataset
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.metrics import score_dataset
from activeseg.nnunet.dataset import Case, export_dataset
from activeseg.nnunet.engine import Predictor, TrainBudget, list_models, plan_and_preprocess, train
from activeseg.nnunet.workspace import Workspace

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budgets", default="250,1000,3000", help="training iterations, comma-separated")
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--workspace", type=Path, default=Path("benchmarks/out/nnunet_budget"))
    args = parser.parse_args()

    ws = Workspace.open(args.workspace, create=True)
    if not (ws.preprocessed_dir / "nnUNetPlans.json").is_file():
        train_samples = read_dataset(args.data / "dsb2018_stage1_train_fluo")
        t = time.perf_counter()
        export_dataset(
            ws, [Case(s.id, read_image(s.image), read_label_image(s.label), "human") for s in train_samples]
        )
        plan_and_preprocess(ws, n_proc=2)
        took = time.perf_counter() - t
        print(f"exported, planned and preprocessed {len(train_samples)} images in {took:.0f} s")
    tests = [
        (read_image(s.image), read_label_image(s.label)) for s in held_out(args.data / "dsb2018_stage1_test")
    ]

    rows = []
    for budget_iters in (int(b) for b in args.budgets.split(",")):
        version = f"budget-{budget_iters}-{args.device}"
        if version not in {m.version for m in list_models(ws)}:
            per_epoch = min(args.iterations_per_epoch, budget_iters)
            budget = TrainBudget(
                epochs=budget_iters // per_epoch, iterations_per_epoch=per_epoch, val_iterations=5
            )
            train(ws, version, budget, sources={"human": 541}, device=args.device)
        info = next(m for m in list_models(ws) if m.version == version)
        predictor = Predictor(ws, version, device=args.device)
        t = time.perf_counter()
        pairs = [(gt, predictor.predict(model_channels(img)).labels) for img, gt in tests]
        predict_s = time.perf_counter() - t
        scores = score_dataset(pairs)
        iters = info.budget["epochs"] * info.budget["iterations_per_epoch"]
        seconds = info.seconds
        rows.append((budget_iters, scores.msa, scores.ap[0.5], scores.f1, seconds / iters, seconds / 60,
                     predict_s / len(tests)))  # fmt: skip

    print(f"\nDSB2018 stage-1 test, {len(tests)} fluorescence images; 541 training images ({args.device})\n")
    print("| iterations | mSA | AP50 | F1@0.5 | s / iteration | training min | predict s / image |")
    print("|---|---|---|---|---|---|---|")
    for it, msa, ap50, f1, spi, minutes, pred in rows:
        print(f"| {it} | {msa:.3f} | {ap50:.3f} | {f1:.3f} | {spi:.2f} | {minutes:.1f} | {pred:.2f} |")


if __name__ == "__main__":
    main()
