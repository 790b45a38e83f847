"""Training cases from a Label Studio project, in order of trust: a submitted human annotation
where the task has one, else the task's pseudo-label prediction.

Annotations are only read, never changed. A task with neither is left out and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from activeseg.imagefetch import ImageSource, task_image_url
from activeseg.imageio import decode_image
from activeseg.labelconfig import RegionConfig
from activeseg.nnunet.dataset import Case


@dataclass
class CaseReport:
    cases: list[Case] = field(default_factory=list)
    unlabelled: list[int] = field(default_factory=list)  # task ids with neither annotation nor prediction

    def count(self, source: str) -> int:
        return sum(c.source == source for c in self.cases)


def task_case_id(task: dict[str, Any]) -> str:
    """A file-name-safe case id: the image name when the task has one, else the task id."""
    name = str((task.get("data") or {}).get("name") or "")
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name)
    return f"t{task['id']}_{safe}" if safe else f"t{task['id']}"


def best_labels(
    task: dict[str, Any], config: RegionConfig, pseudo_version: str | None
) -> tuple[list[dict[str, Any]], str] | None:
    """(result, source) of the most trusted labels of a task, or None."""
    submitted = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if submitted:
        latest = max(submitted, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0))
        return latest["result"], "human"
    preds = task.get("predictions") or []
    if pseudo_version is not None:
        preds = [p for p in preds if p.get("model_version") == pseudo_version]
    if preds:
        latest = max(preds, key=lambda p: (p.get("created_at") or "", p.get("id") or 0))
        return latest["result"], "pseudo"
    return None


def cases_from_tasks(
    tasks: Sequence[dict[str, Any]],
    config: RegionConfig,
    images: ImageSource,
    pseudo_version: str | None = None,
) -> CaseReport:
    """Build nnU-Net cases for ``tasks`` (as listed with ``fields=all``)."""
    report = CaseReport()
    for task in tasks:
        found = best_labels(task, config, pseudo_version)
        if found is None:
            report.unlabelled.append(int(task["id"]))
            continue
        result, source = found
        fetched = images.fetch(task_image_url(task, config.image_key))
        image = decode_image(fetched.data, fetched.name)
        labels = config.to_labels(result, image.shape[0], image.shape[1])
        report.cases.append(Case(task_case_id(task), image, labels, source))
    return report


def oversample_human(cases: Sequence[Case], share: float = 0.5) -> list[Case]:
    """The cases with each human one repeated (under new ids) until they make up about ``share``
    of them.

    nnU-Net draws training cases uniformly: five corrected images among 95 pseudo-labels would be
    in one sample out of twenty, and the corrections would hardly count.
    """
    human = [c for c in cases if c.source == "human"]
    others = [c for c in cases if c.source != "human"]
    if not human or not others:
        return list(cases)
    copies = max(1, round(share / (1 - share) * len(others) / len(human)))
    repeated = [replace(c, id=f"{c.id}_copy{i}") if i else c for c in human for i in range(copies)]
    return others + repeated


def mask_disagreement(case: Case, model_labels: np.ndarray) -> Case:
    """The case with every pixel where a model's foreground differs from the case's own ignored.

    For pseudo-labels: where the teacher and the model disagree, neither is trusted, so the
    model is neither pulled back to the teacher's mistakes nor confirmed in its own; the
    corrected images decide those pixels.
    """
    if model_labels.shape != case.labels.shape:
        raise ValueError(f"{case.id}: model labels {model_labels.shape} for labels {case.labels.shape}")
    return replace(case, ignore=(model_labels > 0) != (case.labels > 0))


def result_labels(
    task: dict[str, Any], result: list[dict[str, Any]], config: RegionConfig, images: ImageSource
) -> np.ndarray:
    """Instance labels of a task's brush result; its size comes from a region, else (no region at
    all, e.g. an annotator who deleted every mask) from the image itself."""
    sized = [r for r in result if "original_height" in r]
    if sized:
        h, w = int(sized[0]["original_height"]), int(sized[0]["original_width"])
    else:
        fetched = images.fetch(task_image_url(task, config.image_key))
        h, w = decode_image(fetched.data, fetched.name).shape[:2]
    return config.to_labels(result, h, w)
