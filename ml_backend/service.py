"""What ``/predict`` does, without Flask: tasks in, one Label Studio prediction (or error) per task.

One pseudo-labeller per name and process, built on first use under a lock (no model at import
time), so gunicorn workers and threads share it safely. A project gets the labeller it chose
(``activeseg pseudolabels use``), else the backend's own (ACTIVESEG_PSEUDOLABELER).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from activeseg.imageio import ImageReadError, decode_image
from activeseg.labelconfig import LabelConfigError, RegionConfig, parse_label_config
from activeseg.lsclient import LabelStudioError
from ml_backend.cache import PredictionCache, content_hash
from ml_backend.config import BackendConfig
from ml_backend.images import ImageFetchError, ImageSource, task_image_url
from ml_backend.interactive import InteractiveSegmenter, Prompt, parse_context
from ml_backend.pseudolabelers import (
    ModelLoadError,
    PseudoLabeler,
    Segmentation,
    build_pseudolabeler,
    sam_checkpoint_loader,
)
from ml_backend.pseudolabelers.sam_models import load_litemedsam
from ml_backend.served import ServedModels, project_id_of

log = logging.getLogger(__name__)
TASK_ERRORS = (ImageFetchError, ImageReadError, LabelStudioError, ModelLoadError, ValueError)


class PredictionService:
    def __init__(self, config: BackendConfig, labeler: PseudoLabeler | None = None) -> None:
        self.config = config
        self._labelers: dict[str, PseudoLabeler] = {} if labeler is None else {config.pseudolabeler: labeler}
        self._interactive: InteractiveSegmenter | None = None
        self._warmed = False
        self._lock = threading.Lock()
        self.images = ImageSource(config.label_studio_url, config.api_key, config.local_files_root)
        self.cache = PredictionCache(config.model_dir / "cache")
        self.served = ServedModels(config.model_dir, config.device)

    @property
    def labeler(self) -> PseudoLabeler:
        """The backend's own pseudo-labeller (ACTIVESEG_PSEUDOLABELER)."""
        return self.labeler_named(self.config.pseudolabeler)

    def labeler_named(self, name: str) -> PseudoLabeler:
        """One labeller per name, built on first use (its weights load later, on first image)."""
        with self._lock:
            if name not in self._labelers:
                cfg = self.config
                self._labelers[name] = build_pseudolabeler(name, cfg.sam_checkpoint, cfg.sam_type)
            return self._labelers[name]

    def labeler_for(self, project_id: int | None) -> PseudoLabeler:
        """The labeller a project chose (``activeseg pseudolabels use``), else the backend's own."""
        return self.labeler_named(self.served.pseudolabeler(project_id) or self.config.pseudolabeler)

    @property
    def model_version(self) -> str:
        """The pseudo-labeller's version (what a project without a fine-tuned model gets)."""
        return self.labeler.version

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

    def segment_bytes(
        self, data: bytes, name: str, labeler: PseudoLabeler | None = None
    ) -> tuple[Segmentation, bool]:
        """Instances of an encoded image (by ``labeler``, default the backend's own), and whether
        they came from the cache."""
        labeler = labeler or self.labeler
        key = content_hash(data)
        version = labeler.version
        cached = self.cache.get(version, key)
        if cached is not None:
            return cached, True
        image = decode_image(data, name)
        pixels = image.shape[0] * image.shape[1]
        if pixels > self.config.max_pixels:
            raise ValueError(
                f"{name}: {image.shape[1]}x{image.shape[0]} is larger than the {self.config.max_pixels:,} "
                "pixels this backend accepts (ACTIVESEG_MAX_PIXELS)"
            )
        seg = labeler.segment(image)
        self.cache.put(version, key, seg)
        return seg, False

    def predict_task(
        self, task: dict[str, Any], config: RegionConfig, labeler: PseudoLabeler | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The task's pseudo-label prediction (validated against ``config``) and whether it came
        from the cache."""
        labeler = labeler or self.labeler
        image = self.images.fetch(task_image_url(task, config.image_key))
        seg, cached = self.segment_bytes(image.data, image.name, labeler)
        result = config.to_results(seg.labels.astype(np.uint32), seg.instance_scores)
        prediction = {"result": result, "score": round(seg.score, 4), "model_version": labeler.version}
        config.validate_prediction(prediction)
        return prediction, cached

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
