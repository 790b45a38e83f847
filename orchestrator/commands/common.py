"""What every command shares: the project flags, the saved settings, and the errors a user can fix."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from activeseg.checkpoints import CheckpointError
from activeseg.datasets import DatasetError
from activeseg.imagefetch import ImageFetchError
from activeseg.imageio import ImageReadError
from activeseg.jobs import JobError
from activeseg.labelconfig import LabelConfigError
from activeseg.labellers.base import ModelLoadError
from activeseg.lsclient import ConfigError, LabelStudioError
from activeseg.lsserver import LabelStudioServerError
from activeseg.nnunet.dataset import DatasetExportError
from activeseg.nnunet.workspace import WorkspaceError
from orchestrator.context import LoopError

if TYPE_CHECKING:
    from orchestrator.context import ProjectContext

#: errors a user can fix (bad input, an unreachable server, a wrong token): one line, exit status 2
USER_ERRORS = (
    ImageReadError,
    DatasetError,
    LabelConfigError,
    LabelStudioError,
    LabelStudioServerError,
    ModelLoadError,
    CheckpointError,
    JobError,
    LoopError,
    ImageFetchError,
    WorkspaceError,
    DatasetExportError,
    ConfigError,
)


def project_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="models, scores, state and jobs (default: MODEL_DIR or ./model_dir)",
    )


def project_context(args: argparse.Namespace) -> ProjectContext:
    from orchestrator.context import ProjectContext

    return ProjectContext.from_env(args.project, args.model_dir)


CLEAR = object()  # a flag that resets a saved setting to None


def minutes_flag(value: float | None, *iteration_flags: int | None) -> object:
    """``--minutes`` as a setting: 0 clears it, and so do epochs or iterations given without it."""
    if value is not None and value < 0:
        raise LoopError(f"--minutes must be positive (0 clears the saved budget), got {value:g}")
    if value is None:
        return CLEAR if any(f is not None for f in iteration_flags) else None
    return CLEAR if value == 0 else value


def start_minutes_flag(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise LoopError(f"--start-minutes must be 0 or more, got {value:g}")
    return value


def save_settings(ctx: ProjectContext, **values: object) -> None:
    """Keep the flags the admin gave, so webhook-triggered jobs use them too."""
    with ctx.dir.update() as state:
        for name, value in values.items():
            if value is CLEAR:
                setattr(state.settings, name, None)
            elif value is not None:
                setattr(state.settings, name, str(value.resolve()) if isinstance(value, Path) else value)


def foreground(ctx: ProjectContext, kind: str, params: dict | None = None) -> dict:
    from orchestrator.jobrun import run_here

    return run_here(ctx, kind, params)
