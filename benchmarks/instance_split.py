"""Instances from nnU-Net's class maps: one per interior component, or split at distance peaks.

nnU-Net predicts background, cell interior and a one-pixel cell border, and
``activeseg.nnunet.classes.classes_to_instances`` turns that map into cells. Where cells touch, a
model trained on pseudo-labels often misses the border, so one interior component holds several
cells. This scores the same predicted probabilities both ways, side by side:

  components    one instance per interior component (activeseg before 2026-12-07)
  split h=D     one per peak of the interior's distance map at least D px deep

on the models the studies keep: the pseudo models of ``benchmarks/study_recipe`` (256x256 fields)
and ``benchmarks/large_fields`` (520x696 fields), and each rounds arm's last round. The depth is
chosen on *training* images only (the first pool images of each split, scored with their ground
truth; the pseudo models learnt from their pseudo-labels, never from that truth), then the held-out
images compare components with the chosen depth, beside the pseudo-labels. The ground truth's own
round trip (instances -> classes -> instances) bounds what a perfect class map gives.

    python benchmarks/instance_split.py

Predictions are cached in benchmarks/out/instance_split/ (an interrupted run continues);
writes benchmarks/results/instance_split.json.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from activeseg.datasets import Sample, read_dataset
from activeseg.fsutil import atomic_write_text
from activeseg.imageio import model_channels, read_image, read_label_image
from activeseg.labellers import build_pseudolabeler
from activeseg.metrics import score_dataset
from activeseg.nnunet.classes import SPLIT_DEPTH, classes_to_instances, instances_to_classes
from activeseg.nnunet.engine import Predictor
from activeseg.nnunet.workspace import Workspace
from orchestrator.study.split import split_pool_test

HERE = Path(__file__).resolve().parent
CACHE = HERE / "out" / "instance_split"
#: study folder -> training images to tune on (the first of its pool, in split order)
STUDIES = {"study_recipe": 60, "large_fields": 36}
DEPTHS = (0.5, 1.0, 2.0, 3.0)
MIN_AREA = Predictor.MIN_AREA


def splits(study: Path) -> tuple[list[Sample], list[Sample]]:
    """(pool, held-out) exactly as the study split its data."""
    cfg = json.loads((study / "study.json").read_text())
    data = Path(cfg["data"])
    if not data.is_dir():  # a committed study's data under another root: the folder by name
        data = HERE / "out" / data.name
    return split_pool_test(read_dataset(data), cfg["test_fraction"], cfg["split_seed"])


def probabilities(study: Path, version: str, samples: list[Sample], what: str) -> dict[str, np.ndarray]:
    """Softmax maps of ``version`` on ``samples`` (float16), predicted once and cached."""
    path = CACHE / f"{study.name}_{version}_{what}.npz"
    if path.is_file():
        cached = np.load(path)
        if all(s.id in cached.files for s in samples):
            return {s.id: cached[s.id] for s in samples}
    predictor = Predictor(Workspace.open(study / "nnunet"), version)
    probs = {}
    for s in tqdm(samples, desc=f"{study.name} {version} {what}", unit="image"):
        probs[s.id] = predictor.predict(model_channels(read_image(s.image))).probabilities.astype(np.float16)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **probs)
    tmp.replace(path)
    return probs


Decode = Callable[[np.ndarray], np.ndarray]


def decoders() -> dict[str, float | None]:
    return {"components": None, **{f"split h={d:g}": d for d in DEPTHS}}


def score(samples: list[Sample], predict: Callable[[Sample], np.ndarray]) -> dict[str, float]:
    row = score_dataset((read_label_image(s.label), predict(s)) for s in samples).as_row()
    return {k: round(float(row[k]), 4) for k in ("mSA", "AP50", "F1")}


def from_probs(probs: dict[str, np.ndarray], depth: float | None) -> Callable[[Sample], np.ndarray]:
    def predict(s: Sample) -> np.ndarray:
        classes = probs[s.id].astype(np.float32).argmax(axis=0).astype(np.uint8)
        return classes_to_instances(classes, MIN_AREA, depth)

    return predict


def pseudo_labels(samples: list[Sample]) -> dict[str, float]:
    labeller = build_pseudolabeler("classical")
    return score(samples, lambda s: labeller.segment(read_image(s.image)).labels)


def round_trip(samples: list[Sample], depth: float | None) -> float:
    """mSA of ground truth -> classes -> instances: what a perfect class map would give."""

    def back(s: Sample) -> np.ndarray:
        return classes_to_instances(instances_to_classes(read_label_image(s.label)), 1, depth)

    return score(samples, back)["mSA"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "instance_split.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"default_depth": SPLIT_DEPTH, "min_area": MIN_AREA}
    result |= {"tuning": {}, "held_out": {}}
    for name, n_tune in STUDIES.items():
        study = HERE / name
        pool, test = splits(study)
        tune = pool[:n_tune]
        rows: dict[str, Any] = {"images": len(tune), "pseudo-labels": pseudo_labels(tune)}
        probs = probabilities(study, "pseudo-r0", tune, "train")
        for label, depth in decoders().items():
            rows[label] = {**score(tune, from_probs(probs, depth)), "gt_round_trip": round_trip(tune, depth)}
        result["tuning"][name] = rows
        held: dict[str, Any] = {"images": len(test), "pseudo-labels": pseudo_labels(test)}
        models = (study / "nnunet" / "models").iterdir()
        for version in sorted(p.name for p in models if (p / "model.json").is_file()):
            probs = probabilities(study, version, test, "test")
            both = (("components", None), (f"split h={SPLIT_DEPTH:g}", SPLIT_DEPTH))
            held[version] = {label: score(test, from_probs(probs, depth)) for label, depth in both}
        result["held_out"][name] = held
        atomic_write_text(args.out, json.dumps(result, indent=1))
    print_tables(result)
    return 0


def print_tables(result: dict[str, Any]) -> None:
    for name, rows in result["tuning"].items():
        print(f"\n{name}: {rows['images']} training images (tuning)\n")
        print("| decoding | mSA | AP50 | F1 | ground truth round trip |\n|---|---|---|---|---|")
        p = rows["pseudo-labels"]
        print(f"| pseudo-labels | {p['mSA']:.3f} | {p['AP50']:.3f} | {p['F1']:.3f} | |")
        for label in decoders():
            r = rows[label]
            scores = f"{r['mSA']:.3f} | {r['AP50']:.3f} | {r['F1']:.3f}"
            print(f"| {label} | {scores} | {r['gt_round_trip']:.4f} |")
    for name, held in result["held_out"].items():
        p = held["pseudo-labels"]
        print(f"\n{name}: {held['images']} held-out images; pseudo-labels mSA {p['mSA']:.3f}\n")
        print("| model | components mSA | split mSA | components AP50 | split AP50 |\n|---|---|---|---|---|")
        for version, r in held.items():
            if version in ("images", "pseudo-labels"):
                continue
            c, s = r["components"], r[f"split h={result['default_depth']:g}"]
            print(f"| {version} | {c['mSA']:.3f} | {s['mSA']:.3f} | {c['AP50']:.3f} | {s['AP50']:.3f} |")


if __name__ == "__main__":
    raise SystemExit(main())
