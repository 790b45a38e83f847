"""The CPU plan on images of different sizes: optimiser steps per minute, accuracy per training
minute, and whether a budget in minutes is kept.

For each collection (DSB2018 fluorescence 256x256 fields, its 520x696 fields, the colour
320x256 tissue images, the 1024x1024 brightfield images; all in ``../shared/data``), nnU-Net plans
on the training images' ground truth and ``2d_lite`` is derived from it. Each arm trains for the
same minutes from random weights and is scored on the collection's held-out images:

- ``pixels per step`` (today's rule): a batch of 128k pixels, at most 64 patches;
- ``stock pixels`` (the rule before): the stock plan's pixels at batch 2, which follows nnU-Net's
  GPU patch (640x768 on 520x696 fields: batch 60 at patch 128).

Where both rules give the same batch only one arm runs. Training images and held-out images are
split by seed 0; nothing is tuned here, so both are the collection's own.

    python benchmarks/cpu_plan.py --minutes 3

Resumable: each finished (collection, rule) is a JSON file under ``--out``/rows.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from activeseg.datasets import read_dataset, shared_data
from activeseg.fsutil import atomic_write_text
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.metrics import score_dataset
from activeseg.nnunet.dataset import Case, export_dataset
from activeseg.nnunet.engine import Predictor, TrainBudget, list_models, plan_and_preprocess, train
from activeseg.nnunet.plans import STOCK_CPU_BATCH, add_lite_configuration
from activeseg.nnunet.workspace import Workspace

RESULTS = Path(__file__).resolve().parent / "results"
#: name -> (folder in shared data, image size (w, h) or None for all, training images, held out)
COLLECTIONS = {
    "fluo-256x256": ("dsb2018_stage1_train_fluo", (256, 256), 60, 30),
    "fluo-520x696": ("dsb2018_stage1_train_fluo", (696, 520), 60, 30),
    "colour-320x256": ("dsb2018_stage1_train_color", None, 60, 30),
    "brightfield-1024": ("dsb2018_stage1_train_brightfield", None, 12, 4),
}


def stock_pixels_batch(stock_patch: list[int], patch: list[int]) -> int:
    """The batch the rule before gave: the stock plan's pixels at batch 2."""
    return max(STOCK_CPU_BATCH, round(STOCK_CPU_BATCH * math.prod(stock_patch) / math.prod(patch)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="training time per arm")
    parser.add_argument("--collections", default=",".join(COLLECTIONS), help="comma-separated")
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/cpu_plan"))
    args = parser.parse_args()
    rows_dir = args.out / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)

    for name in args.collections.split(","):
        folder, size, n_train, n_test = COLLECTIONS[name]
        samples = [
            s for s in read_dataset(args.data / folder) if size is None or Image.open(s.image).size == size
        ]
        order = np.random.default_rng(0).permutation(len(samples))
        train_s = [samples[i] for i in order[:n_train]]
        test_s = [samples[i] for i in order[n_train : n_train + n_test]]
        ws = Workspace.open(args.out / "ws" / name, create=True)
        if not (ws.preprocessed_dir / "nnUNetPlans.json").is_file():
            export_dataset(ws, [Case(s.id, read_image(s.image), read_label_image(s.label)) for s in train_s])
            plan_and_preprocess(ws)
        plans = json.loads((ws.preprocessed_dir / "nnUNetPlans.json").read_text())["configurations"]
        stock_patch = [int(p) for p in plans["2d"]["patch_size"]]
        choice = add_lite_configuration(ws)
        rules = {"pixels per step": choice.batch_size}
        old = stock_pixels_batch(stock_patch, choice.patch_size)
        if old != choice.batch_size:
            rules["stock pixels"] = old
        test = [(read_image(s.image), read_label_image(s.label)) for s in test_s]
        for rule, batch in rules.items():
            key = f"{name}_{rule.replace(' ', '-')}"
            if (rows_dir / f"{key}.json").is_file():
                continue
            version = key
            if version not in {m.version for m in list_models(ws)}:
                import torch

                torch.manual_seed(0)
                budget = TrainBudget.of(None, args.minutes, iterations_per_epoch=25, batch_size=batch)
                train(ws, version, budget, {"human": len(train_s)})
            info = next(m for m in list_models(ws) if m.version == version)
            predictor = Predictor(ws, version)
            scores = score_dataset([(gt, predictor.predict(model_channels(im)).labels) for im, gt in test])
            minutes = info.training_seconds / 60
            row = {
                "collection": name, "rule": rule, "image_size": list(size) if size else None,
                "train_images": len(train_s), "test_images": len(test), "stock_patch": stock_patch,
                "patch": choice.patch_size, "n_stages": choice.n_stages, "batch": batch,
                "iterations": info.iterations_run, "training_minutes": round(minutes, 2),
                "budget_minutes": args.minutes, "steps_per_minute": round(info.iterations_run / minutes, 1),
                "msa": round(scores.msa, 4), "ap50": round(scores.ap[0.5], 4), "f1": round(scores.f1, 4),
            }  # fmt: skip
            atomic_write_text(rows_dir / f"{key}.json", json.dumps(row, indent=1))
            print(f"{key}: {row}", flush=True)

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    print(
        "\n| collection | rule | stock patch | patch | stages | batch | steps/min | minutes (budget) | mSA |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        patches = f"{'x'.join(map(str, r['stock_patch']))} | {'x'.join(map(str, r['patch']))}"
        print(f"| {r['collection']} | {r['rule']} | {patches} | {r['n_stages']} | {r['batch']} | "
              f"{r['steps_per_minute']} | {r['training_minutes']} ({r['budget_minutes']:g}) | "
              f"{r['msa']:.3f} |")  # fmt: skip
    base = next(
        (r for r in rows if r["collection"] == "fluo-256x256" and r["rule"] == "pixels per step"), None
    )
    summary = {}
    if base is not None:
        for r in rows:
            summary[f"{r['collection']}, {r['rule']}"] = round(
                r["steps_per_minute"] / base["steps_per_minute"], 2
            )
        print(f"\nsteps per minute relative to fluo-256x256: {summary}")
    RESULTS.mkdir(exist_ok=True)
    out = {"rows": rows, "steps_per_minute_vs_256x256": summary}
    atomic_write_text(RESULTS / "cpu_plan.json", json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
