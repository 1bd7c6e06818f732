"""Rows in: reading dataset files and hub datasets, the train/test split, and the seeded, resumable order
in which training draws them."""
