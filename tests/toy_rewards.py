"""Rewards a tiny random model can learn in seconds, for integration and learning tests.

They are user reward functions like any other: called with the completion and the example's fields
as keyword arguments, returning a float.
"""


def vowel_share(completion, **fields):
    """Share of the completion's letters that are vowels: continuous, so groups always differ."""
    letters = [c for c in completion.lower() if c.isalpha()]
    if not letters:
        return 0.0
    return sum(c in "aeiou" for c in letters) / len(letters)


def constant_half(completion, **fields):
    """The same score whatever the completion: every group has zero spread (a collapsed run)."""
    return 0.5
