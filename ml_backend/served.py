"""The fine-tuned nnU-Net a project has (if any): what the backend serves instead of pseudo-labels.

The orchestrator records the served model version in the project's state under MODEL_DIR and
stores that model's mask for every task it scored; those masks are served as they are. A task
the model has not seen yet (imported later) is predicted here, with one loaded model per
version, built on first use.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.imagefetch import ImageSource, task_image_url
from activeseg.imageio import decode_image, model_channels
from activeseg.labelconfig import RegionConfig
from activeseg.labellers.base import ModelLoadError
from activeseg.projectstate import ProjectDir
from activeseg.scores import ScoreStore, foreground_mean


def project_id_of(value: Any) -> int | None:
    """Label Studio sends the project as ``"<id>.<created_at>"`` (or a task carries its id)."""
    if value is None:
        return None
    try:
        return int(str(value).split(".")[0])
    except ValueError:
        return None


class ServedModels:
    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self._predictors: dict[tuple[int, str], Any] = {}
        self._lock = threading.Lock()

    def version(self, project_id: int | None) -> str | None:
        """The fine-tuned model version served for this project, if any."""
        if project_id is None:
            return None
        pdir = ProjectDir(self.model_dir, project_id)
        return pdir.load().served if pdir.exists() else None

    def pseudolabeler(self, project_id: int | None) -> str | None:
        """The pseudo-labeller the project chose (``activeseg pseudolabels use``), if any."""
        if project_id is None:
            return None
        pdir = ProjectDir(self.model_dir, project_id)
        return pdir.load().pseudolabeler if pdir.exists() else None

    def all_versions(self) -> list[str]:
        """Every model version served for some project (for Label Studio's version list)."""
        found = set()
        for state_file in (self.model_dir / "projects").glob("*/state.json"):
            if not state_file.parent.name.isdigit():
                continue
            served = ProjectDir(self.model_dir, int(state_file.parent.name)).load().served
            if served:
                found.add(served)
        return sorted(found)

    def _predictor(self, project_id: int, version: str) -> Any:
        from activeseg.nnunet.engine import Predictor

        with self._lock:
            key = (project_id, version)
            if key not in self._predictors:
                # one model per project: the previous round's goes when a newer one is served
                for old in [k for k in self._predictors if k[0] == project_id]:
                    del self._predictors[old]
                ws = ProjectDir(self.model_dir, project_id).workspace
                try:
                    self._predictors[key] = Predictor(ws, version, device=self.device)
                except (OSError, RuntimeError, KeyError) as exc:
                    raise ModelLoadError(
                        f"cannot load model {version} of project {project_id}: {exc}"
                    ) from exc
            return self._predictors[key]

    def predict_task(
        self, project_id: int, version: str, task: dict[str, Any], config: RegionConfig, images: ImageSource
    ) -> dict[str, Any]:
        store = ScoreStore(ProjectDir(self.model_dir, project_id).scores_dir(version))
        stored = store.get(int(task["id"]))
        if stored is not None and stored.labels is not None:
            labels, uncertainty = stored.labels, stored.uncertainty
        else:
            fetched = images.fetch(task_image_url(task, config.image_key))
            image = decode_image(fetched.data, fetched.name)
            pred = self._predictor(project_id, version).predict(model_channels(image))
            labels, uncertainty = pred.labels, foreground_mean(pred.entropy, pred.classes)
        result = config.to_results(labels.astype(np.uint32))
        prediction = {"result": result, "score": round(1.0 - uncertainty, 4), "model_version": version}
        config.validate_prediction(prediction)
        return prediction
