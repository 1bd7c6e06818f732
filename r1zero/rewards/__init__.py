"""Scoring completions: the task's scheme plus the user's reward functions (time-limited worker processes)."""
