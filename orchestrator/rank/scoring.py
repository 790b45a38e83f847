"""Scoring tasks for ranking: each task once per model version (``activeseg.scores`` stores them).

Two scorers:
- :class:`NnunetScorer`: the current nnU-Net: mean per-pixel softmax entropy over the dilated
  predicted foreground (where errors happen; a mostly empty image is not "uncertain" just
  because its background is large), features = pooled bottleneck activations; with ``flips``
  (for the ``tta`` strategy) also the flipped predictions' spread over the same foreground.
- :class:`ColdStartScorer`, before any nnU-Net exists: features from the SAM (LiteMedSAM)
  image encoder, uncertainty = 1 - the pseudo-label's own confidence score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from activeseg.imagefetch import ImageSource, task_image_url
from activeseg.imageio import decode_image, model_channels
from activeseg.labelconfig import RegionConfig
from activeseg.scores import ScoreStore, TaskScore, foreground_mean


class Scorer(Protocol):
    """Scores one task; ``name`` is the model version the scores belong to."""

    name: str

    def score(self, task: dict[str, Any]) -> TaskScore: ...

    def complete(self, stored: TaskScore) -> bool:
        """Whether a stored score has everything this scorer computes."""
        ...


class NnunetScorer:
    """A trained model version of the project's nnU-Net workspace."""

    def __init__(
        self, workspace: Any, version: str, images: ImageSource, config: RegionConfig, device: str,
        flips: bool = False,
    ):  # fmt: skip
        from activeseg.nnunet.engine import Predictor

        self.name = version
        self.images, self.config, self.flips = images, config, flips
        self.predictor = Predictor(workspace, version, device=device)

    def score(self, task: dict[str, Any]) -> TaskScore:
        fetched = self.images.fetch(task_image_url(task, self.config.image_key))
        channels = model_channels(decode_image(fetched.data, fetched.name))
        pred = self.predictor.predict(channels)
        spread = self.predictor.flip_spread(channels, pred.probabilities) if self.flips else None
        return TaskScore(
            task_id=int(task["id"]),
            uncertainty=foreground_mean(pred.entropy, pred.classes),
            instances=int(pred.labels.max()),
            features=pred.features,
            labels=pred.labels.astype(np.uint16 if pred.labels.max() < 65536 else np.uint32),
            flip_spread=None if spread is None else foreground_mean(spread, pred.classes),
        )

    def complete(self, stored: TaskScore) -> bool:
        return stored.labels is not None and (not self.flips or stored.flip_spread is not None)


class ImageEmbedder:
    """What an image looks like before any model of the project exists: the SAM (LiteMedSAM)
    image encoder's channels, pooled to their mean and spread. Diversity strategies (typiclust,
    probcover) pick a first core-set from these where no teacher or nnU-Net can be trusted."""

    def __init__(self) -> None:
        self._predictor: Any = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._predictor is None:
            from segment_anything import SamPredictor

            from activeseg.labellers.sam_models import load_litemedsam

            self._predictor = SamPredictor(load_litemedsam())
        from activeseg.labellers.sam import sam_rgb

        self._predictor.set_image(sam_rgb(image))
        emb = self._predictor.features[0].float()  # (256, 64, 64)
        return np.concatenate([emb.mean(dim=(1, 2)).numpy(), emb.std(dim=(1, 2)).numpy()]).astype(np.float32)


class ColdStartScorer:
    """Before nnU-Net: the pseudo-label's confidence and the SAM image encoder's view of the image."""

    def __init__(self, pseudo_version: str, images: ImageSource, config: RegionConfig) -> None:
        self.name = self.name_for(pseudo_version)
        self.pseudo_version = pseudo_version
        self.images, self.config = images, config
        self._embed = ImageEmbedder()

    @staticmethod
    def name_for(pseudo_version: str) -> str:
        return f"cold-{pseudo_version}"

    def score(self, task: dict[str, Any]) -> TaskScore:
        preds = [p for p in task.get("predictions") or [] if p.get("model_version") == self.pseudo_version]
        if not preds:
            raise ValueError(f"task {task['id']} has no {self.pseudo_version} pseudo-label; run prelabel")
        pred = max(preds, key=lambda p: p.get("id") or 0)
        fetched = self.images.fetch(task_image_url(task, self.config.image_key))
        image = decode_image(fetched.data, fetched.name)
        labels = self.config.to_labels(pred["result"], image.shape[0], image.shape[1])
        confidence = float(pred.get("score") or 0.0)
        return TaskScore(
            task_id=int(task["id"]),
            uncertainty=1.0 - confidence,
            instances=int(len(np.unique(labels)) - 1),
            features=self._embed(image),
        )

    def complete(self, stored: TaskScore) -> bool:
        return True


def score_tasks(
    scorer: Scorer, store: ScoreStore, tasks: Sequence[dict[str, Any]], progress: bool = True
) -> tuple[list[TaskScore], list[tuple[int, str]]]:
    """Scores of ``tasks`` (computed where missing or incomplete, e.g. without the flip spread a
    strategy chose later needs) and the (task id, error) of those that failed."""
    todo = [t for t in tasks if (stored := store.get(int(t["id"]))) is None or not scorer.complete(stored)]
    errors: list[tuple[int, str]] = []
    for task in tqdm(todo, desc=f"scoring with {scorer.name}", unit="task", disable=not progress or not todo):
        try:
            store.put(scorer.score(task))
        except (ValueError, OSError) as exc:
            errors.append((int(task["id"]), str(exc)))
    failed = {e[0] for e in errors}
    scores = [store.get(int(t["id"])) for t in tasks if int(t["id"]) not in failed]
    return [s for s in scores if s is not None], errors


def stack_features(scores: Iterable[TaskScore]) -> np.ndarray:
    rows = [s.features for s in scores]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
