"""The study's outputs from its run records: a CSV (one row per run), a markdown table (mean and
spread over seeds per arm and budget) with the headline ratio, and a plot of mSA against the share
of the pool that was annotated."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.fsutil import atomic_path, atomic_write_text
from orchestrator.study.runner import (
    FULL_FROM_PSEUDO,
    FULL_FROM_SCRATCH,
    PSEUDO_LABELS,
    PSEUDO_MODEL,
    PSEUDO_ONLY,
    SELECTION_ARMS,
)

METRICS = ("mSA", "AP50", "F1")
CSV_COLUMNS = ("arm", "k", "pool", "percent", "seed", "mSA", "AP50", "AP75", "F1", "precision", "recall",
               "images", "cells", "cells_changed", "iterations", "seconds", "device", "picked")  # fmt: skip
ARM_ORDER = (PSEUDO_LABELS, PSEUDO_MODEL, PSEUDO_ONLY, *SELECTION_ARMS, FULL_FROM_PSEUDO, FULL_FROM_SCRATCH)


@dataclass(frozen=True)
class Cell:
    """One arm at one k: its metrics over seeds."""

    arm: str
    k: int
    pool: int
    values: dict[str, list[float]]  # metric -> one value per seed
    #: a selection arm's correction cost per seed: "cells" in its images, "cells_changed" of them
    cost: dict[str, list[float]] = field(default_factory=dict)

    @property
    def percent(self) -> float:
        return 100.0 * self.k / self.pool if self.pool else 0.0

    @property
    def n(self) -> int:
        return len(self.values["mSA"])

    @property
    def seeded(self) -> bool:
        """False for the references that no seed changes (pseudo-labels, the shared pseudo model)."""
        return self.arm not in (PSEUDO_LABELS, PSEUDO_MODEL)

    def mean(self, metric: str = "mSA") -> float:
        return float(np.mean(self.values[metric]))

    def std(self, metric: str = "mSA") -> float:
        vals = self.values[metric]
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")


def summarise(records: Sequence[dict[str, Any]]) -> list[Cell]:
    """Records grouped by (arm, k), in the table's order."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["arm"], int(rec["k"])), []).append(rec)
    costs = ("cells", "cells_changed")
    cells = [
        Cell(
            arm, k, int(recs[0]["pool"]), {m: [float(r[m]) for r in recs] for m in METRICS},
            {c: [float(r[c]) for r in recs] for c in costs if all(c in r for r in recs)},
        )
        for (arm, k), recs in groups.items()
    ]  # fmt: skip
    order = {arm: i for i, arm in enumerate(ARM_ORDER)}
    return sorted(cells, key=lambda c: (c.k if c.arm in SELECTION_ARMS else -1, order.get(c.arm, 99)))


def _find(cells: Sequence[Cell], arm: str, k: int | None = None) -> Cell | None:
    return next((c for c in cells if c.arm == arm and (k is None or c.k == k)), None)


def headline(cells: Sequence[Cell], k: int, strategy: str) -> str:
    """mSA(ours at k) / mSA(full supervision), and ours minus each random arm at the same k."""
    ours = _find(cells, "ours", k)
    if ours is None:
        return f"no 'ours' runs at k = {k} yet"
    parts = [f"**Ours ({strategy}) at {ours.percent:.0f} % annotated ({k} images): mSA {ours.mean():.3f}**"]
    for full in (FULL_FROM_SCRATCH, FULL_FROM_PSEUDO):
        ref = _find(cells, full)
        if ref is not None:
            ratio = f"{ours.mean() / ref.mean():.0%}" if ref.mean() > 0 else "n/a"
            parts.append(f"{ratio} of {full} ({ref.mean():.3f})")
    for arm in ("random", "instance-random"):
        other = _find(cells, arm, k)
        if other is not None:
            parts.append(f"{ours.mean() - other.mean():+.3f} vs {arm} ({other.mean():.3f})")
    seeds = min(c.n for c in cells if c.seeded)
    return "; ".join(parts) + f" (mean of {seeds} seed{'s' if seeds != 1 else ''})."


def _fmt(cell: Cell, metric: str) -> str:
    sd = cell.std(metric)
    return f"{cell.mean(metric):.3f}" + ("" if math.isnan(sd) else f" ± {sd:.3f}")


def markdown_table(cells: Sequence[Cell]) -> str:
    lines = [
        "| arm | annotated images | cells in them (changed) | seeds | " + " | ".join(METRICS) + " |",
        "|---|---|---|---|" + "---|" * len(METRICS),
    ]
    for c in cells:
        annotated = f"{c.k} ({c.percent:.0f} %)" if c.k else "0"
        cost = (
            f"{np.mean(c.cost['cells']):.0f} ({np.mean(c.cost['cells_changed']):.0f})"
            if {"cells", "cells_changed"} <= set(c.cost)
            else "-"
        )
        lines.append(
            f"| {c.arm} | {annotated} | {cost} | {c.n if c.seeded else 'n/a'} | "
            + " | ".join(_fmt(c, m) for m in METRICS)
            + " |"
        )
    return "\n".join(lines)


def paired_differences(records: Sequence[dict[str, Any]], arm: str, baseline: str, k: int) -> list[float]:
    """mSA of ``arm`` minus ``baseline`` at ``k``, one per seed both ran (same pool, same pseudo
    model, so the difference pairs away what the seeds share)."""
    by_seed = {(r["arm"], int(r["k"]), r["seed"]): float(r["mSA"]) for r in records}
    seeds = sorted({s for a, kk, s in by_seed if a == arm and kk == k and (baseline, k, s) in by_seed})
    return [by_seed[(arm, k, s)] - by_seed[(baseline, k, s)] for s in seeds]


def paired_table(records: Sequence[dict[str, Any]]) -> str:
    """Each selection arm against both random baselines, paired by seed: mean ± standard deviation
    of the differences, and whether the mean is within noise (within two standard errors of 0)."""
    lines = ["| k | arm | vs random | vs instance-random |", "|---|---|---|---|"]
    ks = sorted({int(r["k"]) for r in records if r["arm"] in SELECTION_ARMS})
    for k in ks:
        for arm in (a for a in SELECTION_ARMS if a not in ("random", "instance-random")):
            parts = []
            for baseline in ("random", "instance-random"):
                diffs = paired_differences(records, arm, baseline, k)
                if not diffs:
                    parts.append("-")
                    continue
                mean = float(np.mean(diffs))
                if len(diffs) < 2:
                    parts.append(f"{mean:+.3f} (1 seed: no spread)")
                    continue
                sd = float(np.std(diffs, ddof=1))
                noise = abs(mean) <= 2 * sd / math.sqrt(len(diffs))
                parts.append(
                    f"{mean:+.3f} ± {sd:.3f} ({len(diffs)} seeds{', within noise' if noise else ''})"
                )
            lines.append(f"| {k} | {arm} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def write_csv(records: Sequence[dict[str, Any]], out: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for rec in sorted(
        records,
        key=lambda r: (ARM_ORDER.index(r["arm"]) if r["arm"] in ARM_ORDER else 99, r["k"], r["seed"] or 0),
    ):
        row = dict(rec, percent=round(100.0 * rec["k"] / rec["pool"], 2) if rec["pool"] else 0.0)
        row["picked"] = " ".join(rec.get("picked") or [])
        writer.writerow(row)
    atomic_write_text(out, buf.getvalue())
    return out


def plot(cells: Sequence[Cell], out: Path, strategy: str) -> Path:
    """mSA against % annotated: the selection arms with their seed spread, references as lines."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(matplotlib.rcParamsDefault):  # nnU-Net restyles matplotlib globally
        fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for arm, marker in zip(SELECTION_ARMS, ("o", "s", "^"), strict=True):
            pts = sorted((c for c in cells if c.arm == arm), key=lambda c: c.k)
            if not pts:
                continue
            x = [c.percent for c in pts]
            label = f"ours ({strategy})" if arm == "ours" else arm
            line = ax.errorbar(x, [c.mean() for c in pts], yerr=[0 if c.n < 2 else c.std() for c in pts],
                               marker=marker, capsize=3, label=label)  # fmt: skip
            for c in pts:  # every seed, so the spread is visible and not only summarised
                ax.scatter([c.percent] * c.n, c.values["mSA"], s=10, alpha=0.35, color=line[0].get_color())
        styles = {
            PSEUDO_LABELS: ":",
            PSEUDO_MODEL: "-.",
            PSEUDO_ONLY: "--",
            FULL_FROM_PSEUDO: "-",
            FULL_FROM_SCRATCH: "-",
        }
        colours = dict.fromkeys((PSEUDO_LABELS, PSEUDO_MODEL, PSEUDO_ONLY), "grey")
        colours |= {FULL_FROM_PSEUDO: "black", FULL_FROM_SCRATCH: "tab:red"}
        for arm, style in styles.items():
            ref = _find(cells, arm)
            if ref is None:
                continue
            ax.axhline(ref.mean(), linestyle=style, color=colours[arm], label=f"{arm} ({ref.mean():.3f})")
            if ref.n > 1:
                ax.axhspan(min(ref.values["mSA"]), max(ref.values["mSA"]), color=colours[arm], alpha=0.08)
        ax.set_xlabel("pool images annotated (%)")
        ax.set_ylabel("mSA on held-out test images")
        ax.set_title("Label efficiency (mean, bars = std over seeds, dots = seeds)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    return out


def results_json(
    records: Sequence[dict[str, Any]], settings: dict[str, Any], strategy: str
) -> dict[str, Any]:
    """``benchmarks/results/study.json``'s schema: mean held-out mSA per arm and % annotated, arms
    by registry name ("ours" is ``strategy``), with the pseudo-label and full-supervision references."""
    cells = summarise(records)
    names = {"ours": strategy, PSEUDO_ONLY: "pseudo-only"}
    heldout: dict[str, dict[str, float]] = {}
    for c in cells:
        if c.arm in SELECTION_ARMS or c.arm == PSEUDO_ONLY:
            heldout.setdefault(names.get(c.arm, c.arm), {})[f"{c.percent:g}"] = round(c.mean(), 4)
    references = {arm: _find(cells, arm) for arm in (PSEUDO_LABELS, FULL_FROM_SCRATCH, FULL_FROM_PSEUDO)}
    full = references[FULL_FROM_SCRATCH] or references[FULL_FROM_PSEUDO]
    return {
        "data": settings.get("data") or settings.get("train"),
        "pool": int(records[0]["pool"]),
        "test": int(records[0]["images"]),
        "seeds": sorted({int(r["seed"]) for r in records if r["seed"] is not None}),
        "default_strategy": strategy,
        "pseudo_labels_msa": None
        if references[PSEUDO_LABELS] is None
        else round(references[PSEUDO_LABELS].mean(), 4),
        "full_msa": None if full is None else round(full.mean(), 4),
        "heldout": heldout,
    }


def write_report(records: Sequence[dict[str, Any]], out_dir: Path, settings: dict[str, Any],
                 headline_k: int, strategy: str) -> str:  # fmt: skip
    """results.csv, results.md, results.json and msa_vs_annotated.png in ``out_dir``; returns the markdown."""
    cells = summarise(records)
    write_csv(records, out_dir / "results.csv")
    atomic_write_text(
        out_dir / "results.json", json.dumps(results_json(records, settings, strategy), indent=1) + "\n"
    )
    if any(c.arm in SELECTION_ARMS for c in cells):
        plot(cells, out_dir / "msa_vs_annotated.png", strategy)
    budget = ", ".join(f"{k}: {v}" for k, v in settings.items() if k not in ("train", "test"))
    sections = [headline(cells, headline_k, strategy), markdown_table(cells)]
    if any(c.arm in SELECTION_ARMS for c in cells):
        sections += ["Paired by seed, mSA differences:", paired_table(records)]
    text = "\n\n".join([*sections, f"Settings: {budget}."])
    atomic_write_text(out_dir / "results.md", text + "\n")
    return text
