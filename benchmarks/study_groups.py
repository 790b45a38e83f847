"""The study on DSB2018's other groups: colour (H&E-like tissue) and brightfield, where the teacher is weak.

For each group, ``activeseg study`` on that folder of ../shared/data (split by seed into pool and
held-out test) with the default strategy and both random baselines at one budget, the fully
supervised references, and the teacher arms side by side:

  teacher       the loop as it is: the default strategy's k images corrected, fine-tuned from the
                pseudo model together with the other pool images' pseudo-labels
  poor-teacher  the same k images, trained on alone from the pseudo model: what ``finetune`` does
                once the pseudo-labels score below ``POOR_TEACHER_MSA`` on the corrections
  no-teacher    k images picked by typiclust on LiteMedSAM embeddings, trained on alone from scratch
                at the full arm's budget: a project without pseudo-labels

It also scores the teacher (the classical pseudo-labels) on each seed's corrections, as the loop's
serving gate does, and says which arm the loop would have taken. The issue's targets, where
they apply, are checked against the mean over the seeds run.

    python benchmarks/study_groups.py --group colour --seeds 0
    python benchmarks/study_groups.py --group brightfield --seeds 0,1,2

Writes benchmarks/results/study_<group>.json (study.json's schema, plus ``arms``, ``teacher_on_
corrections`` and ``targets``). Resumable: the study folder (benchmarks/study_<group>) keeps every
finished run, and a later call adds seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from activeseg.datasets import shared_data
from activeseg.fsutil import atomic_write_text
from activeseg.imageio import read_image, read_label_image
from activeseg.metrics import score_dataset
from orchestrator.cli import main as activeseg
from orchestrator.rank.strategies import DEFAULT_STRATEGY
from orchestrator.study.runner import NO_TEACHER, POOR_TEACHER
from orchestrator.train.teacher import POOR_TEACHER_MSA

HERE = Path(__file__).resolve().parent
#: group -> (folder in ../shared/data, budget, held-out fraction)
GROUPS = {
    "colour": ("dsb2018_stage1_train_color", "5%", 0.2),
    # 16 images: 4 held out, and the 2 corrected images
    "brightfield": ("dsb2018_stage1_train_brightfield", "2", 0.25),
}
ARMS = {"teacher": DEFAULT_STRATEGY, "poor-teacher": POOR_TEACHER, "no-teacher": NO_TEACHER,
        "random": "random", "instance-random": "instance-random"}  # fmt: skip


def teacher_on_corrections(data: Path, runs: Path) -> dict[str, float]:
    """The classical pseudo-labels' mSA on each seed's corrections (the default strategy's picks),
    as the loop's serving gate scores them before the fine-tune decides on the teacher."""
    from activeseg.labellers import build_pseudolabeler

    labeller = build_pseudolabeler("classical")
    found = {}
    for path in sorted(runs.glob(f"{DEFAULT_STRATEGY}_k*_s*.json")):
        run = json.loads(path.read_text())
        pairs = [
            (
                read_label_image(data / "labels" / f"{i}.png"),
                labeller.segment(read_image(data / "images" / f"{i}.png")).labels,
            )
            for i in run["picked"]
        ]
        found[str(run["seed"])] = round(score_dataset(pairs).msa, 4)
    return found


def summary(results: dict[str, Any], teacher: dict[str, float]) -> dict[str, Any]:
    heldout = results["heldout"]
    arms = {name: next(iter(heldout[arm].values())) for name, arm in ARMS.items() if arm in heldout}
    full, labels = results["full_msa"], results["pseudo_labels_msa"]
    loop = "poor-teacher" if teacher and statistics.mean(teacher.values()) < POOR_TEACHER_MSA else "teacher"
    targets: dict[str, Any] = {"loop_arm": loop}
    if full:
        targets |= {f"{name}_of_full": round(msa / full, 3) for name, msa in arms.items()}
    if labels is not None and loop in arms:
        targets["loop_arm_over_pseudo_labels"] = round(arms[loop] - labels, 4)
    return {**results, "arms": arms, "teacher_on_corrections": teacher, "targets": targets}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", choices=sorted(GROUPS), required=True)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    folder, budget, test_fraction = GROUPS[args.group]
    data = shared_data() / folder
    out = HERE / f"study_{args.group}"
    code = activeseg([
        "study", "--data", str(data), "--out", str(out), "--shift", "none", "--strategies", DEFAULT_STRATEGY,
        "--budgets", budget, "--headline-budget", budget, "--seeds", args.seeds, "--teacher-arms",
        "--test-fraction", str(test_fraction),
    ])  # fmt: skip
    if code:
        return code
    result = summary(
        json.loads((out / "results.json").read_text()), teacher_on_corrections(data, out / "runs")
    )
    print(
        f"\n{args.group}: held-out mSA, pseudo-labels {result['pseudo_labels_msa']}, "
        f"full supervision {result['full_msa']}"
    )
    for name, msa in result["arms"].items():
        print(f"  {name:16s} {msa:.3f}")
    print(f"teacher on the corrections: {result['teacher_on_corrections']}; targets: {result['targets']}")
    atomic_write_text(HERE / "results" / f"study_{args.group}.json", json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
