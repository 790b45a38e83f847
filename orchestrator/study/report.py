"""The study's outputs from its run records: a CSV (one row per run), a markdown table (mean and
spread over seeds per arm and budget) with the headline, paired differences to both random
baselines, the winning strategy, a plot of mSA against the share of the pool annotated, and, where
the study ran ``--scaled-finetune``, each scaled arm paired with its fixed-budget self."""

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
    BASELINES,
    FULL_FROM_PSEUDO,
    FULL_FROM_SCRATCH,
    PSEUDO_LABELS,
    PSEUDO_MODEL,
    PSEUDO_ONLY,
    TEACHER_ARMS,
    base_arm,
    is_rounds,
    is_scaled,
    is_selection,
    scaled_reference,
)

METRICS = ("mSA", "AP50", "F1")
#: the other evaluation sets of a record (runner.Study._evaluate), by their column title
OTHER_SETS = {"unannotated": "mSA unannotated pool", "shift": "mSA shifted"}
CSV_COLUMNS = ("arm", "k", "pool", "percent", "seed", "mSA", "AP50", "AP75", "F1", "precision", "recall",
               "images", "unannotated_mSA", "unannotated_images", "shift_mSA", "shift_images", "cells",
               "cells_changed", "iterations", "seconds", "device", "picked")  # fmt: skip
ARM_ORDER = (PSEUDO_LABELS, PSEUDO_MODEL, PSEUDO_ONLY, FULL_FROM_PSEUDO, FULL_FROM_SCRATCH)
#: the budgets (% of the pool) whose mean decides the winning strategy, where they were run
WINNER_PERCENTS = (2.0, 5.0, 10.0)


def _arm_order(arm: str) -> tuple[int, str, bool]:
    """References in ARM_ORDER, learning-curve points after them; strategies by name, baselines
    last, each arm's scaled fine-tune right after it."""
    if arm in ARM_ORDER:
        return ARM_ORDER.index(arm), "", False
    if not is_selection(arm):
        return len(ARM_ORDER), arm, False
    base = base_arm(arm)
    return len(ARM_ORDER) + 1 + (BASELINES.index(base) + 1 if base in BASELINES else 0), base, is_scaled(arm)


@dataclass(frozen=True)
class Cell:
    """One arm at one k: its metrics over seeds."""

    arm: str
    k: int
    pool: int
    values: dict[str, list[float]]  # metric (and OTHER_SETS' mSA by set name) -> one value per seed
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
            arm, k, int(recs[0]["pool"]),
            {m: [float(r[m]) for r in recs] for m in METRICS}
            | {s: [float(r[s]["mSA"]) for r in recs] for s in OTHER_SETS
               if all(s in r for r in recs) and not (s == "unannotated" and trained_on_pool(arm))},
            {c: [float(r[c]) for r in recs] for c in costs if all(c in r for r in recs)},
        )
        for (arm, k), recs in groups.items()
    ]  # fmt: skip
    return sorted(cells, key=lambda c: (c.k if is_selection(c.arm) else -1, _arm_order(c.arm)))


def trained_on_pool(arm: str) -> bool:
    """A fully supervised arm: it trained on every pool image's ground truth, so it has no
    unannotated pool to be scored on (records made before the runner knew it still carry one)."""
    return arm == FULL_FROM_PSEUDO or arm.startswith(FULL_FROM_SCRATCH)


def _find(cells: Sequence[Cell], arm: str, k: int | None = None) -> Cell | None:
    return next((c for c in cells if c.arm == arm and (k is None or c.k == k)), None)


def winner_percents(cells: Sequence[Cell]) -> list[float]:
    """The budgets (% of the pool) that decide the winner: those of WINNER_PERCENTS that were run,
    or every budget run where none of them was."""
    percents = {round(c.percent, 6) for c in cells if is_selection(c.arm)}
    wanted = {p for p in percents if any(math.isclose(p, w) for w in WINNER_PERCENTS)} or percents
    return sorted(wanted)


def winner(cells: Sequence[Cell]) -> str | None:
    """The selection arm (a random baseline included) with the best mean mSA over
    ``winner_percents``, among the arms that ran every one of them at the study's fine-tuning
    budget (a scaled arm, and the teacher arms, name no strategy of their own)."""
    wanted = set(winner_percents(cells))
    means: dict[str, list[float]] = {}
    for c in cells:
        if (
            is_selection(c.arm)
            and not (is_scaled(c.arm) or is_rounds(c.arm) or c.arm in TEACHER_ARMS)
            and round(c.percent, 6) in wanted
        ):
            means.setdefault(c.arm, []).append(c.mean())
    complete = {arm: float(np.mean(m)) for arm, m in means.items() if len(m) == len(wanted)}
    return max(sorted(complete), key=complete.__getitem__) if complete else None


def headline(cells: Sequence[Cell], k: int, strategy: str) -> str:
    """mSA(``strategy`` at k) / mSA(full supervision), and it minus each random arm at the same k."""
    ours = _find(cells, strategy, k)
    if ours is None:
        return f"no {strategy!r} runs at k = {k} yet"
    parts = [f"**{strategy} at {ours.percent:.0f} % annotated ({k} images): mSA {ours.mean():.3f}**"]
    for full in (FULL_FROM_SCRATCH, FULL_FROM_PSEUDO):
        ref = _find(cells, full)
        if ref is not None:
            ratio = f"{ours.mean() / ref.mean():.0%}" if ref.mean() > 0 else "n/a"
            parts.append(f"{ratio} of {full} ({ref.mean():.3f})")
    compared = [ours]
    for arm in BASELINES:
        other = _find(cells, arm, k) if arm != strategy else None
        if other is not None:
            parts.append(f"{ours.mean() - other.mean():+.3f} vs {arm} ({other.mean():.3f})")
            compared.append(other)
    seeds = min(c.n for c in compared)  # the full reference may have fewer: it has its own row
    return "; ".join(parts) + f" (mean of {seeds} seed{'s' if seeds != 1 else ''})."


def _fmt(cell: Cell, metric: str) -> str:
    sd = cell.std(metric)
    return f"{cell.mean(metric):.3f}" + ("" if math.isnan(sd) else f" ± {sd:.3f}")


def markdown_table(cells: Sequence[Cell]) -> str:
    """One row per arm and k; the unannotated-pool and shifted columns where a cell has them."""
    others = [s for s in OTHER_SETS if any(s in c.values for c in cells)]
    lines = [
        "| arm | annotated images | cells in them (changed) | seeds | "
        + " | ".join([*METRICS, *(OTHER_SETS[s] for s in others)])
        + " |",
        "|---|---|---|---|" + "---|" * (len(METRICS) + len(others)),
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
            + " | ".join(_fmt(c, m) if m in c.values else "-" for m in (*METRICS, *others))
            + " |"
        )
    return "\n".join(lines)


def paired_differences(records: Sequence[dict[str, Any]], arm: str, baseline: str, k: int) -> list[float]:
    """mSA of ``arm`` minus ``baseline`` at ``k``, one per seed both ran (same pool, same pseudo
    model, so the difference pairs away what the seeds share)."""
    by_seed = {(r["arm"], int(r["k"]), r["seed"]): float(r["mSA"]) for r in records}
    seeds = sorted({s for a, kk, s in by_seed if a == arm and kk == k and (baseline, k, s) in by_seed})
    return [by_seed[(arm, k, s)] - by_seed[(baseline, k, s)] for s in seeds]


def _paired(diffs: Sequence[float]) -> str:
    """Mean ± standard deviation of paired differences, and whether the mean is within noise
    (within two standard errors of 0)."""
    if not diffs:
        return "-"
    mean = float(np.mean(diffs))
    if len(diffs) < 2:
        return f"{mean:+.3f} (1 seed: no spread)"
    sd = float(np.std(diffs, ddof=1))
    noise = abs(mean) <= 2 * sd / math.sqrt(len(diffs))
    return f"{mean:+.3f} ± {sd:.3f} ({len(diffs)} seeds{', within noise' if noise else ''})"


def _ran(records: Sequence[dict[str, Any]], arm: str, k: int) -> bool:
    return any(r["arm"] == arm and int(r["k"]) == k for r in records)


def paired_table(records: Sequence[dict[str, Any]]) -> str:
    """Each selection arm against both random baselines, paired by seed (a scaled arm against the
    scaled baselines)."""
    lines = ["| k | arm | vs random | vs instance-random |", "|---|---|---|---|"]
    ks = sorted({int(r["k"]) for r in records if is_selection(r["arm"])})
    arms = sorted(
        {r["arm"] for r in records if is_selection(r["arm"]) and base_arm(r["arm"]) not in BASELINES},
        key=_arm_order,
    )
    for k in ks:
        for arm in (a for a in arms if _ran(records, a, k)):
            suffix = arm.removeprefix(base_arm(arm))  # a scaled arm pairs with the scaled baselines
            parts = [_paired(paired_differences(records, arm, b + suffix, k)) for b in BASELINES]
            lines.append(f"| {k} | {arm} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def scaling_table(records: Sequence[dict[str, Any]]) -> str | None:
    """Each scaled arm against the same arm at the study's fixed fine-tuning budget, paired by
    seed: what a budget growing with k buys (None: the study ran no scaled arm)."""
    scaled = sorted({r["arm"] for r in records if is_scaled(r["arm"])}, key=_arm_order)
    if not scaled:
        return None
    lines = [
        "| k | arm | fine-tune ∝ k vs fixed | iterations (fixed) | anchored at |",
        "|---|---|---|---|---|",
    ]
    for k in sorted({int(r["k"]) for r in records if is_scaled(r["arm"])}):
        for arm in (a for a in scaled if _ran(records, a, k)):
            its = {
                r["arm"]: r.get("iterations")
                for r in records
                if int(r["k"]) == k and r["arm"] in (arm, base_arm(arm))
            }
            diffs = paired_differences(records, arm, base_arm(arm), k)
            lines.append(
                f"| {k} | {base_arm(arm)} | {_paired(diffs)} | {its.get(arm)} ({its.get(base_arm(arm))}) "
                f"| {scaled_reference(arm)} |"
            )
    return "\n".join(lines)


def write_csv(records: Sequence[dict[str, Any]], out: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for rec in sorted(records, key=lambda r: (_arm_order(r["arm"]), r["k"], r["seed"] or 0)):
        row = dict(rec, percent=round(100.0 * rec["k"] / rec["pool"], 2) if rec["pool"] else 0.0)
        for name in OTHER_SETS:
            if name in rec:
                row |= {f"{name}_mSA": rec[name]["mSA"], f"{name}_images": rec[name]["images"]}
        row["picked"] = " ".join(rec.get("picked") or [])
        writer.writerow(row)
    atomic_write_text(out, buf.getvalue())
    return out


def plot(cells: Sequence[Cell], out: Path) -> Path:
    """mSA against what the core-set costs, twice: the share of images annotated, and the cells an
    annotator had to change in them (a strategy can win per image by picking the worst-labelled
    dense images). Selection arms with their seed spread; references as horizontal lines."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(matplotlib.rcParamsDefault):  # nnU-Net restyles matplotlib globally
        fig = Figure(figsize=(14, 4.8), dpi=100, layout="constrained")
        by_images, by_cells = fig.subplots(1, 2, sharey=True)
        arms = sorted({c.arm for c in cells if is_selection(c.arm)}, key=_arm_order)
        bases = list(dict.fromkeys(base_arm(a) for a in arms))
        colour_of = {b: f"C{i % 10}" for i, b in enumerate(bases)}
        marker_of = {b: "os^vD<>ph*"[i % 10] for i, b in enumerate(bases)}
        for arm in arms:  # a scaled arm in its strategy's colour and marker, dotted
            pts = sorted((c for c in cells if c.arm == arm), key=lambda c: c.k)
            base = base_arm(arm)
            dashed = ":" if is_scaled(arm) else "--" if base in BASELINES else "-"
            marker, colour = marker_of[base], colour_of[base]
            by_images.errorbar([c.percent for c in pts], [c.mean() for c in pts],
                               yerr=[0 if c.n < 2 else c.std() for c in pts], color=colour,
                               marker=marker, capsize=3, label=arm, linestyle=dashed)  # fmt: skip
            for c in pts:  # every seed, so the spread is visible and not only summarised
                by_images.scatter([c.percent] * c.n, c.values["mSA"], s=10, alpha=0.35, color=colour)
            costed = [c for c in pts if "cells_changed" in c.cost]
            by_cells.plot([np.mean(c.cost["cells_changed"]) for c in costed], [c.mean() for c in costed],
                          marker=marker, linestyle=dashed, color=colour, label=arm)  # fmt: skip
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
            for ax in (by_images, by_cells):
                ax.axhline(ref.mean(), linestyle=style, color=colours[arm],
                           label=f"{arm} ({ref.mean():.3f})" if ax is by_images else None)  # fmt: skip
            if ref.n > 1:
                by_images.axhspan(
                    min(ref.values["mSA"]), max(ref.values["mSA"]), color=colours[arm], alpha=0.08
                )
        by_images.set_xlabel("pool images annotated (%)")
        by_images.set_ylabel("mSA on held-out test images")
        by_images.set_title("per image (mean, bars = std over seeds, dots = seeds)", fontsize=10)
        by_cells.set_xlabel("cells the annotator changed in the core-set (mean over seeds)")
        by_cells.set_title("per correction (the annotator's work)", fontsize=10)
        for ax in (by_images, by_cells):
            ax.grid(alpha=0.3)
        fig.legend(*by_images.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    return out


def results_json(records: Sequence[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """``benchmarks/results/study.json``'s schema: mean held-out mSA per arm and % annotated, arms by
    registry name, with the pseudo-label and full-supervision references, the winner as
    ``default_strategy``, the same for the unannotated pool and the shifted set, the full
    reference's learning curve (iterations -> mSA) and any ``--scaled-finetune`` arms' held-out mSA."""
    cells = summarise(records)

    def by_arm(metric: str) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for c in cells:
            if (
                (is_selection(c.arm) and not (is_scaled(c.arm) or is_rounds(c.arm))) or c.arm == PSEUDO_ONLY
            ) and metric in c.values:
                name = "pseudo-only" if c.arm == PSEUDO_ONLY else c.arm
                table.setdefault(name, {})[f"{c.percent:g}"] = round(c.mean(metric), 4)
        return table

    scaled: dict[str, dict[str, float]] = {}  # the arms of --scaled-finetune, by their own names
    for c in cells:
        if is_scaled(c.arm):
            scaled.setdefault(c.arm, {})[f"{c.percent:g}"] = round(c.mean(), 4)
    rounds: dict[str, dict[str, float]] = {}  # multi-round arms: round number -> mean mSA
    first = {c.arm: min(d.k for d in cells if d.arm == c.arm) for c in cells if is_rounds(c.arm)}
    for c in sorted(cells, key=lambda c: c.k):
        if is_rounds(c.arm):
            rounds.setdefault(c.arm, {})[str(c.k // first[c.arm])] = round(c.mean(), 4)
    references = {arm: _find(cells, arm) for arm in (PSEUDO_LABELS, FULL_FROM_SCRATCH, FULL_FROM_PSEUDO)}
    full = references[FULL_FROM_SCRATCH] or references[FULL_FROM_PSEUDO]
    from_scratch = [r for r in records if r["arm"].startswith(FULL_FROM_SCRATCH) and "iterations" in r]
    first_seed = min((r["seed"] for r in from_scratch), default=None)  # the curve's points are run there
    curve = {int(r["iterations"]): round(float(r["mSA"]), 4) for r in from_scratch if r["seed"] == first_seed}
    return {
        "data": settings.get("data") or settings.get("train"),
        "pool": int(records[0]["pool"]),
        "test": int(records[0]["images"]),
        "seeds": sorted({int(r["seed"]) for r in records if r["seed"] is not None}),
        "default_strategy": winner(cells),
        "pseudo_labels_msa": None
        if references[PSEUDO_LABELS] is None
        else round(references[PSEUDO_LABELS].mean(), 4),
        "full_msa": None if full is None else round(full.mean(), 4),
        "full_from_pseudo_msa": None
        if references[FULL_FROM_PSEUDO] is None
        else round(references[FULL_FROM_PSEUDO].mean(), 4),
        "heldout": by_arm("mSA"),
        **{name: by_arm(name) for name in OTHER_SETS if by_arm(name)},
        "full_curve": dict(sorted(curve.items())),
        **({"heldout_scaled_finetune": scaled} if scaled else {}),
        **({"rounds": rounds} if rounds else {}),
    }


def write_report(records: Sequence[dict[str, Any]], out_dir: Path, settings: dict[str, Any],
                 headline_k: int) -> str:  # fmt: skip
    """results.csv, results.md, results.json and msa_vs_annotated.png in ``out_dir``; returns the
    markdown, which opens with the winning strategy's headline."""
    cells = summarise(records)
    write_csv(records, out_dir / "results.csv")
    atomic_write_text(out_dir / "results.json", json.dumps(results_json(records, settings), indent=1) + "\n")
    best = winner(cells)
    budget = ", ".join(f"{k}: {v}" for k, v in settings.items() if k not in ("train", "test"))
    sections = [markdown_table(cells)]
    if best is not None:
        plot(cells, out_dir / "msa_vs_annotated.png")
        sections = [
            f"Winner (best mean held-out mSA over {', '.join(f'{p:g}' for p in winner_percents(cells))} %): "
            f"**{best}**.",
            headline(cells, headline_k, best),
            *sections,
            "Paired by seed, mSA differences:",
            paired_table(records),
        ]
        scaling = scaling_table(records)
        if scaling is not None:
            sections += ["Fine-tuning in proportion to k against the fixed budget, paired by seed:", scaling]
    text = "\n\n".join([*sections, f"Settings: {budget}."])
    atomic_write_text(out_dir / "results.md", text + "\n")
    return text
