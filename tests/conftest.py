"""Shared fixtures: data locations and one real Label Studio server per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from activeseg.datasets import BUNDLED_SAMPLE
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LS_VERSION, LabelStudioServer, ensure_template, prepare_from_template

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ACTIVESEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 24-image CC0 sample bundled in the repository."""
    return BUNDLED_SAMPLE


@pytest.fixture(scope="session")
def dsb_train() -> Path:
    """The full DSB2018 fluorescence training folder; tests needing it skip where it is absent."""
    path = SHARED_DATA / "dsb2018_stage1_train_fluo"
    if not path.is_dir():
        pytest.skip(f"{path} not present (set ACTIVESEG_SHARED_DATA)")
    return path


def ls_template_dir() -> Path:
    """A migrated Label Studio data dir reused between runs (first start: ~25-60 s of migrations)."""
    default = Path.home() / ".cache" / "activeseg" / f"ls-template-{LS_VERSION}"
    return Path(os.environ.get("ACTIVESEG_LS_TEMPLATE", default))


@pytest.fixture(scope="session")
def ls_template() -> Path:
    return ensure_template(ls_template_dir())


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory, ls_template: Path) -> Iterator[LabelStudioServer]:
    """A real Label Studio 1.23.2 on a free port of 127.0.0.1, stopped at the end of the session."""
    data_dir = tmp_path_factory.mktemp("labelstudio") / "data"
    prepare_from_template(data_dir, ls_template)
    server = LabelStudioServer(data_dir, files_root=data_dir.parent / "files")
    server.start()
    print(f"\nLabel Studio up on {server.url} after {server.startup_seconds:.1f} s")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ls_client(label_studio: LabelStudioServer) -> LabelStudioClient:
    return LabelStudioClient(label_studio.url, label_studio.login.token)
