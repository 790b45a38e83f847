"""What does a minute of nnU-Net training buy on this machine, with nnU-Net's own plan and with
activeseg's compute-aware one? mSA on the held-out DSB2018 test images after training on the
541 DSB2018 fluorescence training images for a time budget, side by side:

    plan   x  labels                                 x  minutes
    stock     ground-truth (all 541 labels)             --minutes, e.g. 5,10,20,30
    2d_lite   pseudo (their classical pseudo-labels)

with the classical pseudo-labels' own score on the test images as the reference line.

    python benchmarks/nnunet_budget.py --minutes 10           # 4 runs, ~50 min on 2 CPU cores
    python benchmarks/nnunet_budget.py --minutes 20,30 --plans 2d_lite
    python benchmarks/nnunet_budget.py --report-only          # table, JSON and PNG of what ran

Resumable: each (labels, plan, minutes) run is stored in ``<workspace>/runs/`` once scored, and
the workspace keeps the preprocessed data; runs already done are not trained again. Writes
``benchmarks/results/nnunet_budget.json`` and ``.png`` from every run stored.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.datasets import held_out, read_dataset, shared_data
from activeseg.fsutil import atomic_write_text
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.metrics import score_dataset
from activeseg.nnunet.dataset import Case, export_dataset
from activeseg.nnunet.engine import Predictor, TrainBudget, list_models, plan_and_preprocess, train
from activeseg.nnunet.plans import LITE, STOCK, default_configuration
from activeseg.nnunet.workspace import Workspace

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = ("ground-truth", "pseudo")


def classical(images: list[np.ndarray]) -> list[np.ndarray]:
    from activeseg.labellers import build_pseudolabeler

    labeler = build_pseudolabeler("classical")
    return [labeler.segment(im).labels for im in images]


def workspace(root: Path, labels: str, train_dir: Path) -> Workspace:
    """The exported, planned and preprocessed training set of one label source (made once)."""
    ws = Workspace.open(root / labels, create=True)
    if not (ws.preprocessed_dir / "nnUNetPlans.json").is_file():
        samples = read_dataset(train_dir)
        t = time.perf_counter()
        images = [read_image(s.image) for s in samples]
        masks = (
            [read_label_image(s.label) for s in samples] if labels == "ground-truth" else classical(images)
        )
        source = "human" if labels == "ground-truth" else "pseudo"
        cases = [Case(s.id, im, m, source) for s, im, m in zip(samples, images, masks, strict=True)]
        export_dataset(ws, cases)
        plan_and_preprocess(ws, n_proc=2)
        took = time.perf_counter() - t
        print(f"{labels}: exported, planned and preprocessed {len(samples)} images in {took:.0f} s")
    return ws


def run(
    ws: Workspace, plan: str, minutes: float, args: argparse.Namespace, tests: list[Any]
) -> dict[str, Any]:
    version = f"{plan}-{minutes:g}min-{args.device}"
    if version not in {m.version for m in list_models(ws)}:
        budget = TrainBudget.of(
            None, minutes, iterations_per_epoch=args.iterations_per_epoch, val_iterations=2
        )
        train(ws, version, budget, sources={"labels": 541}, device=args.device, configuration=plan,
              on_epoch=lambda p: print(f"  {version}: epoch {p.epoch}, {p.minutes:.1f}/{minutes:g} min, "
                                       f"loss {p.train_loss:.3f}", flush=True))  # fmt: skip
    info = next(m for m in list_models(ws) if m.version == version)
    return {
        "plan": "stock" if plan == STOCK else plan, "minutes": round(info.training_seconds / 60, 2),
        "budget_minutes": minutes, "iterations": info.iterations_run, "batch": int(info.budget["batch_size"]),
        "parameters": int(info.metrics.get("parameters", 0)),
        "s_per_iteration": round(info.training_seconds / max(1, info.iterations_run), 3),
        "plan_reason": info.plan.get("reason", ""), **score(ws, version, args.device, tests, tta=False),
    }  # fmt: skip


def score(ws: Workspace, version: str, device: str, tests: list[Any], tta: bool) -> dict[str, float]:
    """mSA, AP50, F1 on the test images, plain or with test-time flips (keys ending in _tta)."""
    predictor = Predictor(ws, version, device=device)
    t = time.perf_counter()
    pairs = [(gt, predictor.predict(model_channels(img), tta=tta).labels) for img, gt in tests]
    predict_s = (time.perf_counter() - t) / len(tests)
    scores = score_dataset(pairs)
    end = "_tta" if tta else ""
    return {f"msa{end}": round(scores.msa, 4), f"ap50{end}": round(scores.ap[0.5], 4),
            f"f1{end}": round(scores.f1, 4), f"predict_s_per_image{end}": round(predict_s, 3)}  # fmt: skip


def report(runs: list[dict[str, Any]], pseudo_msa: float | None, n_test: int, machine: str) -> None:
    runs = sorted(runs, key=lambda r: (r["labels"], r["plan"], r["budget_minutes"]))
    print(f"\nDSB2018 stage-1 test, {n_test} fluorescence images; 541 training images; {machine}\n")
    print("| labels | plan | budget min | trained min | iterations | batch | s / it | mSA | AP50 | F1 "
          "| mSA, flips | AP50, flips |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        cells = [
            r["labels"], r["plan"], f"{r['budget_minutes']:g}", f"{r['minutes']:.1f}", r["iterations"],
            r["batch"], f"{r['s_per_iteration']:.2f}",
            *(f"{r[k]:.3f}" if k in r else "-" for k in ("msa", "ap50", "f1", "msa_tta", "ap50_tta")),
        ]  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    if pseudo_msa is not None:
        print(f"| classical pseudo-labels (reference) | | | | | | | {pseudo_msa:.3f} | | | | |")
    RESULTS.mkdir(exist_ok=True)
    keep = ("plan", "labels", "minutes", "budget_minutes", "iterations", "batch", "parameters",
            "s_per_iteration", "msa", "ap50", "f1", "predict_s_per_image",
            "msa_tta", "ap50_tta", "f1_tta", "predict_s_per_image_tta")  # fmt: skip
    out = {
        "machine": machine, "test_images": n_test, "pseudo_labels_msa": pseudo_msa,
        "runs": [{k: r[k] for k in keep if k in r} for r in runs],
        "default_plan": default_configuration("cpu"),
        "plan_reasons": sorted({r["plan_reason"] for r in runs if r["plan_reason"]}),
    }  # fmt: skip
    atomic_write_text(RESULTS / "nnunet_budget.json", json.dumps(out, indent=1))
    plot(runs, pseudo_msa, RESULTS / "nnunet_budget.png", machine)


def plot(runs: list[dict[str, Any]], pseudo_msa: float | None, path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for labels, style, marker in zip(LABELS, ("-", "--"), ("o", "s"), strict=True):
        for plan, color in (("stock", "tab:gray"), (LITE, "tab:blue")):
            pts = sorted(
                (r["minutes"], r["msa"]) for r in runs if r["labels"] == labels and r["plan"] == plan
            )
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    style,
                    marker=marker,
                    color=color,
                    label=f"{plan} on {labels}",
                )
    if pseudo_msa is not None:
        ax.axhline(pseudo_msa, color="tab:red", linestyle=":", label="classical pseudo-labels")
    ax.set_xlim(0, max([r["minutes"] for r in runs], default=10) * 1.1)
    ax.set_xlabel("training minutes")
    ax.set_ylabel("mSA, 49 DSB2018 test images")
    ax.set_title(f"nnU-Net accuracy per training minute ({machine})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", default="10", help="training minutes per run, comma-separated")
    parser.add_argument("--plans", default=f"{LITE},stock", help=f"{LITE} and/or stock, comma-separated")
    parser.add_argument("--labels", default="pseudo,ground-truth", help="pseudo and/or ground-truth")
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score each model with test-time flips (4 predictions per image)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--workspace", type=Path, default=Path("benchmarks/out/nnunet_budget"))
    parser.add_argument("--machine", default=f"{platform.machine()}, 2 CPU cores, no GPU")
    parser.add_argument(
        "--report-only", action="store_true", help="only the table, JSON and PNG of stored runs"
    )
    args = parser.parse_args()

    runs_dir = args.workspace / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    test_samples = held_out(args.data / "dsb2018_stage1_test")
    tests = [(read_image(s.image), read_label_image(s.label)) for s in test_samples]
    pseudo_file = runs_dir / "pseudo-labels.json"
    if not pseudo_file.is_file():
        pairs = list(zip([gt for _, gt in tests], classical([im for im, _ in tests]), strict=True))
        atomic_write_text(pseudo_file, json.dumps({"msa": round(score_dataset(pairs).msa, 4)}))
    pseudo_msa = json.loads(pseudo_file.read_text())["msa"]

    if not args.report_only:
        for labels in args.labels.split(","):
            ws = workspace(args.workspace, labels, args.data / "dsb2018_stage1_train_fluo")
            for minutes in (float(m) for m in args.minutes.split(",")):
                for plan in args.plans.split(","):
                    plan = STOCK if plan == "stock" else plan
                    out = runs_dir / f"{labels}_{plan}_{minutes:g}min_{args.device}.json"
                    if not out.is_file():
                        record = dict(run(ws, plan, minutes, args, tests), labels=labels, device=args.device)
                        atomic_write_text(out, json.dumps(record, indent=1))
                    record = json.loads(out.read_text())
                    if args.tta and "msa_tta" not in record:
                        version = f"{plan}-{minutes:g}min-{args.device}"
                        record.update(score(ws, version, args.device, tests, tta=True))
                        atomic_write_text(out, json.dumps(record, indent=1))
                    print(f"{labels} {plan} {minutes:g} min: mSA {record['msa']:.3f}", flush=True)
    runs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*_*min_*.json"))]
    report(runs, pseudo_msa, len(tests), args.machine)


if __name__ == "__main__":
    main()
