"""The admin's side: the ``activeseg`` CLI and the active-learning loop, one package per stage.

- ``prelabel``: the project in Label Studio, its region kind, its pseudo-labels, the labellers;
- ``train``: nnU-Net on the pseudo-labels and on each round's corrections, the serving gate;
- ``rank``: scores, strategies and the queue order pushed into Label Studio;
- ``export``: every image's best labels out of Label Studio;
- ``commands``: each subcommand's arguments beside what it runs (``cli`` lists them);
- ``study`` and ``demo``: the label-efficiency study and the demo, apart from the loop.

It imports the core (``activeseg``), and ``ml_backend`` only where ``activeseg serve`` starts it
(``tests/test_import_direction.py``); neither imports it back.
"""
