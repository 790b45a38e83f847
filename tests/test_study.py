"""The label-efficiency study: its settings, plan, selection, report, and a tiny real run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from activeseg.datasets import held_out, read_dataset, shared_data
from activeseg.fsutil import held_alone
from activeseg.imageio import read_label_image
from orchestrator.context import LoopError
from orchestrator.rank.strategies import DEFAULT_STRATEGY
from orchestrator.study.report import (
    headline,
    markdown_table,
    paired_differences,
    paired_table,
    results_json,
    scaling_table,
    summarise,
    winner,
    write_report,
)
from orchestrator.study.runner import (
    FULL_FROM_PSEUDO,
    FULL_FROM_SCRATCH,
    NO_TEACHER,
    POOR_TEACHER,
    PSEUDO_LABELS,
    PSEUDO_MODEL,
    PSEUDO_ONLY,
    Run,
    Study,
    StudyConfig,
    curve_arm,
    is_selection,
    scaled_arm,
)
from orchestrator.study.split import split_pool_test

TRAIN, TEST = shared_data() / "dsb2018_stage1_train_fluo", shared_data() / "dsb2018_stage1_test"
needs_data = pytest.mark.skipif(not TRAIN.is_dir(), reason="needs ../shared/data (DSB2018)")


def config(**kw: object) -> StudyConfig:
    return StudyConfig(**{"train": TRAIN, "test": TEST, **kw})  # type: ignore[arg-type]


def test_settings_are_checked_before_any_work() -> None:
    with pytest.raises(LoopError, match="--finetune-iterations must be a positive multiple"):
        config(pretrain_iterations=100, finetune_iterations=30, iterations_per_epoch=20)
    with pytest.raises(LoopError, match="invalid budget"):
        config(budgets=("5 percent",))
    with pytest.raises(LoopError, match="at least one seed"):
        config(seeds=())
    with pytest.raises(LoopError, match="unknown strategy 'badge'; choose from coreset, count-strata, "):
        config(strategies=("hybrid", "badge"))
    with pytest.raises(LoopError, match="--full-curve takes fractions"):
        config(full_curve=(1.5,))
    assert config(pretrain_iterations=150, iterations_per_epoch=50).budget(150, 1e-2).epochs == 3
    assert config(finetune_iterations=20, iterations_per_epoch=50).budget(20, 1e-3).iterations == 20
    assert config(iterations_per_epoch=50).budget(150 + 20, 1e-2).iterations == 170


def test_run_keys_are_file_names() -> None:
    assert Run(FULL_FROM_PSEUDO, 100, 2).key == "full-from-pseudo-model_k100_s2"
    assert Run(PSEUDO_LABELS, 0, None).key == "pseudo-labels_k0"
    assert Run(curve_arm(0.25), 100, 0).key == "full-from-scratch-at-0-25-of-its-budget_k100_s0"
    assert Run("instance-random", 5, 1).key == "instance-random_k5_s1"


def test_arms_are_strategies_or_references() -> None:
    assert is_selection("typiclust") and is_selection("random") and is_selection("instance-random")
    for arm in (
        PSEUDO_LABELS,
        PSEUDO_MODEL,
        PSEUDO_ONLY,
        FULL_FROM_PSEUDO,
        FULL_FROM_SCRATCH,
        curve_arm(0.5),
    ):
        assert not is_selection(arm), arm


@needs_data
def test_test_set_is_fluorescence_without_training_duplicates() -> None:
    ids = {s.id for s in held_out(TEST)}
    overlap = {r["id"] for r in csv.DictReader((TEST / "overlap_with_dsb2018_stage1_train.csv").open())}
    assert len(ids) == 49 and not ids & overlap


@needs_data
def test_plan_and_a_folder_for_one_set_of_settings(tmp_path: Path) -> None:
    study = Study(
        config(pool_size=10, budgets=("10%", "20%"), seeds=(0, 1), strategies=("hybrid",)), tmp_path
    )
    plan = study.plan()
    assert study.ks() == [1, 2] and study.selection_arms == ("hybrid", "random", "instance-random")
    assert plan[:2] == [Run(PSEUDO_LABELS, 0, None), Run(PSEUDO_MODEL, 0, None)]
    per_seed = [r for r in plan if r.seed == 1]
    assert [r.arm for r in per_seed].count("hybrid") == 2 and Run(FULL_FROM_SCRATCH, 10, 1) in per_seed
    assert len(plan) == 2 + 2 * (1 + 2 * 3 + 2) and len({r.key for r in plan}) == len(plan)
    # every candidate is one more arm; a baseline named as a candidate is not run twice; the
    # learning curve runs on the first seed only; none of them changes the folder's settings
    more = Study(config(pool_size=10, budgets=("10%",), seeds=(0, 1), strategies=("typiclust", "random"),
                        full_curve=(0.5, 0.25)), tmp_path).plan()  # fmt: skip
    assert [r.arm for r in more if r.seed == 0 and r.k == 1] == ["typiclust", "random", "instance-random"]
    assert [r for r in more if r.arm.startswith(f"{FULL_FROM_SCRATCH} at")] == [
        Run(curve_arm(0.25), 10, 0), Run(curve_arm(0.5), 10, 0)
    ]  # fmt: skip
    # the pool is the same sample every time, whatever the study seeds
    assert [im.id for im in study.pool] == [im.id for im in Study(config(pool_size=10), tmp_path).pool]
    # the same data elsewhere (another machine, a clone of a committed study) is the same study
    moved = json.loads((tmp_path / "study.json").read_text())
    (tmp_path / "study.json").write_text(
        json.dumps({**moved, "train": f"/elsewhere/{Path(moved['train']).name}"})
    )
    Study(config(pool_size=10), tmp_path)
    (tmp_path / "study.json").write_text(json.dumps({**moved, "train": "/elsewhere/other_images"}))
    with pytest.raises(LoopError, match="other settings \\(train\\)"):
        Study(config(pool_size=10), tmp_path)
    (tmp_path / "study.json").write_text(json.dumps(moved))
    # the from-scratch reference's budget is pretrain + fine-tune iterations unless given
    with pytest.raises(LoopError, match="other settings \\(finetune_iterations, full_iterations\\)"):
        Study(config(pool_size=10, finetune_iterations=100), tmp_path)
    implied = moved["pretrain_iterations"] + moved["finetune_iterations"]
    (tmp_path / "study.json").write_text(json.dumps({**moved, "full_iterations": None}))
    Study(config(pool_size=10, full_iterations=implied), tmp_path)  # None meant the same budget
    (tmp_path / "study.json").write_text(json.dumps(moved))
    with pytest.raises(LoopError, match="other settings \\(finetune_with_pseudo\\)"):
        Study(config(pool_size=10, finetune_with_pseudo=False), tmp_path)
    # the fully supervised arms can be left out of a plan; it does not change any run
    short = Study(
        config(pool_size=10, budgets=("10%", "20%"), seeds=(0, 1), strategies=("hybrid",), full=False),
        tmp_path,
    ).plan()
    assert short == [r for r in plan if r.arm not in (FULL_FROM_PSEUDO, FULL_FROM_SCRATCH)]
    # a folder made before fine-tuning with pseudo-labels existed was run without them
    settings = json.loads((tmp_path / "study.json").read_text())
    del settings["finetune_with_pseudo"]
    (tmp_path / "study.json").write_text(json.dumps(settings))
    Study(config(pool_size=10, finetune_with_pseudo=False), tmp_path)
    with pytest.raises(LoopError, match="other settings \\(finetune_with_pseudo\\)"):
        Study(config(pool_size=10), tmp_path)
    # ... and before the compute-aware plan existed, with nnU-Net's own 2d configuration
    settings = json.loads((tmp_path / "study.json").read_text())
    del settings["configuration"]
    (tmp_path / "study.json").write_text(json.dumps(settings))
    with pytest.raises(LoopError, match="other settings \\(configuration\\)"):
        Study(config(pool_size=10, finetune_with_pseudo=False), tmp_path)
    Study(config(pool_size=10, finetune_with_pseudo=False, configuration="2d"), tmp_path)
    # ... and before the peak split, with one cell per predicted interior component
    older = dict(finetune_with_pseudo=False, configuration="2d")
    settings = json.loads((tmp_path / "study.json").read_text())
    del settings["split_depth"]
    (tmp_path / "study.json").write_text(json.dumps(settings))
    with pytest.raises(LoopError, match="other settings \\(split_depth\\)"):
        Study(config(pool_size=10, **older), tmp_path)
    Study(config(pool_size=10, split_depth=None, **older), tmp_path)


@needs_data
def test_selection_arms_fine_tune_with_pseudo_labels_unless_told_not_to(tmp_path: Path) -> None:
    """By default the k corrected images (ground truth, repeated) + the rest's pseudo-labels."""
    plain = Study(config(pool_size=8, finetune_with_pseudo=False), tmp_path / "plain")
    picked = [im.id for im in plain.pool[:2]]
    cases = plain.training_cases("random", picked)
    assert [(c.id, c.source) for c in cases] == [(i, "human") for i in picked]
    mixed = Study(config(pool_size=8), tmp_path / "mixed")
    cases = mixed.training_cases("hybrid", picked)
    human = [c for c in cases if c.source == "human"]
    pseudo = [c for c in cases if c.source == "pseudo"]
    assert len(human) == len(pseudo) == 6 and len({c.id for c in cases}) == 12
    assert {c.id for c in pseudo} == {im.id for im in mixed.pool} - set(picked)
    truth = {im.id: im.truth for im in mixed.pool}
    for case in human:
        assert np.array_equal(case.labels, truth[case.id.split("_copy")[0]])
    for case in pseudo:
        assert np.array_equal(case.labels, mixed.pseudo[case.id])
    # the references train as before
    assert all(c.source == "pseudo" for c in mixed.training_cases(PSEUDO_ONLY))
    assert len(mixed.training_cases(FULL_FROM_SCRATCH)) == len(mixed.training_cases(curve_arm(0.5))) == 8


def test_full_reference_budget_and_its_learning_curve(tmp_path: Path) -> None:
    study = Study(
        config(pretrain_iterations=2000, finetune_iterations=250, iterations_per_epoch=50), tmp_path
    )
    assert study.full_budget().iterations == 2250 and study.full_budget().initial_lr == 1e-2
    assert study.full_budget(0.25).iterations == 550  # rounded to whole epochs
    longer = Study(config(full_iterations=4000, iterations_per_epoch=50), tmp_path / "longer")
    assert longer.full_budget().iterations == 4000 and longer.full_budget(0.5).iterations == 2000
    timed = Study(config(pretrain_minutes=10, finetune_minutes=2), tmp_path / "timed")
    assert timed.full_budget().minutes == 12 and timed.full_budget(0.5).minutes == 6


@needs_data
def test_one_study_per_folder_at_a_time(tmp_path: Path) -> None:
    """Runs share the folder's nnU-Net dataset: a second study would re-export it under the first."""
    study = Study(config(pool_size=6), tmp_path)
    with held_alone(tmp_path / ".lock"), pytest.raises(LoopError, match="another study is running"):
        study.run()
    assert not study.runs_dir.exists() or not any(study.runs_dir.iterdir())


def test_selection_follows_the_strategies(tmp_path: Path) -> None:
    """From stored pool scores: each arm's strategy picks; random depends on the seed."""
    rng = np.random.default_rng(0)
    n = 40
    ids = np.array([f"img{i}" for i in range(n)])
    features = rng.normal(size=(n, 8)).astype(np.float32)
    np.savez(tmp_path / "pool_scores.npz", ids=ids, uncertainty=np.linspace(0, 1, n),
             instances=rng.integers(1, 50, n), features=features,
             disagreement=np.linspace(1, 0, n), flip_spread=(np.arange(n) % 7) / 7.0)  # fmt: skip
    study = Study(config(), tmp_path)
    hybrid = study.select("hybrid", 4, 0)
    assert len(set(hybrid)) == 4 and all(int(i.removeprefix("img")) >= n // 2 for i in hybrid)
    assert study.select("entropy", 4, 0) == ["img39", "img38", "img37", "img36"]
    assert study.select("disagreement", 4, 0) == ["img0", "img1", "img2", "img3"]
    assert study.select("tta", 4, 0) == ["img6", "img13", "img20", "img27"]  # spread 6/7, in id order
    picks = {tuple(study.select("random", 4, seed)) for seed in range(5)}
    assert len(picks) > 1
    assert study.select("random", 4, 3) == study.select("random", 4, 3)
    assert study.select(scaled_arm("random", "5%"), 4, 3) == study.select("random", 4, 3)  # same picks


@needs_data
def test_teacher_arms_train_on_the_corrections_alone(tmp_path: Path) -> None:
    """ "poor teacher": the default strategy's picks without pseudo-labels, from the pseudo model;
    "no teacher": typiclust on the pool's image embeddings, from scratch at the full budget."""
    study = Study(config(pool_size=8, budgets=("25%",), seeds=(0,), strategies=("entropy",),
                         teacher_arms=True, pretrain_iterations=100, finetune_iterations=50,
                         iterations_per_epoch=50), tmp_path)  # fmt: skip
    plan = study.plan()
    assert Run(POOR_TEACHER, 2, 0) in plan and Run(NO_TEACHER, 2, 0) in plan
    assert [r for r in plan if r.arm not in (POOR_TEACHER, NO_TEACHER)] == Study(
        config(pool_size=8, budgets=("25%",), seeds=(0,), strategies=("entropy",), pretrain_iterations=100,
               finetune_iterations=50, iterations_per_epoch=50), tmp_path
    ).plan()  # fmt: skip
    picked = [im.id for im in study.pool[:2]]
    for arm in (POOR_TEACHER, NO_TEACHER):
        assert [(c.id, c.source) for c in study.training_cases(arm, picked)] == [(i, "human") for i in picked]
    assert len(study.training_cases("entropy", picked)) > 2  # the teacher's arm keeps its pseudo-labels
    n = len(study.pool)
    ids = np.array([im.id for im in study.pool])
    np.savez(tmp_path / "pool_scores.npz", ids=ids, uncertainty=np.linspace(0, 1, n),
             instances=np.ones(n, dtype=np.int64), features=np.eye(n, dtype=np.float32),
             disagreement=np.zeros(n))  # fmt: skip
    picked = study.select(POOR_TEACHER, 2, 0)  # what the loop's ranking sent before the teacher fell
    assert picked == study.select(DEFAULT_STRATEGY, 2, 0) and len(set(picked)) == 2
    # two tight groups of embeddings: typiclust takes one image of each
    groups = np.repeat([[1.0, 0.0], [0.0, 1.0]], [5, 3], axis=0) + 0.01 * np.arange(n)[:, None]
    np.savez(tmp_path / "pool_embeddings.npz", ids=ids, features=groups.astype(np.float32))
    chosen = study.select(NO_TEACHER, 2, 0)
    assert len(chosen) == 2 and {list(ids).index(i) < 5 for i in chosen} == {True, False}
    assert study.full_budget().iterations == 150


def test_image_embedder_reads_any_image() -> None:
    """The cold start's features: LiteMedSAM's encoder on grey, colour and 16-bit images alike."""
    from orchestrator.rank.scoring import ImageEmbedder

    embed = ImageEmbedder()
    rng = np.random.default_rng(0)
    grey = embed(rng.integers(0, 255, (96, 130), dtype=np.uint8))
    colour = embed(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    deep = embed(rng.integers(0, 4000, (70, 50), dtype=np.uint16))
    assert grey.shape == colour.shape == deep.shape == (512,) and grey.dtype == np.float32
    assert np.all(np.isfinite(np.stack([grey, colour, deep]))) and not np.allclose(grey, colour)


def _record(arm: str, k: int, seed: int | None, msa: float) -> dict[str, object]:
    return {"arm": arm, "k": k, "seed": seed, "pool": 100, "mSA": msa, "AP50": msa + 0.1, "F1": msa + 0.2,
            "AP75": 0.0, "precision": 0.5, "recall": 0.5, "images": 49, "picked": None,
            "unannotated": {"mSA": msa + 0.05, "images": 50},
            "shift": {"mSA": msa - 0.05, "images": 45}}  # fmt: skip


def test_report_tables_headline_and_plot(tmp_path: Path) -> None:
    records = [_record(PSEUDO_LABELS, 0, None, 0.30), _record(PSEUDO_MODEL, 0, None, 0.25)]
    for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
        records += [
            _record(PSEUDO_ONLY, 0, seed, 0.26 + jitter),
            _record("hybrid", 5, seed, 0.36 + jitter) | {"cells": 100 + seed, "cells_changed": 30},
            _record("typiclust", 5, seed, 0.31 + jitter),
            _record("random", 5, seed, 0.32 + jitter),
            _record("instance-random", 5, seed, 0.33 + jitter),
            _record(FULL_FROM_PSEUDO, 100, seed, 0.42 + jitter),
            _record(FULL_FROM_SCRATCH, 100, seed, 0.40 + jitter),
        ]
    cells = summarise(records)
    ours = next(c for c in cells if c.arm == "hybrid")
    assert ours.n == 3 and ours.mean() == pytest.approx(0.36) and ours.std() == pytest.approx(0.01)
    assert winner(cells) == "hybrid"
    text = headline(cells, 5, "hybrid")
    assert "mSA 0.360" in text and "90% of full, from scratch (0.400)" in text
    assert "+0.040 vs random (0.320)" in text and "+0.030 vs instance-random (0.330)" in text
    assert "mean of 3 seeds" in text
    one_full = [r for r in records if not (r["arm"].startswith("full") and r["seed"])]
    assert "mean of 3 seeds" in headline(summarise(one_full), 5, "hybrid")  # full ran on seed 0 only
    table = markdown_table(cells)
    assert "| mSA unannotated pool | mSA shifted |" in table
    assert (
        "| hybrid | 5 (5 %) | 101 (30) | 3 | 0.360 ± 0.010 | 0.460 ± 0.010 | 0.560 ± 0.010 | 0.410 ± 0.010 "
        "| 0.310 ± 0.010 |" in table
    )
    assert "| random | 5 (5 %) | - | 3 |" in table  # records without a cost say so
    assert "| pseudo-labels | 0 | - | n/a | 0.300 |" in table
    rows = [line.split(" | ")[0] for line in table.splitlines()[2:]]  # references, strategies, baselines
    assert rows == [
        "| pseudo-labels", "| pseudo model", "| pseudo only", "| full, from pseudo model",
        "| full, from scratch", "| hybrid", "| typiclust", "| random", "| instance-random",
    ]  # fmt: skip
    write_report(records, tmp_path, {"pool_size": 100}, 5)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == len(records) and rows[0]["arm"] == PSEUDO_LABELS
    assert {r["cells_changed"] for r in rows if r["arm"] == "hybrid"} == {"30"}
    assert {r["shift_mSA"] for r in rows if r["arm"] == PSEUDO_LABELS} == {str(0.30 - 0.05)}
    assert (tmp_path / "msa_vs_annotated.png").read_bytes()[:4] == b"\x89PNG"
    from PIL import Image as PILImage

    width, height = PILImage.open(tmp_path / "msa_vs_annotated.png").size
    assert width > 2.5 * height  # two panels: per image annotated and per cell changed
    report = (tmp_path / "results.md").read_text()
    assert report.startswith("Winner (best mean held-out mSA over 5 %): **hybrid**.")
    assert "**hybrid at 5 % annotated (5 images): mSA 0.360**" in report
    # paired by seed: hybrid - random is +0.040 on every seed (no spread, beyond noise)
    assert paired_differences(records, "hybrid", "random", 5) == pytest.approx([0.04, 0.04, 0.04])
    noisy = [dict(r, mSA=r["mSA"] + (0.06 if r["seed"] == 1 else 0)) if r["arm"] == "random" else r
             for r in records]  # fmt: skip
    table = paired_table(noisy)
    assert "| 5 | hybrid | +0.020 ± 0.035 (3 seeds, within noise) | +0.030 ± 0.000 (3 seeds) |" in table
    assert "| 5 | typiclust | -0.030 ± 0.035 (3 seeds, within noise) |" in table
    assert "Paired by seed" in (tmp_path / "results.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())  # benchmarks/results/study.json's schema
    assert results["seeds"] == [0, 1, 2] and results["pool"] == 100 and results["test"] == 49
    assert results["default_strategy"] == "hybrid" and results["pseudo_labels_msa"] == 0.3
    assert results["full_msa"] == pytest.approx(0.40)  # from scratch, the reference a lab would train
    assert results["heldout"] == {
        "hybrid": {"5": pytest.approx(0.36)}, "typiclust": {"5": pytest.approx(0.31)},
        "random": {"5": pytest.approx(0.32)}, "instance-random": {"5": pytest.approx(0.33)},
        "pseudo-only": {"0": pytest.approx(0.26)},
    }  # fmt: skip
    assert results["unannotated"]["hybrid"] == {"5": pytest.approx(0.41)}
    # a teacher arm names a way of training, not a strategy: reported, never the winner
    taught = records + [_record(NO_TEACHER, 5, seed, 0.5) for seed in range(3)]
    assert winner(summarise(taught)) == "hybrid"
    assert results_json(taught, {})["heldout"][NO_TEACHER] == {"5": pytest.approx(0.5)}
    assert results["shift"]["random"] == {"5": pytest.approx(0.27)}


def test_the_winner_is_the_best_mean_over_the_budgets_every_arm_ran() -> None:
    """A random baseline can win; an arm missing one of the budgets cannot; 1 % does not count."""
    records = []
    for seed in (0, 1):
        records += [
            _record("hybrid", 2, seed, 0.30), _record("hybrid", 5, seed, 0.34),
            _record("random", 2, seed, 0.33), _record("random", 5, seed, 0.32),
            _record("typiclust", 5, seed, 0.50),  # best at 5 %, but never ran at 2 %
            _record("disagreement", 1, seed, 0.90), _record("disagreement", 2, seed, 0.31),
            _record("disagreement", 5, seed, 0.31),
        ]  # fmt: skip
    cells = summarise(records)
    assert winner(cells) == "random"  # (0.33 + 0.32) / 2 against hybrid's 0.32 and disagreement's 0.31
    assert results_json(records, {"data": "d"})["default_strategy"] == "random"
    assert winner(summarise([r for r in records if r["k"] == 1])) == "disagreement"  # only 1 % ran
    assert winner(summarise([_record(PSEUDO_ONLY, 0, 0, 0.3)])) is None


@needs_data
def test_scaled_fine_tunes_grow_with_k_and_pair_with_the_fixed_budget(tmp_path: Path) -> None:
    """``scaled_finetune``: each selection arm once more at every k but the reference one, with the
    fine-tune in proportion to k and the reference in its name; same picks; reported against the
    fixed budget and against the scaled baselines; never the winner; the folder's settings do
    not change."""
    cfg = dict(pool_size=100, budgets=("1%", "5%", "10%"), seeds=(0,), strategies=("entropy",), full=False,
               finetune_iterations=250, iterations_per_epoch=50)  # fmt: skip
    plain = Study(config(**cfg), tmp_path).plan()
    study = Study(config(**cfg, scaled_finetune="5%"), tmp_path)
    plan = study.plan()
    extra = [r for r in plan if r not in plain]
    assert plain == [r for r in plan if r in plain]
    assert {(r.arm, r.k) for r in extra} == {
        (scaled_arm(a, "5%"), k) for a in ("entropy", "random", "instance-random") for k in (1, 10)
    }
    assert is_selection(scaled_arm("entropy", "5%")) and len({r.key for r in plan}) == len(plan)
    assert Run(scaled_arm("entropy", "5%"), 10, 0).key != Run(scaled_arm("entropy", "2%"), 10, 0).key
    budgets = {
        r.k: study.finetune_budget(r).iterations for r in extra if r.arm == scaled_arm("entropy", "5%")
    }
    assert budgets == {1: 50, 10: 500}  # 250 x k / 5, in whole epochs of at most 50
    assert study.finetune_budget(Run("entropy", 10, 0)).iterations == 250
    timed = Study(config(**cfg, finetune_minutes=2.0, scaled_finetune="5%"), tmp_path / "timed")
    assert timed.finetune_budget(Run(scaled_arm("random", "5%"), 10, 0)).minutes == pytest.approx(4.0)
    one_epoch = Study(
        config(**{**cfg, "iterations_per_epoch": 250, "scaled_finetune": "10%"}), tmp_path / "e"
    )
    assert one_epoch.finetune_budget(Run(scaled_arm("entropy", "10%"), 1, 0)).iterations == 25
    with pytest.raises(LoopError):
        config(scaled_finetune="lots")

    records = []
    for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
        for arm, msa in (("entropy", 0.36), ("random", 0.33), ("instance-random", 0.33)):
            records.append(_record(arm, 10, seed, msa + jitter) | {"iterations": 250})
            records.append(
                _record(scaled_arm(arm, "5%"), 10, seed, msa + 0.02 + jitter) | {"iterations": 500}
            )
    cells = summarise(records)
    assert winner(cells) == "entropy"  # the scaled entropy (0.38) is a budget, not a strategy
    table = scaling_table(records)
    assert "| 10 | entropy | +0.020 ± 0.000 (3 seeds) | 500 (250) | 5% |" in table
    assert "| 10 | random | +0.020 ± 0.000 (3 seeds) | 500 (250) | 5% |" in table
    paired = paired_table(records)
    scaled = scaled_arm("entropy", "5%")
    assert f"| 10 | {scaled} | +0.030 ± 0.000 (3 seeds) | +0.030 ± 0.000 (3 seeds) |" in paired
    assert scaled_arm("random", "5%") not in paired  # a baseline is a column, scaled or not
    rows = [line.split(" | ")[0] for line in markdown_table(cells).splitlines()[2:]]
    assert rows == [
        f"| {a}" for b in ("entropy", "random", "instance-random") for a in (b, scaled_arm(b, "5%"))
    ]
    assert scaling_table([r for r in records if "∝" not in r["arm"]]) is None
    results = results_json(records, {"data": "d"})
    assert set(results["heldout"]) == {"entropy", "random", "instance-random"}  # registry names only
    assert results["heldout_scaled_finetune"][scaled] == {"10": pytest.approx(0.38)}
    write_report(records, tmp_path / "report", {}, 10)
    assert "against the fixed budget" in (tmp_path / "report" / "results.md").read_text()


@pytest.mark.slow
@needs_data
def test_a_tiny_study_runs_every_arm_and_resumes(tmp_path: Path) -> None:
    """Real pseudo-labels, nnU-Net training and scoring with tiny budgets; a second call trains nothing."""
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "orchestrator.cli", "study", "--preset", "quick", "--out", str(out),
           "--headline-budget", "34%", "--strategies", "disagreement"]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "study: 9 runs, 0 already done; pool of 6 images, 2 test images" in first.stdout
    records = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    assert set(records) == {
        "pseudo-labels_k0", "pseudo-model_k0", "pseudo-only_k0_s0", "disagreement_k3_s0", "random_k3_s0",
        "instance-random_k3_s0", "full-from-pseudo-model_k6_s0", "full-from-scratch_k6_s0",
        "full-from-scratch-at-0-5-of-its-budget_k6_s0",
    }  # fmt: skip
    pool = set(np.load(out / "pool_scores.npz")["ids"])
    same = StudyConfig(data=TRAIN, shift=TEST, pool_size=6, test_size=2, unannotated_size=3,
                       pretrain_iterations=2, finetune_iterations=1, iterations_per_epoch=2)  # fmt: skip
    sampled = {im.id for im in Study(same, out).unannotated}  # the same folder: the same settings
    assert len(sampled) == 3 and sampled <= pool
    test_ids = {s.id for s in split_pool_test(read_dataset(TRAIN), 0.2, 0)[1]}
    assert not pool & test_ids and pool <= {s.id for s in read_dataset(TRAIN)}  # --data is the default
    for arm in ("disagreement", "random", "instance-random"):
        picked = records[f"{arm}_k3_s0"]["picked"]
        assert len(set(picked)) == 3 and set(picked) <= pool
        truth = [read_label_image(TRAIN / "labels" / f"{i}.png") for i in picked]
        assert records[f"{arm}_k3_s0"]["cells"] == sum(len(np.unique(t)) - 1 for t in truth)
        assert records[f"{arm}_k3_s0"]["cells_changed"] >= 0
        # (b) scored on the sampled pool images it did not annotate
        assert records[f"{arm}_k3_s0"]["unannotated"]["images"] == 3 - len(set(picked) & sampled)
    assert records["full-from-scratch_k6_s0"]["iterations"] == 3
    assert records["full-from-scratch-at-0-5-of-its-budget_k6_s0"]["iterations"] == 2
    assert all(0.0 <= r["mSA"] <= 1.0 and r["images"] == 2 for r in records.values())
    assert all(r["shift"]["images"] == 2 for r in records.values())
    # (b) leaves out what an arm trained on: nothing is left for the fully supervised arms
    full_arms = {
        "full-from-pseudo-model_k6_s0",
        "full-from-scratch_k6_s0",
        "full-from-scratch-at-0-5-of-its-budget_k6_s0",
    }
    assert all(("unannotated" in r) == (key not in full_arms) for key, r in records.items())
    assert records["pseudo-only_k0_s0"]["unannotated"]["images"] == 3
    assert not [
        p for p in (out / "nnunet" / "models").iterdir() if p.name != "pseudo-r0"
    ]  # checkpoints freed
    assert "annotated (3 images): mSA" in (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())  # beside, not over, study.json
    assert results["pool"] == 6 and results["default_strategy"] in (
        "disagreement",
        "random",
        "instance-random",
    )
    assert set(results["full_curve"]) == {"2", "3"}

    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "study: 9 runs, 9 already done" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == before
    other = subprocess.run([*cmd, "--finetune-iterations", "2"], capture_output=True, text=True)
    assert other.returncode == 2 and "holds a study with other settings" in other.stderr

    # a strategy added later that needs the flipped predictions: they are added to the cached scores,
    # which stay as they were, so the earlier arms' picks still hold
    cached = dict(np.load(out / "pool_scores.npz"))
    with_tta = subprocess.run([*cmd[:-1], "disagreement,tta"], capture_output=True, text=True, timeout=600)
    assert with_tta.returncode == 0, with_tta.stdout[-2000:] + with_tta.stderr[-2000:]
    assert "study: 10 runs, 9 already done" in with_tta.stdout
    scores = dict(np.load(out / "pool_scores.npz"))
    assert set(scores) == set(cached) | {"flip_spread"} and np.all(scores["flip_spread"] >= 0)
    assert all(np.array_equal(scores[key], cached[key]) for key in cached)
    by_spread = [str(scores["ids"][i]) for i in np.argsort(-scores["flip_spread"], kind="stable")[:3]]
    assert json.loads((out / "runs" / "tta_k3_s0.json").read_text())["picked"] == by_spread

    # committed to a repository, the folder carries what another machine needs to go on paired:
    # the clone trains no new pseudo model and adds seed 1 beside the finished runs
    git = ["git", "-c", "user.name=study", "-c", "user.email=study@example.org", "-C"]
    subprocess.run(["git", "init", "-q", str(out)], check=True)
    subprocess.run([*git, str(out), "add", "."], check=True)
    subprocess.run([*git, str(out), "commit", "-qm", "study"], check=True)
    tracked = subprocess.run([*git, str(out), "ls-files"], capture_output=True, text=True, check=True).stdout
    assert "pseudo-r0/" in tracked and "checkpoint_final.pth" in tracked and "/imagesTr/" not in tracked
    assert "runs/tta_k3_s0.json" in tracked and "pool_scores.npz" in tracked
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(out), str(clone)], check=True)
    checkpoint = next((clone / "nnunet" / "models" / "pseudo-r0").rglob("checkpoint_final.pth"))
    weights = checkpoint.read_bytes()
    cmd_clone = [*cmd[:-1], "disagreement,tta", "--no-full", "--seeds", "0,1"]
    cmd_clone[cmd_clone.index(str(out))] = str(clone)
    resumed = subprocess.run(cmd_clone, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "study: 12 runs, 7 already done" in resumed.stdout
    assert checkpoint.read_bytes() == weights  # the pseudo model came with the folder
    assert (clone / "runs" / "tta_k3_s1.json").is_file() and (clone / "runs" / "random_k3_s1.json").is_file()

    # a fine-tune growing with k, anchored at 1 image: 3 times the budget at 3, the same picks
    scaled = subprocess.run([*cmd, "--no-full", "--scaled-finetune", "10%"], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert scaled.returncode == 0, scaled.stdout[-2000:] + scaled.stderr[-2000:]
    grown = json.loads((out / "runs" / "disagreement-fine-tune-k-from-10_k3_s0.json").read_text())
    assert (
        grown["arm"] == "disagreement, fine-tune ∝ k from 10%" and grown["iterations"] == 4
    )  # 3, in epochs of 2
    assert grown["picked"] == records["disagreement_k3_s0"]["picked"]
    assert "against the fixed budget" in (out / "results.md").read_text()

    # two rounds of one image each: round 2 fine-tunes round 1's model and adds one image ranked
    # by that model's scores; only the newest round's model is kept
    rounds = subprocess.run([*cmd, "--no-full", "--rounds", "2", "--rounds-budget", "16%"],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert rounds.returncode == 0, rounds.stdout[-2000:] + rounds.stderr[-2000:]
    for arm in ("entropy", "random"):
        first_round = json.loads((out / "runs" / f"{arm}-rounds-of-16_k1_s0.json").read_text())
        second = json.loads((out / "runs" / f"{arm}-rounds-of-16_k2_s0.json").read_text())
        assert second["arm"] == f"{arm}, rounds of 16%" and len(set(second["picked"])) == 2
        assert second["picked"][0] == first_round["picked"][0] and set(second["picked"]) <= pool
        assert first_round["picked"] == Study(same, out).select(
            arm, 1, 0
        )  # round 1: the pseudo model's picks
    kept = {p.name for p in (out / "nnunet" / "models").iterdir()}
    assert kept == {"pseudo-r0", "entropy-rounds-of-16_k2_s0", "random-rounds-of-16_k2_s0"}
    results = json.loads((out / "results.json").read_text())
    assert set(results["rounds"]["entropy, rounds of 16%"]) == {"1", "2"}
    assert (
        "rounds of" not in str(results["heldout"]) and results["default_strategy"] != "entropy, rounds of 16%"
    )
