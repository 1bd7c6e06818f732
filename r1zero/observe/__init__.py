"""Watching a run: metric names, trackers (metrics.jsonl, tensorboard, ...), evaluation, the HTML report,
reflection counting and before/after comparison."""
