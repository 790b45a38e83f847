"""The Label Studio ML backend: serves SAM pseudo-labels, later nnU-Net predictions, as brush
pre-annotations (issue 3). It may import ``activeseg`` (the shared core), never ``orchestrator``."""
