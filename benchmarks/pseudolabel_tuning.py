"""What closes LiteMedSAM's gap to the classical pseudo-labels, tuned on DSB2018 *training* images.

LiteMedSAM sees the whole image shrunk to 256 px and draws each cell slightly too large
(benchmarks/README.md). Each variant here is measured on every ``--every``-th of the 541 DSB2018
stage-1 fluorescence training images (never on the test images `pseudolabels.py` reports):

  tile       the image as one 256 px input (LiteMedSAM's size), or cut into tiles of that size
             (cells at full resolution; each tile embedded once)
  threshold  the logit above which a pixel is in SAM's mask (SAM's own: 0)
  fallback   per cell, SAM's mask only where SAM's predicted IoU reaches it, else the classical one
             (0: SAM everywhere)
  refine     SAM redraws only the cells whose classical confidence (contrast x solidity) is below
             it, the classical mask stays for the others (none: every cell)
  prompt     what SAM is asked per cell: its box (``box``); box and a point inside the cell
             (``box+point``); the best of SAM's three masks by predicted IoU or by stability
             (``multimask-iou``, ``multimask-stability``); the box's logits averaged with N
             jittered copies' (``jitterN``)

SAM runs once per tile and prompt, on the cells below the largest ``--refine`` (every cell when
it includes none); thresholds, fallbacks and refine levels reuse its logits. Prints a table,
writes benchmarks/results/pseudolabel_tuning.json (``--out`` for another file).

    python benchmarks/pseudolabel_tuning.py              # every 10th training image
    python benchmarks/pseudolabel_tuning.py --every 25 --tiles none,256
    python benchmarks/pseudolabel_tuning.py --tiles 256 --refine 0.3 \
        --prompts box,box+point,multimask-iou,multimask-stability,jitter2 --out prompts.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_stage1_train_fluo"
RESULTS = Path(__file__).resolve().parent / "results" / "pseudolabel_tuning.json"
THRESHOLDS = (-2.0, -1.0, 0.0, 1.0)
FALLBACKS = (0.0, 0.8)
REFINE_BELOW = (None, 0.3, 0.5, 0.7)


def prompt_settings(prompt: str) -> dict[str, Any]:
    """``SamBoxLabeler`` options of a ``--prompts`` name."""
    if prompt == "box":
        return {}
    if prompt == "box+point":
        return {"point_prompt": True}
    if prompt.startswith("multimask-"):
        return {"multimask": prompt.removeprefix("multimask-")}
    if prompt.startswith("jitter") and prompt.removeprefix("jitter").isdigit():
        return {"jitter": int(prompt.removeprefix("jitter"))}
    raise SystemExit(
        f"unknown prompt {prompt!r}: box, box+point, multimask-iou, multimask-stability or jitterN"
    )


def measure(
    root: Path, every: int, tiles: list[int | None], prompts: list[str], refine: list[float | None]
) -> list[dict[str, Any]]:
    from activeseg.datasets import read_dataset
    from activeseg.imageio import read_image, read_label_image
    from activeseg.labellers import build_pseudolabeler
    from activeseg.labellers.sam import SamBoxLabeler
    from activeseg.labellers.sam_models import load_litemedsam
    from activeseg.metrics import score_dataset

    samples = read_dataset(root)[::every]
    images = [(read_image(s.image), read_label_image(s.label)) for s in samples]
    classical = build_pseudolabeler("classical")
    rows = [{"variant": "classical", "tile": "-", "threshold": None, "fallback": None, "images": len(images),
             **_scores(score_dataset((gt, classical.segment(im).labels) for im, gt in images))}]  # fmt: skip
    sam = load_litemedsam()
    asked = None if None in refine else max(refine)  # type: ignore[type-var]
    speed_column = "images/min (SAM, every cell)" if asked is None else f"images/min (SAM below {asked})"
    for tile, prompt in itertools.product(tiles, prompts):
        lab = SamBoxLabeler(lambda: sam, weights_id="litemedsam", tile_size=tile, tile_overlap=64,
                            **prompt_settings(prompt))  # fmt: skip
        lab.load()
        started = time.perf_counter()
        desc = f"LiteMedSAM, tile {tile}, {prompt}"
        refined = [lab.refine(im, asked) for im, _ in tqdm(images, desc=desc, unit="image")]
        per_min = 60 * len(images) / (time.perf_counter() - started)
        for threshold, min_iou, below in itertools.product(THRESHOLDS, FALLBACKS, refine):
            pairs = [
                (gt, lab.labels(r, threshold, min_iou, below).labels)
                for (_, gt), r in zip(images, refined, strict=True)
            ]
            rows.append({"variant": "litemedsam", "tile": tile or "none", "prompt": prompt,
                         "threshold": threshold, "fallback": min_iou, "refine": below,
                         "images": len(images), **_scores(score_dataset(pairs)),
                         speed_column: round(per_min, 1)})  # fmt: skip
    return rows


def _scores(scores: Any) -> dict[str, float]:
    return {"mSA": round(scores.msa, 4), "AP50": round(scores.ap[0.5], 4), "F1": round(scores.f1, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=ROOT, help="DSB2018 stage-1 fluorescence training folder"
    )
    parser.add_argument("--every", type=int, default=10, help="every N-th training image (default: 10)")
    parser.add_argument("--tiles", default="none,256", help="tile sizes, 'none' for the whole image")
    parser.add_argument("--prompts", default="box", help="prompt variants (see above; default: box)")
    parser.add_argument(
        "--refine", default="none,0.3,0.5,0.7", help="classical-confidence cuts, 'none' for every cell"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help=f"results file; a bare name goes to results/ (default: {RESULTS.name})",
    )
    args = parser.parse_args()
    tiles = [None if t == "none" else int(t) for t in args.tiles.split(",")]
    refine = [None if r == "none" else float(r) for r in args.refine.split(",")]
    prompts = args.prompts.split(",")
    for prompt in prompts:
        prompt_settings(prompt)  # a bad name stops the run before SAM loads
    rows = measure(args.data, args.every, tiles, prompts, refine)
    best = max((r for r in rows if r["variant"] != "classical"), key=lambda r: r["mSA"])
    keys = list(rows[-1])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        if row["variant"] == "classical" or (row["fallback"], row["refine"]) == (
            best["fallback"],
            best["refine"],
        ):
            print("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
    print(f"\nbest: tile {best['tile']}, prompt {best['prompt']}, threshold {best['threshold']}, "
          f"fallback {best['fallback']}, refine below {best['refine']}: "
          f"mSA {best['mSA']} against classical {rows[0]['mSA']}")  # fmt: skip
    out = args.out if args.out.is_absolute() or args.out.parent != Path() else RESULTS.parent / args.out
    out.parent.mkdir(exist_ok=True)
    result = {"data": args.data.name, "every": args.every, "best": best, "rows": rows}
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
