"""Helpers for the test suite that ship with the package: the scorers' adversarial corpus (``fuzz``) and the
crash-test pause hook (``faults``, inert unless its environment variable is set)."""
