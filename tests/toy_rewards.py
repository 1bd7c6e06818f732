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


def vowel_share_odd_targets(completion, target=None, **fields):
    """vowel_share for odd targets, 0 for even ones: the groups of even-target prompts have no
    reward spread (what dynamic sampling drops)."""
    return vowel_share(completion) if target % 2 else 0.0


def length_and_truncation(completion, completion_length, truncated, **fields):
    """Asks for the rollout's facts: the completion's token count, plus 1000 when it was truncated."""
    return completion_length + (1000.0 if truncated else 0.0)


def constant(completion, **fields):
    """The same reward for every completion: no group ever has a spread."""
    return 1.0
