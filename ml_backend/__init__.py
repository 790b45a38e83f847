"""The Label Studio ML backend: Label Studio's ML-backend protocol and nothing else (the Flask
app, ``/predict`` with the served models and smart-tool prompts, its config and server). What
segments an image lives in the core (``activeseg.labellers``); this package may import
``activeseg``, never ``orchestrator``."""
