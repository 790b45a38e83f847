"""What ``/predict`` does, without Flask: tasks in, one Label Studio prediction (or error) per task.

Pseudo-labels come from the core's :class:`TaskLabeller` (one labeller per name and process,
built on first use under a lock, no model at import time, so gunicorn workers and threads share
it safely). A project gets the labeller it chose (``activeseg pseudolabels use``), else the
backend's own (ACTIVESEG_PSEUDOLABELER); a project with a served nnU-Net gets that model's masks,
and smart-tool prompts get SAM's.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from activeseg.imagefetch import ImageSource, task_image_url
from activeseg.imageio import decode_image
from activeseg.labelconfig import LabelConfigError, RegionConfig, parse_label_config
from activeseg.labellers import ModelLoadError, PseudoLabeler, sam_checkpoint_loader
from activeseg.labellers.cache import content_hash
from activeseg.labellers.sam_models import load_litemedsam
from activeseg.labellers.tasks import TASK_ERRORS, TaskLabeller
from ml_backend.config import BackendConfig
from ml_backend.interactive import InteractiveSegmenter, Prompt, parse_context
from ml_backend.served import ServedModels, project_id_of

log = logging.getLogger(__name__)


class PredictionService(TaskLabeller):
    def __init__(self, config: BackendConfig, labeler: PseudoLabeler | None = None) -> None:
        images = ImageSource(config.label_studio_url, config.api_key, config.local_files_root)
        super().__init__(config.labeller, images, config.model_dir / "cache", labeler)
        self.config = config
        self._interactive: InteractiveSegmenter | None = None
        self._warmed = False
        self.served = ServedModels(config.model_dir, config.device)

    def labeler_for(self, project_id: int | None) -> PseudoLabeler:
        """The labeller a project chose (``activeseg pseudolabels use``), else the backend's own."""
        return self.labeler_named(self.served.pseudolabeler(project_id) or self.config.pseudolabeler)

    def version_for(self, project_id: int | None) -> str:
        """The project's served nnU-Net version once it has one, else its pseudo-labeller's."""
        return self.served.version(project_id) or self.labeler_for(project_id).version

    def warm_up(self) -> None:
        """Load the weights in the background, once, so the first /predict does not pay for it."""
        with self._lock:
            if self._warmed:
                return
            self._warmed = True

        def load() -> None:
            try:
                self.labeler.load()
            except ModelLoadError as exc:
                log.error("cannot load the pseudo-labeller: %s", exc)

        threading.Thread(target=load, name="warm-up", daemon=True).start()

    @property
    def interactive(self) -> InteractiveSegmenter:
        """SAM for smart-tool prompts: the configured SAM checkpoint, else LiteMedSAM."""
        if self._interactive is None:
            with self._lock:
                if self._interactive is None:
                    if self.config.sam_checkpoint is not None:
                        load, weights_id = sam_checkpoint_loader(
                            self.config.sam_checkpoint, self.config.sam_type
                        )
                        self._interactive = InteractiveSegmenter(load, weights_id)
                    else:
                        self._interactive = InteractiveSegmenter(load_litemedsam, "litemedsam")
        return self._interactive

    def predict_interactive(
        self, task: dict[str, Any], config: RegionConfig, prompt: Prompt
    ) -> dict[str, Any]:
        """One new brush region for a smart-tool prompt; the task's other regions stay as they are."""
        fetched = self.images.fetch(task_image_url(task, config.image_key))
        image = decode_image(fetched.data, fetched.name)
        segmenter = self.interactive
        region = segmenter.region(
            f"{segmenter.weights_id}:{content_hash(fetched.data)}", image, prompt, config
        )
        prediction = {"result": [region], "score": region["score"], "model_version": self.model_version}
        config.validate_prediction(prediction)
        return prediction

    def predict(
        self,
        tasks: list[dict[str, Any]],
        label_config: str,
        context: dict[str, Any] | None = None,
        project_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """One entry per task, in order. A task that fails gets ``{"error": ...}`` and no
        ``result``: Label Studio logs and skips it instead of storing an empty prediction.
        With a smart-tool ``context``, the answer is the prompt's mask for the (single) task.
        A project with a fine-tuned nnU-Net gets that model's masks instead of pseudo-labels."""
        try:
            config = parse_label_config(label_config)
        except LabelConfigError as exc:
            log.warning("predict refused: %s", exc)
            return [{"error": str(exc)} for _ in tasks]
        prompt = parse_context(context)
        if prompt is not None and tasks:
            try:
                return [self.predict_interactive(tasks[0], config, prompt)]
            except TASK_ERRORS as exc:
                log.warning("interactive task %s: %s", tasks[0].get("id"), exc)
                return [{"error": f"task {tasks[0].get('id')}: {exc}"}]
        out = []
        for task in tasks:
            project = project_id if project_id is not None else project_id_of(task.get("project"))
            served = self.served.version(project)
            try:
                if served is not None and project is not None:
                    out.append(self.served.predict_task(project, served, task, config, self.images))
                else:
                    out.append(self.predict_task(task, config, self.labeler_for(project))[0])
            except TASK_ERRORS as exc:
                log.warning("task %s: %s", task.get("id"), exc)
                out.append({"error": f"task {task.get('id')}: {exc}"})
        return out
