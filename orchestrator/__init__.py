"""The admin's side: the ``activeseg`` CLI and the active-learning loop. It may import
``activeseg`` and ``ml_backend``; neither imports it back."""
