"""Sampling completions: the rollout engine (one prefill per prompt, keyed sampling, static cache on GPU)
and the batch of prompts and completions it returns."""
