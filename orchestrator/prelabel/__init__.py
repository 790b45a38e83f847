"""Init and pre-label: the project in Label Studio, its region kind, the pseudo-labels of
its tasks, and the labellers compared on the project's corrections."""
