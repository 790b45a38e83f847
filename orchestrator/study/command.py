"""``activeseg study``: its command line (the study itself is in ``runner``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from activeseg.datasets import DatasetError, shared_data
from activeseg.nnunet.plans import CONFIGURATIONS
from orchestrator.context import LoopError
from orchestrator.strategies import STRATEGIES


def _shared(name: str) -> Path | None:
    """A dataset of the team's shared data folder, when it is there."""
    return shared_data() / name if (shared_data() / name).is_dir() else None


def run(args: argparse.Namespace) -> int:
    from orchestrator.strategies import budget_to_k
    from orchestrator.study.report import write_report
    from orchestrator.study.runner import Study, StudyConfig, config_dict

    if args.data is None and (args.train is None or args.test is None):
        raise DatasetError(
            f"no data: pass --data, or --train and --test (looked for dsb2018_stage1_train_fluo and "
            f"dsb2018_stage1_test in {shared_data()}; ACTIVESEG_SHARED_DATA sets that folder)"
        )
    config = StudyConfig(
        train=None if args.data else args.train,
        test=None if args.data else args.test,
        data=args.data,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        pool_size=None if args.pool_size == "all" else int(args.pool_size),
        test_size=args.test_size,
        budgets=tuple(b.strip() for b in args.budgets.split(",") if b.strip()),
        seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
        strategy=args.strategy,
        pretrain_iterations=args.pretrain_iterations,
        finetune_iterations=args.finetune_iterations,
        iterations_per_epoch=args.iterations_per_epoch,
        pretrain_minutes=args.pretrain_minutes,
        finetune_minutes=args.finetune_minutes,
        configuration=args.plan,
        init=args.init,
        finetune_with_pseudo=args.finetune_with_pseudo,
        full=not args.no_full,
        device=args.device,
        workers=args.workers,
    )
    study = Study(config, args.out, keep_models=args.keep_models)
    records = study.records() if args.report_only else study.run()
    if not records:
        raise LoopError(f"{args.out} has no finished runs yet; run without --report-only")
    unrelated = ("budgets", "seeds", "full", "device", "workers")  # they do not change a run's result
    settings = {k: v for k, v in config_dict(config).items() if k not in unrelated}
    headline_k = budget_to_k(args.headline_budget, records[0]["pool"])
    print("\n" + write_report(records, args.out, settings, headline_k, config.strategy))
    print(f"\nwrote results.csv, results.md, results.json and msa_vs_annotated.png to {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``study`` subcommand on the CLI's subparsers."""
    p = sub.add_parser(
        "study",
        help="label-efficiency study: corrected core-sets of 2/5/10 %% against random picks and full labels",
        description=(
            "Without Label Studio: pseudo-label a pool of training images, pretrain nnU-Net on them, then "
            "fine-tune with the same budget on k images corrected to their ground truth, picked by our "
            "strategy, at random, or instance-weighted at random, and compare with pseudo-labels only and "
            "full supervision (from scratch and from the pseudo model) on held-out test images (mSA, AP50, "
            "F1). Writes results.csv, results.md and msa_vs_annotated.png to --out. Resumable: finished "
            "runs are kept and skipped. On 2 CPU cores the defaults take about 35 minutes per seed."
        ),
    )
    p.add_argument(
        "--train",
        type=Path,
        default=_shared("dsb2018_stage1_train_fluo"),
        help="training images with labels/ (default: ../shared/data/dsb2018_stage1_train_fluo)",
    )
    p.add_argument(
        "--test",
        type=Path,
        default=_shared("dsb2018_stage1_test"),
        help="held-out images with labels/; a manifest 'group' column keeps fluorescence only and "
        "overlap_with_dsb2018_stage1_train.csv removes training duplicates "
        "(default: ../shared/data/dsb2018_stage1_test)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="one collection (images with labels/) split into pool and held-out test by --split-seed, "
        "stratified by image size, instead of --train and --test: a lab's own labelled subset",
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.2, help="of --data, held out (default: %(default)s)"
    )
    p.add_argument("--split-seed", type=int, default=0, help="which of --data are held out (default: 0)")
    p.add_argument(
        "--out", type=Path, default=Path("study"), help="results and cache folder (default: study)"
    )
    p.add_argument(
        "--pool-size", default="100", help="training images in the pool, or 'all' (default: %(default)s)"
    )
    p.add_argument("--test-size", type=int, default=None, help="use only the first N test images")
    p.add_argument(
        "--budgets", default="2%,5%,10%", help="core-set sizes, comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--headline-budget", default="5%", help="budget of the headline ratio (default: %(default)s)"
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated (default: %(default)s)")
    p.add_argument(
        "--strategy", choices=sorted(STRATEGIES), default="hybrid", help="'ours' (default: %(default)s)"
    )
    p.add_argument(
        "--pretrain-iterations", type=int, default=150, help="on pseudo-labels (default: %(default)s)"
    )
    p.add_argument(
        "--finetune-iterations", type=int, default=50, help="every arm's extra budget (default: %(default)s)"
    )
    p.add_argument("--iterations-per-epoch", type=int, default=50, help="default: %(default)s")
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
        "--no-full",
        action="store_true",
        help="leave out the two fully supervised arms (e.g. for a second study that changes only "
        "how the selection arms fine-tune)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: %(default)s")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="nnU-Net data-augmentation processes; 0 runs augmentation in-process (default: %(default)s)",
    )
    p.add_argument("--keep-models", action="store_true", help="keep every arm's checkpoint (~130 MB each)")
    p.add_argument(
        "--report-only", action="store_true", help="write the outputs from finished runs; train nothing"
    )
    p.set_defaults(func=run)
