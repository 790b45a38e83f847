"""One folder per project for everything nnU-Net: raw dataset, preprocessed data, results and
our versioned models. Our code sets nnU-Net's environment variables; the user never does.

    <root>/nnUNet_raw/Dataset<id>_<name>/     imagesTr, labelsTr, dataset.json
    <root>/nnUNet_preprocessed/Dataset<id>_<name>/
    <root>/models/<version>/                  nnU-Net's trainer output + model.json

nnunetv2 2.8.1 reads the variables from ``os.environ`` at each use, so setting them for the
duration of a call is enough.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENV_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA")


class WorkspaceError(ValueError):
    """A workspace that cannot be used; the message says which folder and why."""


@dataclass(frozen=True)
class Workspace:
    root: Path
    dataset_id: int = 501
    name: str = "activeseg"

    def __post_init__(self) -> None:
        if not 1 <= self.dataset_id <= 999:
            raise WorkspaceError(f"nnU-Net dataset ids are 1..999, got {self.dataset_id}")
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.name):
            raise WorkspaceError(f"dataset name {self.name!r} may only hold letters, digits and _")

    @classmethod
    def open(
        cls, root: Path, dataset_id: int = 501, name: str = "activeseg", create: bool = False
    ) -> Workspace:
        """The workspace at ``root``; it must exist unless ``create``."""
        root = Path(root)
        if not root.is_dir():
            if not create:
                raise WorkspaceError(f"workspace {root} does not exist")
            root.mkdir(parents=True)
        return cls(root.resolve(), dataset_id, name)

    @property
    def dataset_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def dataset_dir(self) -> Path:
        return self.raw / self.dataset_name

    @property
    def preprocessed_dir(self) -> Path:
        return self.preprocessed / self.dataset_name

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def log_file(self) -> Path:
        """Where nnU-Net's own printing goes (plans, per-epoch lines): out of the user's terminal."""
        return self.root / "nnunet.log"

    @contextlib.contextmanager
    def env(self, results: Path | None = None, workers: int | None = None) -> Iterator[None]:
        """nnU-Net's variables pointing into this workspace (``results``: one model's folder;
        ``workers``: data-augmentation processes), restored afterwards; nnU-Net's printed output
        goes to :attr:`log_file` meanwhile (its progress bars, on stderr, stay visible)."""
        values = {
            "nnUNet_raw": str(self.raw),
            "nnUNet_preprocessed": str(self.preprocessed),
            "nnUNet_results": str(results or self.root / "nnUNet_results"),
        }
        if workers is not None:
            values["nnUNet_n_proc_DA"] = str(workers)
        saved = {k: os.environ.get(k) for k in ENV_VARS}
        os.environ.update(values)
        try:
            with open(self.log_file, "a") as log, contextlib.redirect_stdout(log):
                yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
