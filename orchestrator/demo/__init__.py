"""``activeseg demo``: the whole loop on real images with a simulated annotator account."""
