"""Atomic writes: all or nothing, and readable like any other file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from activeseg.fsutil import atomic_path, atomic_write_text, held_alone


def test_written_files_are_readable_by_others(tmp_path: Path) -> None:
    """mkstemp makes 0600 files; Label Studio, running as another user, must read staged images."""
    target = tmp_path / "a" / "image.png"
    atomic_write_text(target, "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert target.stat().st_mode & stat.S_IROTH or not plain.stat().st_mode & stat.S_IROTH


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_a_held_lock_is_refused_not_waited_for(tmp_path: Path) -> None:
    lock = tmp_path / "study" / ".lock"
    with held_alone(lock) as first, held_alone(lock) as second:  # another open file: another holder
        assert first and not second
    with held_alone(lock) as again:
        assert again
