"""Everything a step of the loop needs about one project, built once per command or job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from activeseg.imagefetch import ImageSource
from activeseg.labelconfig import RegionConfig
from activeseg.lsclient import LabelStudioClient
from activeseg.projectstate import ProjectDir, ProjectState


class LoopError(RuntimeError):
    """A step of the loop cannot run yet; the message says what to do first."""


def default_model_dir() -> Path:
    """MODEL_DIR, shared with the ML backend (default ./model_dir)."""
    return Path(os.environ.get("MODEL_DIR", "model_dir"))


def has_human_labels(task: dict[str, Any]) -> bool:
    """A submitted (not cancelled, not skipped) annotation exists."""
    return any(not a.get("was_cancelled") for a in task.get("annotations") or [])


@dataclass
class ProjectContext:
    client: LabelStudioClient
    project_id: int
    model_dir: Path
    local_files_root: Path | None = None

    @classmethod
    def from_env(
        cls, project_id: int, model_dir: Path | None = None, client: LabelStudioClient | None = None
    ) -> ProjectContext:
        root = os.environ.get("LOCAL_FILES_DOCUMENT_ROOT") or os.environ.get(
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
        )
        return cls(
            client=client or LabelStudioClient(),
            project_id=int(project_id),
            model_dir=model_dir or default_model_dir(),
            local_files_root=Path(root) if root else None,
        )

    @cached_property
    def config(self) -> RegionConfig:
        return self.client.region_config(self.project_id)

    @cached_property
    def images(self) -> ImageSource:
        return ImageSource(self.client.url, self.client.api_key, self.local_files_root)

    @cached_property
    def dir(self) -> ProjectDir:
        return ProjectDir(self.model_dir, self.project_id)

    def state(self) -> ProjectState:
        return self.dir.load()

    def tasks(self) -> list[dict[str, Any]]:
        return self.client.tasks(self.project_id)

    def find_pseudo_version(self, tasks: list[dict[str, Any]]) -> str | None:
        """:meth:`pseudo_version`, or None when the project has no pseudo-labels yet."""
        try:
            return self.pseudo_version(tasks)
        except ValueError:
            return None

    def pseudo_version(self, tasks: list[dict[str, Any]]) -> str:
        """The pseudo-labeller version: the recorded one, else the most common prediction
        version that is not ours (rounds and nnU-Net models)."""
        recorded = self.state().pseudo_version
        if recorded:
            return recorded
        counts: dict[str, int] = {}
        for task in tasks:
            for p in task.get("predictions") or []:
                v = str(p.get("model_version") or "")
                if v and not v.startswith(("round-", "nnunet-")):
                    counts[v] = counts.get(v, 0) + 1
        if not counts:
            raise LoopError(
                f"project {self.project_id} has no pseudo-labels yet: run "
                f"'activeseg prelabel --project {self.project_id}' first"
            )
        return max(counts, key=counts.__getitem__)
