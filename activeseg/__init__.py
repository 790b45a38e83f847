"""activeseg core: what the ML backend and the orchestrator share: image IO and fetching, the
labellers that turn pixels into instances, regions and brush masks, metrics, datasets, nnU-Net's
adapters, the job queue, and the Label Studio client and server control. It imports neither
``ml_backend`` nor ``orchestrator``."""

__version__ = "0.1.0"
