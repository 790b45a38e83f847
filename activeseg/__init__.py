"""activeseg core: what the ML backend and the orchestrator share (image IO, brush masks,
metrics, datasets, the Label Studio client and server control)."""

__version__ = "0.1.0"
