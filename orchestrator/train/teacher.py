"""Whether the pseudo-labeller is still worth learning from.

Each fine-tune normally mixes the corrections with the other tasks' pseudo-labels, so that the
model keeps what the teacher gets right. A teacher that finds next to nothing on a lab's images
(phase contrast, brightfield for a threshold) only dilutes the corrections with its errors, so
once a round's corrections show that, the pseudo-labels are set aside for good and nnU-Net
learns from the corrected images alone (the unannotated tasks are left out, not taught the
teacher's mistakes).

The corrections come from the ranking's core-set, which picks the images the model finds hard:
on DSB2018 fluorescence, where the pseudo-labels help, the classical teacher scored 0.188 mSA on
the default strategy's 15 picks (0.55 on average over the collection), so the threshold sits well
below that (docs/results.md, "A teacher the loop sets aside").
"""

from __future__ import annotations

from collections.abc import Mapping

#: the pseudo-labels' mSA on a round's corrections below which they are set aside
POOR_TEACHER_MSA = 0.10


def set_aside_reason(
    pseudo: str | None,
    comparison: Mapping[str, Mapping[str, float]],
    round_number: int,
    threshold: float | None = POOR_TEACHER_MSA,
) -> str:
    """Why the pseudo-labels ``pseudo`` are set aside after this round's ``comparison``
    (orchestrator.train.serving.compare), or "" to keep learning from them."""
    if threshold is None or pseudo is None or pseudo not in comparison:
        return ""
    scored = comparison[pseudo]
    if scored["msa"] >= threshold:
        return ""
    return (
        f"round {round_number}: the pseudo-labels ({pseudo}) scored mSA {scored['msa']:.3f} on "
        f"{int(scored['n'])} corrections, below {threshold:g}; fine-tuning learns from the "
        "corrected images alone from now on"
    )
