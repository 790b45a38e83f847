"""What makes a fine-tune absorb corrections? Measured on *training* images only.

The parent is the committed study's pseudo model (``benchmarks/study``: ``2d_lite`` trained for
2000 iterations on the classical pseudo-labels of the study's 300 DSB2018 fluorescence pool
images). The study's 50 "unannotated" pool images are the validation set: no arm here trains on
their ground truth (the parent saw their pseudo-labels, as a lab's model sees its own unlabelled
images), and the study's held-out test images are never read. From the other 250 pool images:

- ``entropy`` / ``random``: k images (5 % of the pool, as in the study) corrected to their ground
  truth, picked by the loop's default strategy on the parent's scores or at random;
- ``full``: all 250 with their ground truth: what a fine-tune can absorb at all. The target is
  0.97 x the study's from-scratch reference on the same labels.

Each setting (``SETTINGS``) fine-tunes the parent with one recipe: learning rate, linear warm-up,
iterations, how corrected images are mixed with the other images' pseudo-labels. The table and
``benchmarks/results/finetune_settings.json`` give each setting's mSA on the validation images
beside the parent's and the pseudo-labels' own.

    python benchmarks/finetune_settings.py --settings study,lr1e-2-warmup --picks entropy,full --seeds 0

Resumable: each finished (setting, picks, seed) is a JSON file under ``--out``/rows.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.fsutil import atomic_write_bytes, atomic_write_text
from activeseg.imageio import model_channels
from activeseg.metrics import score_dataset
from activeseg.nnunet.dataset import Case, export_dataset
from activeseg.nnunet.engine import Predictor, TrainBudget, list_models, preprocess, train
from activeseg.nnunet.workspace import Workspace
from orchestrator.study.runner import PRETRAINED, Study, StudyConfig
from orchestrator.train.training_data import mask_disagreement, oversample_human

RESULTS = Path(__file__).resolve().parent / "results"
PICKS = ("entropy", "random", "full")


@dataclass(frozen=True)
class Setting:
    """One fine-tuning recipe."""

    lr: float
    iterations: int = 250
    warmup: int = 0  # iterations of linear warm-up
    with_pseudo: bool = True  # the other images' pseudo-labels beside the corrections
    share: float = 0.5  # of the samples drawn from corrected images (with_pseudo only)
    #: the other images' labels: "teacher" (the pseudo-labels), "agreed" (the pseudo-labels with
    #: the pixels where the parent disagrees ignored) or "model" (the parent's own masks)
    pseudo: str = "teacher"


SETTINGS: dict[str, Setting] = {
    "study": Setting(lr=1e-3),  # the study's fine-tune until now
    "loop": Setting(lr=3e-4),  # the loop's learning rate until now (at the study's iterations)
    "lr1e-2": Setting(lr=1e-2),
    "lr1e-2-warmup": Setting(lr=1e-2, warmup=50),
    "lr3e-3-warmup": Setting(lr=3e-3, warmup=50),
    "lr1e-2-warmup-500": Setting(lr=1e-2, warmup=50, iterations=500),
    "lr1e-2-500": Setting(lr=1e-2, iterations=500),
    "lr1e-2-750": Setting(lr=1e-2, iterations=750),  # about the loop's 5 minutes on 2 cores
    "lr1e-2-warmup-share0.8": Setting(lr=1e-2, warmup=50, share=0.8),
    "lr1e-2-warmup-corrections-only": Setting(lr=1e-2, warmup=50, with_pseudo=False),
    "lr1e-2-750-agreed": Setting(lr=1e-2, iterations=750, pseudo="agreed"),
    "lr1e-2-750-model": Setting(lr=1e-2, iterations=750, pseudo="model"),
    "lr1e-2-750-share0.8": Setting(lr=1e-2, iterations=750, share=0.8),
    "lr1e-2-750-corrections-only": Setting(lr=1e-2, iterations=750, with_pseudo=False),
}


def _study(folder: Path) -> Study:
    """The committed study, read for its pool, pseudo-labels, scores and pseudo model."""
    saved = json.loads((folder / "study.json").read_text())
    fields = set(StudyConfig.__dataclass_fields__)
    kwargs: dict[str, Any] = {k: v for k, v in saved.items() if k in fields}
    for key in ("train", "test", "data", "shift"):
        if kwargs.get(key):
            kwargs[key] = Path(kwargs[key])
    return Study(StudyConfig(**kwargs, strategies=("entropy",)), folder, report=lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", default="study,lr1e-2-warmup", help=f"of {', '.join(SETTINGS)}")
    parser.add_argument("--picks", default="entropy,full", help=f"of {', '.join(PICKS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated (random picks and training)")
    parser.add_argument("--budget", type=float, default=0.05, help="share of the pool corrected")
    parser.add_argument("--study", type=Path, default=Path("benchmarks/study"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/finetune_settings"))
    args = parser.parse_args()
    unknown = [s for s in args.settings.split(",") if s not in SETTINGS] + [
        p for p in args.picks.split(",") if p not in PICKS
    ]
    if unknown:
        raise SystemExit(f"unknown setting or picks {unknown[0]!r}")

    study = _study(args.study)
    validation = study.unannotated
    val_ids = {im.id for im in validation}
    rest = [im for im in study.pool if im.id not in val_ids]
    k = round(args.budget * len(study.pool))
    source = study.ws

    def picked(picks: str, seed: int) -> list[str]:
        if picks == "full":
            return [im.id for im in rest]
        ranked = study.select(picks, len(study.pool), seed)
        return [i for i in ranked if i not in val_ids][:k]

    def workspace(name: str, cases: list[Case]) -> Workspace:
        """The parent with its plans, and one training set exported and preprocessed."""
        ws = Workspace.open(args.out / "ws" / name, create=True)
        if not (ws.preprocessed_dir / "dataset.json").is_file():
            shutil.copytree(source.models / PRETRAINED, ws.models / PRETRAINED, dirs_exist_ok=True)
            ws.preprocessed_dir.mkdir(parents=True, exist_ok=True)
            for f in ("nnUNetPlans.json", "dataset_fingerprint.json"):
                shutil.copyfile(source.preprocessed_dir / f, ws.preprocessed_dir / f)
            export_dataset(ws, cases)
            preprocess(ws)
        return ws

    def score(ws: Workspace, version: str) -> dict[str, float]:
        predictor = Predictor(ws, version)
        pairs = [(im.truth, predictor.predict(model_channels(im.pixels)).labels) for im in validation]
        s = score_dataset(pairs)
        return {"msa": round(s.msa, 4), "ap50": round(s.ap[0.5], 4), "f1": round(s.f1, 4)}

    def parent_labels() -> dict[str, np.ndarray]:
        """The parent's masks of the training images (for "agreed" and "model"), cached."""
        cache = args.out / "parent_labels.npz"
        if not cache.is_file():
            predictor = Predictor(source, PRETRAINED)
            masks = {im.id: predictor.predict(model_channels(im.pixels)).labels for im in rest}
            buf = io.BytesIO()
            np.savez_compressed(buf, **masks)
            atomic_write_bytes(cache, buf.getvalue())
        with np.load(cache) as saved:
            return {k: saved[k] for k in saved.files}

    def others(setting: Setting, chosen: set[str]) -> list[Case]:
        """The uncorrected training images with the labels the setting gives them."""
        cases = [Case(im.id, im.pixels, study.pseudo[im.id], "pseudo") for im in rest if im.id not in chosen]
        if setting.pseudo == "teacher":
            return cases
        model = parent_labels()
        if setting.pseudo == "model":
            return [replace(c, labels=model[c.id]) for c in cases]
        return [mask_disagreement(c, model[c.id]) for c in cases]

    rows_dir = args.out / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    refs = rows_dir / "references.json"
    if not refs.is_file():
        pseudo = score_dataset([(im.truth, study.pseudo[im.id]) for im in validation])
        ref = {"pseudo-labels": {"msa": round(pseudo.msa, 4)}, "parent": score(source, PRETRAINED)}
        atomic_write_text(refs, json.dumps(ref, indent=1))
    references = json.loads(refs.read_text())
    print(f"validation: {len(validation)} pool images; {references}", flush=True)

    for seed in (int(s) for s in args.seeds.split(",")):
        for picks in args.picks.split(","):
            ids = picked(picks, seed)
            chosen = set(ids)
            for name in args.settings.split(","):
                setting = SETTINGS[name]
                key = f"{name}_{picks}_s{seed}"
                if (rows_dir / f"{key}.json").is_file():
                    continue
                human = [Case(im.id, im.pixels, im.truth, "human") for im in rest if im.id in chosen]
                pseudo = others(setting, chosen)
                mixed = setting.with_pseudo and picks != "full"
                cases = oversample_human(human + pseudo, setting.share) if mixed else human
                labels = "" if setting.pseudo == "teacher" else f"-{setting.pseudo}"
                mix = f"share{setting.share:g}{labels}" if mixed else "alone"
                ws_name = f"{picks}-s{seed if picks == 'random' else 0}-{mix}"
                ws = workspace(ws_name, cases)
                started = time.perf_counter()
                version = f"{name}-s{seed}"
                if version not in {m.version for m in list_models(ws)}:
                    import torch

                    torch.manual_seed(seed)
                    per_epoch = min(50, setting.iterations)
                    budget = TrainBudget(
                        epochs=setting.iterations // per_epoch, iterations_per_epoch=per_epoch,
                        initial_lr=setting.lr, warmup_iterations=setting.warmup,
                    )  # fmt: skip
                    train(ws, version, budget, {"human": len(human), "pseudo": len(pseudo) if mixed else 0},
                          parent=PRETRAINED)  # fmt: skip
                info = next(m for m in list_models(ws) if m.version == version)
                row = {"setting": name, **asdict(setting), "picks": picks, "k": len(ids), "seed": seed,
                       "iterations_run": info.iterations_run,
                       "training_minutes": round(info.training_seconds / 60, 2),
                       **score(ws, version)}  # fmt: skip
                shutil.rmtree(ws.models / version)
                atomic_write_text(rows_dir / f"{key}.json", json.dumps(row, indent=1))
                print(f"{key}: mSA {row['msa']:.3f} ({time.perf_counter() - started:.0f} s)", flush=True)

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*_s*.json"))]
    parent, labels = references["parent"]["msa"], references["pseudo-labels"]["msa"]
    print(f"\nparent {parent:.3f}, pseudo-labels {labels:.3f} on {len(validation)} validation pool images\n")
    print("| setting | picks | k | seed | iterations | lr | warm-up | mix | mSA | AP50 | F1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["picks"], r["setting"], r["seed"])):
        mixed = r["with_pseudo"] and r["picks"] != "full"
        mix = f"share {r['share']:g}, {r.get('pseudo', 'teacher')}" if mixed else "alone"
        print(f"| {r['setting']} | {r['picks']} | {r['k']} | {r['seed']} | {r['iterations_run']} | "
              f"{r['lr']:g} | {r['warmup']} | {mix} | {r['msa']:.3f} | {r['ap50']:.3f} | "
              f"{r['f1']:.3f} |")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = {"parent": f"{args.study}/{PRETRAINED}", "validation_images": len(validation),
           "references": references, "rows": rows}  # fmt: skip
    atomic_write_text(RESULTS / "finetune_settings.json", json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
