"""Train and fine-tune: nnU-Net on the pseudo-labels, then on each round's corrections, and the
serving gate that decides which masks annotators get."""
