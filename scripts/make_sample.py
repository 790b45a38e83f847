"""Rebuild the small CC0 sample bundled in ``activeseg/sample_data/`` from the full DSB2018 folder.

The sample lets the demo and the tests run where ``../shared/data`` is absent. It is a seeded,
size-stratified pick of 24 fluorescence images (with their labels) that avoids the four training
fields that reappear in the DSB stage-1 test set. Run from the repository root:

    python scripts/make_sample.py ../shared/data/dsb2018_stage1_train_fluo
"""

from __future__ import annotations

import csv
import random
import shutil
import sys
from pathlib import Path

PICK = {("256", "256"): 14, ("360", "360"): 4, ("696", "520"): 4, ("640", "512"): 2}
SEED = 2018


def main(src: Path, dst: Path = Path("activeseg/sample_data/dsb2018_fluo24")) -> None:
    rows = list(csv.DictReader((src / "manifest.csv").open()))
    overlap_file = src.parent / "dsb2018_stage1_test" / "overlap_with_dsb2018_stage1_train.csv"
    excluded = {r["ref_id"] for r in csv.DictReader(overlap_file.open())} if overlap_file.exists() else set()
    rng = random.Random(SEED)
    chosen = []
    for size, n in PICK.items():
        group = sorted(
            (r for r in rows if (r["width"], r["height"]) == size and r["id"] not in excluded),
            key=lambda r: r["id"],
        )
        chosen += rng.sample(group, n)
    chosen.sort(key=lambda r: r["id"])
    for sub in ("images", "labels"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for r in chosen:
        shutil.copyfile(src / r["image"], dst / r["image"])
        shutil.copyfile(src / r["label"], dst / r["label"])
    with (dst / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(chosen)
    print(f"wrote {len(chosen)} images to {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
