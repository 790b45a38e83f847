"""A poor teacher is set aside: from the first round whose corrections show it, for good."""

from __future__ import annotations

from pathlib import Path

from activeseg.projectstate import ProjectDir, ProjectState
from orchestrator.status import ProjectStatus, format_status
from orchestrator.train.teacher import POOR_TEACHER_MSA, set_aside_reason
from orchestrator.train.training import teacher_set_aside

PSEUDO = "classical-v3"


def scored(teacher: float, model: float = 0.5) -> dict[str, dict[str, float]]:
    return {PSEUDO: {"msa": teacher, "ap50": 0.0, "f1": 0.0, "n": 4},
            "nnunet-r0": {"msa": model, "ap50": 0.0, "f1": 0.0, "n": 4}}  # fmt: skip


def test_the_threshold_decides() -> None:
    assert set_aside_reason(PSEUDO, scored(POOR_TEACHER_MSA), 1) == ""
    reason = set_aside_reason(PSEUDO, scored(0.02), 2)
    assert reason.startswith("round 2: the pseudo-labels (classical-v3) scored mSA 0.020 on 4 corrections")
    assert f"below {POOR_TEACHER_MSA:g}" in reason and "corrected images alone" in reason
    assert set_aside_reason(PSEUDO, scored(0.02), 1, threshold=0.0) == ""  # 0: never
    assert set_aside_reason(PSEUDO, {}, 1) == ""  # nothing was compared
    assert set_aside_reason(None, scored(0.02), 1) == ""


def test_set_aside_once_and_for_good_and_status_says_why(tmp_path: Path) -> None:
    pdir = ProjectDir(tmp_path, 3)
    with pdir.update() as state:
        state.pseudo_version = PSEUDO
    said: list[str] = []
    assert teacher_set_aside(pdir, 1, scored(0.4), said.append) == "" and not said
    reason = teacher_set_aside(pdir, 2, scored(0.05), said.append)
    assert reason and said == [reason] and pdir.load().teacher_set_aside == reason
    # a later round where the pseudo-labels happen to score well does not bring them back
    assert teacher_set_aside(pdir, 3, scored(0.9), said.append) == reason and len(said) == 1
    text = format_status(ProjectStatus(3, 10, 4, pdir.load(), None, [], [], None, "http://ls"))
    assert f"pseudo-labels set aside: {reason}" in text


def test_the_admins_settings_keep_the_teacher(tmp_path: Path) -> None:
    for name, value in (("with_pseudo", False), ("poor_teacher_msa", 0.0)):
        pdir = ProjectDir(tmp_path / name, 3)
        with pdir.update() as state:
            state.pseudo_version = PSEUDO
            setattr(state.settings, name, value)
        assert teacher_set_aside(pdir, 1, scored(0.01), print) == ""
        assert pdir.load().teacher_set_aside == ""
    higher = ProjectDir(tmp_path / "higher", 3)
    with higher.update() as state:
        state.pseudo_version, state.settings.poor_teacher_msa = PSEUDO, 0.5
    assert teacher_set_aside(higher, 1, scored(0.4), print)
    assert ProjectState.from_json({"project_id": 1}).teacher_set_aside == ""  # older state files
