"""``activeseg study``: the label-efficiency study, apart from the loop's stages.

- ``split``: one image collection into a pool and a held-out test set, by seed and image size;
- ``runner``: the arms, their runs (resumable, one JSON file each) and their scores;
- ``report``: the CSV, markdown table, headline and plot from the run records;
- its command line is ``orchestrator.commands.study``.
"""
