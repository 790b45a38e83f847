"""Rank: score every task with the latest model, pick the core-set with a strategy, and push
the order into Label Studio's queue."""
