"""Which masks annotators get: the serving gate.

A model version is served (its masks become the pre-annotations and the backend's predictions)
only once it has beaten what is served now on annotations it has not trained on. Each round's
corrections are exactly that, as long as they are scored *before* they are used for
fine-tuning: the pseudo-labels, the served model and the newest model (trained on earlier
rounds only) are all scored against them, and the best one is served from then on. A model that
loses is kept (the next round still fine-tunes from the newest model) but not served.

So a newly fine-tuned model is served one round later, after the next round's corrections have
vouched for it. The corrections lean towards what annotators were shown (an annotator who leaves
a mask as it is agrees with it), which favours the served source: the gate is conservative.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from activeseg.metrics import score_dataset

#: masks of one source for a task (None: the source has none for it)
LabelsOf = Callable[[dict[str, Any], tuple[int, int]], np.ndarray | None]


@dataclass(frozen=True)
class Decision:
    served: str | None  # model version, or None for the pseudo-labels
    reason: str


def compare(
    corrections: Sequence[tuple[dict[str, Any], np.ndarray]], sources: Mapping[str, LabelsOf]
) -> dict[str, dict[str, float]]:
    """mSA, AP50 and F1 of each source against the corrected masks (task, truth), on the tasks
    every source has masks for, so all are scored on the same images."""
    found = {
        name: [labels(task, truth.shape) for task, truth in corrections] for name, labels in sources.items()
    }
    common = [i for i in range(len(corrections)) if all(found[name][i] is not None for name in sources)]
    if not common:
        return {}
    out = {}
    for name in sources:
        scores = score_dataset([(corrections[i][1], found[name][i]) for i in common])
        out[name] = {"msa": round(scores.msa, 4), "ap50": round(scores.ap[0.5], 4), "f1": round(scores.f1, 4),
                     "n": len(common)}  # fmt: skip
    return out


def decide(served: str | None, pseudo: str | None, comparison: Mapping[str, Mapping[str, float]]) -> Decision:
    """The source to serve after a round: the one with the best mSA on its corrections; what is
    served now keeps its place unless another source beats it outright."""
    current = served or pseudo
    if current is None or current not in comparison:
        return Decision(served, "nothing to compare on these corrections: serving stays as it was")
    best = max(comparison, key=lambda name: (comparison[name]["msa"], name == current))
    n = int(comparison[current]["n"])
    scored = ", ".join(f"{name} {comparison[name]['msa']:.3f}" for name in comparison)
    if best == current:
        losers = [name for name in comparison if name != current]
        why = f"{' and '.join(losers)} did not beat it" if losers else "no other source to compare"
        return Decision(served, f"keeps serving {current}: {why} (mSA on {n} corrections: {scored})")
    chosen = None if best == pseudo else best
    return Decision(chosen, f"serves {best} instead of {current} (mSA on {n} corrections: {scored})")
