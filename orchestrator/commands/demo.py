"""``activeseg demo`` and ``activeseg labelstudio``: the loop on real images with a simulated
annotator, and the local Label Studio it leaves running."""

from __future__ import annotations

import argparse
from pathlib import Path

from activeseg.datasets import BUNDLED_SAMPLE
from activeseg.labelconfig import DEFAULT_LABEL_CONFIG
from activeseg.projectstate import PSEUDO_CHOICES
from orchestrator.commands.common import (
    start_minutes_flag,
)
from orchestrator.rank.strategies import DEFAULT_STRATEGY, STRATEGIES


def _cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator.demo.run import DemoSettings, format_scores, run_demo

    settings = DemoSettings(
        images=args.images,
        test_images=args.test_images,
        title=args.title,
        label_config=args.label_config,
        port=args.port,
        budget=args.budget,
        strategy=args.strategy,
        minutes=args.minutes or None,
        finetune_minutes=args.finetune_minutes or None,
        epochs=args.epochs,
        iterations=args.iterations,
        finetune_epochs=args.finetune_epochs,
        finetune_iterations=args.finetune_iterations,
        finetune_lr=args.finetune_lr,
        finetune_pseudo=args.finetune_pseudo,
        init=args.init,
        start_minutes=start_minutes_flag(args.start_minutes),
        seed=args.seed,
        keep=args.keep,
    )
    result = run_demo(settings, args.workspace)
    print("\n" + format_scores(result))
    print(f"\nlearning curve: {result.curve}")
    if args.keep:
        where = "" if args.workspace == Path(".activeseg") else f" --workspace {args.workspace}"
        print(
            f"\nLabel Studio keeps running: {result.url}/projects/{result.project_id}/data\n"
            f"  admin      {result.username} / {result.password}\n"
            f"  annotator  {result.annotator[0]} / {result.annotator[1]}\n"
            f"stop it (and the ML backend) with: activeseg labelstudio stop{where}"
        )
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole loop on real nuclei images, with a simulated annotator (about 15 min on 2 CPU cores)",
        description=(
            "Start a local Label Studio (127.0.0.1) and the ML backend, create a project from the images "
            "(a seeded quarter held out for testing), pseudo-label, pretrain nnU-Net, rank; a simulated "
            "annotator account then takes tasks from Label Studio's queue and submits the ground truth of "
            "the core-set; the webhook makes the backend fine-tune; the demo prints mSA on the held-out "
            "images (pseudo-labels, pretrained, fine-tuned) and writes a learning curve. No GPU, no network. "
            "Re-running continues with the next round."
        ),
    )
    p.add_argument(
        "--images",
        type=Path,
        default=BUNDLED_SAMPLE,
        help="dataset folder with images/ and labels/ (and optional manifest.csv), e.g. "
        "../shared/data/dsb2018_stage1_train_fluo; default: the bundled 24-image DSB2018 sample",
    )
    p.add_argument(
        "--test-images",
        type=Path,
        default=None,
        help="held-out dataset folder with labels/ (default: a seeded quarter of --images)",
    )
    p.add_argument(
        "--workspace",
        type=Path,
        default=Path(".activeseg"),
        help="where Label Studio's data and the staged images live (default: .activeseg)",
    )
    p.add_argument("--title", default="activeseg demo", help="project title (default: %(default)s)")
    p.add_argument(
        "--label-config",
        type=Path,
        default=DEFAULT_LABEL_CONFIG,
        help="Label Studio label config with one PolygonLabels or BrushLabels tag "
        "(default: label_config.xml, polygons; label_config_brush.xml for brush masks)",
    )
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: %(default)s)")
    p.add_argument("--budget", default="10%", help="core-set size (default: %(default)s of the tasks)")
    p.add_argument(
        "--strategy",
        choices=sorted(STRATEGIES),
        default=DEFAULT_STRATEGY,
        help="default: %(default)s, the label-efficiency study's winner (docs/results.md)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=4.0,
        help="pretraining time (default: %(default)s; 0: --epochs x --iterations instead)",
    )
    p.add_argument(
        "--finetune-minutes",
        type=float,
        default=2.0,
        help="fine-tuning time (default: %(default)s; 0: --finetune-epochs x --finetune-iterations)",
    )
    p.add_argument(
        "--epochs", type=int, default=8, help="pretraining epochs without --minutes (default: %(default)s)"
    )
    p.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default: %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=4, help="default: %(default)s")
    p.add_argument("--finetune-iterations", type=int, default=25, help="default: %(default)s")
    p.add_argument("--finetune-lr", type=float, default=None, help="as 'finetune --lr'")
    p.add_argument(
        "--finetune-pseudo",
        choices=PSEUDO_CHOICES,
        default="teacher",
        help="the other tasks' pseudo-labels in the fine-tune, as in 'finetune --pseudo' "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--init",
        default="auto",
        metavar="auto|none|FILE",
        help="nnunet-r0's starting weights: auto, the shipped network trained on the ground truth of 517 "
        "other DSB2018 images (none of the demo's); none, random weights (default: %(default)s)",
    )
    p.add_argument(
        "--start-minutes",
        type=float,
        default=0.0,
        help="pretraining minutes on the pseudo-labels when r0 starts from a starting point (default: "
        "%(default)s, r0 is the starting point; --minutes is for random weights)",
    )
    p.add_argument("--seed", type=int, default=0, help="test split and ranking seed (default: %(default)s)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave Label Studio and the backend running to look at the project",
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_labelstudio(args: argparse.Namespace) -> int:
    from orchestrator.demo.run import server_for, stop_backend

    server = server_for(args.workspace.resolve())
    url = server.running_url()
    if args.action == "stop":
        if stop_backend(args.workspace.resolve()):
            print("stopped the demo's ML backend")
        if url is None:
            print(f"no Label Studio is running for workspace {args.workspace}")
            return 0
        server.stop()
        print(f"stopped Label Studio at {url}")
        return 0
    if url is None:
        print(f"no Label Studio is running for workspace {args.workspace}")
        return 3
    print(f"Label Studio is running at {url} (login {server.login.username})")
    return 0


def add_labelstudio(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("labelstudio", help="status or stop of the workspace's local Label Studio")
    p.add_argument("action", choices=["status", "stop"])
    p.add_argument(
        "--workspace",
        type=Path,
        default=Path(".activeseg"),
        help="workspace given to 'activeseg demo' (default: .activeseg)",
    )
    p.set_defaults(func=_cmd_labelstudio)
