"""The backend's settings, read from the environment (label-studio-ml's variable names).

| variable | meaning |
|---|---|
| LABEL_STUDIO_URL | the Label Studio server; the only host images are downloaded from |
| LABEL_STUDIO_API_KEY | the backend's own credential for those downloads (legacy token or PAT) |
| BASIC_AUTH_USER, BASIC_AUTH_PASS | when both are set, every route requires HTTP basic auth |
| MODEL_DIR | prediction cache and job records (default ./model_dir) |
| LOCAL_FILES_DOCUMENT_ROOT | read ``/data/local-files/?d=`` images from this folder instead of downloading |
| ACTIVESEG_PSEUDOLABELER | classical (default), classical-fluorescence, -stained, -brightfield, litemedsam, |
|  | litemedsam-unsure, sam-box or sam-auto |
| ACTIVESEG_SAM_CHECKPOINT, ACTIVESEG_SAM_TYPE | SAM weights for sam-box, sam-auto (vit_b/l/h/t) |
| ACTIVESEG_MAX_PIXELS | larger images get a per-task error (default 64 megapixels) |
| ACTIVESEG_WEBHOOK_SECRET | annotation events must carry it (header X-Activeseg-Webhook-Secret) |
| ACTIVESEG_WORKER | inprocess (default): this process runs queued jobs; off: ``activeseg worker`` does;
  rq (default when REDIS_URL is set): RQ workers over Redis do |
| REDIS_URL | Redis for waking RQ workers (``activeseg worker`` on other machines, same MODEL_DIR) |
| ACTIVESEG_DEVICE | cpu (default) or cuda, for serving fine-tuned nnU-Net models |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from activeseg.labellers.tasks import LabellerConfig
from activeseg.lsclient import ConfigError

#: who runs queued jobs
WORKERS = ("inprocess", "off", "rq")


@dataclass(frozen=True)
class BackendConfig:
    label_studio_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    model_dir: Path = Path("model_dir")
    local_files_root: Path | None = None
    pseudolabeler: str = "classical"
    sam_checkpoint: Path | None = None
    sam_type: str = "vit_b"
    max_pixels: int = 64_000_000
    webhook_secret: str | None = field(default=None, repr=False)
    worker: str = "inprocess"
    redis_url: str | None = field(default=None, repr=False)
    device: str = "cpu"

    @property
    def labeller(self) -> LabellerConfig:
        return LabellerConfig(self.pseudolabeler, self.sam_checkpoint, self.sam_type, self.max_pixels)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackendConfig:
        env = os.environ if env is None else env
        user, password = env.get("BASIC_AUTH_USER"), env.get("BASIC_AUTH_PASS")
        root = env.get("LOCAL_FILES_DOCUMENT_ROOT") or env.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        labeller = LabellerConfig.from_env(env)
        redis_url = env.get("REDIS_URL") or None
        worker = env.get("ACTIVESEG_WORKER") or ("rq" if redis_url else "inprocess")
        if worker not in WORKERS:
            raise ConfigError(f"ACTIVESEG_WORKER must be one of {', '.join(WORKERS)}, not {worker!r}")
        if worker == "rq" and not redis_url:
            raise ConfigError("ACTIVESEG_WORKER=rq needs REDIS_URL (e.g. redis://localhost:6379/0)")
        return cls(
            label_studio_url=(env.get("LABEL_STUDIO_URL") or "").rstrip("/") or None,
            api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            basic_auth=(user, password) if user and password else None,
            model_dir=Path(env.get("MODEL_DIR", "model_dir")),
            local_files_root=Path(root) if root else None,
            pseudolabeler=labeller.name,
            sam_checkpoint=labeller.sam_checkpoint,
            sam_type=labeller.sam_type,
            max_pixels=labeller.max_pixels,
            webhook_secret=env.get("ACTIVESEG_WEBHOOK_SECRET") or None,
            worker=worker,
            redis_url=redis_url,
            device=env.get("ACTIVESEG_DEVICE", "cpu"),
        )
