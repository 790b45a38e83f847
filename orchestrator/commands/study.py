"""``activeseg study``: its command line and presets (the study itself is in ``runner``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from activeseg.datasets import DatasetError, shared_data
from activeseg.nnunet.classes import SPLIT_DEPTH
from activeseg.nnunet.plans import CONFIGURATIONS
from orchestrator.context import LoopError
from orchestrator.rank.strategies import STRATEGIES

#: each preset's settings; a flag given on the command line overrides its preset's value
PRESETS: dict[str, dict[str, Any]] = {
    # the reduced study that fits 2 CPU cores (pool 300, every candidate, 1-10 %, 3 seeds)
    "cpu": {
        "pool_size": "300", "budgets": "1%,2%,5%,10%", "seeds": "0,1,2",
        "strategies": "hybrid,disagreement,typiclust,probcover,entropy,coreset,tta,count-strata",
        "pretrain_iterations": 2000, "finetune_iterations": 750, "iterations_per_epoch": 50,
        "full_iterations": 2250, "full_curve": "", "unannotated_size": "50", "device": "cpu", "workers": 2,
        "finetune_lr": 1e-2, "finetune_warmup": 0,
    },
    # one CUDA machine for about 15 minutes: the whole pool, the 5 % arms of entropy (the best
    # ranking before cells were split at distance peaks) against both random baselines, and the
    # full reference at a long budget with its learning curve
    "gpu": {
        "pool_size": "all", "budgets": "5%", "seeds": "0,1,2", "strategies": "entropy",
        "pretrain_iterations": 2000, "finetune_iterations": 250, "iterations_per_epoch": 250,
        "full_iterations": 5000, "full_curve": "0.2,0.5", "unannotated_size": "all", "device": "cuda",
        "workers": 8, "finetune_lr": 1e-2, "finetune_warmup": 0,
    },
    # seconds of training, for the tests: every kind of arm runs once
    "quick": {
        "pool_size": "6", "budgets": "34%", "seeds": "0", "strategies": "hybrid,disagreement",
        "pretrain_iterations": 2, "finetune_iterations": 1, "iterations_per_epoch": 2,
        "full_iterations": None, "full_curve": "0.5", "unannotated_size": "3", "device": "cpu", "workers": 0,
        "test_size": 2, "finetune_lr": 1e-2, "finetune_warmup": 0,
    },
}  # fmt: skip
PRESET_KEYS = sorted({key for preset in PRESETS.values() for key in preset})


def _shared(name: str) -> Path | None:
    """A dataset of the team's shared data folder, when it is there."""
    return shared_data() / name if (shared_data() / name).is_dir() else None


def _with_preset(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every setting the command line left out from ``--preset``."""
    preset = PRESETS[args.preset]
    for key in PRESET_KEYS:
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key))
    return args


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def run(args: argparse.Namespace) -> int:
    from orchestrator.rank.strategies import budget_to_k
    from orchestrator.study.report import write_report
    from orchestrator.study.runner import Study, StudyConfig, config_dict

    args = _with_preset(args)
    split = args.train is None and args.test is None  # the default: one collection, split by seed
    if split and args.data is None:
        raise DatasetError(
            f"no data: pass --data (or --train and --test); looked for dsb2018_stage1_train_fluo in "
            f"{shared_data()} (ACTIVESEG_SHARED_DATA sets that folder)"
        )
    if not split and (args.train is None or args.test is None):
        raise DatasetError("--train and --test go together (or pass --data alone)")
    try:
        curve = tuple(float(f) for f in _list(args.full_curve))
    except ValueError:
        raise LoopError(f"--full-curve takes fractions such as 0.25,0.5, got {args.full_curve!r}") from None
    config = StudyConfig(
        train=None if split else args.train,
        test=None if split else args.test,
        data=args.data if split else None,
        shift=(args.shift if split else None) if args.shift != Path("none") else None,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        pool_size=None if args.pool_size == "all" else int(args.pool_size),
        test_size=args.test_size,
        unannotated_size=None if args.unannotated_size == "all" else int(args.unannotated_size),
        budgets=_list(args.budgets),
        seeds=tuple(int(s) for s in _list(args.seeds)),
        strategies=_list(args.strategies),
        pretrain_iterations=args.pretrain_iterations,
        finetune_iterations=args.finetune_iterations,
        iterations_per_epoch=args.iterations_per_epoch,
        pretrain_minutes=args.pretrain_minutes,
        finetune_minutes=args.finetune_minutes,
        full_iterations=args.full_iterations,
        full_curve=curve,
        scaled_finetune=args.scaled_finetune,
        finetune_lr=args.finetune_lr,
        finetune_warmup=args.finetune_warmup,
        rounds=args.rounds,
        rounds_budget=args.rounds_budget,
        rounds_strategies=_list(args.rounds_strategies),
        configuration=args.plan,
        init=args.init,
        finetune_with_pseudo=args.finetune_with_pseudo,
        teacher_arms=args.teacher_arms,
        split_depth=_split_depth(args.split_depth),
        full=not args.no_full,
        device=args.device,
        workers=args.workers,
    )
    study = Study(config, args.out, keep_models=args.keep_models)
    records = study.records() if args.report_only else study.run()
    if not records:
        raise LoopError(f"{args.out} has no finished runs yet; run without --report-only")
    unrelated = (
        "budgets",
        "seeds",
        "strategies",
        "full_curve",
        "scaled_finetune",
        "rounds",
        "rounds_budget",
        "rounds_strategies",
        "teacher_arms",
        "full",
        "device",
        "workers",
    )
    settings = {k: v for k, v in config_dict(config).items() if k not in unrelated}
    headline_k = budget_to_k(args.headline_budget, records[0]["pool"])
    print("\n" + write_report(records, args.out, settings, headline_k))
    print(f"\nwrote results.csv, results.md, results.json and msa_vs_annotated.png to {args.out}")
    return 0


def _preset_help(key: str) -> str:
    """Each preset's value of ``key``, for a flag's help (argparse formats %)."""
    return ", ".join(f"{name} {preset.get(key)}" for name, preset in PRESETS.items()).replace("%", "%%")


def _split_depth(value: str) -> float | None:
    if value == "none":
        return None
    try:
        depth = float(value)
    except ValueError:
        depth = -1.0
    if depth <= 0:
        raise LoopError(f"--split-depth takes a depth in pixels above 0 or 'none', got {value!r}")
    return depth


def add_study(sub: argparse._SubParsersAction) -> None:
    """The ``study`` subcommand on the CLI's subparsers."""
    p = sub.add_parser(
        "study",
        help="label-efficiency study: corrected core-sets of 1-10 %% by each strategy against random picks",
        description=(
            "Without Label Studio: split a labelled collection into pool and held-out test, pseudo-label "
            "the pool, pretrain nnU-Net on it, then fine-tune with the same budget on k images corrected "
            "to their ground truth, picked by each candidate strategy, at random, or instance-weighted at "
            "random, and compare with pseudo-labels only and full supervision. Every model is scored on "
            "the held-out images, on the pool images it left unannotated and on a shifted set (mSA, AP50, "
            "F1). Writes results.csv, results.md, results.json and msa_vs_annotated.png to --out. "
            "Resumable: finished runs are kept and skipped, and a later call may add budgets, seeds and "
            "strategies. --preset picks every setting not given (cpu: about 3 minutes per run on 2 cores)."
        ),
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="cpu: the reduced study for 2 CPU cores; gpu: about 15 minutes on one CUDA GPU (not yet run "
        "on one); quick: seconds, for tests (default: %(default)s)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=_shared("dsb2018_stage1_train_fluo"),
        help="one collection (images with labels/) split into pool and held-out test by --split-seed, "
        "stratified by image size: a lab's own labelled subset (default: "
        "../shared/data/dsb2018_stage1_train_fluo)",
    )
    p.add_argument(
        "--shift",
        type=Path,
        default=_shared("dsb2018_stage1_test"),
        help="images with labels/ of another distribution, scored as a domain-shift check with --data; a "
        "manifest 'group' column keeps fluorescence only and overlap_with_dsb2018_stage1_train.csv removes "
        "duplicates of the pool; 'none' leaves it out (default: ../shared/data/dsb2018_stage1_test)",
    )
    p.add_argument("--train", type=Path, default=None, help="instead of --data: the pool's images")
    p.add_argument("--test", type=Path, default=None, help="with --train: the held-out images")
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="of --data, held out (default: %(default)s)"
    )
    p.add_argument("--split-seed", type=int, default=0, help="which of --data are held out (default: 0)")
    p.add_argument(
        "--out", type=Path, default=Path("study"), help="results and cache folder (default: study)"
    )
    p.add_argument("--pool-size", default=None, help=f"pool images, or 'all' ({_preset_help('pool_size')})")
    p.add_argument(
        "--test-size", type=int, default=None, help="use only the first N held-out and shifted images"
    )
    p.add_argument(
        "--unannotated-size",
        default=None,
        help="pool images sampled to score each arm on those it did not annotate, or 'all' "
        f"({_preset_help('unannotated_size')})",
    )
    p.add_argument(
        "--budgets", default=None, help=f"core-set sizes, comma-separated ({_preset_help('budgets')})"
    )
    p.add_argument("--headline-budget", default="5%", help="budget of the headline (default: %(default)s)")
    p.add_argument("--seeds", default=None, help=f"comma-separated ({_preset_help('seeds')})")
    p.add_argument(
        "--strategies",
        default=None,
        help=f"candidate strategies, one arm each besides random and instance-random; from "
        f"{', '.join(sorted(STRATEGIES))} ({_preset_help('strategies')})",
    )
    p.add_argument(
        "--pretrain-iterations", type=int, default=None,
        help=f"on pseudo-labels ({_preset_help('pretrain_iterations')})",
    )  # fmt: skip
    p.add_argument(
        "--finetune-iterations", type=int, default=None,
        help=f"every arm's extra budget ({_preset_help('finetune_iterations')})",
    )  # fmt: skip
    p.add_argument(
        "--iterations-per-epoch", type=int, default=None, help=_preset_help("iterations_per_epoch")
    )
    p.add_argument(
        "--full-iterations", type=int, default=None,
        help=f"full supervision from scratch; none: pretrain + fine-tune ({_preset_help('full_iterations')})",
    )  # fmt: skip
    p.add_argument(
        "--full-curve", default=None,
        help="fractions of --full-iterations also trained (first seed), the reference's learning curve "
        f"({_preset_help('full_curve')})",
    )  # fmt: skip
    p.add_argument(
        "--scaled-finetune", default=None, metavar="BUDGET",
        help="also run every selection arm with its fine-tuning budget in proportion to k: "
        "--finetune-iterations at this budget (e.g. 5%%), twice that at twice the images; the arms "
        "are named '<arm>, fine-tune ∝ k' and compared with the fixed budget (default: off)",
    )  # fmt: skip
    p.add_argument(
        "--finetune-lr",
        type=float,
        default=None,
        help=f"every fine-tune's learning rate ({_preset_help('finetune_lr')})",
    )
    p.add_argument(
        "--finetune-warmup", type=int, default=None,
        help="iterations of linear learning-rate warm-up in every fine-tune "
        f"({_preset_help('finetune_warmup')})",
    )  # fmt: skip
    p.add_argument(
        "--split-depth", default=str(SPLIT_DEPTH), metavar="PX",
        help="how predicted class maps become cells: one per distance peak at least PX deep inside "
        "the predicted interior, or 'none' for one per interior component (what studies measured "
        "before 2026-12-07; an older study folder continues only with 'none') (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--rounds", type=int, default=0,
        help="also run multi-round arms: this many rounds of --rounds-budget new images, each round "
        "fine-tuned from the previous round's model and picked with its scores, as the loop does "
        "(default: off)",
    )  # fmt: skip
    p.add_argument("--rounds-budget", default="5%", help="images corrected per round (default: %(default)s)")
    p.add_argument(
        "--rounds-strategies", default="entropy,random", help="the multi-round arms (default: %(default)s)"
    )
    p.add_argument(
        "--pretrain-minutes",
        type=float,
        default=None,
        help="pretraining time budget instead of --pretrain-iterations (default: none)",
    )
    p.add_argument(
        "--finetune-minutes",
        type=float,
        default=None,
        help="every arm's extra training time instead of --finetune-iterations (default: none)",
    )
    p.add_argument(
        "--plan",
        choices=list(CONFIGURATIONS),
        default=None,
        help="nnU-Net configuration (default: 2d_lite on cpu, 2d on cuda)",
    )
    p.add_argument(
        "--init",
        default="none",
        metavar="auto|none|FILE",
        help="the pseudo model's starting weights: none, random (default); auto, the shipped network, "
        "which learnt from the ground truth of DSB2018 training images (the default pool: it would leak "
        "their labels); or a starting-point file trained without the pool's labels",
    )
    p.add_argument(
        "--finetune-with-pseudo",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the selection arms fine-tune on their k corrected images, repeated to about half of the "
        "samples, plus the other pool images' pseudo-labels, as 'activeseg finetune' does by default; "
        "--no-finetune-with-pseudo: on the k images only (default: on)",
    )
    p.add_argument(
        "--teacher-arms",
        action="store_true",
        help="also run, at every budget, 'poor teacher' (the default strategy's k images corrected and "
        "trained on alone, from the pseudo model: the loop's path when the pseudo-labels score badly on "
        "the corrections) and 'no teacher' (k images picked by typiclust on SAM image embeddings, "
        "trained from scratch at the full arm's budget: a project without pseudo-labels)",
    )
    p.add_argument(
        "--no-full",
        action="store_true",
        help="leave out the fully supervised arms (e.g. for a second study that changes only how the "
        "selection arms fine-tune)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help=_preset_help("device"))
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"nnU-Net augmentation processes; 0 runs augmentation in-process ({_preset_help('workers')})",
    )
    p.add_argument("--keep-models", action="store_true", help="keep every arm's checkpoint (16 MB on cpu)")
    p.add_argument(
        "--report-only", action="store_true", help="write the outputs from finished runs; train nothing"
    )
    p.set_defaults(func=run)
